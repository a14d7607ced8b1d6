//! Directory names under the Globus collection: one rule for what a safe path component is, and
//! one for making one out of any text (a SMRT Link name, a template's output).
//!
//! A safe component is not empty, not `.` or `..`, holds no `/`, NUL or other control character
//! (newline, tab, escape: they break listings, logs and scripts, and Windows refuses them), and
//! fits 255 bytes. With `windows_safe`, the characters Windows cannot store (`<>:"\|?*`) are
//! replaced too and trailing dots and spaces dropped (Globus users download to Windows too).

/// Longest name most filesystems store, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Characters Windows cannot store in a file name.
pub const WINDOWS_UNSAFE: &[char] = &['<', '>', ':', '"', '\\', '|', '?', '*'];

/// Makes `raw` a safe component: `/` and control characters (and, with `windows_safe`, the
/// characters Windows cannot store) become `_`, surrounding white space goes, a leading `.`
/// becomes `_` (never hidden, never `.` or `..`), and the result is cut to 255 bytes on a
/// character boundary. Empty when nothing is left: the caller picks a stand-in.
pub fn sanitize(raw: &str, windows_safe: bool) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c.is_control() || (windows_safe && WINDOWS_UNSAFE.contains(&c)) {
                '_'
            } else {
                c
            }
        })
        .collect();
    out = out.trim().to_owned();
    if windows_safe {
        out = out.trim_end_matches(['.', ' ']).to_owned();
    }
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    truncate(&mut out, MAX_NAME_BYTES);
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

/// Why `name` is not a safe component, naming the offending character; `Ok` when it is.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a directory name"));
    }
    if name.contains('/') {
        return Err(format!("{name:?} must be a single path component (no '/')"));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "{name:?} holds the control character U+{:04X} at byte {at}; names may not hold NUL, \
             newline, tab or other control characters",
            u32::from(c)
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_NAME_BYTES} fit",
            name.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn anything_becomes_a_safe_component() {
        assert_eq!(sanitize("a/b", false), "a_b");
        assert_eq!(sanitize("a\0b\nc\td\u{1b}e\u{85}", false), "a_b_c_d_e_");
        assert_eq!(sanitize("..", false), "_.");
        assert_eq!(sanitize(".hidden", false), "_hidden");
        assert_eq!(sanitize("   ", false), "");
        assert_eq!(sanitize("a:b?", false), "a:b?");
        assert_eq!(
            sanitize(r#"a<b>c:d"e\f|g?h*i. ."#, true),
            "a_b_c_d_e_f_g_h_i"
        );
        let cut = sanitize(&"é".repeat(200), false);
        assert!(cut.len() <= 255 && cut.len() >= 254, "{}", cut.len());
        for raw in ["a/b", "x\ny", "..", "é".repeat(300).as_str()] {
            check(&sanitize(raw, false)).unwrap();
        }
    }

    #[test]
    fn unsafe_components_are_refused_with_the_reason() {
        assert!(check("Project 2: Tomato").is_ok());
        assert!(check("").is_err());
        assert!(check("..").is_err());
        assert!(check("a/b").unwrap_err().contains("single path component"));
        assert!(check("a\0").unwrap_err().contains("U+0000"));
        assert!(
            check("Project 2:\nTomato")
                .unwrap_err()
                .contains("U+000A at byte 10")
        );
        assert!(check("a\tb").unwrap_err().contains("U+0009"));
        assert!(check(&"x".repeat(256)).unwrap_err().contains("256 bytes"));
    }
}
