//! The Globus Groups API v2 (`https://groups.api.globus.org/v2/groups`), as group sharing uses
//! it: create a group, read one with its memberships, list the groups the client belongs to,
//! add and remove members in one batch, delete. Calls carry the Groups token.
//!
//! A group create is never retried after a failure that may have been applied (Globus group
//! names are not unique, so a repeat makes a second group): the caller looks for the group by
//! the nonce it put in the description instead.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::GlobusError;
use super::http::{Auth, Body, Lost};
use super::{Globus, Resource, uuid_like};
use crate::metrics::Call;

/// One membership of a group.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GroupMembership {
    /// The member's identity id.
    pub identity_id: String,
    /// `admin`, `manager` or `member`.
    #[serde(default)]
    pub role: String,
    /// `active`, `invited`, ...
    #[serde(default)]
    pub status: String,
}

/// A group document.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GroupDoc {
    /// Group id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description (where smrtshare writes its nonce).
    #[serde(default)]
    pub description: Option<String>,
    /// The calling client's memberships.
    #[serde(default)]
    pub my_memberships: Vec<GroupMembership>,
    /// Every membership (when asked for).
    #[serde(default)]
    pub memberships: Vec<GroupMembership>,
}

impl GroupDoc {
    /// True when the calling client administers the group.
    pub fn administered(&self) -> bool {
        self.my_memberships
            .iter()
            .any(|m| m.role == "admin" && m.status == "active")
    }
}

/// A failure for one identity in a batch.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ActionError {
    /// The identity.
    pub identity_id: String,
    /// Globus' code (`ALREADY_ACTIVE`, `NO_MEMBERSHIP`, ...).
    #[serde(default)]
    pub code: String,
    /// Globus' explanation.
    #[serde(default)]
    pub detail: String,
}

/// What a batch of membership actions did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Identities added.
    pub added: Vec<String>,
    /// Identities removed.
    pub removed: Vec<String>,
    /// Per-identity failures of `add`.
    pub add_errors: Vec<ActionError>,
    /// Per-identity failures of `remove`.
    pub remove_errors: Vec<ActionError>,
}

#[derive(Deserialize, Default)]
struct BatchErrors {
    #[serde(default)]
    add: Vec<ActionError>,
    #[serde(default)]
    remove: Vec<ActionError>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    add: Vec<GroupMembership>,
    #[serde(default)]
    remove: Vec<GroupMembership>,
    #[serde(default)]
    errors: Option<BatchErrors>,
}

fn group_segment(group_id: &str) -> Result<&str, GlobusError> {
    if uuid_like(group_id) {
        Ok(group_id)
    } else {
        Err(GlobusError::Protocol(format!(
            "refusing to address a group id that is not a UUID: {group_id:?}"
        )))
    }
}

fn read<T: for<'de> Deserialize<'de>>(what: &str, answer: Value) -> Result<T, GlobusError> {
    serde_json::from_value(answer).map_err(|e| GlobusError::Protocol(format!("{what}: {e}")))
}

impl Globus {
    /// Creates a group the client administers. Not retried after a lost answer (see the module
    /// documentation).
    pub async fn create_group(
        &self,
        name: &str,
        description: &str,
    ) -> Result<GroupDoc, GlobusError> {
        let url = self.groups("groups")?;
        let body = json!({ "name": name, "description": description });
        let answer = self
            .call_with(
                Call::GroupCreate,
                Method::POST,
                url,
                Auth::Bearer(Resource::Groups),
                Body::Json(body),
                Lost::Stop,
            )
            .await?;
        let group: GroupDoc = read("group create answer", answer)?;
        group_segment(&group.id)?;
        Ok(group)
    }

    /// The groups the client has a membership in.
    pub async fn my_groups(&self) -> Result<Vec<GroupDoc>, GlobusError> {
        let url = self.groups("groups/my_groups")?;
        let answer = self
            .call(
                Call::GroupList,
                Method::GET,
                url,
                Auth::Bearer(Resource::Groups),
                Body::Empty,
            )
            .await?;
        read("my_groups answer", answer)
    }

    /// A group with every membership.
    pub async fn group(&self, group_id: &str) -> Result<GroupDoc, GlobusError> {
        let mut url = self.groups(&format!("groups/{}", group_segment(group_id)?))?;
        url.query_pairs_mut().append_pair("include", "memberships");
        let answer = self
            .call(
                Call::GroupGet,
                Method::GET,
                url,
                Auth::Bearer(Resource::Groups),
                Body::Empty,
            )
            .await?;
        read("group answer", answer)
    }

    /// Adds (as `member`) and removes identities in one batch. Both are idempotent at Globus
    /// (`ALREADY_ACTIVE`, `NO_MEMBERSHIP` come back as per-identity errors), so the call is
    /// retried like any other.
    pub async fn change_members(
        &self,
        group_id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<BatchOutcome, GlobusError> {
        let url = self.groups(&format!("groups/{}", group_segment(group_id)?))?;
        let mut body = serde_json::Map::new();
        if !add.is_empty() {
            body.insert(
                "add".to_owned(),
                add.iter()
                    .map(|id| json!({"identity_id": id, "role": "member"}))
                    .collect(),
            );
        }
        if !remove.is_empty() {
            body.insert(
                "remove".to_owned(),
                remove.iter().map(|id| json!({"identity_id": id})).collect(),
            );
        }
        let answer = self
            .call(
                Call::GroupMembers,
                Method::POST,
                url,
                Auth::Bearer(Resource::Groups),
                Body::Json(Value::Object(body)),
            )
            .await?;
        let answer: BatchAnswer = read("membership answer", answer)?;
        let errors = answer.errors.unwrap_or_default();
        Ok(BatchOutcome {
            added: answer.add.into_iter().map(|m| m.identity_id).collect(),
            removed: answer.remove.into_iter().map(|m| m.identity_id).collect(),
            add_errors: errors.add,
            remove_errors: errors.remove,
        })
    }

    /// Deletes a group.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), GlobusError> {
        let url = self.groups(&format!("groups/{}", group_segment(group_id)?))?;
        self.call(
            Call::GroupDelete,
            Method::DELETE,
            url,
            Auth::Bearer(Resource::Groups),
            Body::Empty,
        )
        .await
        .map(|_| ())
    }
}
