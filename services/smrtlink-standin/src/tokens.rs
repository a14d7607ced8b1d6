//! Users and tokens: the password grant, the refresh grant, expiry.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};
use smrtshare_common::Secret;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Access,
    Refresh,
}

#[derive(Clone, Debug)]
struct TokenRec {
    user: String,
    kind: Kind,
    expires: Instant,
}

/// Why a token request failed: an OAuth error body and its status.
#[derive(Debug)]
pub(crate) struct GrantError {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl GrantError {
    pub(crate) fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// Users, and the tokens handed out.
#[derive(Debug)]
pub(crate) struct Tokens {
    users: HashMap<String, Secret>,
    issued: HashMap<String, TokenRec>,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    pub(crate) fn new(
        users: &[(String, Secret)],
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            users: users.iter().cloned().collect(),
            issued: HashMap::new(),
            access_ttl,
            refresh_ttl,
        }
    }

    pub(crate) fn add_user(&mut self, login: String, password: Secret) {
        self.users.insert(login, password);
    }

    fn issue(&mut self, user: &str) -> Value {
        let now = Instant::now();
        self.issued.retain(|_, t| t.expires > now);
        let access = random_token();
        let refresh = random_token();
        self.issued.insert(
            access.clone(),
            TokenRec {
                user: user.to_owned(),
                kind: Kind::Access,
                expires: now + self.access_ttl,
            },
        );
        self.issued.insert(
            refresh.clone(),
            TokenRec {
                user: user.to_owned(),
                kind: Kind::Refresh,
                expires: now + self.refresh_ttl,
            },
        );
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.access_ttl.as_secs(),
            "refresh_expires_in": self.refresh_ttl.as_secs(),
            "scope": "openid profile email",
        })
    }

    /// `grant_type=password`.
    pub(crate) fn password_grant(
        &mut self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Value, GrantError> {
        let (Some(username), Some(password)) = (username, password) else {
            return Err(GrantError {
                status: 400,
                error: "invalid_request",
                description: "Missing parameter: username or password".into(),
            });
        };
        match self.users.get(username) {
            Some(secret) if secret.expose() == password => Ok(self.issue(username)),
            _ => Err(GrantError {
                status: 401,
                error: "invalid_grant",
                description: "Invalid user credentials".into(),
            }),
        }
    }

    /// `grant_type=refresh_token`: a new access and refresh token; the old refresh token is spent.
    pub(crate) fn refresh_grant(&mut self, refresh: Option<&str>) -> Result<Value, GrantError> {
        let refused = || GrantError {
            status: 400,
            error: "invalid_grant",
            description: "Token is not active".into(),
        };
        let refresh = refresh.ok_or_else(refused)?;
        let Some(rec) = self.issued.get(refresh).cloned() else {
            return Err(refused());
        };
        if rec.kind != Kind::Refresh || rec.expires <= Instant::now() {
            return Err(refused());
        }
        self.issued.remove(refresh);
        Ok(self.issue(&rec.user))
    }

    /// The user of a valid, unexpired access token.
    pub(crate) fn check_access(&self, token: &str) -> Option<&str> {
        self.issued
            .get(token)
            .filter(|t| t.kind == Kind::Access && t.expires > Instant::now())
            .map(|t| t.user.as_str())
    }

    /// Expires every access token now; refresh tokens too when `refresh` is set.
    pub(crate) fn expire(&mut self, refresh: bool) {
        let now = Instant::now();
        for t in self.issued.values_mut() {
            if t.kind == Kind::Access || refresh {
                t.expires = now;
            }
        }
    }
}
