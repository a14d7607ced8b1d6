//! Log lines as the services write them: every field once per line (the change id of an outer
//! span included, however deep the event), no empty span fields, colours only when asked.

// Test code: a failed step is a failed test, helpers included.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use smrtshare_common::config::LogFormat;
use smrtshare_common::telemetry::subscriber;

/// Everything the subscriber wrote.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines `events` logs through the services' subscriber: as the gRPC server's `rpc` span
/// (method and change id from metadata) wraps a handler's own span that repeats them.
fn lines(format: LogFormat, ansi: bool, events: impl FnOnce()) -> Vec<String> {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = subscriber(format, "info", ansi, move || writer.clone()).unwrap();
    tracing::subscriber::with_default(subscriber, events);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// The four situations of a change id in the services: set by an outer span and repeated by an
/// inner one; set by an outer span only; carried by the event inside a span that has none;
/// absent (the span recorded it empty).
fn events() {
    let rpc = tracing::info_span!(
        "rpc",
        method = "/smrtshare.access.v1.Access/ApplyProjectAccess",
        change_id = "7"
    );
    let _rpc = rpc.enter();
    {
        let handler = tracing::info_span!("access", method = "ApplyProjectAccess", change_id = 7);
        let _handler = handler.enter();
        tracing::info!(complete = true, outcomes = 2, "apply done");
    }
    {
        let dataset = tracing::info_span!("dataset", uuid = "9f3c");
        let _dataset = dataset.enter();
        tracing::warn!(error = "no such file", "dataset failed");
    }
    drop(_rpc);
    let anonymous = tracing::info_span!("rpc", method = "/x.Y/Notify", change_id = "");
    let _anonymous = anonymous.enter();
    tracing::info!(change_id = 8, project_id = 2, "mirrored change recorded");
    tracing::info!("no change here");
}

fn count(line: &str, needle: &str) -> usize {
    line.matches(needle).count()
}

#[test]
fn json_lines_carry_each_field_once_and_the_outer_change_id_under_any_span() {
    let lines = lines(LogFormat::Json, true, events);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in &lines {
        assert!(!line.contains('\x1b'), "no colour in JSON: {line}");
    }

    // Two spans hold the change id and the method: each appears once, the innermost's value.
    assert_eq!(count(&lines[0], "change_id"), 1, "{}", lines[0]);
    assert_eq!(count(&lines[0], "\"method\""), 1, "{}", lines[0]);
    assert_eq!(parsed[0]["span"]["change_id"], 7);
    assert_eq!(parsed[0]["span"]["method"], "ApplyProjectAccess");
    assert_eq!(parsed[0]["span"]["name"], "access");
    assert_eq!(parsed[0]["message"], "apply done");
    assert_eq!(parsed[0]["complete"], true);
    assert_eq!(parsed[0]["level"], "INFO");

    // Under a span without it, the outer span's change id is still on the line.
    assert_eq!(count(&lines[1], "change_id"), 1, "{}", lines[1]);
    assert_eq!(parsed[1]["span"]["change_id"], "7");
    assert_eq!(parsed[1]["span"]["uuid"], "9f3c");
    assert_eq!(parsed[1]["span"]["name"], "dataset");

    // The event's own change id wins; the span's empty one is not repeated.
    assert_eq!(count(&lines[2], "change_id"), 1, "{}", lines[2]);
    assert_eq!(parsed[2]["change_id"], 8);
    assert!(parsed[2]["span"].get("change_id").is_none(), "{}", lines[2]);

    // An empty span field is left out.
    assert!(!lines[3].contains("change_id"), "{}", lines[3]);
    assert_eq!(parsed[3]["span"]["method"], "/x.Y/Notify");
}

#[test]
fn human_lines_carry_each_field_once_and_no_colour_unless_asked() {
    let plain = lines(LogFormat::Human, false, events);
    assert_eq!(plain.len(), 4, "{plain:#?}");
    for line in &plain {
        assert!(!line.contains('\x1b'), "escape code in {line:?}");
    }
    assert_eq!(count(&plain[0], "change_id="), 1, "{}", plain[0]);
    assert_eq!(count(&plain[0], "method="), 1, "{}", plain[0]);
    assert!(
        plain[0].contains(" INFO rpc:access{"),
        "span names in scope order: {}",
        plain[0]
    );
    assert!(plain[0].contains("change_id=7"), "{}", plain[0]);
    assert!(
        plain[0].ends_with(": apply done complete=true outcomes=2"),
        "{}",
        plain[0]
    );
    assert!(plain[1].contains("change_id=7"), "{}", plain[1]);
    assert!(plain[1].contains("error=\"no such file\""), "{}", plain[1]);
    assert_eq!(count(&plain[2], "change_id="), 1, "{}", plain[2]);
    assert!(plain[2].contains("change_id=8"), "{}", plain[2]);
    assert!(!plain[3].contains("change_id"), "{}", plain[3]);

    // On a terminal (the caller decides), the level is coloured.
    let coloured = lines(LogFormat::Human, true, events);
    assert!(
        coloured[0].contains("\x1b[32m INFO\x1b[0m"),
        "{}",
        coloured[0]
    );
}

#[test]
fn a_bad_filter_is_refused_with_its_text() {
    let error = subscriber(LogFormat::Json, "info,[", false, std::io::sink)
        .err()
        .unwrap();
    assert!(error.to_string().contains("info,["), "{error}");
}
