//! The secrets a stack runs with.

/// The secrets the stack runs with, each unique to this stack so logs can be searched for them.
#[derive(Clone, Debug)]
pub struct Secrets {
    /// The bearer token staging and access accept and the coordinator sends them.
    pub peer_token: String,
    /// The bearer token the coordinator accepts from operators.
    pub operator_token: String,
    /// The Globus confidential client's secret.
    pub globus_client_secret: String,
    /// The SMRT Link password of [`crate::stack::SMRTLINK_USER`].
    pub smrtlink_password: String,
}

impl Default for Secrets {
    /// Fresh random values.
    fn default() -> Self {
        let unique = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            peer_token: format!("peer-{}", unique()),
            operator_token: format!("operator-{}", unique()),
            globus_client_secret: format!("globus-{}", unique()),
            smrtlink_password: format!("smrtlink-{}", unique()),
        }
    }
}

impl Secrets {
    /// (what, value) of every secret.
    pub fn all(&self) -> [(&'static str, &str); 4] {
        [
            ("peer bearer token", &self.peer_token),
            ("operator bearer token", &self.operator_token),
            ("Globus client secret", &self.globus_client_secret),
            ("SMRT Link password", &self.smrtlink_password),
        ]
    }
}
