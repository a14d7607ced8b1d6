//! Wall-clock time for the service. Production uses the system clock; tests use one that follows
//! the tokio clock, so expiry and renewal run on a paused clock (`tokio::time::advance`).

use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// `wall` at tokio instant `at`, advancing with the tokio clock (paused or not).
    Tokio {
        /// The wall-clock time at `at`.
        wall: SystemTime,
        /// The tokio instant `wall` corresponds to.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows the current runtime's tokio clock from the present wall-clock time.
    pub fn following_tokio() -> Self {
        Self::Tokio {
            wall: SystemTime::now(),
            at: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Tokio { wall, at } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
                DateTime::<Utc>::from(*wall + elapsed)
            }
        }
    }

    /// The current time in milliseconds since the Unix epoch (the registry's unit).
    pub fn now_millis(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

/// Milliseconds since the epoch as a UTC time (clamped to chrono's range).
pub fn from_millis(millis: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Parses the ISO 8601 forms Globus writes (`2024-03-06T19:40:04+00:00`, with or without an
/// offset or fractional seconds).
pub fn parse_globus_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The form smrtshare sends expiration dates in: ISO 8601 UTC, whole seconds.
pub fn format_globus_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globus_times_round_trip() {
        let t = parse_globus_time("2031-05-06T07:08:09+00:00").expect("parses");
        assert_eq!(format_globus_time(t), "2031-05-06T07:08:09+00:00");
        assert_eq!(parse_globus_time("2031-05-06T07:08:09Z"), Some(t));
        assert_eq!(parse_globus_time("2031-05-06 07:08:09+00:00"), Some(t));
        assert_eq!(parse_globus_time("2031-05-06T07:08:09"), Some(t));
        assert_eq!(parse_globus_time("soon"), None);
    }
}
