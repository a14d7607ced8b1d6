//! The one retry backoff of every client and worker: exponential steps from `base`, doubling,
//! capped at `cap` (the steps come from `backon`), with full jitter over each step, so that
//! callers that failed together do not come back together.

use std::time::Duration;

use backon::BackoffBuilder as _;

/// Capped exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The largest step.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff from `base` to `cap` (a `cap` below `base` is raised to it).
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: if cap.as_nanos() > base.as_nanos() {
                cap
            } else {
                base
            },
        }
    }

    /// The step after failure number `failures` (1-based): `min(cap, base * 2^(failures-1))`.
    pub fn step(&self, failures: u32) -> Duration {
        let steps = backon::ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .without_max_times()
            .build();
        steps
            .take(usize::try_from(failures.clamp(1, 64)).unwrap_or(64))
            .last()
            .unwrap_or(self.base)
            .min(self.cap)
    }

    /// The pause after failure number `failures`: uniform in `[0, step(failures)]`.
    pub fn delay(&self, failures: u32) -> Duration {
        let step = u64::try_from(self.step(failures).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::random_range(0..=step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_and_pauses_spread_under_them() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<u128> = (1..=6).map(|n| b.step(n).as_millis()).collect();
        assert_eq!(steps, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.step(0).as_millis(), 100);
        assert_eq!(b.step(u32::MAX), Duration::from_secs(1));
        for n in 1..30 {
            assert!(b.delay(n) <= b.step(n));
        }
        let spread: std::collections::HashSet<u128> =
            (0..50).map(|_| b.delay(10).as_millis()).collect();
        assert!(spread.len() > 10, "full jitter spreads retries: {spread:?}");
        assert_eq!(
            Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).cap,
            Duration::from_secs(2)
        );
    }
}
