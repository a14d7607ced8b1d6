//! Throwaway certificates for TLS tests (rcgen).

use std::path::{Path, PathBuf};

/// A throwaway PKI for TLS tests: a CA, a server certificate for `localhost` and `127.0.0.1`,
/// and a client certificate, all as PEM.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate.
    pub ca_pem: String,
    /// Server certificate and key.
    pub server_cert_pem: String,
    /// Server key.
    pub server_key_pem: String,
    /// Client certificate (for mutual TLS).
    pub client_cert_pem: String,
    /// Client key.
    pub client_key_pem: String,
}

/// Paths of a [`Pki`] written to a directory.
#[derive(Clone, Debug)]
pub struct PkiFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Makes a CA named `name` and the two certificates it signs.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&server_key, &ca)?;
        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(vec!["smrtshare-coordinator".to_owned()])?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "smrtshare-coordinator");
        let client = client_params.signed_by(&client_key, &ca)?;
        Ok(Self {
            ca_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// Writes every PEM into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<PkiFiles> {
        let files = PkiFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        std::fs::write(&files.ca, &self.ca_pem)?;
        std::fs::write(&files.server_cert, &self.server_cert_pem)?;
        std::fs::write(&files.server_key, &self.server_key_pem)?;
        std::fs::write(&files.client_cert, &self.client_cert_pem)?;
        std::fs::write(&files.client_key, &self.client_key_pem)?;
        Ok(files)
    }
}
