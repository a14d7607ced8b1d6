//! Mounts. `linkat` refuses to link across mounts even when both are views of one filesystem
//! (a bind mount, systemd's `ReadWritePaths=`, a second Kubernetes `hostPath` volume), so the
//! device number alone does not tell whether staging can link: the mount id (`statx`
//! `STATX_MNT_ID`, Linux 5.8) does. [`check_layout`] runs at start and refuses a layout where a
//! source root and the staging root are on different mounts, or where one contains the other;
//! [`describe`] names a mount (from `/proc/self/mountinfo`) in messages.

use std::path::{Path, PathBuf};

use rustix::fd::{AsFd as _, BorrowedFd};
use rustix::fs::{AtFlags, StatxFlags};
use rustix::io::Errno;

use crate::fs::describe as describe_errno;

/// Where a file is: its filesystem (device) and, when the kernel tells, its mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Device of the filesystem.
    pub dev: u64,
    /// Mount id as `/proc/self/mountinfo` numbers it; `None` before Linux 5.8.
    pub mount: Option<u64>,
}

/// The place of an opened file or directory (a path handle will do).
pub fn place(fd: BorrowedFd<'_>) -> Result<Place, Errno> {
    let st = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::MNT_ID,
    )?;
    let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
    let mount = (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id);
    Ok(Place { dev, mount })
}

/// A mount for messages: `mount 66 at /srv/globus (ext4 /dev/vda, /globus of the filesystem)`,
/// or just `mount 66` when `/proc/self/mountinfo` does not list it.
pub fn describe(mount: u64) -> String {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return format!("mount {mount}");
    };
    table
        .lines()
        .find_map(|line| describe_line(line, mount))
        .unwrap_or_else(|| format!("mount {mount}"))
}

/// One `mountinfo` line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER`.
fn describe_line(line: &str, mount: u64) -> Option<String> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    if fields.first()?.parse::<u64>().ok()? != mount {
        return None;
    }
    let (root, point) = (unescape(fields.get(3)?), unescape(fields.get(4)?));
    let mut rest = right.split(' ');
    let (fstype, source) = (rest.next()?, unescape(rest.next().unwrap_or("")));
    let of = if root == "/" {
        String::new()
    } else {
        format!(", {root} of the filesystem")
    };
    Some(format!("mount {mount} at {point} ({fstype} {source}{of})"))
}

/// `mountinfo` writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a file at `a` cannot be hard-linked at `b` (or the other way round), in words
/// (`on different mounts of one filesystem (mount 66 at /srv/a (…) and mount 70 at …)`); `None`
/// when it can, as far as the kernel tells.
pub fn apart(a: Place, b: Place) -> Option<String> {
    let both = || match (a.mount, b.mount) {
        (Some(x), Some(y)) => format!(" ({} and {})", describe(x), describe(y)),
        _ => String::new(),
    };
    if a.dev != b.dev {
        return Some(format!("on different filesystems{}", both()));
    }
    match (a.mount, b.mount) {
        (Some(x), Some(y)) if x != y => Some(format!(
            "on different mounts of one filesystem{}; linkat refuses links across mounts, bind \
             mounts included",
            both()
        )),
        _ => None,
    }
}

/// A layout staging refuses to serve, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks that every source root and the staging root are on one mount, and that no source root
/// contains the staging root or lies inside it. `roots` are canonical paths with their opened
/// handles; `root` is the staging root as configured. Reads only: nothing is created before the
/// layout is known to work.
pub fn check_layout<'a>(
    root: &Path,
    roots: impl IntoIterator<Item = (&'a Path, BorrowedFd<'a>)>,
) -> Result<(), Refused> {
    let canonical: PathBuf = std::fs::canonicalize(root).map_err(|e| {
        Refused(format!(
            "cannot resolve the staging root {}: {e}",
            root.display()
        ))
    })?;
    let root_fd = rustix::fs::open(
        &canonical,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        Refused(format!(
            "cannot open the staging root {}: {}",
            root.display(),
            describe_errno(e)
        ))
    })?;
    let root_place = place(root_fd.as_fd()).map_err(|e| {
        Refused(format!(
            "cannot stat the staging root {}: {}",
            root.display(),
            describe_errno(e)
        ))
    })?;
    if root_place.mount.is_none() {
        tracing::warn!(
            staging_root = %root.display(),
            "the kernel does not report mount ids (statx STATX_MNT_ID, Linux 5.8): only devices are \
             compared; links fail with EXDEV if a source root is on another mount of the same filesystem"
        );
    }
    for (source, fd) in roots {
        if canonical.starts_with(source) {
            return Err(Refused(format!(
                "the source root {} contains the staging root {}: dataset files must come from \
                 outside the collection, or smrtshare's own files (its records database) and other \
                 projects' directories could be staged; give a source root that does not hold the \
                 collection",
                source.display(),
                canonical.display()
            )));
        }
        if source.starts_with(&canonical) {
            return Err(Refused(format!(
                "the source root {} lies inside the staging root {}: the collection would share \
                 its own tree; give a source root outside the collection",
                source.display(),
                canonical.display()
            )));
        }
        let source_place = place(fd).map_err(|e| {
            Refused(format!(
                "cannot stat the source root {}: {}",
                source.display(),
                describe_errno(e)
            ))
        })?;
        if let Some(why) = apart(source_place, root_place) {
            return Err(Refused(format!(
                "the source root {} and the staging root {} are {why}: hard links cannot be made \
                 (EXDEV) and smrtshare never copies; give staging one mount that holds both trees \
                 (their common parent)",
                source.display(),
                canonical.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let line =
            r"66 46 254:0 /tmp/ut/a\040b /srv/my\040data rw,relatime shared:1 - ext4 /dev/vda rw";
        assert_eq!(
            describe_line(line, 66).unwrap(),
            "mount 66 at /srv/my data (ext4 /dev/vda, /tmp/ut/a b of the filesystem)"
        );
        assert_eq!(describe_line(line, 67), None);
        let plain = "22 27 0:21 / /proc rw,relatime - proc proc rw";
        assert_eq!(
            describe_line(plain, 22).unwrap(),
            "mount 22 at /proc (proc proc)"
        );
    }

    #[test]
    fn one_directory_is_one_place_and_nesting_is_refused() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let (root, src) = (dir.path().join("root"), dir.path().join("src"));
        std::fs::create_dir_all(root.join("inner")).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        let open = |p: &Path| {
            rustix::fs::open(
                p,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap()
        };
        let (root_fd, src_fd) = (open(&root), open(&src));
        let here = place(root_fd.as_fd()).unwrap();
        assert_eq!(apart(here, place(src_fd.as_fd()).unwrap()), None);
        let src = std::fs::canonicalize(&src).unwrap();
        check_layout(&root, [(src.as_path(), src_fd.as_fd())]).unwrap();

        let parent = std::fs::canonicalize(dir.path()).unwrap();
        let parent_fd = open(&parent);
        let err = check_layout(&root, [(parent.as_path(), parent_fd.as_fd())]).unwrap_err();
        assert!(err.0.contains("contains the staging root"), "{err}");
        let inner = std::fs::canonicalize(root.join("inner")).unwrap();
        let inner_fd = open(&inner);
        let err = check_layout(&root, [(inner.as_path(), inner_fd.as_fd())]).unwrap_err();
        assert!(err.0.contains("lies inside the staging root"), "{err}");
    }
}
