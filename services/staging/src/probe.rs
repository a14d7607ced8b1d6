//! What is at a name: the project's or dataset's own directory (by its marker), nothing, or
//! something else (a symlink, a file, a directory smrtshare did not create, another project's).

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::fs::{self, describe};
use crate::marker::Marker;
use crate::model::{ItemId, ProjectId};

/// How a project or dataset directory found on disk relates to what smrtshare expects.
#[derive(Debug)]
pub enum Probe {
    /// Nothing there.
    Missing,
    /// smrtshare's, with its current marker (possibly retired).
    Found(OwnedFd, Option<Marker>),
    /// Something else, with a description.
    Foreign(String),
}

/// Looks at `name` in the root: project `p`'s directory, nothing, or something else.
pub fn probe_project(root: BorrowedFd<'_>, name: &str, p: ProjectId) -> Result<Probe, String> {
    probe(root, name, |m| match m {
        Some(Marker::Project(q)) if *q == p => Ok(()),
        Some(Marker::Retired(inner)) if matches!(**inner, Marker::Project(q) if q == p) => Ok(()),
        Some(Marker::Project(q)) => Err(format!("is project {q}'s directory")),
        Some(Marker::Retired(inner)) if matches!(**inner, Marker::Project(_)) => {
            Err("was another project's directory and still holds files others added".into())
        }
        _ => Err("was not created by smrtshare".into()),
    })
}

/// Looks at `name` in a project directory: the directory of `item` (a dataset or an analysis
/// job), nothing, or something else.
pub fn probe_item(project: BorrowedFd<'_>, name: &str, item: ItemId) -> Result<Probe, String> {
    probe(project, name, |m| match m.as_ref().and_then(Marker::item) {
        Some(found) if found == item => Ok(()),
        Some(other) if !matches!(m, Some(Marker::Retired(_))) => {
            Err(format!("is {other}'s directory"))
        }
        _ => Err(format!("was not created by smrtshare for {item}")),
    })
}

fn probe(
    parent: BorrowedFd<'_>,
    name: &str,
    ours: impl Fn(&Option<Marker>) -> Result<(), String>,
) -> Result<Probe, String> {
    // Opened at once (refusing symlinks and non-directories); only a failure is looked at closer.
    let fd = match fs::open_dir(parent, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Probe::Missing),
        Err(open_error) => match fs::lstat_at(parent, name) {
            Err(Errno::NOENT) => return Ok(Probe::Missing),
            Err(e) => return Err(format!("{name}: {}", describe(e))),
            Ok(meta) if meta.kind == FileType::Symlink => {
                return Ok(Probe::Foreign("is a symbolic link".into()));
            }
            Ok(meta) if meta.kind != FileType::Directory => {
                return Ok(Probe::Foreign("is not a directory".into()));
            }
            Ok(_) => return Err(format!("{name}: {}", describe(open_error))),
        },
    };
    let marker = fs::read_marker(fd.as_fd()).map_err(|e| format!("{name}: {}", describe(e)))?;
    Ok(match ours(&marker) {
        Ok(()) => Probe::Found(fd, marker),
        Err(why) => Probe::Foreign(why),
    })
}
