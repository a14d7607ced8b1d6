//! Keeping within Globus' limits: a client-side rate limiter (so 429 is not provoked), the
//! retry policy (capped exponential backoff with full jitter, `Retry-After` honoured) and
//! `Retry-After` parsing.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

/// A token bucket shared by every Globus call. Callers reserve a slot and sleep until it comes,
/// so waiters are served in turn at the configured rate; a 429 pauses every caller.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// `per_second` sustained (0 or less: unlimited), `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// The configured rate (requests per second; 0 for unlimited).
    pub fn per_second(&self) -> f64 {
        self.per_second.max(0.0)
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        if self.per_second <= 0.0 {
            return;
        }
        loop {
            let (pause, wait) = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                if let Some(until) = state.paused_until.filter(|u| *u > now) {
                    (Some(until - now), None)
                } else {
                    state.paused_until = None;
                    let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
                    state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
                    state.last = now;
                    state.tokens -= 1.0;
                    let wait = (state.tokens < 0.0)
                        .then(|| Duration::from_secs_f64(-state.tokens / self.per_second));
                    (None, wait)
                }
            };
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
                continue;
            }
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            return;
        }
    }

    /// Holds every caller back for `duration` (after a 429).
    pub fn pause_for(&self, duration: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = Instant::now() + duration;
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
    }
}

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
        let mut rng = rand::rng();
        match retry_after {
            Some(wait) => {
                let jitter_ms = rng.random_range(0..=duration_ms(self.base).max(1) / 4);
                wait.min(self.max_retry_after) + Duration::from_millis(jitter_ms)
            }
            None => {
                let exponent = attempt.saturating_sub(1).min(20);
                let ceiling = self.base.saturating_mul(1u32 << exponent).min(self.cap);
                Duration::from_millis(rng.random_range(0..=duration_ms(ceiling)))
            }
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

    #[tokio::test(start_paused = true)]
    async fn the_limiter_paces_callers_at_the_rate() {
        let limiter = RateLimiter::new(10.0, 2);
        let start = Instant::now();
        for _ in 0..12 {
            limiter.acquire().await;
        }
        // Two at once, then ten more at 100 ms each.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1000) && elapsed < Duration::from_millis(1100),
            "{elapsed:?}"
        );
        limiter.pause_for(Duration::from_secs(3));
        let before = Instant::now();
        limiter.acquire().await;
        assert!(before.elapsed() >= Duration::from_secs(3));
    }
}
