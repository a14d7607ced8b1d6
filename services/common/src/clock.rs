//! "Now", as every service sees it. Production uses the system clock; tests use a manual clock
//! they move themselves, or one that follows tokio's (paused) clock, so leases, expiry, backoff
//! and renewal are tested without waiting and without racing real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Epoch milliseconds that stand still until [`Clock::advance`] moves them.
    Manual(Arc<AtomicI64>),
    /// `wall` at tokio instant `at`, advancing with the tokio clock (paused or not).
    Tokio {
        /// The wall-clock time at `at`.
        wall: SystemTime,
        /// The tokio instant `wall` corresponds to.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::System
    }

    /// A clock that stands still until [`Clock::advance`] moves it; starts at the system time.
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicI64::new(crate::db::now_millis())))
    }

    /// A clock that follows the current runtime's tokio clock from the present wall-clock time.
    pub fn following_tokio() -> Self {
        Self::Tokio {
            wall: SystemTime::now(),
            at: tokio::time::Instant::now(),
        }
    }

    /// Now, in milliseconds since the Unix epoch (the unit every table stores).
    pub fn now_millis(&self) -> i64 {
        match self {
            Self::System => crate::db::now_millis(),
            Self::Manual(now) => now.load(Ordering::SeqCst),
            Self::Tokio { .. } => self.now().timestamp_millis(),
        }
    }

    /// Now, as a UTC time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Manual(now) => DateTime::<Utc>::from_timestamp_millis(now.load(Ordering::SeqCst))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            Self::Tokio { wall, at } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
                DateTime::<Utc>::from(*wall + elapsed)
            }
        }
    }

    /// Moves a manual clock forward (no effect on the others).
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(now) = self {
            now.fetch_add(
                i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
                Ordering::SeqCst,
            );
        }
    }

    /// True for a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(self, Self::Manual(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn manual_and_tokio_clocks_move_only_when_told() {
        let manual = Clock::manual();
        let before = manual.now_millis();
        manual.advance(Duration::from_secs(2));
        assert_eq!(manual.now_millis(), before + 2000);
        assert_eq!(manual.now().timestamp_millis(), before + 2000);
        let tokio = Clock::following_tokio();
        let start = tokio.now_millis();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((tokio.now_millis() - start - 60_000).abs() < 5);
        assert!(Clock::system().now_millis() > 0 && !Clock::system().is_manual());
    }
}
