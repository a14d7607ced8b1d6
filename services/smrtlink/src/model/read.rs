//! A small strict reader over `serde_json::Value` that names the field it failed on
//! (`project.datasets[3].uuid: not a UUID ("abc")`). Unknown fields are kept, never refused.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A field that is missing or has the wrong shape, with its path inside the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where in the answer: `project.datasets[3].uuid`.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for FieldError {}

/// A short description of a JSON value for error messages (type and a truncated rendering).
pub fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => return "an array".to_owned(),
        Value::Object(_) => return "an object".to_owned(),
    };
    let mut text = value.to_string();
    if text.len() > 60 {
        let mut cut = 57;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    format!("{kind} ({text})")
}

/// Reads fields of one JSON object, reporting failures with the object's path.
#[derive(Debug)]
pub struct Reader<'a> {
    obj: &'a Map<String, Value>,
    path: String,
}

impl<'a> Reader<'a> {
    /// The value must be an object.
    pub fn new(value: &'a Value, path: impl Into<String>) -> Result<Self, FieldError> {
        let path = path.into();
        match value {
            Value::Object(obj) => Ok(Self { obj, path }),
            other => Err(FieldError {
                problem: format!("expected an object, found {}", describe(other)),
                path,
            }),
        }
    }

    fn field_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn err(&self, key: &str, problem: impl Into<String>) -> FieldError {
        FieldError {
            path: self.field_path(key),
            problem: problem.into(),
        }
    }

    /// The value of `key`, treating JSON `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value, FieldError> {
        self.get(key).ok_or_else(|| self.err(key, "missing"))
    }

    fn as_i64(&self, key: &str, value: &Value) -> Result<i64, FieldError> {
        value.as_i64().ok_or_else(|| {
            self.err(
                key,
                format!("expected an integer, found {}", describe(value)),
            )
        })
    }

    pub fn req_i64(&self, key: &str) -> Result<i64, FieldError> {
        self.as_i64(key, self.required(key)?)
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, FieldError> {
        self.get(key).map(|v| self.as_i64(key, v)).transpose()
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, FieldError> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    self.err(
                        key,
                        format!("expected a non-negative integer, found {}", describe(v)),
                    )
                })
            })
            .transpose()
    }

    fn as_str(&self, key: &str, value: &'a Value) -> Result<&'a str, FieldError> {
        value
            .as_str()
            .ok_or_else(|| self.err(key, format!("expected a string, found {}", describe(value))))
    }

    pub fn req_str(&self, key: &str) -> Result<String, FieldError> {
        Ok(self.as_str(key, self.required(key)?)?.to_owned())
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, FieldError> {
        self.get(key)
            .map(|v| self.as_str(key, v).map(str::to_owned))
            .transpose()
    }

    fn as_bool(&self, key: &str, value: &Value) -> Result<bool, FieldError> {
        value.as_bool().ok_or_else(|| {
            self.err(
                key,
                format!("expected a boolean, found {}", describe(value)),
            )
        })
    }

    pub fn req_bool(&self, key: &str) -> Result<bool, FieldError> {
        self.as_bool(key, self.required(key)?)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        self.get(key).map(|v| self.as_bool(key, v)).transpose()
    }

    fn as_uuid(&self, key: &str, value: &Value) -> Result<Uuid, FieldError> {
        let text = self.as_str(key, value)?;
        Uuid::parse_str(text)
            .map_err(|_| self.err(key, format!("not a UUID ({})", describe(value))))
    }

    pub fn req_uuid(&self, key: &str) -> Result<Uuid, FieldError> {
        self.as_uuid(key, self.required(key)?)
    }

    pub fn opt_uuid(&self, key: &str) -> Result<Option<Uuid>, FieldError> {
        self.get(key).map(|v| self.as_uuid(key, v)).transpose()
    }

    /// An ISO 8601 timestamp: RFC 3339, or without an offset (read as UTC).
    pub fn opt_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let text = self.as_str(key, value)?;
        parse_time(text)
            .map(Some)
            .ok_or_else(|| self.err(key, format!("not a timestamp ({})", describe(value))))
    }

    /// The elements of a required array, each with its own path (`key[i]`).
    pub fn req_array(&self, key: &str) -> Result<Vec<(String, &'a Value)>, FieldError> {
        match self.required(key)? {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", self.field_path(key)), v))
                .collect()),
            other => Err(self.err(key, format!("expected an array, found {}", describe(other)))),
        }
    }

    /// Every field not in `known`, kept as it came.
    pub fn extra(&self, known: &[&str]) -> Map<String, Value> {
        self.obj
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Parses SMRT Link timestamps (`2024-03-11T20:16:38.435Z`; an offset-less form is read as UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The list items of a JSON array answer, each with its path (`what[i]`).
pub fn array_items<'a>(
    value: &'a Value,
    what: &str,
) -> Result<Vec<(String, &'a Value)>, FieldError> {
    match value {
        Value::Array(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{what}[{i}]"), v))
            .collect()),
        other => Err(FieldError {
            path: what.to_owned(),
            problem: format!("expected an array, found {}", describe(other)),
        }),
    }
}
