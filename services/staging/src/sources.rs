//! Source directories: opened under a configured source root, never through a symlink.
//!
//! A directory is opened from the source root's handle one component at a time without following
//! symlinks; when that fails because the path goes through a symlink or `..` leaves the root
//! lexically, the path is canonicalised and must then lie under a canonical source root, and is
//! opened the same way from there. Where the kernel has `openat2` (Linux 5.6), the component walk
//! is first tried as one call with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, which refuses exactly
//! what the walk refuses; any failure falls back to the walk, which then explains it. A path under
//! no root is "outside the source roots", in one wording whether it exists or not.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::fault::Fault;
use crate::fs::{self, Meta, describe};
use crate::sourcecache::{Listing, SourceCache, Stamp};

/// The configured source roots, canonical and opened.
#[derive(Debug)]
pub struct SourceRoots {
    roots: Vec<(PathBuf, OwnedFd)>,
}

impl SourceRoots {
    /// Canonicalises and opens every root; each must be an existing directory.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<Self> {
        anyhow::ensure!(!paths.is_empty(), "at least one --source-root is required");
        let mut roots = Vec::new();
        for path in paths {
            let canonical = std::fs::canonicalize(path)
                .map_err(|e| anyhow::anyhow!("source root {}: {e}", path.display()))?;
            let fd = rustix::fs::open(
                &canonical,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| anyhow::anyhow!("source root {}: {}", path.display(), describe(e)))?;
            anyhow::ensure!(
                canonical.to_str().is_some(),
                "source root {} is not valid UTF-8",
                canonical.display()
            );
            roots.push((canonical, fd));
        }
        Ok(Self { roots })
    }

    /// The canonical roots.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|(p, _)| p.as_path())
    }

    /// The canonical roots with their opened handles.
    pub fn handles(&self) -> impl Iterator<Item = (&Path, BorrowedFd<'_>)> {
        self.roots.iter().map(|(p, fd)| (p.as_path(), fd.as_fd()))
    }

    /// The one wording for a path that is not under any source root, whether it exists or not.
    fn outside(&self, path: &Path) -> Fault {
        let roots: Vec<String> = self.paths().map(|p| p.display().to_string()).collect();
        Fault::permanent(format!(
            "{} is outside the source roots ({})",
            path.display(),
            roots.join(", ")
        ))
    }

    /// Opens a source directory under a root, or says why not.
    pub fn open_dir(&self, dir: &Path) -> Result<SourceDir, Fault> {
        for (root, fd) in &self.roots {
            if let Ok(rest) = dir.strip_prefix(root) {
                match walk(root, fd, rest)? {
                    Some(found) => return Ok(found),
                    None => break,
                }
            }
        }
        // Through a symlink or `..`: where it really is decides.
        let lexical = normalized(dir);
        let canonical = match std::fs::canonicalize(dir) {
            Ok(canonical) => canonical,
            Err(e) if self.paths().any(|r| lexical.starts_with(r)) => {
                return Err(Fault::io(&e, format!("{}: {e}", dir.display())));
            }
            Err(_) => return Err(self.outside(&lexical)),
        };
        let Some((root, fd)) = self
            .roots
            .iter()
            .find(|(root, _)| canonical.starts_with(root))
        else {
            return Err(self.outside(&canonical));
        };
        let rest = canonical
            .strip_prefix(root)
            .map_err(|_| self.outside(&canonical))?;
        walk(root, fd, rest)?.ok_or_else(|| {
            Fault::passing(format!(
                "{}: changed while being resolved (a symbolic link appeared)",
                canonical.display()
            ))
        })
    }
}

/// An opened source directory.
#[derive(Debug)]
pub struct SourceDir {
    /// Its canonical path (shared by the sources found in it).
    pub path: Arc<Path>,
    /// Opened as a path handle, or for reading when `listable`.
    pub fd: OwnedFd,
    /// `fd` was opened for reading and its entries were never read: it is listed as it is,
    /// without opening the directory again.
    listable: bool,
    /// What `fstat` said of it, on first use; `None` when it failed.
    meta: OnceLock<Option<Meta>>,
    /// Its listing (names, types, inode numbers), read (or taken from the cache) on first use;
    /// `None` when the directory cannot be listed (then each file is looked at on its own).
    listing: OnceLock<Option<Arc<Listing>>>,
}

impl SourceDir {
    fn new(path: PathBuf, fd: OwnedFd) -> Self {
        Self {
            path: path.into(),
            fd,
            listable: false,
            meta: OnceLock::new(),
            listing: OnceLock::new(),
        }
    }

    /// What `fstat` says of the directory (asked once); `None` when it failed.
    pub(crate) fn meta(&self) -> Option<&Meta> {
        self.meta
            .get_or_init(|| fs::fstat(self.fd.as_fd()).ok())
            .as_ref()
    }

    /// The directory's stamp, which its listing is valid for.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        self.meta().map(Stamp::of)
    }

    /// What the directory's listing says about `name`: its device, type and inode number, or
    /// `Some(None)` when it is not there; `None` when the listing cannot settle it.
    pub(crate) fn lookup(
        &self,
        cache: &SourceCache,
        name: &str,
    ) -> Option<Option<(u64, FileType, u64)>> {
        let meta = *self.meta()?;
        let names = self
            .listing
            .get_or_init(|| {
                if let Some(listing) = cache.listing(&meta) {
                    return Some(listing);
                }
                let read_at = SystemTime::now();
                let items = if self.listable {
                    // Read once, here, under the `OnceLock`: its offset is still 0.
                    fs::list_once(self.fd.as_fd()).ok()?
                } else {
                    let fd = fs::reopen_dir(self.fd.as_fd()).ok()?;
                    fs::list_once(fd.as_fd()).ok()?
                };
                let listing: Arc<Listing> =
                    Arc::new(items.into_iter().map(|(n, k, i)| (n, (k, i))).collect());
                cache.keep_listing(&meta, listing.clone(), read_at);
                Some(listing)
            })
            .as_ref()?;
        match names.get(name) {
            None => Some(None),
            Some((FileType::Unknown, _)) => None,
            Some((kind, ino)) => Some(Some((meta.dev, *kind, *ino))),
        }
    }
}

/// `path` with `.` and `..` applied lexically (`..` at the root stays at the root).
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Opens `rest` under the source root without following symlinks. `Ok(None)` when the lexical
/// path cannot be walked that way (a symlink, or `..` above the root): the caller canonicalises.
fn walk(root: &Path, root_fd: &OwnedFd, rest: &Path) -> Result<Option<SourceDir>, Fault> {
    if let Some(found) = walk_at_once(root, root_fd, rest) {
        return Ok(Some(found));
    }
    let mut stack: Vec<(OwnedFd, String)> = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(name) => {
                let Some(name) = name.to_str() else {
                    return Err(Fault::permanent(format!(
                        "{}: path is not valid UTF-8",
                        rest.display()
                    )));
                };
                let parent = stack
                    .last()
                    .map(|(fd, _)| fd.as_fd())
                    .unwrap_or(root_fd.as_fd());
                match fs::open_path_dir(parent, name) {
                    Ok(fd) => stack.push((fd, name.to_owned())),
                    Err(Errno::LOOP | Errno::NOTDIR) => return Ok(None),
                    Err(e) => {
                        let mut path = root.to_path_buf();
                        path.extend(stack.iter().map(|(_, n)| n.as_str()));
                        path.push(name);
                        return Err(match e {
                            Errno::NOENT => {
                                Fault::permanent(format!("directory {} not found", path.display()))
                            }
                            other => Fault::errno(
                                other,
                                format!("{}: {}", path.display(), describe(other)),
                            ),
                        });
                    }
                }
            }
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Ok(None);
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Ok(None),
        }
    }
    let mut path = root.to_path_buf();
    path.extend(stack.iter().map(|(_, n)| n.as_str()));
    let fd = match stack.pop() {
        Some((fd, _)) => fd,
        None => rustix::fs::openat(
            root_fd,
            ".",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Fault::errno(e, format!("{}: {}", root.display(), describe(e))))?,
    };
    Ok(Some(SourceDir::new(path, fd)))
}

/// The walk above as one `openat2` that resolves `rest` beneath the root and refuses every
/// symlink on the way (the kernel applies `..` to the directory reached, as the walk does), opened
/// for reading so its listing needs no second open. `None` when that call fails for any reason
/// (no `openat2`, a symlink, `..` above the root, a missing directory, no read permission): the
/// walk then runs and gives the answer and its message.
fn walk_at_once(root: &Path, root_fd: &OwnedFd, rest: &Path) -> Option<SourceDir> {
    let mut names: Vec<&str> = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(name) => names.push(name.to_str()?),
            Component::ParentDir => {
                names.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if names.is_empty() {
        return None;
    }
    let fd = rustix::fs::openat2(
        root_fd,
        rest,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH
            | rustix::fs::ResolveFlags::NO_SYMLINKS
            | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut path = root.to_path_buf();
    path.extend(names);
    Some(SourceDir {
        path: path.into(),
        fd,
        listable: true,
        meta: OnceLock::new(),
        listing: OnceLock::new(),
    })
}
