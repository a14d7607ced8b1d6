//! Directory names: templates from configuration, made safe path components by the rule shared
//! with the coordinator ([`smrtshare_common::names`]).
//!
//! Defaults (DESIGN.md section 2): dataset `Movie {movie} - {name}` (an orphaned child uses its
//! sample as `{name}`); demultiplexed parent `Movie {movie} - {well_sample} ({n} barcoded samples)`
//! with children `{sample} ({barcode})` and `Supplemental Run Data` inside; an analysis job's outputs
//! `Analysis {id}: {name}`. A name never contains
//! `/`, NUL or other control characters, is never `.` or `..` or hidden, fits 255 bytes, and with
//! `windows_safe` holds nothing Windows cannot store.

use std::collections::HashMap;

use smrtshare_common::names::{self as common, MAX_NAME_BYTES, truncate};
use uuid::Uuid;

use crate::model::JobId;

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

/// Placeholders an analysis job's template may use.
const JOB_PLACEHOLDERS: &[&str] = &["id", "name"];

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
    /// An analysis job's outputs; placeholders {id} and {name}.
    pub job: String,
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
            job: "Analysis {id}: {name}".into(),
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
            check_template(flag, template, PLACEHOLDERS)?;
        }
        check_template("--analysis-template", &templates.job, JOB_PLACEHOLDERS)?;
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

    /// An analysis job's directory name.
    pub fn job(&self, id: JobId, name: &str) -> String {
        let id = id.to_string();
        let rendered = fill(&self.templates.job, |p| match p {
            "id" => Some(id.as_str()),
            "name" => Some(name),
            _ => None,
        });
        self.sanitize(&rendered)
    }

    /// The supplemental directory's name.
    pub fn supplemental(&self) -> &str {
        &self.templates.supplemental
    }

    /// Makes `raw` a single safe path component ("unnamed" when nothing is left of it).
    pub fn sanitize(&self, raw: &str) -> String {
        let out = common::sanitize(raw, self.templates.windows_safe);
        if out.is_empty() {
            "unnamed".to_owned()
        } else {
            out
        }
    }
}

fn check_template(flag: &str, template: &str, known: &[&str]) -> anyhow::Result<()> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            anyhow::bail!("{flag} {template:?}: unclosed '{{'");
        };
        let name = &after[..close];
        anyhow::ensure!(
            known.contains(&name),
            "{flag} {template:?}: unknown placeholder {{{name}}} (known: {})",
            known
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
    fill(template, |placeholder| match placeholder {
        "movie" => Some(v.movie),
        "name" => Some(v.name),
        "well_sample" => Some(v.well_sample),
        "sample" => Some(v.sample),
        "barcode" => Some(v.barcode),
        "n" => Some(&n),
        "uuid" => Some(&uuid),
        _ => None,
    })
}

/// A checked template with each `{placeholder}` replaced by its value (an unknown one stays as
/// its name).
fn fill<'v>(template: &str, value: impl Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        let placeholder = &after[..close];
        out.push_str(value(placeholder).unwrap_or(placeholder));
        rest = after.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Makes names unique: the entries sharing a name each get ` [<start of its key>]` appended (cut
/// to fit 255 bytes), the start being the shortest one, 8 characters or more, that no other key
/// sharing the name starts with (`[aaaaaaaa]`, or `[aaaaaaaa-1]` when two UUIDs share their first
/// 8 hex digits). A name
/// that then equals another one gets another round. Keys are UUIDs, so the result does not depend
/// on request order.
pub fn disambiguate(names: &mut [(String, String)]) {
    for _round in 0..8 {
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (_, name)) in names.iter().enumerate() {
            groups.entry(name.as_str()).or_default().push(i);
        }
        let shared: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
        if shared.is_empty() {
            return;
        }
        for group in shared {
            let keys: Vec<String> = group.iter().map(|&i| names[i].0.clone()).collect();
            let longest = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
            for (k, &i) in group.iter().enumerate() {
                let alone = |n: usize| {
                    let mine = start(&keys[k], n);
                    keys.iter()
                        .enumerate()
                        .all(|(j, other)| j == k || start(other, n) != mine)
                };
                let short = match (8..=longest.max(8)).find(|&n| alone(n)) {
                    Some(n) => start(&keys[k], n).to_owned(),
                    // Equal keys (a broken XML naming one child twice): their order decides.
                    None => format!("{} {}", keys[k], k + 1),
                };
                let suffix = format!(" [{short}]");
                let name = &mut names[i].1;
                truncate(name, MAX_NAME_BYTES - suffix.len());
                name.push_str(&suffix);
            }
        }
    }
}

/// The first `n` characters of `key`, without a trailing '-'.
fn start(key: &str, n: usize) -> &str {
    let end = key.char_indices().nth(n).map_or(key.len(), |(i, _)| i);
    key[..end].trim_end_matches('-')
}

/// Checks a name given by a caller (the project directory): a single safe path component (no
/// control characters: refused, where the coordinator replaces them when it makes a name), and
/// not smrtshare's own hidden area.
pub fn check_component(name: &str) -> Result<(), String> {
    common::check(name)?;
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
        let job = JobId::new(1589).unwrap();
        assert_eq!(n.job(job, "Map to tomato"), "Analysis 1589: Map to tomato");
        assert_eq!(n.job(job, "a/b\n"), "Analysis 1589: a_b_");
        assert_eq!(namer(true).job(job, "x"), "Analysis 1589_ x");
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
            job: "Analysis {uuid}".into(),
            ..Templates::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--analysis-template"), "{err}");
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
    fn uuids_sharing_their_first_digits_still_get_unique_names() {
        let mut names = vec![
            (
                "aaaaaaaa-0000-4000-8000-000000000002".to_owned(),
                "x".to_owned(),
            ),
            (
                "aaaaaaaa-0000-4000-8000-000000000001".to_owned(),
                "x".to_owned(),
            ),
            (
                "aaaaaaaa-1000-4000-8000-000000000001".to_owned(),
                "x".to_owned(),
            ),
            // A dataset literally named like another's disambiguated name.
            (
                "bbbbbbbb-0000-4000-8000-000000000003".to_owned(),
                "x [aaaaaaaa-1]".to_owned(),
            ),
        ];
        let mut reversed: Vec<_> = names.iter().rev().cloned().collect();
        disambiguate(&mut names);
        disambiguate(&mut reversed);
        reversed.reverse();
        assert_eq!(names, reversed, "independent of order");
        let unique: std::collections::HashSet<&str> =
            names.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(unique.len(), 4, "{names:?}");
        assert_eq!(names[0].1, "x [aaaaaaaa-0000-4000-8000-000000000002]");
        assert_eq!(names[1].1, "x [aaaaaaaa-0000-4000-8000-000000000001]");
        assert_eq!(names[2].1, "x [aaaaaaaa-1] [aaaaaaaa]");
        assert_eq!(names[3].1, "x [aaaaaaaa-1] [bbbbbbbb]");
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
