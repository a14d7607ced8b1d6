//! Directory names: templates from configuration, sanitised into single safe path components.
//!
//! Defaults (DESIGN.md section 2): dataset `Movie {movie} - {name}` (an orphaned child uses its
//! sample as `{name}`); demultiplexed parent `Movie {movie} - {well_sample} ({n} barcoded samples)`
//! with children `{sample} ({barcode})` and `Supplemental Run Data` inside. A name never contains
//! `/` or NUL or other control characters, is never `.` or `..` or hidden, fits 255 bytes (cut on a
//! character boundary), and with `windows_safe` the characters Windows cannot store (`<>:"\|?*`)
//! are replaced and trailing dots and spaces dropped.

use std::collections::HashMap;

use uuid::Uuid;

/// Longest name most filesystems store, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Characters Windows cannot store in a file name.
const WINDOWS_UNSAFE: &[char] = &['<', '>', ':', '"', '\\', '|', '?', '*'];

/// Placeholders a template may use.
const PLACEHOLDERS: &[&str] = &[
    "movie",
    "name",
    "well_sample",
    "sample",
    "barcode",
    "n",
    "uuid",
];

/// Stand-in for metadata a dataset XML does not carry.
pub const UNKNOWN_MOVIE: &str = "unknown movie";
/// Stand-in for a child without a barcode.
pub const NO_BARCODE: &str = "no barcode";

/// The naming templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Templates {
    /// Plain datasets and orphaned children.
    pub dataset: String,
    /// Demultiplexed parents.
    pub parent: String,
    /// Children inside a parent's directory.
    pub child: String,
    /// The parent's supplemental files (a fixed name).
    pub supplemental: String,
    /// Replace characters Windows cannot store.
    pub windows_safe: bool,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            dataset: "Movie {movie} - {name}".into(),
            parent: "Movie {movie} - {well_sample} ({n} barcoded samples)".into(),
            child: "{sample} ({barcode})".into(),
            supplemental: "Supplemental Run Data".into(),
            windows_safe: false,
        }
    }
}

/// Values a template may use. Absent values are replaced by readable stand-ins by the caller.
#[derive(Clone, Debug, Default)]
pub struct Values<'a> {
    /// Movie id.
    pub movie: &'a str,
    /// SMRT Link name (or sample name for an orphaned child).
    pub name: &'a str,
    /// Well sample.
    pub well_sample: &'a str,
    /// First bio sample.
    pub sample: &'a str,
    /// First barcode.
    pub barcode: &'a str,
    /// Number of children.
    pub n: usize,
    /// Dataset UUID.
    pub uuid: Option<Uuid>,
}

/// Renders templates into safe names.
#[derive(Clone, Debug)]
pub struct Namer {
    templates: Templates,
}

impl Namer {
    /// Checks every template: known placeholders only, and a supplemental name that is a safe name
    /// as it stands.
    pub fn new(templates: Templates) -> anyhow::Result<Self> {
        for (flag, template) in [
            ("--dataset-template", &templates.dataset),
            ("--parent-template", &templates.parent),
            ("--child-template", &templates.child),
        ] {
            check_template(flag, template)?;
        }
        let namer = Self { templates };
        let supplemental = &namer.templates.supplemental;
        anyhow::ensure!(
            namer.sanitize(supplemental) == *supplemental,
            "--supplemental-name {supplemental:?} is not a safe directory name as it stands"
        );
        Ok(namer)
    }

    /// A plain dataset's or orphaned child's directory name.
    pub fn dataset(&self, values: &Values<'_>) -> String {
        self.sanitize(&render(&self.templates.dataset, values))
    }

    /// A demultiplexed parent's directory name.
    pub fn parent(&self, values: &Values<'_>) -> String {
        self.sanitize(&render(&self.templates.parent, values))
    }

    /// A child's directory name inside its parent's.
    pub fn child(&self, values: &Values<'_>) -> String {
        self.sanitize(&render(&self.templates.child, values))
    }

    /// The supplemental directory's name.
    pub fn supplemental(&self) -> &str {
        &self.templates.supplemental
    }

    /// Makes `raw` a single safe path component.
    pub fn sanitize(&self, raw: &str) -> String {
        let windows = self.templates.windows_safe;
        let mut out: String = raw
            .chars()
            .map(|c| {
                if c == '/' || c.is_control() || (windows && WINDOWS_UNSAFE.contains(&c)) {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        out = out.trim().to_owned();
        if windows {
            out = out.trim_end_matches(['.', ' ']).to_owned();
        }
        if out.starts_with('.') {
            out.replace_range(..1, "_");
        }
        truncate(&mut out, MAX_NAME_BYTES);
        if out.is_empty() {
            out.push_str("unnamed");
        }
        out
    }
}

fn check_template(flag: &str, template: &str) -> anyhow::Result<()> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            anyhow::bail!("{flag} {template:?}: unclosed '{{'");
        };
        let name = &after[..close];
        anyhow::ensure!(
            PLACEHOLDERS.contains(&name),
            "{flag} {template:?}: unknown placeholder {{{name}}} (known: {})",
            PLACEHOLDERS
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rest = &after[close + 1..];
    }
    Ok(())
}

fn render(template: &str, v: &Values<'_>) -> String {
    let uuid = v.uuid.map(|u| u.to_string()).unwrap_or_default();
    let n = v.n.to_string();
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        let value = match &after[..close] {
            "movie" => v.movie,
            "name" => v.name,
            "well_sample" => v.well_sample,
            "sample" => v.sample,
            "barcode" => v.barcode,
            "n" => &n,
            "uuid" => &uuid,
            other => other,
        };
        out.push_str(value);
        rest = after.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Makes names unique: every name held by more than one entry gets ` [<first 8 letters or digits
/// of its key>]` appended (cut to fit 255 bytes); keys are UUIDs, so the result does not depend on
/// request order.
pub fn disambiguate(names: &mut [(String, String)]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, name) in names.iter() {
        *counts.entry(name.clone()).or_default() += 1;
    }
    for (key, name) in names.iter_mut() {
        if counts.get(name.as_str()).copied().unwrap_or(0) > 1 {
            let short: String = key
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect();
            let suffix = format!(" [{short}]");
            truncate(name, MAX_NAME_BYTES - suffix.len());
            name.push_str(&suffix);
        }
    }
}

/// Checks a name given by a caller (the project directory): a single safe path component.
pub fn check_component(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a directory name"));
    }
    if name.contains('/') {
        return Err(format!("{name:?} must be a single path component (no '/')"));
    }
    if name.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_NAME_BYTES} fit",
            name.len()
        ));
    }
    if name.starts_with(crate::fs::HIDDEN_PREFIX) {
        return Err(format!(
            "{name:?} starts with {:?}, which is reserved for smrtshare's own files",
            crate::fs::HIDDEN_PREFIX
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn namer(windows: bool) -> Namer {
        Namer::new(Templates {
            windows_safe: windows,
            ..Templates::default()
        })
        .unwrap()
    }

    #[test]
    fn default_templates_give_the_documented_names() {
        let n = namer(false);
        let v = Values {
            movie: "m84100_240301_194028_s1",
            name: "Rice-Cell1",
            ..Values::default()
        };
        assert_eq!(n.dataset(&v), "Movie m84100_240301_194028_s1 - Rice-Cell1");
        let v = Values {
            movie: "m1",
            well_sample: "Germany tomato 20 and 21",
            n: 2,
            ..Values::default()
        };
        assert_eq!(
            n.parent(&v),
            "Movie m1 - Germany tomato 20 and 21 (2 barcoded samples)"
        );
        let v = Values {
            sample: "Tomato 20",
            barcode: "bc1047--bc1047",
            ..Values::default()
        };
        assert_eq!(n.child(&v), "Tomato 20 (bc1047--bc1047)");
        assert_eq!(n.supplemental(), "Supplemental Run Data");
    }

    #[test]
    fn names_are_single_safe_components() {
        let n = namer(false);
        assert_eq!(n.sanitize("a/b"), "a_b");
        assert_eq!(n.sanitize("a\0b\nc"), "a_b_c");
        assert_eq!(n.sanitize(".."), "_.");
        assert_eq!(n.sanitize("."), "_");
        assert_eq!(n.sanitize(".hidden"), "_hidden");
        assert_eq!(n.sanitize("   "), "unnamed");
        assert_eq!(n.sanitize("a:b?"), "a:b?");
        let long = "é".repeat(200);
        let cut = n.sanitize(&long);
        assert!(cut.len() <= 255 && cut.len() >= 254, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn windows_safe_names_replace_what_windows_cannot_store() {
        let n = namer(true);
        assert_eq!(n.sanitize(r#"a<b>c:d"e\f|g?h*i"#), "a_b_c_d_e_f_g_h_i");
        assert_eq!(n.sanitize("trailing. ."), "trailing");
    }

    #[test]
    fn templates_with_unknown_placeholders_are_refused() {
        let err = Namer::new(Templates {
            dataset: "{movie} {nmae}".into(),
            ..Templates::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("{nmae}"), "{err}");
        let err = Namer::new(Templates {
            child: "{sample".into(),
            ..Templates::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("unclosed"), "{err}");
        let err = Namer::new(Templates {
            supplemental: "a/b".into(),
            ..Templates::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("supplemental"), "{err}");
    }

    #[test]
    fn duplicate_names_get_uuid_suffixes_independent_of_order() {
        let key = |s: &str| s.to_owned();
        let mut names = vec![
            (key("aaaaaaaa-0000-4000-8000-000000000001"), "x".to_owned()),
            (key("bbbbbbbb-0000-4000-8000-000000000002"), "x".to_owned()),
            (key("cccccccc-0000-4000-8000-000000000003"), "y".to_owned()),
        ];
        disambiguate(&mut names);
        assert_eq!(names[0].1, "x [aaaaaaaa]");
        assert_eq!(names[1].1, "x [bbbbbbbb]");
        assert_eq!(names[2].1, "y");
    }

    #[test]
    fn caller_names_are_checked_not_repaired() {
        assert!(check_component("Project 2: Tomato").is_ok());
        assert!(check_component("").is_err());
        assert!(check_component("..").is_err());
        assert!(
            check_component("a/b")
                .unwrap_err()
                .contains("single path component")
        );
        assert!(check_component("a\0").is_err());
        assert!(
            check_component(&"x".repeat(256))
                .unwrap_err()
                .contains("256 bytes")
        );
        assert!(
            check_component(".smrtshare-x")
                .unwrap_err()
                .contains("reserved")
        );
    }
}
