//! Every filesystem system call staging makes, through rustix.
//!
//! Paths under the collection root are never handed to the kernel whole: every directory is opened
//! from its opened parent, one component at a time, with `O_NOFOLLOW | O_DIRECTORY`, and every
//! change is an `*at` call on an opened directory with a single-component name. A symlink planted
//! anywhere is therefore never followed. Directories are created in the hidden work area, given
//! their exact mode with `fchmod` (the umask does not apply) and their marker, and renamed into
//! place with `RENAME_NOREPLACE`, so nothing half-made is ever visible and nothing is clobbered.
//!
//! Every mutating call goes through [`Ops`], which counts it (per operation and in total).

use std::cell::Cell;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context as _;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, XattrFlags,
};
use rustix::io::Errno;

use crate::marker::{self, Marker};

/// Names directly under the root that start with this are smrtshare's own (never a project).
pub const HIDDEN_PREFIX: &str = ".smrtshare";
/// The hidden area under the root: the work area, the lock file and (by default) the records.
pub const HIDDEN_DIR: &str = ".smrtshare";
/// The work area inside the hidden area.
pub const WORK_DIR: &str = "work";
/// Lock file inside the hidden area: one staging process per root.
const LOCK_FILE: &str = "staging.lock";

/// Result of a system call.
pub type Result<T> = std::result::Result<T, Errno>;

/// What `stat` tells staging about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// File type (symlinks are reported as such: nothing is followed).
    pub kind: FileType,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Link count.
    pub nlink: u64,
    /// Change time (seconds, nanoseconds).
    pub ctime: (i64, u64),
    /// Owner.
    pub uid: u32,
}

impl Meta {
    fn of(st: &rfs::Stat) -> Self {
        Self {
            kind: FileType::from_raw_mode(st.st_mode),
            dev: to_u64(st.st_dev),
            ino: to_u64(st.st_ino),
            mode: st.st_mode & 0o7777,
            size: to_u64(st.st_size),
            nlink: to_u64(st.st_nlink),
            ctime: (to_i64(st.st_ctime), to_u64(st.st_ctime_nsec)),
            uid: st.st_uid,
        }
    }

    /// True when staging's own user owns it: only then can smrtshare have made it. (A group member
    /// can make a directory in a 1775 project directory and give it any `user.*` attribute.)
    pub fn ours(&self) -> bool {
        static ME: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        self.uid == *ME.get_or_init(|| rustix::process::geteuid().as_raw())
    }

    /// True for the same file (device and inode).
    pub fn same_file(&self, dev: u64, ino: u64) -> bool {
        self.dev == dev && self.ino == ino
    }
}

fn to_u64<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(0)
}

fn to_i64<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(0)
}

/// One directory entry.
#[derive(Clone, Debug)]
pub struct Item {
    /// Its name (not necessarily UTF-8 for entries others made).
    pub name: OsString,
    /// Its type as the directory reports it (`Unknown` on filesystems that do not say).
    pub kind: FileType,
    /// Its inode number as the directory reports it.
    pub ino: u64,
}

impl Item {
    /// The name as UTF-8, when it is.
    pub fn utf8(&self) -> Option<&str> {
        self.name.to_str()
    }
}

/// A short description of an errno for messages.
pub fn describe(e: Errno) -> String {
    let text = std::io::Error::from(e).to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// Opens directory `name` inside `parent` for reading, refusing symlinks.
pub fn open_dir(parent: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    check_name(name)?;
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens directory `name` inside `parent` as a path handle (no read permission needed), refusing
/// symlinks.
pub fn open_path_dir(parent: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    check_name(name)?;
    rfs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `rel` ('/'-separated components) under `base`, one component at a time.
pub fn open_rel(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd> {
    let mut parts = rel.split('/').filter(|p| !p.is_empty());
    let Some(first) = parts.next() else {
        return rfs::openat(
            base,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
    };
    let mut fd = open_dir(base, first)?;
    for part in parts {
        fd = open_dir(fd.as_fd(), part)?;
    }
    Ok(fd)
}

/// Opens the directory `fd` refers to (possibly a path handle) again, for reading its entries.
pub fn reopen_dir(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    rfs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a regular file `name` inside `dir` for reading, refusing symlinks.
pub fn open_file(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    check_name(name)?;
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
}

/// `lstat` of `name` inside `dir`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &str) -> Result<Meta> {
    check_name(name)?;
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| Meta::of(&st))
}

/// `lstat` of an absolute path (a read, used to compare a staged file with its source).
pub fn lstat_path(path: &str) -> Result<Meta> {
    rfs::statat(rfs::CWD, path, AtFlags::SYMLINK_NOFOLLOW).map(|st| Meta::of(&st))
}

/// `fstat`.
pub fn fstat(fd: BorrowedFd<'_>) -> Result<Meta> {
    rfs::fstat(fd).map(|st| Meta::of(&st))
}

/// The directory's marker: `None` when it has none, one smrtshare did not write, or when staging's
/// own user does not own the directory (a marker anyone could have set proves nothing).
pub fn read_marker(fd: BorrowedFd<'_>) -> Result<Option<Marker>> {
    if !fstat(fd)?.ours() {
        return Ok(None);
    }
    let mut buf = [0u8; 8192];
    match rfs::fgetxattr(fd, marker::XATTR, &mut buf[..]) {
        Ok(len) => Ok(Marker::decode(&buf[..len])),
        Err(Errno::NODATA | Errno::RANGE) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every entry of an opened directory except `.` and `..`.
pub fn list(fd: BorrowedFd<'_>) -> Result<Vec<Item>> {
    let mut dir = rfs::Dir::read_from(fd)?;
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(Item {
            name: std::ffi::OsStr::from_bytes(name).to_owned(),
            kind: entry.file_type(),
            ino: entry.ino(),
        });
    }
    Ok(out)
}

/// Names of an opened directory with the type and inode number the directory reports (one
/// `getdents64` per buffer, no `stat`), except `.` and `..`. Reads from the descriptor's current
/// offset: call it once on a freshly opened directory (then no duplicate descriptor is needed).
pub fn list_once(fd: BorrowedFd<'_>) -> Result<Vec<(String, FileType, u64)>> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut dir = rfs::RawDir::new(fd, &mut buf);
    let mut out = Vec::new();
    while let Some(entry) = dir.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        match std::str::from_utf8(name) {
            Ok(name) => out.push((name.to_owned(), entry.file_type(), entry.ino())),
            // Not a name smrtshare makes or stages: reported as unknown, so callers look closer.
            Err(_) => out.push((
                String::from_utf8_lossy(name).into_owned(),
                FileType::Unknown,
                0,
            )),
        }
    }
    Ok(out)
}

/// The opened collection root, its hidden work area, and the counter of mutating calls.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
    work: OwnedFd,
    _lock: OwnedFd,
    root_path: PathBuf,
    dev: u64,
    dir_mode: u32,
    mutating: AtomicU64,
    noreplace: AtomicBool,
    seq: AtomicU64,
    hooks: crate::hooks::Hooks,
}

impl Tree {
    /// Opens the root (which must exist: it is never created), creates the hidden area and work
    /// area when missing, takes the one-process-per-root lock, and checks that the filesystem
    /// stores `user.*` extended attributes.
    pub fn open(root_path: &Path, dir_mode: u32) -> anyhow::Result<Self> {
        let root = rfs::open(
            root_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the staging root {}: {}",
                root_path.display(),
                describe(e)
            )
        })?;
        let meta = fstat(root.as_fd())?;
        let hidden = open_or_create_private(root.as_fd(), HIDDEN_DIR).map_err(|e| {
            anyhow::anyhow!(
                "cannot open or create {}/{HIDDEN_DIR}: {}",
                root_path.display(),
                describe(e)
            )
        })?;
        let lock = rfs::openat(
            hidden.as_fd(),
            LOCK_FILE,
            OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the lock file {}/{HIDDEN_DIR}/{LOCK_FILE}: {}",
                root_path.display(),
                describe(e)
            )
        })?;
        match rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => anyhow::bail!(
                "another smrtshare-staging process already serves the root {} (it holds {HIDDEN_DIR}/{LOCK_FILE})",
                root_path.display()
            ),
            Err(e) => anyhow::bail!(
                "cannot lock {}/{HIDDEN_DIR}/{LOCK_FILE}: {}",
                root_path.display(),
                describe(e)
            ),
        }
        let work = open_or_create_private(hidden.as_fd(), WORK_DIR).map_err(|e| {
            anyhow::anyhow!(
                "cannot open or create the work area {}/{HIDDEN_DIR}/{WORK_DIR}: {}",
                root_path.display(),
                describe(e)
            )
        })?;
        probe_xattrs(work.as_fd())
            .with_context(|| format!("staging root {}", root_path.display()))?;
        Ok(Self {
            root,
            work,
            _lock: lock,
            root_path: root_path.to_path_buf(),
            dev: meta.dev,
            dir_mode,
            mutating: AtomicU64::new(0),
            noreplace: AtomicBool::new(true),
            seq: AtomicU64::new(0),
            hooks: crate::hooks::Hooks::default(),
        })
    }

    /// The same tree with test hooks installed.
    pub fn with_hooks(mut self, hooks: crate::hooks::Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The installed test hooks.
    pub fn hooks(&self) -> &crate::hooks::Hooks {
        &self.hooks
    }

    /// The opened root.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The opened work area.
    pub fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// The root as configured.
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The root's device.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// The mode every directory gets.
    pub fn dir_mode(&self) -> u32 {
        self.dir_mode
    }

    /// Mutating calls made since start.
    pub fn mutating_calls(&self) -> u64 {
        self.mutating.load(Ordering::Relaxed)
    }

    /// A fresh name in the work area.
    pub fn work_name(&self, what: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{seq:08}-{what}")
    }

    /// The work area's path relative to the root, for action reports.
    pub fn work_rel(name: &str) -> String {
        format!("{HIDDEN_DIR}/{WORK_DIR}/{name}")
    }
}

fn open_or_create_private(parent: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    let fd = open_dir(parent, name)?;
    let meta = fstat(fd.as_fd())?;
    if meta.mode & 0o077 != 0 {
        rfs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok(fd)
}

fn probe_xattrs(work: BorrowedFd<'_>) -> anyhow::Result<()> {
    let unsupported = |e: Errno| {
        anyhow::anyhow!(
            "the filesystem does not store user extended attributes ({}); smrtshare marks the \
             directories it creates with a user.smrtshare attribute so that its records can be \
             rebuilt from the tree: use a filesystem with user xattrs (ext4, XFS, Btrfs, NFS 4.2, \
             Lustre, GPFS) or mount it with user_xattr",
            describe(e)
        )
    };
    match read_marker(work) {
        Ok(Some(Marker::Work)) => Ok(()),
        Ok(_) => rfs::fsetxattr(
            work,
            marker::XATTR,
            Marker::Work.encode().as_bytes(),
            XattrFlags::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTSUP | Errno::PERM => unsupported(e),
            other => anyhow::anyhow!("cannot mark the work area: {}", describe(other)),
        }),
        Err(e @ Errno::NOTSUP) => Err(unsupported(e)),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the work area's marker: {}",
            describe(e)
        )),
    }
}

/// The mutating calls of one operation, counted.
#[derive(Debug)]
pub struct Ops<'t> {
    tree: &'t Tree,
    count: Cell<u64>,
}

impl<'t> Ops<'t> {
    /// Starts counting an operation's calls.
    pub fn new(tree: &'t Tree) -> Self {
        Self {
            tree,
            count: Cell::new(0),
        }
    }

    /// The tree.
    pub fn tree(&self) -> &'t Tree {
        self.tree
    }

    /// Mutating calls made so far by this operation.
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    fn bump(&self) {
        self.count.set(self.count.get() + 1);
        self.tree.mutating.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates directory `name` in `parent` with the configured mode (exactly: `fchmod` after
    /// `mkdir`, so the umask does not apply) and the given marker; returns it opened.
    pub fn mkdir(&self, parent: BorrowedFd<'_>, name: &str, marker: &Marker) -> Result<OwnedFd> {
        let fd = self.mkdir_unmarked(parent, name)?;
        self.set_marker(fd.as_fd(), marker)?;
        Ok(fd)
    }

    /// Creates directory `name` in `parent` with the configured mode and no marker (a directory
    /// smrtshare makes for others' files, which it never touches again); returns it opened.
    pub fn mkdir_unmarked(&self, parent: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
        check_name(name)?;
        self.bump();
        rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
        let fd = open_dir(parent, name)?;
        self.chmod(fd.as_fd(), self.tree.dir_mode)?;
        Ok(fd)
    }

    /// Sets an opened directory's mode.
    pub fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
        self.bump();
        rfs::fchmod(fd, Mode::from_raw_mode(mode))
    }

    /// Writes an opened directory's marker.
    pub fn set_marker(&self, fd: BorrowedFd<'_>, marker: &Marker) -> Result<()> {
        self.bump();
        rfs::fsetxattr(
            fd,
            marker::XATTR,
            marker.encode().as_bytes(),
            XattrFlags::empty(),
        )
    }

    /// Hard-links `src_name` in `src_dir` as `dst_name` in `dst_dir` (`linkat` with flags 0: a
    /// symlink is never followed).
    pub fn link(
        &self,
        src_dir: BorrowedFd<'_>,
        src_name: &str,
        dst_dir: BorrowedFd<'_>,
        dst_name: &str,
    ) -> Result<()> {
        check_name(src_name)?;
        check_name(dst_name)?;
        self.bump();
        rfs::linkat(src_dir, src_name, dst_dir, dst_name, AtFlags::empty())
    }

    /// Unlinks a file.
    pub fn unlink(&self, dir: BorrowedFd<'_>, name: &str) -> Result<()> {
        check_name(name)?;
        self.bump();
        rfs::unlinkat(dir, name, AtFlags::empty())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, dir: BorrowedFd<'_>, name: &str) -> Result<()> {
        check_name(name)?;
        self.bump();
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    }

    /// Renames without ever replacing what is at the target (`EEXIST` then). Filesystems without
    /// `RENAME_NOREPLACE` get a check followed by a plain rename (logged once).
    pub fn rename_noreplace(
        &self,
        from_dir: BorrowedFd<'_>,
        from: &str,
        to_dir: BorrowedFd<'_>,
        to: &str,
    ) -> Result<()> {
        check_name(from)?;
        check_name(to)?;
        if self.tree.noreplace.load(Ordering::Relaxed) {
            self.bump();
            match rfs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
                Err(Errno::INVAL | Errno::NOSYS) => {
                    tracing::warn!(
                        "the filesystem refuses RENAME_NOREPLACE; renames now check the target first"
                    );
                    self.tree.noreplace.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        match lstat_at(to_dir, to) {
            Ok(_) => return Err(Errno::EXIST),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        self.bump();
        rfs::renameat(from_dir, from, to_dir, to)
    }

    /// Renames, replacing a file at the target atomically (used to swap a stale link for a fresh
    /// one: readers see the old or the new file, never none).
    pub fn rename_over(
        &self,
        from_dir: BorrowedFd<'_>,
        from: &str,
        to_dir: BorrowedFd<'_>,
        to: &str,
    ) -> Result<()> {
        check_name(from)?;
        check_name(to)?;
        self.bump();
        rfs::renameat(from_dir, from, to_dir, to)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_locked_marked_and_counts_mutations() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path(), 0o1775).unwrap();
        let err = Tree::open(dir.path(), 0o1775).unwrap_err();
        assert!(err.to_string().contains("already serves"), "{err}");
        assert_eq!(read_marker(tree.work()).unwrap(), Some(Marker::Work));
        let ops = Ops::new(&tree);
        let fd = ops.mkdir(tree.root(), "p", &Marker::Work).unwrap();
        assert_eq!(ops.count(), 3);
        assert_eq!(
            fstat(fd.as_fd()).unwrap().mode,
            0o1775,
            "exact mode despite the umask"
        );
        assert_eq!(tree.mutating_calls(), 3);
        assert_eq!(
            ops.rename_noreplace(tree.root(), "p", tree.work(), "p"),
            Ok(())
        );
        std::fs::create_dir(dir.path().join("q")).unwrap();
        std::fs::create_dir(dir.path().join("r")).unwrap();
        assert_eq!(
            ops.rename_noreplace(tree.root(), "q", tree.root(), "r"),
            Err(Errno::EXIST)
        );
        assert!(dir.path().join("q").is_dir() && dir.path().join("r").is_dir());
    }

    #[test]
    fn symlinks_are_never_followed() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let outside = smrtshare_testkit::tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let root = rfs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert!(open_dir(root.as_fd(), "link").is_err());
        assert!(open_rel(root.as_fd(), "link/x").is_err());
        assert_eq!(open_dir(root.as_fd(), "../x").unwrap_err(), Errno::INVAL);
        assert_eq!(
            lstat_at(root.as_fd(), "link").unwrap().kind,
            FileType::Symlink
        );
    }
}
