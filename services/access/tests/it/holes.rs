//! Holes found in review (issue 17, item 4), each closed: odd answers from Globus, odd requests.

use std::time::Duration;

use smrtshare_common::db::Backend;
use smrtshare_globus_standin::Kind;

use crate::support::{Harness, K, Options, expect, outcomes};
use smrtshare_testkit::both_backends;

/// Globus Auth answering an absurd `expires_in` (here u64::MAX seconds) is believed only up to
/// ten years; the token is used, nothing panics.
async fn a_huge_token_lifetime_is_clamped(backend: Backend) {
    let mut options = Options::default();
    options.standin.token_lifetime = Duration::from_secs(u64::MAX);
    // Before the clamp, the token fetch panicked and health never turned SERVING.
    let h = tokio::time::timeout(
        Duration::from_secs(30),
        Harness::start_with(backend, options),
    )
    .await
    .expect("serving");
    let answer = h.apply(2, "/Project 2/", &["alice"]).await;
    assert_eq!(outcomes(&answer.members), expect(&[("alice", K::Granted)]));
    assert_eq!(h.standin.counts().requests(Kind::Token), 0, "token reused");
}

/// Staging's private area under the collection root is never granted.
async fn a_path_under_the_private_area_is_refused(backend: Backend) {
    let h = Harness::start(backend).await;
    for path in ["/.smrtshare/", "/.smrtshare/work/Project 2/"] {
        let status = h
            .try_apply(2, path, &["alice"], false)
            .await
            .expect_err(path);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("path:"), "{status:?}");
    }
    assert!(h.globus_rules().is_empty());
    assert_eq!(h.standin.counts().total(), 0);
}

/// A 10 MB path comes back as a short message naming its size, not whole.
async fn a_huge_value_is_not_echoed_whole(backend: Backend) {
    let h = Harness::start(backend).await;
    let huge = format!("/{}", "p".repeat(10 << 20));
    let status = h
        .try_apply(2, &huge, &["alice"], false)
        .await
        .expect_err("no closing slash");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().len() < 300,
        "{} bytes echoed",
        status.message().len()
    );
    assert!(status.message().contains("10485761 bytes"), "{status:?}");
}

/// Bad logins are failed members of their own; the other members are granted and a member no
/// longer listed is still revoked.
async fn a_bad_login_fails_alone(backend: Backend) {
    let h = Harness::start(backend).await;
    h.apply(2, "/Project 2/", &["carol"]).await;
    let long = "x".repeat(300);
    let answer = h
        .apply(
            2,
            "/Project 2/",
            &["alice", "", "b,c", &long, "bob", "alice"],
        )
        .await;
    assert!(!answer.complete);
    let kinds: Vec<K> = outcomes(&answer.members)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            K::Granted,
            K::Failed,
            K::Failed,
            K::Failed,
            K::Granted,
            K::AlreadyGranted,
            K::Revoked
        ]
    );
    for bad in &answer.members[1..4] {
        assert_eq!(bad.globus_code, "InvalidLogin", "{bad:?}");
        assert!(bad.permanent, "{bad:?}");
        assert!(bad.login.len() <= 256 && bad.message.len() < 300, "{bad:?}");
    }
    assert!(answer.members[5].message.contains("listed twice"));
    assert_eq!(answer.members[6].login, "carol");
    let held: Vec<String> = h
        .registry_rules(2)
        .await
        .into_iter()
        .map(|r| r.login)
        .collect();
    assert_eq!(held, ["alice", "bob"]);
    assert!(h.rule_of("carol", "/Project 2/").is_none());
}

both_backends!(
    a_huge_token_lifetime_is_clamped,
    a_path_under_the_private_area_is_refused,
    a_huge_value_is_not_echoed_whole,
    a_bad_login_fails_alone,
);
