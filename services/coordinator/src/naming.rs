//! Project directory names, from a configurable template.

/// Characters Windows cannot store in a file name (Globus users download to Windows too).
const WINDOWS_UNSAFE: &[char] = &['<', '>', ':', '"', '\\', '|', '?', '*'];

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

    /// The directory name of a project: a single safe path component (no `/` or NUL, not `.` or
    /// `..`, not hidden, at most 255 bytes).
    pub fn name(&self, id: i64, name: &str) -> String {
        let raw = self
            .template
            .replace("{id}", &id.to_string())
            .replace("{name}", name.trim());
        let mut out: String = raw
            .chars()
            .map(|c| {
                if c == '/' || c.is_control() || (self.windows_safe && WINDOWS_UNSAFE.contains(&c))
                {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        out = out.trim().to_owned();
        if self.windows_safe {
            // Windows also refuses trailing dots and spaces.
            out = out.trim_end_matches(['.', ' ']).to_owned();
        }
        while out.starts_with('.') {
            out.replace_range(..1, "_");
        }
        if out.len() > 255 {
            let mut end = 255;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
        }
        if out.is_empty() {
            out = format!("Project {id}");
        }
        out
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
