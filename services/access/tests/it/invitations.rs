//! Members with no Globus identity: provisioning (opt-in), invitations with the first rule
//! (opt-in, once per member and project), and unresolved members listed per project and in a
//! metric.

use smrtshare_access::Invitations;
use smrtshare_access::globus::identities::LoginMapping;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::Kind;

use crate::support::{DOMAIN, Harness, K, Options, expect, outcomes};
use smrtshare_testkit::both_backends;

async fn provisioning_gives_newcomers_access_before_their_first_login(backend: Backend) {
    let mut options = Options {
        provision: true,
        ..Options::default()
    };
    options.standin.provision_domains = vec![DOMAIN.to_owned()];
    let h = Harness::start_with(backend, options).await;
    let answer = h.apply(2, "/Project 2/", &["alice", "newcomer"]).await;
    assert_eq!(
        outcomes(&answer.members),
        expect(&[("alice", K::Granted), ("newcomer", K::Granted)])
    );
    assert_eq!(h.standin.provisioned(), 1);
    let identity = h
        .standin
        .identity("newcomer@example.edu")
        .expect("provisioned");
    assert_eq!(identity.status, "unused");
    assert!(h.rule_of("newcomer", "/Project 2/").is_some());
    assert!(h.project(2).await.unresolved.is_empty());
}

async fn unresolved_members_are_listed_until_they_resolve(backend: Backend) {
    let h = Harness::start(backend).await;
    let answer = h.apply(2, "/Project 2/", &["alice", "ghost", ""]).await;
    assert_eq!(
        outcomes(&answer.members),
        expect(&[
            ("alice", K::Granted),
            ("ghost", K::UnknownIdentity),
            ("", K::Failed)
        ])
    );
    let project = h.project(2).await;
    let listed: Vec<(&str, &str)> = project
        .unresolved
        .iter()
        .map(|u| (u.login.as_str(), u.username.as_str()))
        .collect();
    assert_eq!(listed, [("", ""), ("ghost", "ghost@example.edu")]);
    assert!(
        project
            .unresolved
            .iter()
            .all(|u| !u.reason.is_empty() && u.since.is_some())
    );
    h.apply(3, "/Project 3/", &["phantom"]).await;
    assert_eq!(h.metric("smrtshare_access_unresolved_members"), 3.0);

    // ghost leaves the project: the list shrinks.
    let answer = h.apply(2, "/Project 2/", &["alice"]).await;
    assert!(answer.complete);
    assert!(h.project(2).await.unresolved.is_empty());
    assert!(h.revoke(3, false).await.complete);
    assert_eq!(h.metric("smrtshare_access_unresolved_members"), 0.0);
}

async fn a_member_is_invited_once_per_project(backend: Backend) {
    let mut options = Options::default();
    let table = LoginMapping::parse_table(
        "alice alice@example.edu alice.smith@lab.example.edu\nbob bob@example.edu\n",
    )
    .expect("table");
    options.mapping = LoginMapping::new(Some(DOMAIN), table).expect("mapping");
    options.policy.invitations = Some(Invitations {
        message: "{sharer} shared {path} (project {project_id}) with {login}".into(),
        sharer: "The Core".into(),
    });
    let h = Harness::start_with(backend, options).await;
    let answer = h.apply(2, "/Project 2: Tomato/", &["alice", "bob"]).await;
    assert!(answer.members[0].invited, "{answer:?}");
    assert!(!answer.members[1].invited, "bob has no email: {answer:?}");
    let sent = h.standin.invitations();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].email, "alice.smith@lab.example.edu");
    assert_eq!(
        sent[0].message.as_deref(),
        Some("The Core shared /Project 2: Tomato/ (project 2) with alice")
    );
    assert_eq!(
        Some(sent[0].rule_id.clone()),
        h.rule_of("alice", "/Project 2: Tomato/").and_then(|r| r.id)
    );

    // A rename, a revoke and a new grant, another project: one more invitation, for project 3.
    h.apply(2, "/Project 2: Heirloom/", &["alice", "bob"]).await;
    h.apply(2, "/Project 2: Heirloom/", &["bob"]).await;
    let back = h.apply(2, "/Project 2: Heirloom/", &["alice", "bob"]).await;
    assert!(!back.members[0].invited);
    h.apply(3, "/Project 3/", &["alice"]).await;
    let sent = h.standin.invitations();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].path, "/Project 3/");
    assert_eq!(h.metric("smrtshare_access_invitations_sent_total"), 2.0);
    assert_eq!(h.standin.counts().with_code(Kind::Create, "BadRequest"), 0);
}

both_backends!(
    provisioning_gives_newcomers_access_before_their_first_login,
    unresolved_members_are_listed_until_they_resolve,
    a_member_is_invited_once_per_project,
);
