//! A crash between Globus making a rule and the registry recording its id.
//!
//! The service runs in a runtime of its own; Globus makes the rule and holds the answer back;
//! the runtime is then shut down (every task dropped where it waits, as a killed process
//! leaves things). A new service on the same registry must end with one rule, adopted.

use std::time::Duration;

use smrtshare_access::registry::{Registry, RowState};
use smrtshare_access::{Access, Clock};
use smrtshare_api::access::v1 as pb;
use smrtshare_api::access::v1::access_client::AccessClient;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{Fault, FaultPlan, Kind, StandIn};
use smrtshare_testkit::TestDatabase;
use tokio::net::TcpListener;

use crate::support::{K, Options, config, eventually, expect, outcomes, start_access};
use smrtshare_testkit::both_backends;

async fn a_crash_after_the_create_ends_with_one_adopted_rule(backend: Backend) {
    smrtshare_common::telemetry::init_for_tests();
    let options = Options::default();
    let standin = StandIn::start(options.standin.clone())
        .await
        .expect("stand-in");
    let db = TestDatabase::new(backend).await.expect("database");
    let path = "/Project 2: Tomato/";
    let alice = standin.identity("alice@example.edu").expect("alice").id;

    // The doomed service, in its own runtime.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("non-blocking");
    let url = format!("http://{}", std_listener.local_addr().expect("address"));
    let doomed_config = config(&standin, &db.url, &options);
    doomed.spawn(async move {
        let listener = TcpListener::from_std(std_listener).expect("listener");
        let access = Access::start(doomed_config).await.expect("start");
        access.serve(listener, std::future::pending()).await
    });

    // Globus makes the rule, then holds the answer for a minute.
    standin.set_faults(FaultPlan::none().then(Kind::Create, Fault::SlowAnswer { millis: 60_000 }));
    let channel = tonic::transport::Channel::from_shared(url)
        .expect("url")
        .connect_lazy();
    crate::support::wait_serving(channel.clone()).await;
    let mut client = AccessClient::new(channel);
    let call = tokio::spawn(async move {
        client
            .apply_project_access(pb::ApplyProjectAccessRequest {
                project_id: 2,
                path: path.into(),
                logins: vec!["alice".into()],
                dry_run: false,
            })
            .await
    });
    assert!(
        eventually(Duration::from_secs(10), || {
            standin
                .rules(smrtshare_globus_standin::DEFAULT_ENDPOINT)
                .expect("endpoint")
                .iter()
                .any(|r| r.principal == alice && r.path == path)
        })
        .await,
        "globus made the rule"
    );

    // Crash.
    doomed.shutdown_background();
    let lost = call.await.expect("task");
    assert!(lost.is_err(), "the caller never got an answer: {lost:?}");

    // The registry holds an open intent without a rule id.
    let registry = Registry::open(&db.url, 2, Clock::System)
        .await
        .expect("registry");
    let pending = registry
        .rows_in_state(RowState::Pending)
        .await
        .expect("rows");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].access_id, None);
    assert_eq!(pending[0].identity_id, alice);
    let made = standin
        .rules(smrtshare_globus_standin::DEFAULT_ENDPOINT)
        .expect("endpoint")
        .into_iter()
        .find(|r| r.principal == alice)
        .and_then(|r| r.id)
        .expect("the rule globus made");

    // A new service on the same registry: the next apply adopts instead of creating.
    standin.clear_faults();
    let restarted = start_access(config(&standin, &db.url, &options)).await;
    standin.reset_counts();
    let answer = restarted
        .client
        .clone()
        .apply_project_access(pb::ApplyProjectAccessRequest {
            project_id: 2,
            path: path.into(),
            logins: vec!["alice".into()],
            dry_run: false,
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(outcomes(&answer.members), expect(&[("alice", K::Granted)]));
    assert_eq!(answer.members[0].access_id, made);
    assert!(
        answer.members[0].message.contains("adopted"),
        "{:?}",
        answer.members[0]
    );
    let counts = standin.counts();
    assert_eq!(
        counts.requests(Kind::Create),
        0,
        "adopted, not created twice: {counts:?}"
    );
    assert_eq!(counts.requests(Kind::List), 1);
    let rules: Vec<_> = standin
        .rules(smrtshare_globus_standin::DEFAULT_ENDPOINT)
        .expect("endpoint")
        .into_iter()
        .filter(|r| r.principal == alice)
        .collect();
    assert_eq!(rules.len(), 1, "one rule: {rules:?}");
    let active = registry
        .rows_in_state(RowState::Active)
        .await
        .expect("rows");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].access_id.as_deref(), Some(made.as_str()));
    restarted.stop().await;
}

both_backends!(a_crash_after_the_create_ends_with_one_adopted_rule);
