//! The documentation (README.md, CONTRIBUTING.md, docs/*.md) stays true to the code: every
//! `SMRTSHARE_*` variable it names is a setting of a binary (its `--help`), a variable of the
//! NGINX render script, or one the tests, benchmarks or scripts read; every relative link points
//! at a file that exists, and every `#anchor` at a heading of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{settings_of, workspace};

/// The Markdown files of the documentation.
fn documents() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 8, "{docs:?}");
    files.extend(docs);
    files
}

/// Every `SMRTSHARE_*` word of `text` (a word ending in `_` is a prefix, as in
/// `SMRTSHARE_PEER_TLS_{CA,CERT,KEY}` or `SMRTSHARE_BENCH_*`).
fn variables_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("SMRTSHARE_") && w.len() > "SMRTSHARE_".len())
        .map(str::to_owned)
        .collect()
}

/// Text of the files below `dir` (recursively) whose name ends with one of `suffixes`.
fn sources(dir: &Path, suffixes: &[&str], out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | ".tools" | ".stack" | "docs"
            ) {
                sources(&path, suffixes, out);
            }
        } else if suffixes.iter().any(|s| name.ends_with(s)) || suffixes.contains(&"") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_variable_the_documentation_names_exists() {
    let root = workspace();
    let mut known = BTreeSet::new();
    for binary in [
        "smrtshare-staging",
        "smrtshare-access",
        "smrtshare-coordinator",
        "smrtshare-smrtlink-standin",
        "smrtshare-globus-standin",
    ] {
        known.extend(settings_of(binary));
    }
    // Variables read by the render script, the scripts, the tests and the benchmarks.
    let mut code = std::fs::read_to_string(root.join("deploy/nginx/render")).unwrap();
    sources(&root.join("scripts"), &[""], &mut code);
    sources(&root.join("services"), &[".rs"], &mut code);
    sources(&root.join("tests"), &[".rs"], &mut code);
    known.extend(variables_in(&code));

    let mut unknown = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        for variable in variables_in(&text) {
            let exists = if variable.ends_with('_') {
                known.iter().any(|k| k.starts_with(&variable))
            } else {
                known.contains(&variable)
            };
            if !exists {
                unknown.push(format!("{}: {variable}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "variables that exist nowhere:\n  {}",
        unknown.join("\n  ")
    );
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// Every `](target)` of `text`.
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_relative_link_of_the_documentation_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (path, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            if !fragment.is_empty()
                && target.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&target).unwrap()).contains(fragment)
            {
                broken.push(format!("{}: {link} (no such heading)", file.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} links");
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}
