//! Expiry and renewal on a paused tokio clock: the service, the stand-in and the renewal task
//! share one clock that moves only when the test advances it.

use std::time::{Duration, SystemTime};

use smrtshare_access::{Clock, RulePolicy};
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{Kind, StandInConfig};

use crate::support::{Harness, K, Options, expect, outcomes};

const DAY: Duration = Duration::from_secs(86_400);

/// Keeps tokio from advancing a paused clock by itself while the test waits on real I/O
/// (database, sockets): a blocking task in flight inhibits auto-advance. Time then moves only
/// through `tokio::time::advance`.
struct HoldTime(Option<std::sync::mpsc::Sender<()>>);

impl HoldTime {
    fn new() -> Self {
        let (release, held) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        Self(Some(release))
    }
}

impl Drop for HoldTime {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            let _ = release.send(());
        }
    }
}

/// Options for a service and a stand-in on the (paused) tokio clock: rules expire after 30
/// days and are renewed within 7 days of expiry by a task running every `interval`.
fn on_paused_clock(interval: Duration) -> Options {
    let (wall, at) = (SystemTime::now(), tokio::time::Instant::now());
    let defaults = Options::default();
    Options {
        clock: Clock::Tokio { wall, at },
        standin: StandInConfig {
            clock: smrtshare_globus_standin::Clock::Tokio { wall, at },
            ..defaults.standin.clone()
        },
        policy: RulePolicy {
            expiry: 30 * DAY,
            renew_before: 7 * DAY,
            renewal_interval: interval,
            renewal_first_delay: interval,
            ..defaults.policy.clone()
        },
        ..defaults
    }
}

async fn rules_are_renewed_before_they_lapse_while_the_member_stays(backend: Backend) {
    let _hold = HoldTime::new();
    let h = Harness::start_with(backend, on_paused_clock(DAY)).await;
    let mut status = h.access.status.clone();
    let p = "/Project 2: Tomato/";
    let applied = h.apply(2, p, &["alice", "bob"]).await;
    assert!(applied.complete);
    let first_expiry = h
        .rule_of("alice", p)
        .and_then(|r| r.expiration_date)
        .expect("expires");
    assert_eq!(
        (first_expiry - h.standin.now()).num_days(),
        29,
        "30 days less the seconds truncated"
    );

    // Day 1: the first pass finds nothing due.
    tokio::time::advance(DAY).await;
    let s = status
        .wait_for(|s| s.passes >= 1)
        .await
        .expect("status")
        .clone();
    assert_eq!(s.renewed, 0);
    let next = s.next_run.expect("next run published");
    assert_eq!(
        (next - h.standin.now()).num_hours(),
        24,
        "the next run is a day away: {next}"
    );

    // bob leaves the project; alice stays.
    let left = h.apply(2, p, &["alice"]).await;
    assert_eq!(
        outcomes(&left.members),
        expect(&[("alice", K::AlreadyGranted), ("bob", K::Revoked)])
    );

    // Day 24: alice's rule lapses in 6 days, inside the 7-day window: the pass renews it.
    h.standin.reset_counts();
    tokio::time::advance(23 * DAY).await;
    let s = status
        .wait_for(|s| s.passes >= 2)
        .await
        .expect("status")
        .clone();
    assert_eq!(s.renewed, 1, "{s:?}");
    let renewed = h
        .rule_of("alice", p)
        .and_then(|r| r.expiration_date)
        .expect("expires");
    let days = (renewed - h.standin.now()).num_days();
    assert!(
        (29..=30).contains(&days),
        "renewed for 30 days from now: {days}"
    );
    assert!(
        h.rule_of("bob", p).is_none(),
        "a member who left is not renewed"
    );
    let counts = h.standin.counts();
    assert_eq!(counts.succeeded(Kind::Update), 1, "{counts:?}");
    assert_eq!(
        counts.succeeded(Kind::Token),
        1,
        "the 48-hour token was replaced before use"
    );
    assert_eq!(
        counts.with_status(401),
        0,
        "never sent an expired token: {counts:?}"
    );
    let registry = h.registry_rules(2).await;
    assert_eq!(registry.len(), 1);
    let recorded = registry[0].expires_at.expect("expiry recorded");
    assert_eq!(recorded.seconds, renewed.timestamp());

    // Day 31: past the first expiry, alice still holds her rule (now good until day 54), and
    // the pass has nothing to do.
    tokio::time::advance(7 * DAY).await;
    let s = status
        .wait_for(|s| s.passes >= 3)
        .await
        .expect("status")
        .clone();
    assert_eq!(s.renewed, 1);
    assert!(h.standin.now() > first_expiry);
    assert!(h.rule_of("alice", p).is_some(), "renewed, so not lapsed");

    // Day 48: 6 days left again; the pass renews it a second time, and an apply then finds it
    // in sync.
    tokio::time::advance(17 * DAY).await;
    let s = status
        .wait_for(|s| s.passes >= 4)
        .await
        .expect("status")
        .clone();
    assert_eq!(s.renewed, 2, "{s:?}");
    h.standin.reset_counts();
    let applied = h.apply(2, p, &["alice"]).await;
    assert_eq!(
        outcomes(&applied.members),
        expect(&[("alice", K::AlreadyGranted)])
    );
    assert_eq!(h.standin.counts().writes(), 0);
}

async fn an_apply_renews_a_rule_near_its_expiry(backend: Backend) {
    let _hold = HoldTime::new();
    // The task would run only after 60 days: the apply has to renew.
    let h = Harness::start_with(backend, on_paused_clock(60 * DAY)).await;
    let p = "/Project 3/";
    h.apply(3, p, &["carol"]).await;
    tokio::time::advance(25 * DAY).await;
    h.standin.reset_counts();
    let applied = h.apply(3, p, &["carol"]).await;
    assert_eq!(outcomes(&applied.members), expect(&[("carol", K::Renewed)]));
    assert_eq!(h.standin.counts().succeeded(Kind::Update), 1);
    let expiry = h
        .rule_of("carol", p)
        .and_then(|r| r.expiration_date)
        .expect("expires");
    assert!((expiry - h.standin.now()).num_days() >= 29);

    // A rule that lapsed anyway (the service was down past its expiry) is made again by
    // Verify, reported as renewed.
    tokio::time::advance(31 * DAY).await;
    assert!(
        h.rule_of("carol", p).is_none(),
        "Globus deleted the expired rule"
    );
    let verified = h.verify(false).await;
    assert_eq!(verified.repairs.len(), 1, "{verified:?}");
    assert_eq!(
        verified.repairs[0].kind,
        smrtshare_api::access::v1::RepairKind::Renewed as i32
    );
    assert!(verified.repairs[0].done);
    assert!(h.rule_of("carol", p).is_some());
}

macro_rules! paused {
    ($($name:ident),* $(,)?) => {
        mod paused_sqlite {
            $(
                #[tokio::test(flavor = "current_thread", start_paused = true)]
                async fn $name() {
                    super::$name(smrtshare_common::db::Backend::Sqlite).await;
                }
            )*
        }
        mod paused_postgres {
            $(
                #[tokio::test(flavor = "current_thread", start_paused = true)]
                async fn $name() {
                    super::$name(smrtshare_common::db::Backend::Postgres).await;
                }
            )*
        }
    };
}

paused!(
    rules_are_renewed_before_they_lapse_while_the_member_stays,
    an_apply_renews_a_rule_near_its_expiry,
);
