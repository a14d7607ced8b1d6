//! Time as the coordinator sees it: milliseconds since the Unix epoch.
//!
//! Leases, backoff and settle delays are computed from a [`Clock`]. In production it is the
//! system clock; tests use a manual clock they move forward themselves, so lease expiry and
//! backoff are tested without waiting and without racing real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of "now" in epoch milliseconds.
#[derive(Clone, Debug)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still until [`Clock::advance`] moves it; starts at the system time.
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(smrtshare_common::db::now_millis()))),
        }
    }

    /// Now, in epoch milliseconds.
    pub fn now(&self) -> i64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => smrtshare_common::db::now_millis(),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual {
            now.fetch_add(millis(by), Ordering::SeqCst);
        }
    }

    /// True for a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Converts epoch milliseconds to a protobuf timestamp (`None` for 0, meaning "never").
pub fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}
