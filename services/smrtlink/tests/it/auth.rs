//! Login, refresh, re-login, concurrency, refusals; secrets stay out of messages.

use smrtshare_smrtlink::{AuthStats, Error, SmrtLinkClient};
use smrtshare_smrtlink_standin::Endpoint;

use crate::support::{PASSWORD, USER, fixture};

#[tokio::test]
async fn expired_token_is_refreshed_once_then_a_fresh_login_follows() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    client.get_project(2).await.unwrap().unwrap();
    assert_eq!(fx.standin.count(Endpoint::Login), 1);
    assert_eq!(
        client.auth_stats(),
        AuthStats {
            logins: 1,
            refreshes: 0
        }
    );

    // Access token expired at SMRT Link: 401, refresh grant, call repeated.
    fx.standin.expire_tokens(false);
    client.get_project(2).await.unwrap().unwrap();
    let counters = fx.standin.counters();
    assert_eq!(counters.get(Endpoint::Refresh), 1);
    assert_eq!(counters.get(Endpoint::Login), 1);
    assert_eq!(counters.unauthorized, 1);
    assert_eq!(counters.get(Endpoint::GetProject), 3);
    assert_eq!(
        client.auth_stats(),
        AuthStats {
            logins: 1,
            refreshes: 1
        }
    );

    // Refresh token expired as well: the refresh is refused, a fresh login follows.
    fx.standin.expire_tokens(true);
    assert_eq!(client.list_projects().await.unwrap().len(), 2);
    let counters = fx.standin.counters();
    assert_eq!(counters.get(Endpoint::Refresh), 2);
    assert_eq!(counters.get(Endpoint::Login), 2);
    assert_eq!(counters.unauthorized, 2);
    assert_eq!(
        client.auth_stats(),
        AuthStats {
            logins: 2,
            refreshes: 1
        }
    );

    // And the token is reused after that.
    client.list_projects().await.unwrap();
    assert_eq!(fx.standin.count(Endpoint::Login), 2);
}

#[tokio::test]
async fn concurrent_calls_share_one_login_and_one_refresh() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let calls = (0..16).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.get_project(2).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert!(call.await.unwrap().unwrap().is_some());
    }
    assert_eq!(fx.standin.count(Endpoint::Login), 1);

    fx.standin.expire_tokens(false);
    let calls = (0..16).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.list_projects().await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap().unwrap().len(), 2);
    }
    assert_eq!(
        fx.standin.count(Endpoint::Refresh),
        1,
        "one refresh for all callers"
    );
    assert_eq!(fx.standin.count(Endpoint::Login), 1);
}

#[tokio::test]
async fn refused_credentials_are_an_auth_error_without_retry_or_secret() {
    let Some(fx) = fixture().await else { return };
    let wrong = "wrong-pw-3b9e77";
    let client = SmrtLinkClient::new(fx.standin.client_config(USER, wrong)).unwrap();
    let error = client.list_projects().await.unwrap_err();
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(fx.standin.count(Endpoint::Login), 1, "4xx is never retried");
    assert_eq!(fx.standin.count(Endpoint::ListProjects), 0);
    let text = format!("{error} {error:?}");
    assert!(!text.contains(wrong), "{text}");
    assert!(text.contains("Invalid user credentials"), "{text}");

    // Neither the configuration nor a working client prints a secret or token.
    let config = fx.standin.client_config(USER, PASSWORD);
    let good = SmrtLinkClient::new(config.clone()).unwrap();
    good.login().await.unwrap();
    let printed = format!("{config:?} {good:?}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(printed.contains("[redacted]"));
}

#[tokio::test]
async fn calls_without_a_valid_token_or_user_header_are_refused_by_the_standin() {
    let Some(fx) = fixture().await else { return };
    let http = reqwest::Client::new();
    let url = format!("{}/smrt-link/projects", fx.standin.api_url());

    let none = http
        .get(&url)
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let bogus = http
        .get(&url)
        .bearer_auth("bogus")
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 401);

    let token: serde_json::Value = http
        .post(fx.standin.url().join("token").unwrap())
        .form(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    assert!(token["expires_in"].as_u64().unwrap() > 0);
    assert!(token["refresh_token"].is_string());

    let no_user = http.get(&url).bearer_auth(access).send().await.unwrap();
    assert_eq!(no_user.status(), 400);
    let ok = http
        .get(&url)
        .bearer_auth(access)
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // The token is refused again once it expires.
    fx.standin.expire_tokens(false);
    let expired = http
        .get(&url)
        .bearer_auth(access)
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    assert_eq!(fx.standin.counters().unauthorized, 3);
}

#[tokio::test]
async fn tokens_expire_by_themselves_and_are_refreshed_before_they_do() {
    let Some(fx) =
        crate::support::fixture_with(|o| o.token_ttl = std::time::Duration::from_secs(1)).await
    else {
        return;
    };
    let client = fx.client();
    client.list_projects().await.unwrap();

    // A raw caller that keeps the token past its lifetime is refused.
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(fx.standin.url().join("token").unwrap())
        .form(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["expires_in"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = http
        .get(format!("{}/smrt-link/projects", fx.standin.api_url()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 401);

    // The client renewed ahead of expiry (from expires_in): no 401 for it.
    let before = fx.standin.counters().unauthorized;
    client.list_projects().await.unwrap();
    assert_eq!(fx.standin.counters().unauthorized, before);
    assert_eq!(
        client.auth_stats(),
        AuthStats {
            logins: 1,
            refreshes: 1
        }
    );
}
