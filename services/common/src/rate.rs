//! The one rate limiter of every client and stand-in (`governor`'s GCRA): a sustained rate with
//! a burst, waited for by clients and checked by stand-ins, plus a pause every caller honours
//! after the server answered 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::time::Instant;

/// A rate limit shared by every call of a client (or every request of a stand-in).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    limiter: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_second` sustained (0 or less: unlimited), `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let limiter = (per_second > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(burst);
            governor::RateLimiter::direct(quota)
        });
        Self {
            per_second,
            limiter,
            paused_until: Mutex::new(None),
        }
    }

    /// The configured rate (requests per second; 0 for unlimited).
    pub fn per_second(&self) -> f64 {
        self.per_second.max(0.0)
    }

    /// Waits for a slot (and for a pause to end).
    pub async fn acquire(&self) {
        loop {
            let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match paused {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }

    /// Takes a slot if one is free now; otherwise how long until one is.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            use governor::clock::Clock as _;
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    /// Holds every caller back for `duration` (after a 429).
    pub fn pause_for(&self, duration: Duration) {
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let until = Instant::now() + duration;
        *paused = Some(paused.map_or(until, |u| u.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(20.0, 2);
        let started = std::time::Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        // Two at once, then four at 20/s: at least 0.2 s.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(180), "{took:?}");
        assert!(limiter.try_acquire().is_err(), "no slot left at once");
        let unlimited = RateLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert!(unlimited.try_acquire().is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let limiter = RateLimiter::new(0.0, 1);
        limiter.pause_for(Duration::from_secs(3));
        let started = Instant::now();
        limiter.acquire().await;
        assert!(started.elapsed() >= Duration::from_secs(3));
    }
}
