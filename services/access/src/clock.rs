//! Wall-clock time for the service. Production uses the system clock; tests use one that follows
//! the tokio clock, so expiry and renewal run on a paused clock (`tokio::time::advance`).

use chrono::{DateTime, Utc};

pub use smrtshare_common::clock::Clock;

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
