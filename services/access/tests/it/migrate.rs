//! Switching a deployment between rule and group sharing: Verify moves every project over with
//! the members the registry holds, granting the new form before revoking the old, so nobody
//! loses access (shown by failing the new form half-way: the old one stays).

use smrtshare_access::SharingMode;
use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{Fault, FaultPlan, Kind};

use crate::groups::{members_of, our_groups};
use crate::support::{Harness, Options, config, start_access};
use smrtshare_testkit::both_backends;

const P2: &str = "/Project 2: Tomato/";
const P3: &str = "/Project 3: Rice/";

/// Restarts access on the same registry and stand-in in `mode`.
async fn switch(h: &mut Harness, mode: SharingMode) {
    let mut options: Options = h.options.clone();
    options.policy.sharing = mode;
    let running = start_access(config(&h.standin, &h.db.url, &options)).await;
    let old = std::mem::replace(&mut h.access, running);
    old.stop().await;
    h.options = options;
}

fn identity_rules(h: &Harness) -> Vec<(String, String)> {
    h.our_rules()
        .into_iter()
        .filter(|r| r.principal_type == "identity")
        .map(|r| (r.principal, r.path))
        .collect()
}

async fn rules_to_groups_and_back_without_a_gap(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.apply(2, P2, &["alice", "bob"]).await;
    h.apply(3, P3, &["carol"]).await;
    let before = identity_rules(&h);
    assert_eq!(before.len(), 3);

    switch(&mut h, SharingMode::Groups).await;
    // The plan: one migration per project, nothing written.
    h.standin.reset_counts();
    let plan = h.verify(true).await;
    let migrations: Vec<&pb::Repair> = plan
        .repairs
        .iter()
        .filter(|r| r.kind == pb::RepairKind::Migrated as i32)
        .collect();
    assert_eq!(migrations.len(), 2, "{plan:?}");
    assert!(
        migrations
            .iter()
            .all(|r| !r.done && r.detail.contains("group")),
        "{plan:?}"
    );
    assert_eq!(h.standin.counts().writes(), 0);

    // The group's rule is refused for project 2: its members keep their own rules.
    h.standin.set_faults(FaultPlan::none().then(
        Kind::Create,
        Fault::Refuse {
            status: 403,
            code: "PermissionDenied".into(),
        },
    ));
    let half = h.verify(false).await;
    let p2 = half
        .repairs
        .iter()
        .find(|r| r.project_id == 2)
        .expect("project 2");
    assert!(
        !p2.done && p2.error.contains("PermissionDenied"),
        "{half:?}"
    );
    let kept = identity_rules(&h);
    for login in ["alice", "bob"] {
        assert!(
            kept.contains(&(h.identity(login), P2.to_owned())),
            "{login} lost access: {kept:?}"
        );
    }
    assert!(
        !kept.iter().any(|(_, path)| path == P3),
        "project 3 moved: {kept:?}"
    );

    // Once Globus accepts, the migration ends: groups and their rules only.
    h.standin.clear_faults();
    let done = h.verify(false).await;
    assert!(done.repairs.iter().all(|r| r.done), "{done:?}");
    assert!(identity_rules(&h).is_empty(), "{:?}", h.our_rules());
    assert_eq!(our_groups(&h).len(), 2);
    assert_eq!(h.our_rules().len(), 2);
    let entries = h.registry_rules(2).await;
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| !e.group_id.is_empty() && e.state == pb::RuleState::Active as i32)
    );
    h.standin.reset_counts();
    assert!(h.verify(false).await.repairs.is_empty());
    assert_eq!(h.standin.counts().writes(), 0, "in sync");

    // And back: every member gets a rule of their own before a group goes; bob's is refused,
    // so project 2's group stays (with bob in it) until it can be made.
    switch(&mut h, SharingMode::Rules).await;
    h.standin.set_faults(FaultPlan::none().then(
        Kind::Create,
        Fault::Refuse {
            status: 403,
            code: "PermissionDenied".into(),
        },
    ));
    let half = h.verify(false).await;
    assert!(half.repairs.iter().any(|r| !r.done), "{half:?}");
    let groups = our_groups(&h);
    assert_eq!(
        groups.len(),
        1,
        "project 3's group is gone, project 2's stays: {groups:?}"
    );
    let refused = if identity_rules(&h)
        .iter()
        .any(|(who, _)| *who == h.identity("alice"))
    {
        "bob"
    } else {
        "alice"
    };
    assert!(members_of(&groups[0]).contains(&h.identity(refused)));
    h.standin.clear_faults();
    let done = h.verify(false).await;
    assert!(done.repairs.iter().all(|r| r.done), "{done:?}");
    assert!(our_groups(&h).is_empty());
    let mut now = identity_rules(&h);
    let mut was = before.clone();
    now.sort();
    was.sort();
    assert_eq!(now, was, "back to one rule per member");
}

both_backends!(rules_to_groups_and_back_without_a_gap);
