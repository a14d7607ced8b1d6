//! Project directory names, from a configurable template.

/// Names project directories from a template with `{id}` and `{name}` placeholders.
#[derive(Clone, Debug)]
pub struct DirectoryNamer {
    template: String,
    windows_safe: bool,
}

impl DirectoryNamer {
    /// A namer; the template must contain `{id}` so that names stay unique per project.
    pub fn new(template: &str, windows_safe: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(
            template.contains("{id}"),
            "--directory-template must contain {{id}} so every project gets its own directory: {template:?}"
        );
        for (i, _) in template.match_indices('{') {
            let rest = &template[i..];
            anyhow::ensure!(
                rest.starts_with("{id}") || rest.starts_with("{name}"),
                "--directory-template has an unknown placeholder at {:?} (only {{id}} and {{name}})",
                rest.chars().take(12).collect::<String>()
            );
        }
        Ok(Self {
            template: template.to_owned(),
            windows_safe,
        })
    }

    /// The directory name of a project: a single safe path component (the rule of
    /// [`smrtshare_common::names`]: no `/` or control characters, not `.` or `..`, not hidden,
    /// at most 255 bytes).
    pub fn name(&self, id: i64, name: &str) -> String {
        let raw = self
            .template
            .replace("{id}", &id.to_string())
            .replace("{name}", name.trim());
        let out = smrtshare_common::names::sanitize(&raw, self.windows_safe);
        if out.is_empty() {
            format!("Project {id}")
        } else {
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_and_hostile_names() {
        let namer = DirectoryNamer::new("Project {id}: {name}", false).unwrap();
        assert_eq!(namer.name(2, "Tomato"), "Project 2: Tomato");
        assert_eq!(namer.name(3, "a/../b"), "Project 3: a_.._b");
        assert_eq!(namer.name(4, "x\0y\n"), "Project 4: x_y");
        let long = "é".repeat(300);
        let name = namer.name(5, &long);
        assert!(name.len() <= 255 && name.starts_with("Project 5: "));
        let bare = DirectoryNamer::new("{name}{id}", false).unwrap();
        assert_eq!(bare.name(6, ".."), "_.6");
        assert_eq!(bare.name(7, ""), "7");
    }

    #[test]
    fn windows_safe_replaces_reserved_characters() {
        let namer = DirectoryNamer::new("Project {id}: {name}", true).unwrap();
        assert_eq!(
            namer.name(2, "What? <yes>|no*. "),
            "Project 2_ What_ _yes__no_"
        );
    }

    #[test]
    fn templates_are_checked() {
        assert!(DirectoryNamer::new("{name}", false).is_err());
        assert!(DirectoryNamer::new("{id} {bogus}", false).is_err());
    }
}
