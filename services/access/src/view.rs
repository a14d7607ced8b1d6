//! One project's registry records as the API shows them: members' own rules, and (group sharing)
//! each group membership as an entry with the group's rule's path, id and expiry, so a reader
//! such as the coordinator's resync sees one entry per member either way.

use smrtshare_api::access::v1 as pb;

use crate::registry::{
    GroupRow, GroupState, MemberRow, MemberState, Principal, Registry, RowState, RuleRow,
};

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn rule_state(state: RowState) -> pb::RuleState {
    match state {
        RowState::Pending => pb::RuleState::Pending,
        RowState::Active => pb::RuleState::Active,
        RowState::Deleting => pb::RuleState::Deleting,
        RowState::External => pb::RuleState::External,
    }
}

/// The wire form of a registry row.
pub fn rule_to_wire(row: &RuleRow) -> pb::Rule {
    pb::Rule {
        project_id: row.project_id,
        login: row.login.clone(),
        identity_id: row.identity_id.clone(),
        path: row.path.clone(),
        permissions: row.permissions.clone(),
        access_id: row.access_id.clone().unwrap_or_default(),
        state: rule_state(row.state) as i32,
        expires_at: row.expires_at.map(timestamp),
        updated_at: Some(timestamp(row.updated_at)),
        username: row.username.clone(),
        last_error: row.last_error.clone().unwrap_or_default(),
        group_id: match row.principal {
            Principal::Group => row.identity_id.clone(),
            Principal::Identity => String::new(),
        },
    }
}

/// A group membership as a member's entry: the group's rule (the one not being deleted, if
/// any) gives path, id and expiry; the state is the weaker of membership and rule.
fn member_to_wire(member: &MemberRow, group: &GroupRow, rules: &[RuleRow]) -> pb::Rule {
    let rule = rules
        .iter()
        .find(|r| r.state == RowState::Active)
        .or_else(|| rules.iter().find(|r| r.state != RowState::Deleting))
        .or_else(|| rules.first());
    let state = match (member.state, rule.map(|r| r.state)) {
        (MemberState::Removing, _) => pb::RuleState::Deleting,
        (MemberState::Pending, _) | (MemberState::Active, None) => pb::RuleState::Pending,
        (MemberState::Active, Some(RowState::External)) => pb::RuleState::Active,
        (MemberState::Active, Some(state)) => rule_state(state),
    };
    pb::Rule {
        project_id: member.project_id,
        login: member.login.clone(),
        identity_id: member.identity_id.clone(),
        path: rule.map(|r| r.path.clone()).unwrap_or_default(),
        permissions: rule.map(|r| r.permissions.clone()).unwrap_or_default(),
        access_id: rule.and_then(|r| r.access_id.clone()).unwrap_or_default(),
        state: state as i32,
        expires_at: rule.and_then(|r| r.expires_at).map(timestamp),
        updated_at: Some(timestamp(member.updated_at)),
        username: member.username.clone(),
        last_error: member
            .last_error
            .clone()
            .or_else(|| rule.and_then(|r| r.last_error.clone()))
            .unwrap_or_default(),
        group_id: group.group_id.clone().unwrap_or_default(),
    }
}

/// A project's entries (ordered by login) and its group.
pub async fn project_view(
    registry: &Registry,
    project_id: i64,
) -> Result<(Vec<pb::Rule>, Option<pb::ProjectGroup>), sqlx::Error> {
    let (group_rules, own): (Vec<RuleRow>, Vec<RuleRow>) = registry
        .project_rows(project_id)
        .await?
        .into_iter()
        .partition(|r| r.principal == Principal::Group);
    let mut entries: Vec<pb::Rule> = own.iter().map(rule_to_wire).collect();
    let group = registry.group(project_id).await?;
    let wire_group = match &group {
        Some(group) => {
            let rules: Vec<RuleRow> = group_rules
                .iter()
                .filter(|r| Some(&r.identity_id) == group.group_id.as_ref())
                .cloned()
                .collect();
            for member in registry.members(project_id).await? {
                entries.push(member_to_wire(&member, group, &rules));
            }
            Some(pb::ProjectGroup {
                group_id: group.group_id.clone().unwrap_or_default(),
                name: group.name.clone(),
                state: match group.state {
                    GroupState::Pending => pb::GroupState::Pending,
                    GroupState::Active => pb::GroupState::Active,
                    GroupState::Deleting => pb::GroupState::Deleting,
                } as i32,
                rules: group_rules.iter().map(rule_to_wire).collect(),
                last_error: group.last_error.clone().unwrap_or_default(),
            })
        }
        None => None,
    };
    entries.sort_by(|a, b| a.login.as_bytes().cmp(b.login.as_bytes()));
    Ok((entries, wire_group))
}

/// A project's unresolved members, as the API shows them.
pub async fn unresolved_view(
    registry: &Registry,
    project_id: i64,
) -> Result<Vec<pb::UnresolvedMember>, sqlx::Error> {
    Ok(registry
        .unresolved(Some(project_id))
        .await?
        .into_iter()
        .map(|u| pb::UnresolvedMember {
            login: u.login,
            username: u.username,
            reason: u.reason,
            since: Some(timestamp(u.since)),
        })
        .collect())
}
