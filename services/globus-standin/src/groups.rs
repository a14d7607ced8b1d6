//! Globus groups as the Groups API v2 keeps them: a group, its memberships with roles, and the
//! batch membership actions (`add`, `remove`) with their per-identity errors. Plain data; the
//! HTTP side is in `groups_api`.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::format_time;
use crate::model::{ApiError, Maker, World, stable_uuid};

/// The longest group name accepted.
pub const MAX_GROUP_NAME: usize = 255;

/// One membership of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The member's identity id.
    pub identity_id: String,
    /// The identity's username, when known.
    pub username: String,
    /// `admin`, `manager` or `member`.
    pub role: String,
    /// `active` (the only status smrtshare makes; invitations are not used).
    pub status: String,
}

/// A group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group id (UUID).
    pub id: String,
    /// Name (not unique at Globus).
    pub name: String,
    /// Description.
    pub description: String,
    /// Who made it.
    pub made_by: Maker,
    /// When it was made.
    pub create_time: DateTime<Utc>,
    /// Its memberships, the maker's admin membership first.
    pub memberships: Vec<Membership>,
}

impl Group {
    /// The group document; `memberships` listed when asked for, `my_memberships` those of
    /// `caller`.
    pub(crate) fn to_json(&self, caller: &str, with_memberships: bool) -> Value {
        let membership = |m: &Membership| {
            json!({
                "group_id": self.id,
                "identity_id": m.identity_id,
                "username": m.username,
                "role": m.role,
                "status": m.status,
            })
        };
        let mut doc = json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "parent_id": null,
            "group_type": "regular",
            "enforce_session": false,
            "created": format_time(self.create_time),
            "policies": {
                "group_visibility": "private",
                "group_members_visibility": "managers",
                "is_high_assurance": false,
                "join_requests": false,
                "signup_fields": [],
            },
            "my_memberships": self
                .memberships
                .iter()
                .filter(|m| m.identity_id == caller)
                .map(membership)
                .collect::<Vec<_>>(),
        });
        if with_memberships {
            doc["memberships"] = self.memberships.iter().map(membership).collect();
        }
        doc
    }

    /// The role `identity` holds, if any.
    pub fn role_of(&self, identity: &str) -> Option<&str> {
        self.memberships
            .iter()
            .find(|m| m.identity_id == identity)
            .map(|m| m.role.as_str())
    }

    /// True when `identity` may change memberships (admin or manager).
    pub fn manages(&self, identity: &str) -> bool {
        matches!(self.role_of(identity), Some("admin" | "manager"))
    }
}

/// The identity of a confidential client (`<client id>@clients.auth.globus.org`): what group
/// memberships and rule principals name it by.
pub fn client_identity(client_id: &str) -> (String, String) {
    (
        stable_uuid("client", client_id),
        format!("{client_id}@clients.auth.globus.org"),
    )
}

/// What a batch of membership actions did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BatchResult {
    pub added: Vec<Membership>,
    pub removed: Vec<Membership>,
    pub add_errors: Vec<ActionError>,
    pub remove_errors: Vec<ActionError>,
}

/// One per-identity failure of a batch action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ActionError {
    pub identity_id: String,
    pub code: &'static str,
    pub detail: String,
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Group {id} not found"),
    )
}

impl World {
    /// Makes a group whose only member is its maker, as admin.
    pub(crate) fn create_group(
        &mut self,
        name: &str,
        description: &str,
        made_by: Maker,
        now: DateTime<Utc>,
    ) -> Result<Group, ApiError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_GROUP_NAME {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_PARAMETERS",
                format!("name must be 1 to {MAX_GROUP_NAME} characters"),
            ));
        }
        let mut memberships = Vec::new();
        if let Maker::Client(client_id) = &made_by {
            let (identity_id, username) = client_identity(client_id);
            memberships.push(Membership {
                identity_id,
                username,
                role: "admin".to_owned(),
                status: "active".to_owned(),
            });
        }
        let group = Group {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            description: description.to_owned(),
            made_by,
            create_time: now,
            memberships,
        };
        self.groups.insert(group.id.clone(), group.clone());
        Ok(group)
    }

    /// A group `caller` may read (any membership); 404 when there is none, 403 when the caller
    /// has no membership.
    pub(crate) fn group_for(&self, id: &str, caller: &str) -> Result<&Group, ApiError> {
        let group = self.groups.get(id).ok_or_else(|| not_found(id))?;
        if group.role_of(caller).is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("You are not a member of group {id}"),
            ));
        }
        Ok(group)
    }

    /// Groups in which `caller` has a membership.
    pub(crate) fn groups_of(&self, caller: &str) -> Vec<&Group> {
        self.groups
            .values()
            .filter(|g| g.role_of(caller).is_some())
            .collect()
    }

    /// Deletes a group `caller` administers.
    pub(crate) fn delete_group(&mut self, id: &str, caller: &str) -> Result<Group, ApiError> {
        let group = self.group_for(id, caller)?;
        if group.role_of(caller) != Some("admin") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("Only an admin may delete group {id}"),
            ));
        }
        self.groups.remove(id).ok_or_else(|| not_found(id))
    }

    /// Applies `add` (as `member`) and `remove` for the identities given; answers the
    /// memberships changed by action and the per-identity errors (`ALREADY_ACTIVE`,
    /// `NO_MEMBERSHIP`, `INVALID_IDENTITY`, `CANNOT_REMOVE_SELF`).
    pub(crate) fn batch(
        &mut self,
        id: &str,
        caller: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<BatchResult, ApiError> {
        if !self.group_for(id, caller)?.manages(caller) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("Only admins and managers may change the memberships of group {id}"),
            ));
        }
        let usernames: Vec<(String, String)> = self
            .identities
            .iter()
            .map(|i| (i.id.clone(), i.username.clone()))
            .collect();
        let group = self.groups.get_mut(id).ok_or_else(|| not_found(id))?;
        let mut result = BatchResult::default();
        for identity in add {
            let error = |code, detail: &str| ActionError {
                identity_id: identity.clone(),
                code,
                detail: detail.to_owned(),
            };
            let Some((_, username)) = usernames.iter().find(|(i, _)| i == identity) else {
                result
                    .add_errors
                    .push(error("INVALID_IDENTITY", "No such identity."));
                continue;
            };
            if group.role_of(identity).is_some() {
                result.add_errors.push(error(
                    "ALREADY_ACTIVE",
                    "The identity is already an active member of the group.",
                ));
                continue;
            }
            let membership = Membership {
                identity_id: identity.clone(),
                username: username.clone(),
                role: "member".to_owned(),
                status: "active".to_owned(),
            };
            group.memberships.push(membership.clone());
            result.added.push(membership);
        }
        for identity in remove {
            let error = |code, detail: &str| ActionError {
                identity_id: identity.clone(),
                code,
                detail: detail.to_owned(),
            };
            if identity == caller {
                result
                    .remove_errors
                    .push(error("CANNOT_REMOVE_SELF", "Use leave instead."));
                continue;
            }
            match group
                .memberships
                .iter()
                .position(|m| m.identity_id == *identity)
            {
                Some(index) => {
                    let mut membership = group.memberships.remove(index);
                    membership.status = "removed".to_owned();
                    result.removed.push(membership);
                }
                None => result.remove_errors.push(error(
                    "NO_MEMBERSHIP",
                    "Identity has no membership in group.",
                )),
            }
        }
        Ok(result)
    }
}
