//! What the stand-in remembers: confidential clients, identities, tokens, collections and their
//! access rules, with Globus' validations. Plain data behind one mutex; no I/O here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::format_time;

/// The scope a client-credentials token for Transfer is asked for.
pub const TRANSFER_SCOPE: &str = "urn:globus:auth:scope:transfer.api.globus.org:all";
/// The resource server of Transfer tokens.
pub const TRANSFER_RESOURCE_SERVER: &str = "transfer.api.globus.org";
/// The scope a client-credentials token for the Groups API is asked for.
pub const GROUPS_SCOPE: &str = "urn:globus:auth:scope:groups.api.globus.org:all";
/// The resource server of Groups tokens.
pub const GROUPS_RESOURCE_SERVER: &str = "groups.api.globus.org";

/// The resource server a scope is for, among the two the stand-in issues tokens for.
pub(crate) fn resource_server_of(scope: &str) -> Option<&'static str> {
    match scope {
        TRANSFER_SCOPE => Some(TRANSFER_RESOURCE_SERVER),
        GROUPS_SCOPE => Some(GROUPS_RESOURCE_SERVER),
        _ => None,
    }
}

/// A Globus error as Transfer reports it: HTTP status, `code`, `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Globus error code (`Exists`, `LimitExceeded`, ...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// A Globus identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Identity id (UUID).
    pub id: String,
    /// Username, `user@idp.example`.
    pub username: String,
    /// `used`, `unused`, `private` or `closed`.
    pub status: String,
    /// Display name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Organization.
    pub organization: Option<String>,
    /// Identity provider id (UUID).
    pub identity_provider: String,
}

impl Identity {
    /// An identity for `username` whose id is derived from the username, so a restarted
    /// stand-in seeded with the same usernames hands out the same ids.
    pub fn for_username(username: &str) -> Self {
        let username = username.trim().to_owned();
        let local = username.split('@').next().unwrap_or_default().to_owned();
        let domain = username
            .split('@')
            .nth(1)
            .unwrap_or("globusid.org")
            .to_owned();
        Self {
            id: stable_uuid("identity", &username.to_lowercase()),
            status: "used".to_owned(),
            name: Some(local.clone()),
            email: Some(format!("{local}@{domain}")),
            organization: Some(domain.clone()),
            identity_provider: stable_uuid("idp", &domain),
            username,
        }
    }

    /// The JSON Globus Auth answers with.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "username": self.username,
            "status": self.status,
            "name": self.name,
            "email": self.email,
            "organization": self.organization,
            "identity_provider": self.identity_provider,
        })
    }
}

/// A UUID (version 4 layout) derived from a name; stable across runs.
pub(crate) fn stable_uuid(namespace: &str, name: &str) -> String {
    let mut bytes = [0u8; 16];
    for (half, salt) in [(0usize, 0x5eedu64), (8, 0xfeed)] {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, namespace, name).hash(&mut hasher);
        bytes[half..half + 8].copy_from_slice(&hasher.finish().to_be_bytes());
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Who made a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "client_id")]
pub enum Maker {
    /// A confidential client through the API (smrtshare, in tests).
    Client(String),
    /// A person at the web interface (added through the test-side API).
    Person,
    /// Granted through a role; the rule has no id.
    Role,
}

/// One access rule on a collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Rule id; `None` for rules granted through roles.
    pub id: Option<String>,
    /// Role id, for rules granted through roles.
    pub role_id: Option<String>,
    /// Role type (`access_manager`, `administrator`), for rules granted through roles.
    pub role_type: Option<String>,
    /// `identity`, `group`, `all_authenticated_users` or `anonymous`.
    pub principal_type: String,
    /// Identity or group id; empty for the two public principal types.
    pub principal: String,
    /// Directory path, `/…/`.
    pub path: String,
    /// `r` or `rw`.
    pub permissions: String,
    /// When the rule was made.
    pub create_time: DateTime<Utc>,
    /// When the rule lapses (Globus deletes it then).
    pub expiration_date: Option<DateTime<Utc>>,
    /// Whom Globus emailed when the rule was made.
    #[serde(default)]
    pub notify_email: Option<String>,
    /// Who made it.
    pub made_by: Maker,
}

impl Rule {
    /// The access document Globus lists.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "DATA_TYPE": "access",
            "id": self.id,
            "role_id": self.role_id,
            "role_type": self.role_type,
            "principal_type": self.principal_type,
            "principal": self.principal,
            "path": self.path,
            "permissions": self.permissions,
            "notify_email": self.notify_email,
            "create_time": format_time(self.create_time),
            "expiration_date": self.expiration_date.map(format_time),
        })
    }
}

/// A rule to be made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRule {
    /// `identity`, `group`, `all_authenticated_users` or `anonymous`.
    pub principal_type: String,
    /// Identity or group id.
    pub principal: String,
    /// Directory path.
    pub path: String,
    /// `r` or `rw`.
    pub permissions: String,
    /// Optional expiry.
    pub expiration_date: Option<DateTime<Utc>>,
    /// Whom Globus emails about the new rule (identity rules only).
    #[serde(default)]
    pub notify_email: Option<String>,
    /// The message of that email.
    #[serde(default)]
    pub notify_message: Option<String>,
}

/// The longest `notify_message` accepted.
pub const MAX_NOTIFY_MESSAGE: usize = 2048;

#[derive(Debug)]
pub(crate) struct Token {
    pub client_id: String,
    pub resource_server: &'static str,
    pub expires_at: DateTime<Utc>,
}

/// The stand-in's world.
#[derive(Debug)]
pub(crate) struct World {
    pub clients: HashMap<String, String>,
    pub identities: Vec<Identity>,
    pub tokens: HashMap<String, Token>,
    pub endpoints: BTreeMap<String, Vec<Rule>>,
    pub rule_limit: usize,
    pub token_lifetime: Duration,
    /// Ids the next rules made get, before random ones (a test hook: a Globus that repeats ids).
    pub next_rule_ids: VecDeque<String>,
    /// Domains whose usernames `provision=true` may provision; empty: every domain.
    pub provision_domains: Vec<String>,
    /// Identities provisioned so far.
    pub provisioned: u64,
    /// Invitations sent (`notify_email` on rules made through the API), oldest first.
    pub invitations: Vec<Invitation>,
    /// Groups, by id.
    pub groups: BTreeMap<String, crate::groups::Group>,
}

/// An email Globus sent because a rule was made with `notify_email`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The rule.
    pub rule_id: String,
    /// To whom.
    pub email: String,
    /// The message the rule carried (`notify_message`), if any.
    pub message: Option<String>,
    /// The identity the rule is for.
    pub principal: String,
    /// The path shared.
    pub path: String,
    /// When.
    pub sent_at: DateTime<Utc>,
}

impl World {
    pub fn check_client(&self, id: &str, secret: &str) -> bool {
        self.clients.get(id).is_some_and(|s| s == secret)
    }

    pub fn issue_token(
        &mut self,
        client_id: &str,
        resource_server: &'static str,
        now: DateTime<Utc>,
        rng: &mut StdRng,
    ) -> String {
        let token: String = (0..48)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect();
        let lifetime = chrono::Duration::from_std(self.token_lifetime)
            .unwrap_or_else(|_| chrono::Duration::days(2));
        self.tokens.insert(
            token.clone(),
            Token {
                client_id: client_id.to_owned(),
                resource_server,
                expires_at: now + lifetime,
            },
        );
        token
    }

    /// The client a live token for `resource_server` belongs to.
    pub fn check_token(
        &self,
        token: &str,
        resource_server: &str,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let refused = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "AuthenticationFailed", message)
        };
        match self.tokens.get(token) {
            Some(t) if t.resource_server != resource_server => Err(refused(&format!(
                "Token is for {}, not {resource_server}",
                t.resource_server
            ))),
            Some(t) if t.expires_at > now => Ok(t.client_id.clone()),
            Some(_) => Err(refused("Token is not active (it expired)")),
            None => Err(refused("Token is not active")),
        }
    }

    pub fn expire_tokens(&mut self, now: DateTime<Utc>) {
        for token in self.tokens.values_mut() {
            token.expires_at = token.expires_at.min(now);
        }
    }

    pub fn identity_by_username(&self, username: &str) -> Option<&Identity> {
        self.identities
            .iter()
            .find(|i| i.username.eq_ignore_ascii_case(username))
    }

    /// Provisions an identity for `username` (status `unused`, no name or email yet) when its
    /// domain may be provisioned; `None` otherwise.
    pub fn provision(&mut self, username: &str) -> Option<Identity> {
        let (local, domain) = username.split_once('@')?;
        let allowed = self.provision_domains.is_empty()
            || self
                .provision_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain));
        if local.is_empty() || domain.is_empty() || !allowed {
            return None;
        }
        let identity = Identity {
            status: "unused".to_owned(),
            name: None,
            email: None,
            ..Identity::for_username(username)
        };
        self.provisioned += 1;
        Some(self.add_identity(identity))
    }

    pub fn add_identity(&mut self, identity: Identity) -> Identity {
        if let Some(existing) = self.identity_by_username(&identity.username) {
            return existing.clone();
        }
        self.identities.push(identity.clone());
        identity
    }

    /// The live rules of a collection; expired rules are deleted first, as Globus does.
    pub fn rules_mut(
        &mut self,
        endpoint: &str,
        now: DateTime<Utc>,
    ) -> Result<&mut Vec<Rule>, ApiError> {
        let rules = self.endpoints.get_mut(endpoint).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "EndpointNotFound",
                format!("No such endpoint or collection '{endpoint}'"),
            )
        })?;
        rules.retain(|r| r.expiration_date.is_none_or(|e| e > now));
        Ok(rules)
    }

    pub fn create_rule(
        &mut self,
        endpoint: &str,
        new: NewRule,
        made_by: Maker,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        // Through the API, an identity principal must be an identity Globus knows and a group
        // principal a group that exists; rules added on the test side (a person at the web
        // interface) may name anyone.
        let through_api = matches!(made_by, Maker::Client(_));
        let unknown = through_api
            && match new.principal_type.as_str() {
                "identity" => !self.identities.iter().any(|i| i.id == new.principal),
                "group" => !self.groups.contains_key(&new.principal),
                _ => false,
            };
        let limit = self.rule_limit;
        let rules = self.rules_mut(endpoint, now)?;
        validate_new_rule(&new, now)?;
        if unknown {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Unknown {} '{}'", new.principal_type, new.principal),
            ));
        }
        if rules.iter().any(|r| {
            r.id.is_some()
                && r.principal_type == new.principal_type
                && r.principal == new.principal
                && r.path == new.path
        }) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Exists",
                format!(
                    "A rule for {} '{}' on path '{}' already exists",
                    new.principal_type, new.principal, new.path
                ),
            ));
        }
        if rules.iter().filter(|r| r.id.is_some()).count() >= limit {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "LimitExceeded",
                format!("Too many access rules on this collection (at most {limit})"),
            ));
        }
        // Random (version 4) ids from the operating system, as Globus hands out: never the same
        // twice, also not after a restart.
        let id = self
            .next_rule_ids
            .pop_front()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if let Some(email) = &new.notify_email {
            self.invitations.push(Invitation {
                rule_id: id.clone(),
                email: email.clone(),
                message: new.notify_message.clone(),
                principal: new.principal.clone(),
                path: new.path.clone(),
                sent_at: now,
            });
        }
        let rules = self.rules_mut(endpoint, now)?;
        rules.push(Rule {
            id: Some(id.clone()),
            role_id: None,
            role_type: None,
            principal_type: new.principal_type,
            principal: new.principal,
            path: new.path,
            permissions: new.permissions,
            create_time: now,
            expiration_date: new.expiration_date,
            notify_email: new.notify_email,
            made_by,
        });
        Ok(id)
    }

    pub fn find_rule(
        &mut self,
        endpoint: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<&mut Rule, ApiError> {
        self.rules_mut(endpoint, now)?
            .iter_mut()
            .find(|r| r.id.as_deref() == Some(id))
            .ok_or_else(|| rule_not_found(id))
    }

    pub fn delete_rule(
        &mut self,
        endpoint: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Rule, ApiError> {
        let rules = self.rules_mut(endpoint, now)?;
        let index = rules
            .iter()
            .position(|r| r.id.as_deref() == Some(id))
            .ok_or_else(|| rule_not_found(id))?;
        Ok(rules.remove(index))
    }
}

fn rule_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AccessRuleNotFound",
        format!("Access rule '{id}' not found"),
    )
}

/// Globus' checks on a new rule's fields.
pub(crate) fn validate_new_rule(new: &NewRule, now: DateTime<Utc>) -> Result<(), ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message);
    match new.principal_type.as_str() {
        "identity" | "group" => {
            if uuid::Uuid::parse_str(&new.principal).is_err() {
                return Err(bad(format!(
                    "Invalid principal '{}' for principal_type '{}'",
                    new.principal, new.principal_type
                )));
            }
        }
        "all_authenticated_users" | "anonymous" => {
            if !new.principal.is_empty() {
                return Err(bad(format!(
                    "principal must be empty for principal_type '{}'",
                    new.principal_type
                )));
            }
        }
        other => return Err(bad(format!("Invalid principal_type '{other}'"))),
    }
    validate_permissions(&new.permissions)?;
    validate_notify(new)?;
    if new.principal_type == "anonymous" && new.permissions != "r" {
        return Err(bad("anonymous rules may only grant 'r'".to_owned()));
    }
    validate_path(&new.path)?;
    validate_expiration(new.expiration_date, now)
}

/// `notify_email`: a plausible address, identity rules only; `notify_message`: with an email,
/// at most [`MAX_NOTIFY_MESSAGE`] characters.
fn validate_notify(new: &NewRule) -> Result<(), ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message);
    if let Some(email) = &new.notify_email {
        let plausible = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',');
        if !plausible {
            return Err(bad(format!(
                "Invalid notify_email '{}'",
                email.escape_default()
            )));
        }
        if new.principal_type != "identity" {
            return Err(bad(
                "notify_email is only allowed for identity rules".to_owned()
            ));
        }
    }
    if let Some(message) = &new.notify_message {
        if new.notify_email.is_none() {
            return Err(bad("notify_message requires notify_email".to_owned()));
        }
        if message.chars().count() > MAX_NOTIFY_MESSAGE {
            return Err(bad(format!(
                "notify_message is longer than {MAX_NOTIFY_MESSAGE} characters"
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_permissions(permissions: &str) -> Result<(), ApiError> {
    if matches!(permissions, "r" | "rw") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Invalid permissions '{permissions}': must be 'r' or 'rw'"),
        ))
    }
}

pub(crate) fn validate_expiration(
    expiration: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    match expiration {
        Some(e) if e <= now => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "expiration_date must be in the future",
        )),
        _ => Ok(()),
    }
}

/// A rule path: absolute, a directory (ends with `/`), no empty, `.` or `..` segments, no
/// control characters.
pub(crate) fn validate_path(path: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidPath",
            format!("Invalid path '{}': {why}", path.escape_default()),
        )
    };
    if !path.starts_with('/') || !path.ends_with('/') {
        return Err(invalid("must start and end with '/'"));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid("control characters are not allowed"));
    }
    if path.len() > 4096 {
        return Err(invalid("too long"));
    }
    if path != "/" {
        let inner = &path[1..path.len() - 1];
        if inner
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(invalid("empty, '.' and '..' segments are not allowed"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_directory_form() {
        assert!(validate_path("/").is_ok());
        assert!(validate_path("/Project 2: Tomato/").is_ok());
        assert!(validate_path("/a/b/").is_ok());
        for bad in ["", "a/", "/a", "//", "/a//b/", "/../", "/a/./", "/a\0/"] {
            let err = validate_path(bad).expect_err(bad);
            assert_eq!(err.code, "InvalidPath", "{bad:?}");
        }
    }

    #[test]
    fn stable_ids_do_not_change_between_calls() {
        let a = Identity::for_username("alice@example.edu");
        assert_eq!(a, Identity::for_username("alice@example.edu"));
        assert_ne!(a.id, Identity::for_username("bob@example.edu").id);
        assert!(uuid::Uuid::parse_str(&a.id).is_ok());
    }
}
