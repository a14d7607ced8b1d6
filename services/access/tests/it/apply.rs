//! Apply, revoke and read: the in-sync path, foreign rules, renames, unknown logins, concurrency
//! and bad input.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use smrtshare_access::globus::identities::LoginMapping;
use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{DEFAULT_ENDPOINT, Fault, FaultPlan, Kind, NewRule};
use tokio_stream::StreamExt as _;

use crate::support::{Harness, K, Options, expect, outcomes};
use smrtshare_testkit::both_backends;

const PATH: &str = "/Project 2: Tomato/";

async fn apply_twice_makes_no_globus_calls_the_second_time(backend: Backend) {
    let h = Harness::start(backend).await;
    let first = h.apply(2, PATH, &["alice", "bob", "carol"]).await;
    assert_eq!(
        outcomes(&first.members),
        expect(&[
            ("alice", K::Granted),
            ("bob", K::Granted),
            ("carol", K::Granted)
        ])
    );
    assert!(first.complete);
    let counts = h.standin.counts();
    assert_eq!(counts.succeeded(Kind::Create), 3, "{counts:?}");
    assert_eq!(
        counts.requests(Kind::Identities),
        1,
        "one batched look-up: {counts:?}"
    );

    // At Globus: one read-only rule per member on the path, expiring in about 90 days.
    let rules = h.our_rules();
    assert_eq!(rules.len(), 3);
    for login in ["alice", "bob", "carol"] {
        let rule = h.rule_of(login, PATH).expect("rule at globus");
        assert_eq!(rule.permissions, "r");
        assert_eq!(rule.principal_type, "identity");
        let expiry = rule.expiration_date.expect("rules expire");
        let days = (expiry - h.standin.now()).num_days();
        assert!((89..=90).contains(&days), "{login} expires in {days} days");
        let answered = first
            .members
            .iter()
            .find(|m| m.login == login)
            .expect("outcome");
        assert_eq!(Some(answered.access_id.clone()), rule.id);
        assert_eq!(answered.identity_id, h.identity(login));
    }

    // The registry agrees, through GetProjectAccess and ListRules.
    let registry = h.registry_rules(2).await;
    assert_eq!(registry.len(), 3);
    for rule in &registry {
        assert_eq!(rule.state, pb::RuleState::Active as i32);
        assert_eq!(rule.path, PATH);
        assert_eq!(rule.username, format!("{}@example.edu", rule.login));
        assert!(rule.expires_at.is_some());
        assert!(
            h.globus_rules()
                .iter()
                .any(|g| g.id.as_deref() == Some(rule.access_id.as_str()))
        );
    }
    let streamed: Vec<pb::Rule> = h
        .client()
        .list_rules(pb::ListRulesRequest { project_id: 0 })
        .await
        .expect("list")
        .into_inner()
        .map(|r| r.expect("item").rule.expect("rule"))
        .collect()
        .await;
    assert_eq!(
        streamed, registry,
        "ListRules streams the same rows, ordered by login"
    );

    // The second apply: nothing to do, and not a single request reaches Globus.
    h.standin.reset_counts();
    let second = h.apply(2, PATH, &["alice", "bob", "carol"]).await;
    assert_eq!(
        outcomes(&second.members),
        expect(&[
            ("alice", K::AlreadyGranted),
            ("bob", K::AlreadyGranted),
            ("carol", K::AlreadyGranted)
        ])
    );
    assert!(second.complete);
    let counts = h.standin.counts();
    assert_eq!(counts.writes(), 0, "{counts:?}");
    assert_eq!(
        counts.total(),
        0,
        "an in-sync apply calls Globus not at all: {counts:?}"
    );

    // Removing a member revokes only that member's rule; a dry run first changes nothing.
    let plan = h
        .try_apply(2, PATH, &["alice", "carol"], true)
        .await
        .expect("dry run");
    assert_eq!(
        outcomes(&plan.members),
        expect(&[
            ("alice", K::AlreadyGranted),
            ("carol", K::AlreadyGranted),
            ("bob", K::Revoked)
        ])
    );
    assert_eq!(h.standin.counts().total(), 0);
    assert_eq!(h.our_rules().len(), 3);
    let third = h.apply(2, PATH, &["alice", "carol"]).await;
    assert_eq!(
        outcomes(&third.members),
        expect(&[
            ("alice", K::AlreadyGranted),
            ("carol", K::AlreadyGranted),
            ("bob", K::Revoked)
        ])
    );
    assert!(h.rule_of("bob", PATH).is_none());
    assert_eq!(h.standin.counts().succeeded(Kind::Delete), 1);
    assert_eq!(h.registry_rules(2).await.len(), 2);
}

async fn foreign_rules_on_the_path_survive_apply_revoke_and_verify(backend: Backend) {
    let h = Harness::start(backend).await;
    // Someone at the web interface shares the directory with a collaborator, and also grants
    // bob (a member) the same access smrtshare would; a role grants an access manager "/".
    let outsider = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    let collaborator = h
        .standin
        .add_foreign_rule(DEFAULT_ENDPOINT, NewRule::identity_read(outsider, PATH))
        .expect("foreign rule");
    let bobs_own = h
        .standin
        .add_foreign_rule(
            DEFAULT_ENDPOINT,
            NewRule::identity_read(&h.identity("bob"), PATH),
        )
        .expect("foreign rule for bob");
    h.standin
        .add_role_rule(
            DEFAULT_ENDPOINT,
            NewRule::identity_read("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "/"),
            "access_manager",
        )
        .expect("role rule");
    let foreign_ids = BTreeSet::from([collaborator.clone(), bobs_own.clone()]);
    let surviving = |h: &Harness| -> BTreeSet<String> {
        h.globus_rules()
            .into_iter()
            .filter_map(|r| r.id)
            .filter(|id| foreign_ids.contains(id))
            .collect()
    };

    let applied = h.apply(2, PATH, &["alice", "bob"]).await;
    assert_eq!(
        outcomes(&applied.members),
        expect(&[("alice", K::Granted), ("bob", K::AlreadyGranted)])
    );
    assert!(applied.complete);
    let bob = &applied.members[1];
    assert_eq!(bob.access_id, bobs_own);
    assert!(bob.message.contains("did not create"), "{}", bob.message);
    assert_eq!(surviving(&h), foreign_ids);
    let registry = h.registry_rules(2).await;
    let bob_row = registry
        .iter()
        .find(|r| r.login == "bob")
        .expect("bob's record");
    assert_eq!(bob_row.state, pb::RuleState::External as i32);

    // Applying again: no Globus call, nothing touched.
    h.standin.reset_counts();
    let again = h.apply(2, PATH, &["alice", "bob"]).await;
    assert!(again.complete);
    assert_eq!(h.standin.counts().total(), 0);

    // Verify counts the two rules with ids that smrtshare did not create, repairs nothing.
    let verified = h.verify(false).await;
    assert_eq!(verified.checked, 2);
    assert_eq!(verified.foreign, 2, "{verified:?}");
    assert!(verified.repairs.is_empty(), "{:?}", verified.repairs);
    assert_eq!(surviving(&h), foreign_ids);

    // bob leaves: his own rule is not smrtshare's to delete.
    let without_bob = h.apply(2, PATH, &["alice"]).await;
    assert_eq!(
        outcomes(&without_bob.members),
        expect(&[("alice", K::AlreadyGranted), ("bob", K::Revoked)])
    );
    assert!(without_bob.members[1].message.contains("left in place"));
    assert_eq!(h.standin.counts().requests(Kind::Delete), 0);
    assert_eq!(surviving(&h), foreign_ids);

    // Revoking the project deletes alice's rule and nothing else.
    let revoked = h.revoke(2, false).await;
    assert_eq!(outcomes(&revoked.members), expect(&[("alice", K::Revoked)]));
    assert!(revoked.complete);
    assert!(h.rule_of("alice", PATH).is_none());
    assert_eq!(surviving(&h), foreign_ids);
    assert_eq!(h.standin.counts().succeeded(Kind::Delete), 1);
    let verified = h.verify(false).await;
    assert_eq!((verified.checked, verified.foreign), (0, 2));
    assert!(verified.repairs.is_empty());
    assert_eq!(surviving(&h), foreign_ids);
    // The role rule is still listed (with no id) and never counted.
    let all = h.standin.rules(DEFAULT_ENDPOINT).expect("endpoint");
    assert_eq!(
        all.iter().filter(|r| r.id.is_none()).count(),
        2,
        "two role rules: the client's and the added one"
    );
}

async fn renamed_project_moves_its_rules(backend: Backend) {
    let h = Harness::start(backend).await;
    let old = "/Project 2: Old name/";
    let new = "/Project 2: New name/";
    h.apply(2, old, &["alice", "bob"]).await;
    let before: Vec<String> = h.our_rules().into_iter().filter_map(|r| r.id).collect();

    h.standin.reset_counts();
    let plan = h
        .try_apply(2, new, &["alice", "bob"], true)
        .await
        .expect("dry run");
    assert_eq!(
        outcomes(&plan.members),
        expect(&[("alice", K::Moved), ("bob", K::Moved)])
    );
    assert!(plan.dry_run);
    assert_eq!(
        h.standin.counts().total(),
        0,
        "a dry run of a rename calls nothing"
    );

    let moved = h.apply(2, new, &["alice", "bob"]).await;
    assert_eq!(
        outcomes(&moved.members),
        expect(&[("alice", K::Moved), ("bob", K::Moved)])
    );
    assert!(moved.complete);
    assert!(
        moved.members[0].message.contains(old),
        "{}",
        moved.members[0].message
    );
    let rules = h.our_rules();
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.path == new), "{rules:?}");
    assert!(
        rules
            .iter()
            .all(|r| !before.contains(r.id.as_ref().expect("id")))
    );
    let counts = h.standin.counts();
    assert_eq!(
        (
            counts.succeeded(Kind::Create),
            counts.succeeded(Kind::Delete)
        ),
        (2, 2)
    );
    let registry = h.registry_rules(2).await;
    assert!(registry.iter().all(|r| r.path == new) && registry.len() == 2);

    // And the new path is in sync.
    h.standin.reset_counts();
    let again = h.apply(2, new, &["alice", "bob"]).await;
    assert_eq!(
        outcomes(&again.members),
        expect(&[("alice", K::AlreadyGranted), ("bob", K::AlreadyGranted)])
    );
    assert_eq!(h.standin.counts().total(), 0);
}

async fn unknown_logins_are_reported_and_the_others_granted(backend: Backend) {
    let h = Harness::start(backend).await;
    let applied = h.apply(3, "/Project 3/", &["alice", "nobody", "bob"]).await;
    assert_eq!(
        outcomes(&applied.members),
        expect(&[
            ("alice", K::Granted),
            ("nobody", K::UnknownIdentity),
            ("bob", K::Granted)
        ])
    );
    assert!(
        !applied.complete,
        "a member without a rule leaves the project incomplete"
    );
    assert!(
        applied.members[1].message.contains("nobody@example.edu"),
        "{}",
        applied.members[1].message
    );
    assert_eq!(h.our_rules().len(), 2);

    // The unknown answer is cached: applying again asks Globus nothing.
    h.standin.reset_counts();
    let again = h.apply(3, "/Project 3/", &["alice", "nobody", "bob"]).await;
    assert_eq!(again.members[1].outcome, K::UnknownIdentity as i32);
    assert_eq!(h.standin.counts().total(), 0);

    // The identity appears at Globus: a fresh service (fresh cache) grants it.
    h.standin.add_identity("nobody@example.edu");
    let fresh =
        crate::support::start_access(crate::support::config(&h.standin, &h.db.url, &h.options))
            .await;
    let granted = fresh
        .client
        .clone()
        .apply_project_access(pb::ApplyProjectAccessRequest {
            project_id: 3,
            path: "/Project 3/".into(),
            logins: vec!["alice".into(), "nobody".into(), "bob".into()],
            dry_run: false,
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(
        outcomes(&granted.members),
        expect(&[
            ("alice", K::AlreadyGranted),
            ("nobody", K::Granted),
            ("bob", K::AlreadyGranted)
        ])
    );
    assert!(granted.complete);
    fresh.stop().await;
}

async fn logins_map_through_the_table_and_the_domain(backend: Backend) {
    let table = LoginMapping::parse_table("smith alice@example.edu\ncarla carol@example.edu\n")
        .expect("table");
    let options = Options {
        mapping: LoginMapping::new(None, table).expect("mapping"),
        ..Options::default()
    };
    let h = Harness::start_with(backend, options).await;
    let applied = h
        .apply(
            4,
            "/Project 4/",
            &["smith", "carla", "dave", "bob@example.edu"],
        )
        .await;
    assert_eq!(
        outcomes(&applied.members),
        expect(&[
            ("smith", K::Granted),
            ("carla", K::Granted),
            ("dave", K::UnknownIdentity),
            ("bob@example.edu", K::Granted)
        ])
    );
    assert!(
        applied.members[2].message.contains("login table"),
        "{}",
        applied.members[2].message
    );
    assert!(h.rule_of("alice", "/Project 4/").is_some());
    assert!(h.rule_of("carol", "/Project 4/").is_some());
    assert!(h.rule_of("bob", "/Project 4/").is_some());
}

async fn projects_apply_in_parallel_and_one_project_in_turn(backend: Backend) {
    let h = Harness::start(backend).await;
    // Every create takes 150 ms at Globus.
    h.standin.set_faults(
        FaultPlan::mixed(1.0, &[(Fault::Slow { millis: 150 }, 1)]).only(&[Kind::Create]),
    );

    // Six projects of two members at once: served in parallel.
    let started = Instant::now();
    let applies = (10..16).map(|project| {
        let h = &h;
        async move {
            let path = format!("/Project {project}/");
            h.apply(project, &path, &["alice", "bob"]).await
        }
    });
    let answers = futures::future::join_all(applies).await;
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|a| a.complete));
    assert_eq!(h.our_rules().len(), 12);
    let peak = h.standin.counts().peak_in_flight;
    assert!(
        peak >= 4,
        "creates of different projects overlap (peak {peak} in flight)"
    );
    assert!(
        elapsed < Duration::from_millis(12 * 150),
        "took {elapsed:?}: not parallel"
    );

    // The same project twice at once: the second waits for the first and finds everything done.
    h.standin.reset_counts();
    let same = || h.apply(20, "/Project 20/", &["alice", "bob", "carol"]);
    let (a, b) = tokio::join!(same(), same());
    let mut kinds: Vec<Vec<(String, K)>> = vec![outcomes(&a.members), outcomes(&b.members)];
    kinds.sort_by_key(|k| k[0].1 as i32);
    assert_eq!(
        kinds,
        vec![
            expect(&[
                ("alice", K::Granted),
                ("bob", K::Granted),
                ("carol", K::Granted)
            ]),
            expect(&[
                ("alice", K::AlreadyGranted),
                ("bob", K::AlreadyGranted),
                ("carol", K::AlreadyGranted)
            ]),
        ]
    );
    assert_eq!(
        h.standin.counts().requests(Kind::Create),
        3,
        "no create was sent twice"
    );
    assert_eq!(
        h.our_rules()
            .iter()
            .filter(|r| r.path == "/Project 20/")
            .count(),
        3
    );
}

both_backends!(
    apply_twice_makes_no_globus_calls_the_second_time,
    foreign_rules_on_the_path_survive_apply_revoke_and_verify,
    renamed_project_moves_its_rules,
    unknown_logins_are_reported_and_the_others_granted,
    logins_map_through_the_table_and_the_domain,
    projects_apply_in_parallel_and_one_project_in_turn,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let h = Harness::start(Backend::Sqlite).await;
    let refused = |project: i64, path: &str, logins: Vec<String>| {
        let h = &h;
        let path = path.to_owned();
        async move {
            let status = h
                .client()
                .apply_project_access(pb::ApplyProjectAccessRequest {
                    project_id: project,
                    path,
                    logins,
                    dry_run: false,
                })
                .await
                .expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            status.message().to_owned()
        }
    };
    let ok = vec!["alice".to_owned()];
    assert!(
        refused(1, "/General/", ok.clone())
            .await
            .starts_with("project_id:")
    );
    assert!(
        refused(0, "/x/", ok.clone())
            .await
            .starts_with("project_id:")
    );
    for path in [
        "Project 2/",
        "/Project 2",
        "/",
        "/a/../b/",
        "/../",
        "/a//b/",
        "/a\0b/",
        "",
    ] {
        let message = refused(2, path, ok.clone()).await;
        assert!(message.starts_with("path:"), "{path:?}: {message}");
    }
    // A bad login is a member's outcome, not an error (see holes.rs); too many logins is.
    let message = refused(2, "/P/", (0..1001).map(|i| format!("u{i}")).collect()).await;
    assert!(message.starts_with("logins:"), "{message}");
    let status = h
        .client()
        .revoke_project_access(pb::RevokeProjectAccessRequest {
            project_id: 1,
            dry_run: false,
        })
        .await
        .expect_err("project 1");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = h
        .client()
        .get_project_access(pb::GetProjectAccessRequest { project_id: -4 })
        .await
        .expect_err("negative");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Nothing reached Globus.
    assert_eq!(h.standin.counts().total(), 0);
    assert!(h.our_rules().is_empty());
}
