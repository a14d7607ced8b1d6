//! Reading the JSON log lines the processes wrote.

use std::path::Path;

use serde_json::Value;

/// The log's lines, parsed (a line that is not JSON becomes a JSON string).
pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned())))
        .collect()
}

/// True when `value` holds, at any depth (event fields, the current span), a `change_id` field
/// equal to `id` (as a number or as text).
pub fn mentions_change(value: &Value, id: i64) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, v)| {
            (key == "change_id"
                && (v.as_i64() == Some(id) || v.as_str() == Some(id.to_string().as_str())))
                || mentions_change(v, id)
        }),
        Value::Array(items) => items.iter().any(|v| mentions_change(v, id)),
        _ => false,
    }
}

/// The log lines that carry change `id`, parsed.
pub fn lines_with_change(path: &Path, id: i64) -> Vec<Value> {
    lines(path)
        .into_iter()
        .filter(|l| mentions_change(l, id))
        .collect()
}

/// (line number, line) of every line of the raw log holding `needle`.
pub fn occurrences(path: &Path, needle: &str) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(n, line)| (n + 1, line.to_owned()))
        .collect()
}
