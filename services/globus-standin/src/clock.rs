//! Wall-clock time for the stand-in: the system clock, or one that follows the tokio clock so a
//! test on a paused clock can move Globus' notion of "now" (token and rule expiry) with
//! `tokio::time::advance`.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The system clock.
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
}

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
