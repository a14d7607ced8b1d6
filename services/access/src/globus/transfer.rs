//! Transfer access rules on the collection: list, create, update (expiry), delete.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::GlobusError;
use super::http::{Auth, Body};
use super::{Globus, Resource, uuid_like};
use crate::clock::{format_globus_time, parse_globus_time};
use crate::metrics::Call;

/// One rule of the collection's access list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// Rule id; `None` for rules granted through roles (which smrtshare skips).
    pub id: Option<String>,
    /// `identity`, `group`, `all_authenticated_users` or `anonymous`.
    pub principal_type: String,
    /// The identity or group id.
    pub principal: String,
    /// Directory path, `/…/`.
    pub path: String,
    /// `r` or `rw`.
    pub permissions: String,
    /// When the rule was made, when Globus says.
    pub create_time: Option<DateTime<Utc>>,
    /// When it lapses.
    pub expiration_date: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct WireRule {
    id: Option<Value>,
    #[serde(default)]
    principal_type: Option<String>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    create_time: Option<String>,
    #[serde(default)]
    expiration_date: Option<String>,
}

impl WireRule {
    fn into_rule(self) -> AccessRule {
        // Older collections number their rules; newer ones use UUIDs. Keep either as text.
        let id = match self.id {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        AccessRule {
            id,
            principal_type: self.principal_type.unwrap_or_default(),
            principal: self.principal.unwrap_or_default(),
            path: self.path.unwrap_or_default(),
            permissions: self.permissions.unwrap_or_default(),
            create_time: self.create_time.as_deref().and_then(parse_globus_time),
            expiration_date: self.expiration_date.as_deref().and_then(parse_globus_time),
        }
    }
}

fn rule_id_segment(access_id: &str) -> Result<&str, GlobusError> {
    let plain = !access_id.is_empty()
        && access_id.len() <= 64
        && access_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if plain || uuid_like(access_id) {
        Ok(access_id)
    } else {
        Err(GlobusError::Protocol(format!(
            "refusing to address a rule id that is not a plain id: {access_id:?}"
        )))
    }
}

/// A rule to create.
#[derive(Clone, Copy, Debug)]
pub struct NewRule<'a> {
    /// `identity` or `group`.
    pub principal_type: &'a str,
    /// The identity or group id.
    pub principal: &'a str,
    /// Directory path, `/…/`.
    pub path: &'a str,
    /// `r`.
    pub permissions: &'a str,
    /// Invitation: (email, message).
    pub notify: Option<(&'a str, &'a str)>,
}

impl Globus {
    /// Every rule on the collection (one `access_list` call), including rules through roles
    /// (`id: None`).
    pub async fn list_rules(&self) -> Result<Vec<AccessRule>, GlobusError> {
        let url = self.transfer(&format!("endpoint/{}/access_list", self.collection_id()))?;
        let answer = self
            .call(
                Call::List,
                Method::GET,
                url,
                Auth::Bearer(Resource::Transfer),
                Body::Empty,
            )
            .await?;
        let data = answer
            .get("DATA")
            .cloned()
            .ok_or_else(|| GlobusError::Protocol("access_list answer has no DATA".to_owned()))?;
        let rules: Vec<WireRule> = serde_json::from_value(data)
            .map_err(|e| GlobusError::Protocol(format!("access_list answer: {e}")))?;
        Ok(rules.into_iter().map(WireRule::into_rule).collect())
    }

    /// Creates a rule for an identity or a group; answers the new rule's id. With `notify`
    /// (email, message), Globus emails the member about it (identity rules only).
    pub async fn create_rule(
        &self,
        new: &NewRule<'_>,
        expiration: Option<DateTime<Utc>>,
    ) -> Result<String, GlobusError> {
        let url = self.transfer(&format!("endpoint/{}/access", self.collection_id()))?;
        let mut body = json!({
            "DATA_TYPE": "access",
            "principal_type": new.principal_type,
            "principal": new.principal,
            "path": new.path,
            "permissions": new.permissions,
        });
        if let Some(expiration) = expiration {
            body["expiration_date"] = Value::String(format_globus_time(expiration));
        }
        if let Some((email, message)) = new.notify {
            body["notify_email"] = Value::String(email.to_owned());
            body["notify_message"] = Value::String(message.to_owned());
        }
        let answer = self
            .call(
                Call::Create,
                Method::POST,
                url,
                Auth::Bearer(Resource::Transfer),
                Body::Json(body),
            )
            .await?;
        match answer.get("access_id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(GlobusError::Protocol(
                "create answer carries no access_id".to_owned(),
            )),
        }
    }

    /// Sets a rule's permissions and expiry (`None` removes the expiry).
    pub async fn update_rule(
        &self,
        access_id: &str,
        permissions: &str,
        expiration: Option<DateTime<Utc>>,
    ) -> Result<(), GlobusError> {
        let url = self.transfer(&format!(
            "endpoint/{}/access/{}",
            self.collection_id(),
            rule_id_segment(access_id)?
        ))?;
        let body = json!({
            "DATA_TYPE": "access",
            "permissions": permissions,
            "expiration_date": expiration.map(format_globus_time),
        });
        self.call(
            Call::Update,
            Method::PUT,
            url,
            Auth::Bearer(Resource::Transfer),
            Body::Json(body),
        )
        .await
        .map(|_| ())
    }

    /// Deletes a rule.
    pub async fn delete_rule(&self, access_id: &str) -> Result<(), GlobusError> {
        let url = self.transfer(&format!(
            "endpoint/{}/access/{}",
            self.collection_id(),
            rule_id_segment(access_id)?
        ))?;
        self.call(
            Call::Delete,
            Method::DELETE,
            url,
            Auth::Bearer(Resource::Transfer),
            Body::Empty,
        )
        .await
        .map(|_| ())
    }
}
