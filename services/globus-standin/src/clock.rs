//! Wall-clock time for the stand-in: the system clock, or one that follows the tokio clock so a
//! test on a paused clock can move Globus' notion of "now" (token and rule expiry) with
//! `tokio::time::advance`.

use chrono::{DateTime, Utc};

pub use smrtshare_common::clock::Clock;

/// Globus' timestamp format: ISO 8601 with seconds and an explicit UTC offset
/// (`2024-03-06T19:40:04+00:00`).
pub fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Parses an ISO 8601 date-time as Globus accepts it: RFC 3339, or without an offset (taken as
/// UTC), or a bare date (midnight UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_globus_accepts() {
        let expected = parse_time("2030-01-02T03:04:05+00:00").expect("rfc 3339");
        assert_eq!(parse_time("2030-01-02T03:04:05Z"), Some(expected));
        assert_eq!(parse_time("2030-01-02T03:04:05"), Some(expected));
        assert_eq!(parse_time("2030-01-02T05:04:05+02:00"), Some(expected));
        assert_eq!(format_time(expected), "2030-01-02T03:04:05+00:00");
        assert!(parse_time("2030-01-02").is_some());
        assert!(parse_time("next tuesday").is_none());
    }
}
