//! Keeping within Globus' limits: a client-side rate limiter (so 429 is not provoked), the
//! retry policy (capped exponential backoff with full jitter, `Retry-After` honoured) and
//! `Retry-After` parsing.

use std::time::Duration;

use rand::Rng as _;
use smrtshare_common::retry::Backoff;

pub use smrtshare_common::rate::RateLimiter;

/// How failed calls are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff after the first failure (doubled after each further one).
    pub base: Duration,
    /// Largest backoff.
    pub cap: Duration,
    /// Largest `Retry-After` honoured; longer ones are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1-based): the answer's `Retry-After` (capped)
    /// plus a little jitter when there is one, else full jitter over the capped exponential.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => {
                let jitter_ms = rand::rng().random_range(0..=duration_ms(self.base).max(1) / 4);
                wait.min(self.max_retry_after) + Duration::from_millis(jitter_ms)
            }
            None => Backoff::new(self.base, self.cap).delay(attempt),
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A `Retry-After` header value: delay seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(800),
            max_retry_after: Duration::from_secs(5),
        };
        for attempt in 1..=12 {
            let ceiling = (100u64 << (attempt - 1).min(20)).min(800);
            for _ in 0..50 {
                let d = policy.delay(attempt, None);
                assert!(d <= Duration::from_millis(ceiling), "{attempt}: {d:?}");
            }
        }
        let d = policy.delay(1, Some(Duration::from_secs(2)));
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_millis(2025),
            "{d:?}"
        );
        let d = policy.delay(1, Some(Duration::from_secs(600)));
        assert!(
            d >= Duration::from_secs(5) && d <= Duration::from_millis(5025),
            "{d:?}"
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("date")
            .to_utc();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
