//! The log line, JSON or human, with every field once.
//!
//! The stock formatters of tracing-subscriber repeat what nested spans share: the human format
//! prints every span of the scope with all its fields (`rpc{method=… change_id=7}:access{method=…
//! change_id="7"}:`), and the JSON format shows only the innermost span, so a field an outer span
//! holds (the change id of the `rpc` span) is lost under an inner span that lacks it. Here the
//! fields of every span in scope are merged, innermost first, into one set of context fields; a
//! field the event itself carries is not repeated from its spans; and a span field recorded empty
//! (`change_id=""` when a call carries no change id) is left out. So each field of a line, the
//! change id included, appears in it exactly once.
//!
//! Span fields are kept by tracing-subscriber as [`JsonFields`] text (one JSON object per span),
//! which is what [`Lines`] reads back.

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The formatter of every log line; colours (human lines only) come from the writer's ANSI flag.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lines {
    /// One JSON object per line, rather than a human line.
    pub(super) json: bool,
}

/// An event's fields in the order they were written. A record of the `log` crate arrives with
/// its metadata as `log.*` fields: its `log.target` becomes the line's target, the rest is left
/// out.
#[derive(Default)]
struct EventFields {
    fields: Vec<(&'static str, Value)>,
    log_target: Option<String>,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if let Some(log) = name.strip_prefix("log.") {
            if log == "target" {
                self.log_target = value.as_str().map(str::to_owned);
            }
            return;
        }
        self.fields
            .push((name.strip_prefix("r#").unwrap_or(name), value));
    }

    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| *n == name)
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::from(value));
    }
    /// An error with its chain of sources, as `anyhow` prints `{:#}`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(error) = source {
            let _ = write!(text, ": {error}");
            source = error.source();
        }
        self.push(field, Value::from(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::from(format!("{value:?}")));
    }
}

/// True for a value that says nothing (an empty text).
fn is_empty(value: &Value) -> bool {
    value.as_str().is_some_and(str::is_empty)
}

/// The span names from the root to the innermost span, and their fields merged (the innermost
/// span's value of a field wins, an empty value never replaces one), less the event's own fields.
fn context<S>(
    ctx: &FmtContext<'_, S, JsonFields>,
    event: &EventFields,
) -> (Vec<&'static str>, Map<String, Value>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut names = Vec::new();
    let mut fields = Map::new();
    if let Some(scope) = ctx.event_scope() {
        for span in scope.from_root() {
            names.push(span.name());
            let extensions = span.extensions();
            let Some(text) = extensions.get::<FormattedFields<JsonFields>>() else {
                continue;
            };
            let Ok(Value::Object(own)) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            for (name, value) in own {
                if !is_empty(&value) && !event.has(&name) {
                    fields.insert(name, value);
                }
            }
        }
    }
    (names, fields)
}

impl<S> FormatEvent<S, JsonFields> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let (spans, span_fields) = context(ctx, &fields);
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let line = Line {
            timestamp: &timestamp,
            level: *meta.level(),
            target: fields.log_target.as_deref().unwrap_or(meta.target()),
            spans: &spans,
            span_fields: &span_fields,
            fields: &fields.fields,
        };
        if self.json {
            line.write_json(&mut writer)?;
        } else {
            let ansi = writer.has_ansi_escapes();
            line.write_human(&mut writer, ansi)?;
        }
        writeln!(writer)
    }
}

/// One event, ready to be written.
struct Line<'a> {
    timestamp: &'a str,
    level: Level,
    target: &'a str,
    spans: &'a [&'static str],
    span_fields: &'a Map<String, Value>,
    fields: &'a [(&'static str, Value)],
}

impl Line<'_> {
    /// `{"timestamp":…,"level":…,"target":…,<event fields>,"span":{"name":<innermost>,…}}`, the
    /// event's fields flattened and `span` present only inside a span.
    fn write_json(&self, out: &mut Writer<'_>) -> fmt::Result {
        write!(
            out,
            "{{\"timestamp\":{},\"level\":{},\"target\":{}",
            Value::from(self.timestamp),
            Value::from(self.level.as_str()),
            Value::from(self.target)
        )?;
        for (name, value) in self.fields {
            write!(out, ",{}:{value}", Value::from(*name))?;
        }
        if let Some(innermost) = self.spans.last() {
            let mut span = Map::new();
            span.insert("name".into(), Value::from(*innermost));
            span.extend(self.span_fields.clone());
            write!(out, ",\"span\":{}", Value::Object(span))?;
        }
        out.write_char('}')
    }

    /// `<timestamp> <LEVEL> <span>:<span>{k=v …}: <target>: <message> k=v …`, coloured only
    /// when `ansi`.
    fn write_human(&self, out: &mut Writer<'_>, ansi: bool) -> fmt::Result {
        let paint = |code: &str, text: &str| {
            if ansi {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_owned()
            }
        };
        let colour = match self.level {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        write!(
            out,
            "{} {} ",
            paint("2", self.timestamp),
            paint(colour, &format!("{:>5}", self.level.as_str()))
        )?;
        if !self.spans.is_empty() {
            write!(out, "{}", paint("1", &self.spans.join(":")))?;
            if !self.span_fields.is_empty() {
                let fields: Vec<String> = self
                    .span_fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", human(value)))
                    .collect();
                write!(out, "{{{}}}", fields.join(" "))?;
            }
            out.write_str(": ")?;
        }
        write!(out, "{}: ", paint("2", self.target))?;
        let mut first = true;
        for (name, value) in self.fields {
            if !first {
                out.write_char(' ')?;
            }
            first = false;
            match (*name, value) {
                ("message", Value::String(text)) => out.write_str(text)?,
                _ => write!(out, "{}={}", paint("3", name), human(value))?,
            }
        }
        Ok(())
    }
}

/// A value as a human line shows it: text bare when it is one plain word, quoted otherwise.
fn human(value: &Value) -> String {
    match value {
        Value::String(text)
            if !text.is_empty()
                && !text.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '{' | '}')
                }) =>
        {
            text.clone()
        }
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}
