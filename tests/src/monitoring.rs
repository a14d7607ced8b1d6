//! The shipped monitoring files (`deploy/grafana/smrtshare.json`, `deploy/prometheus/alerts.yml`)
//! read as queries, the metric names a PromQL expression selects, and the sample names of a
//! `/metrics` exposition.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use yaml_rust2::{Yaml, YamlLoader};

/// The Grafana dashboard, from the workspace root.
pub const DASHBOARD: &str = "deploy/grafana/smrtshare.json";
/// The Prometheus alert rules, from the workspace root.
pub const ALERTS: &str = "deploy/prometheus/alerts.yml";

/// Names Prometheus makes itself rather than reading them from a target.
pub const PROMETHEUS_OWN: [&str; 1] = ["up"];

/// One PromQL expression and where it comes from (`panel "<title>"` or `alert <name>`).
#[derive(Clone, Debug)]
pub struct Query {
    /// Where the expression is.
    pub origin: String,
    /// The expression as written (Grafana variables included).
    pub expr: String,
}

/// Every target expression of every panel of the dashboard at `path`.
pub fn dashboard_queries(path: &Path) -> anyhow::Result<Vec<Query>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .with_context(|| format!("panel {title:?}: a target without expr"))?;
            queries.push(Query {
                origin: format!("panel {title:?}"),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(queries)
}

/// Every rule's expression in the rule file at `path`.
pub fn rule_queries(path: &Path) -> anyhow::Result<Vec<Query>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs =
        YamlLoader::load_from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut queries = Vec::new();
    for group in docs
        .first()
        .map(|d| &d["groups"])
        .and_then(Yaml::as_vec)
        .context("no groups")?
    {
        for rule in group["rules"].as_vec().context("a group without rules")? {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or_default();
            let expr = rule["expr"]
                .as_str()
                .with_context(|| format!("rule {name}: no expr"))?;
            queries.push(Query {
                origin: format!("alert {name}"),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(queries)
}

/// Functions' and aggregations' companions that take a list of label names in parentheses.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words that are operators or modifiers, never metric names.
const OPERATORS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "atan2"];
/// Aggregation operators (they may be followed by `by (...)` rather than their argument).
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names `expr` selects: the names of its vector selectors, and `__name__="…"`
/// matchers. Skipped: strings, label matchers, ranges and subqueries, numbers and durations,
/// function and aggregation names, label lists (`by (le)`, `on (job)`, `group_left (x)`),
/// operators, comments and Grafana variables (`$__rate_interval`, `${datasource}`). A
/// `__name__` regex is refused: it names no metric a test could look for.
pub fn metric_names(expr: &str) -> anyhow::Result<BTreeSet<String>> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            i = skip_while(&chars, i, |c| c != '\n');
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
        } else if c == '{' {
            let end = closing(&chars, i, '{', '}')?;
            let matchers: String = chars[i + 1..end].iter().collect();
            if let Some(name) = name_matcher(&matchers)? {
                names.insert(name);
            }
            i = end + 1;
        } else if c == '[' {
            i = closing(&chars, i, '[', ']')? + 1;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = closing(&chars, i, '{', '}')? + 1;
            } else {
                i = skip_while(&chars, i, is_word);
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i = skip_while(&chars, i, |c| {
                c.is_ascii_alphanumeric() || c == '.' || c == '_'
            });
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let end = skip_while(&chars, i, is_word);
            let word: String = chars[i..end].iter().collect();
            let next = skip_while(&chars, end, char::is_whitespace);
            let lower = word.to_ascii_lowercase();
            i = end;
            if LABEL_LISTS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = closing(&chars, next, '(', ')')? + 1;
                }
            } else if OPERATORS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || lower == "inf"
                || lower == "nan"
                || chars.get(next) == Some(&'(')
            {
                // An operator, a number, or a function call: its arguments are read as they come.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_while(chars: &[char], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

/// The index after the string literal starting at `start` (backslash escapes, except in
/// backtick strings).
fn skip_string(chars: &[char], start: usize) -> anyhow::Result<usize> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    bail!("unterminated string at {start}")
}

/// The index of the bracket closing the one at `start`, strings inside skipped.
fn closing(chars: &[char], start: usize, open: char, close: char) -> anyhow::Result<usize> {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(chars, i)?;
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Ok(i);
            }
        }
        i += 1;
    }
    bail!("no {close:?} closes the {open:?} at {start}")
}

/// The metric name of a `__name__="…"` matcher in a `{…}` block.
fn name_matcher(matchers: &str) -> anyhow::Result<Option<String>> {
    let Some(at) = matchers.find("__name__") else {
        return Ok(None);
    };
    let rest = matchers[at + "__name__".len()..].trim_start();
    let Some(value) = rest.strip_prefix('=').filter(|r| !r.starts_with('~')) else {
        bail!("a __name__ matcher other than = in {{{matchers}}}");
    };
    let value = value.trim_start();
    let quote = value.chars().next().context("an empty __name__ matcher")?;
    let inner = &value[quote.len_utf8()..];
    let end = inner
        .find(quote)
        .context("an unterminated __name__ matcher")?;
    Ok(Some(inner[..end].to_owned()))
}

/// The sample names of a Prometheus or OpenMetrics text exposition (`foo_total`, `bar_bucket`).
pub fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).unwrap().into_iter().collect()
    }

    #[test]
    fn selectors_are_found_and_everything_else_skipped() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{le!="x{y}", j=~"b|c"}[5m])))"#
            ),
            ["a_bucket"]
        );
        assert_eq!(
            names("sum without (instance, job) (a) / on (job) group_left (owner) b"),
            ["a", "b"]
        );
        assert_eq!(
            names(r#"absent(up{job="s"}) or absent(up{job="t"})"#),
            ["up"]
        );
        assert_eq!(names("time() - m offset 1h > 3600"), ["m"]);
        assert_eq!(names("a > bool 0.5 and c unless d"), ["a", "c", "d"]);
        assert_eq!(
            names("60 * sum by (reason, kind) (rate(c_total[$__rate_interval]))"),
            ["c_total"]
        );
        assert_eq!(names(r#"{__name__="x", job="y"}"#), ["x"]);
        assert_eq!(names("max(y > 0) - time()"), ["y"]);
        assert_eq!(names(r#"count_values("v", z)"#), ["z"]);
        assert_eq!(names("topk(3, w) # m is a comment"), ["w"]);
        assert_eq!(names("rate(x[5m:1m]) * 1e3 + 0x1f - Inf + .5"), ["x"]);
        assert_eq!(
            names("sum(n:recorded:rate5m) by (job)"),
            ["n:recorded:rate5m"]
        );
        assert_eq!(names(r#"max by (cap) (r{cap='Collection'}) > 0.9"#), ["r"]);
    }

    #[test]
    fn a_name_regex_and_broken_text_are_refused() {
        assert!(metric_names(r#"{__name__=~"a.*"}"#).is_err());
        assert!(metric_names(r#"a{job="b}"#).is_err());
        assert!(metric_names("rate(a[5m)").is_err());
    }
}
