//! Group sharing: one group per project, one rule for it per project directory, membership
//! changes as group adds and removes; ownership of groups as strict as of rules; Verify's repairs.

use std::collections::BTreeSet;

use smrtshare_access::SharingMode;
use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{DEFAULT_CLIENT_ID, Fault, FaultPlan, Group, Kind};

use crate::support::{Harness, K, Options, expect, outcomes};
use smrtshare_testkit::both_backends;

const P: &str = "/Project 2: Tomato/";

pub fn groups_options() -> Options {
    let mut options = Options::default();
    options.policy.sharing = SharingMode::Groups;
    options
}

/// smrtshare's groups at the stand-in (made by its client).
pub fn our_groups(h: &Harness) -> Vec<Group> {
    h.standin
        .groups()
        .into_iter()
        .filter(|g| g.made_by == smrtshare_globus_standin::Maker::Client(DEFAULT_CLIENT_ID.into()))
        .collect()
}

/// The members of a group (identity ids), the client's own admin membership left out.
pub fn members_of(group: &Group) -> BTreeSet<String> {
    group
        .memberships
        .iter()
        .filter(|m| m.role == "member")
        .map(|m| m.identity_id.clone())
        .collect()
}

async fn one_group_and_one_rule_share_a_project(backend: Backend) {
    let h = Harness::start_with(backend, groups_options()).await;
    let first = h.apply(2, P, &["alice", "bob", "carol"]).await;
    assert_eq!(
        outcomes(&first.members),
        expect(&[
            ("alice", K::Granted),
            ("bob", K::Granted),
            ("carol", K::Granted)
        ])
    );
    assert!(first.complete, "{first:?}");
    let groups = our_groups(&h);
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    let ids: BTreeSet<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|l| h.identity(l))
        .collect();
    assert_eq!(members_of(group), ids);
    let rules = h.our_rules();
    assert_eq!(rules.len(), 1, "one rule for the group: {rules:?}");
    assert_eq!(
        (
            rules[0].principal_type.as_str(),
            rules[0].principal.as_str(),
            rules[0].path.as_str()
        ),
        ("group", group.id.as_str(), P)
    );
    let counts = h.standin.counts();
    assert_eq!(
        (
            counts.requests(Kind::GroupCreate),
            counts.requests(Kind::GroupMembers),
            counts.requests(Kind::Create)
        ),
        (1, 1, 1),
        "{counts:?}"
    );
    // The registry shows one entry per member, through the group.
    let project = h.project(2).await;
    assert_eq!(project.rules.len(), 3);
    for entry in &project.rules {
        assert_eq!(entry.group_id, group.id);
        assert_eq!(entry.state, pb::RuleState::Active as i32);
        assert_eq!(entry.path, P);
        assert_eq!(Some(entry.access_id.clone()), rules[0].id);
    }
    let wire_group = project.group.expect("group");
    assert_eq!(wire_group.state, pb::GroupState::Active as i32);
    assert_eq!(wire_group.rules.len(), 1);

    // In sync: no Globus call.
    h.standin.reset_counts();
    let again = h.apply(2, P, &["alice", "bob", "carol"]).await;
    assert!(again.complete);
    assert_eq!(h.standin.counts().total(), 0, "{:?}", h.standin.counts());

    // Membership changes: one batch, no rule made or deleted.
    h.standin.reset_counts();
    let changed = h.apply(2, P, &["alice", "dave"]).await;
    assert_eq!(
        outcomes(&changed.members),
        expect(&[
            ("alice", K::AlreadyGranted),
            ("dave", K::Granted),
            ("bob", K::Revoked),
            ("carol", K::Revoked)
        ])
    );
    let counts = h.standin.counts();
    assert_eq!(counts.requests(Kind::GroupMembers), 1, "{counts:?}");
    assert_eq!(
        counts.requests(Kind::Create) + counts.requests(Kind::Delete),
        0
    );
    let ids: BTreeSet<String> = ["alice", "dave"].iter().map(|l| h.identity(l)).collect();
    assert_eq!(members_of(&our_groups(&h)[0]), ids);

    // A rename moves the group's rule (made first, the old one deleted after), members stay.
    h.standin.reset_counts();
    let renamed = h
        .apply(2, "/Project 2: Heirloom/", &["alice", "dave"])
        .await;
    assert_eq!(
        outcomes(&renamed.members),
        expect(&[("alice", K::Moved), ("dave", K::Moved)])
    );
    let counts = h.standin.counts();
    assert_eq!(
        (
            counts.requests(Kind::Create),
            counts.requests(Kind::Delete),
            counts.requests(Kind::GroupMembers)
        ),
        (1, 1, 0),
        "{counts:?}"
    );
    let rules = h.our_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].path, "/Project 2: Heirloom/");

    // Revoking deletes the rule, then the group.
    let revoked = h.revoke(2, false).await;
    assert!(revoked.complete, "{revoked:?}");
    assert_eq!(
        outcomes(&revoked.members),
        expect(&[("alice", K::Revoked), ("dave", K::Revoked)])
    );
    assert!(h.our_rules().is_empty());
    assert!(our_groups(&h).is_empty());
    assert!(h.project(2).await.group.is_none());
}

/// A group create whose answer is lost is not sent again (group names are not unique): the
/// group is found among the client's groups by the nonce of its intent and adopted. A group
/// someone else made, even one naming smrtshare's client as an admin and carrying the same
/// name, is never taken, changed or deleted.
async fn a_lost_group_create_is_adopted_never_made_twice(backend: Backend) {
    let h = Harness::start_with(backend, groups_options()).await;
    let alice = h.identity("alice");
    let foreign = h.standin.add_foreign_group(
        "Project 2: Tomato (shared by smrtshare)",
        "smrtshare-intent:0123456789abcdef0123456789abcdef",
        &[&alice],
        Some(DEFAULT_CLIENT_ID),
    );
    h.standin
        .set_faults(FaultPlan::none().then(Kind::GroupCreate, Fault::DropAnswer));
    let answer = h.apply(2, P, &["alice", "bob"]).await;
    assert_eq!(
        outcomes(&answer.members),
        expect(&[("alice", K::Granted), ("bob", K::Granted)])
    );
    let counts = h.standin.counts();
    assert_eq!(
        counts.requests(Kind::GroupCreate),
        1,
        "not sent twice: {counts:?}"
    );
    assert_eq!(counts.requests(Kind::GroupList), 1, "{counts:?}");
    let ours = our_groups(&h);
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_ne!(ours[0].id, foreign);
    assert_eq!(
        h.project(2).await.group.expect("group").group_id,
        ours[0].id
    );

    // The request never reached Globus: nothing to adopt (the foreign group does not match),
    // the member fails for now, and the next apply makes the group.
    h.apply(3, "/Project 3/", &["carol"]).await;
    let before = h.standin.groups().len();
    h.revoke(3, false).await;
    h.standin
        .set_faults(FaultPlan::none().then(Kind::GroupCreate, Fault::DropRequest));
    let lost = h.apply(3, "/Project 3/", &["carol"]).await;
    assert_eq!(outcomes(&lost.members), expect(&[("carol", K::Failed)]));
    assert!(!lost.members[0].permanent, "{lost:?}");
    assert_eq!(h.standin.groups().len(), before - 1);
    let made = h.apply(3, "/Project 3/", &["carol"]).await;
    assert_eq!(outcomes(&made.members), expect(&[("carol", K::Granted)]));

    // Revoking everything leaves the foreign group as it was.
    assert!(h.revoke(2, false).await.complete);
    assert!(h.revoke(3, false).await.complete);
    let left = h.standin.groups();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, foreign);
    assert!(members_of(&left[0]).contains(&alice));
}

/// Verify makes a group deleted by hand again (members, rule) and adds back a member removed by
/// hand; a second Verify finds nothing to do.
async fn verify_repairs_groups_changed_by_hand(backend: Backend) {
    let h = Harness::start_with(backend, groups_options()).await;
    h.apply(2, P, &["alice", "bob"]).await;
    h.apply(3, "/Project 3/", &["carol", "dave"]).await;
    let groups = our_groups(&h);
    let g2 = groups
        .iter()
        .find(|g| members_of(g).contains(&h.identity("alice")))
        .expect("g2");
    let g3 = groups
        .iter()
        .find(|g| members_of(g).contains(&h.identity("carol")))
        .expect("g3");
    assert!(h.standin.delete_group_by_hand(&g2.id));
    assert!(h.standin.remove_member_by_hand(&g3.id, &h.identity("dave")));

    let plan = h.verify(true).await;
    let kinds: BTreeSet<i32> = plan.repairs.iter().map(|r| r.kind).collect();
    assert!(
        kinds.contains(&(pb::RepairKind::GroupRecreated as i32)),
        "{plan:?}"
    );
    assert!(
        kinds.contains(&(pb::RepairKind::MemberAdded as i32)),
        "{plan:?}"
    );
    assert_eq!(our_groups(&h).len(), 1, "a dry run changes nothing");

    let report = h.verify(false).await;
    assert!(report.repairs.iter().all(|r| r.done), "{report:?}");
    let groups = our_groups(&h);
    assert_eq!(groups.len(), 2);
    let new_g2 = groups.iter().find(|g| g.id != g3.id).expect("made again");
    let ids: BTreeSet<String> = ["alice", "bob"].iter().map(|l| h.identity(l)).collect();
    assert_eq!(members_of(new_g2), ids);
    let ids: BTreeSet<String> = ["carol", "dave"].iter().map(|l| h.identity(l)).collect();
    assert_eq!(
        members_of(groups.iter().find(|g| g.id == g3.id).expect("g3")),
        ids
    );
    let rules = h.our_rules();
    assert_eq!(rules.len(), 2, "the dead group's rule is gone: {rules:?}");
    assert!(
        rules
            .iter()
            .any(|r| r.principal == new_g2.id && r.path == P)
    );

    h.standin.reset_counts();
    let quiet = h.verify(false).await;
    assert!(quiet.repairs.is_empty(), "{quiet:?}");
    assert_eq!(h.standin.counts().writes(), 0);
}

both_backends!(
    one_group_and_one_rule_share_a_project,
    a_lost_group_create_is_adopted_never_made_twice,
    verify_repairs_groups_changed_by_hand,
);
