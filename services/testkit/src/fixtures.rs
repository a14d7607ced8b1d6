//! Where the shared fixtures, the workspace and grpcurl are; copying fixtures to modify them.
//!
//! Tests read `../shared/fixtures/smrtlink` (CI has `shared/` beside the checkout; the
//! `SMRTSHARE_SHARED_DIR` variable overrides the location). When it is missing, tests fail under
//! `CI=true` and elsewhere skip with a visible notice.

use std::path::{Path, PathBuf};

/// The workspace root, found from a crate's `CARGO_MANIFEST_DIR` by walking up to the directory
/// holding `proto/` and `Cargo.lock`.
pub fn workspace_root(manifest_dir: &Path) -> PathBuf {
    let mut dir = manifest_dir;
    loop {
        if dir.join("proto").is_dir()
            && dir.join("Cargo.toml").is_file()
            && dir.join("services").is_dir()
        {
            return dir.to_path_buf();
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return manifest_dir.to_path_buf(),
        }
    }
}

/// The shared directory (`SMRTSHARE_SHARED_DIR`, else `<workspace>/../shared`).
pub fn shared_dir(manifest_dir: &Path) -> PathBuf {
    std::env::var_os("SMRTSHARE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root(manifest_dir).join("..").join("shared"))
}

/// True under CI (`CI=true` or `CI=1`), where a test must never skip for want of a tool or
/// fixture: it fails instead.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `shared/fixtures/smrtlink`, or `None` (with a notice on stderr) when it is missing outside CI.
///
/// # Panics
/// When the fixtures are missing and `CI=true`: CI must never skip them silently.
pub fn smrtlink_fixtures(manifest_dir: &Path) -> Option<PathBuf> {
    let dir = shared_dir(manifest_dir).join("fixtures").join("smrtlink");
    if dir.join("projects.json").is_file() {
        return Some(dir);
    }
    assert!(
        !is_ci(),
        "shared fixtures missing at {} (CI=true: they must be present)",
        dir.display()
    );
    eprintln!(
        "NOTICE: skipping: shared fixtures not found at {}",
        dir.display()
    );
    None
}

/// The grpcurl binary: `SMRTSHARE_GRPCURL`, else `<workspace>/.tools/bin/grpcurl` (installed by
/// `scripts/ensure-tools`), else `grpcurl` on PATH.
pub fn grpcurl(manifest_dir: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("SMRTSHARE_GRPCURL") {
        return PathBuf::from(path);
    }
    let local = workspace_root(manifest_dir)
        .join(".tools")
        .join("bin")
        .join("grpcurl");
    if local.exists() {
        local
    } else {
        PathBuf::from("grpcurl")
    }
}

/// Copies a directory tree (files and directories; symlinks are recreated as symlinks) so tests
/// can modify fixtures without touching the originals. Copied files are made writable.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            let mut perms = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}
