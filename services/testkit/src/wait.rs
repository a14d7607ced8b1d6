//! Polling until something holds, with a deadline (on tokio's clock, so a paused clock moves
//! through the waits).

use std::future::Future;
use std::time::Duration;

/// Polls `cond` every 25 ms until it holds.
///
/// # Panics
/// When it still does not hold after `within`, naming `what` was awaited.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls the async `cond` every 50 ms until it holds.
///
/// # Panics
/// When it still does not hold after `within`, naming `what` was awaited.
pub async fn eventually_async<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 10 ms for at most `within`; answers whether it came to hold. For tests
/// that check something does *not* happen, or take another path when it does not.
pub async fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_until_it_holds_and_answers_false_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let mut polls = 0;
        assert!(
            poll_until(Duration::from_secs(1), || {
                polls += 1;
                polls == 3
            })
            .await
        );
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert!(!poll_until(Duration::from_millis(100), || false).await);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out waiting for the answer")]
    async fn eventually_names_what_never_came() {
        eventually(Duration::from_millis(100), "the answer", || false).await;
    }
}
