//! Nothing someone else made stays in the work area, where no user can see it: a directory
//! holding files smrtshare did not stage goes back into its project directory under its old name,
//! or, when that name is taken meanwhile, into the project's `smrtshare-recovered/`, which staging
//! creates without a marker (so it is foreign to staging from then on, and the project's members
//! see it and may take their files back).

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;

use crate::fs::{self, Ops, describe};
use crate::model::join;

/// The directory, in a project directory, that receives what could not go back under its name.
pub const RECOVERED_DIR: &str = "smrtshare-recovered";

/// Moves work item `work_name` back to `name` in the project directory (`project`, `project_rel`
/// relative to the root), or into its `smrtshare-recovered/` when the name is taken. Returns the
/// path it now has, relative to the root; an error when it stays in the work area.
pub fn put_back(
    ops: &Ops<'_>,
    work_name: &str,
    project: BorrowedFd<'_>,
    project_rel: &str,
    name: &str,
) -> Result<String, String> {
    let work = ops.tree().work();
    match ops.rename_noreplace(work, work_name, project, name) {
        Ok(()) => return Ok(join(&[project_rel, name])),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(describe(e)),
    }
    let recovered = recovered_dir(ops, project)
        .map_err(|e| format!("{}: {e}", join(&[project_rel, RECOVERED_DIR])))?;
    for n in 0..1000 {
        let candidate = if n == 0 {
            name.to_owned()
        } else {
            format!("{name} ({n})")
        };
        match ops.rename_noreplace(work, work_name, recovered.as_fd(), &candidate) {
            Ok(()) => return Ok(join(&[project_rel, RECOVERED_DIR, &candidate])),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(describe(e)),
        }
    }
    Err(format!(
        "{}: a thousand names like {name:?} are taken",
        join(&[project_rel, RECOVERED_DIR])
    ))
}

/// The project's `smrtshare-recovered/`, made when missing. One found there must be a directory
/// staging's user owns (not a symlink, not a member's private directory).
fn recovered_dir(ops: &Ops<'_>, project: BorrowedFd<'_>) -> Result<OwnedFd, String> {
    match ops.mkdir_unmarked(project, RECOVERED_DIR) {
        Ok(fd) => return Ok(fd),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(describe(e)),
    }
    let fd = fs::open_dir(project, RECOVERED_DIR).map_err(describe)?;
    if !fs::fstat(fd.as_fd()).map_err(describe)?.ours() {
        return Err("exists and is not staging's".to_owned());
    }
    Ok(fd)
}
