//! Time as the coordinator sees it: milliseconds since the Unix epoch.
//!
//! Leases, backoff and settle delays are computed from a [`Clock`]. In production it is the
//! system clock; tests use a manual clock they move forward themselves, so lease expiry and
//! backoff are tested without waiting and without racing real time.

use std::time::Duration;

pub use smrtshare_common::clock::Clock;

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
