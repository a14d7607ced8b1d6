//! Why a dataset, an analysis job or an action failed, and whether sending the same request again
//! can cure it: the one place where staging tells lasting failures from passing ones. The
//! coordinator ends a task for good when every failure in the answer is permanent (it looks again
//! only when the project, the dataset or the tree changes) and retries it otherwise.
//!
//! Permanent: what the request names cannot be staged as things stand, and the same request meets
//! the same refusal: a dataset XML that is unreadable as a document, invalid or not found; a
//! resource that is missing, not a regular file or outside the source roots; a UUID that does not
//! match the XML's; a name taken by something staging did not make; a link across mounts
//! (`EXDEV`); a permission the filesystem's configuration refuses (`EPERM`, `EACCES`, `EROFS`, too
//! many links). Retryable: what the filesystem may answer differently in a moment: `EIO`,
//! `ETIMEDOUT`, `ENOSPC` and quotas (space is freed), `EAGAIN`, `EINTR`, `EBUSY`, `ESTALE`, a
//! source that changed or vanished while being linked, running out of memory or descriptors; and
//! any errno not named here (the coordinator's retries are bounded, so an unknown error is never
//! dropped silently nor retried forever).

use std::fmt;

use rustix::io::Errno;

/// A failure: what an operator reads, and whether a retry of the same request may cure it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The message, naming the file or directory and the reason.
    pub text: String,
    /// True when sending the same request again cannot cure it.
    pub permanent: bool,
}

impl Fault {
    /// A failure no retry cures (the request names something that cannot be staged as it is).
    pub fn permanent(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: true,
        }
    }

    /// A failure a retry may cure.
    pub fn passing(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: false,
        }
    }

    /// A failure of a system call, classified by its errno ([`errno_is_permanent`]).
    pub fn errno(errno: Errno, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: errno_is_permanent(errno),
        }
    }

    /// A failure of a standard-library I/O call, classified by its errno when it has one.
    pub fn io(error: &std::io::Error, text: impl Into<String>) -> Self {
        match error.raw_os_error() {
            Some(code) => Self::errno(Errno::from_raw_os_error(code), text),
            None => Self::passing(text),
        }
    }

    /// The same failure with its message prefixed by `context` (`"<context>: <text>"`).
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            text: format!("{context}: {}", self.text),
            ..self
        }
    }

    /// The same failure with its message rewritten.
    pub fn map_text(self, f: impl FnOnce(String) -> String) -> Self {
        Self {
            text: f(self.text),
            ..self
        }
    }
}

/// Most failures of one item named in full.
pub const MAX_LISTED: usize = 10;

/// The failures of one item (a dataset's resources, an analysis job's files): each named, the
/// first [`MAX_LISTED`] in full, the rest counted; together permanent only when every one is (a
/// retry may cure the others).
#[derive(Debug, Default)]
pub struct Faults {
    listed: Vec<Fault>,
    total: usize,
    passing: bool,
}

impl Faults {
    /// Adds one.
    pub fn push(&mut self, fault: Fault) {
        self.total += 1;
        self.passing |= !fault.permanent;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(fault);
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.total
    }

    /// All of them as one failure, or `None` when there are none.
    pub fn combined(mut self) -> Option<Fault> {
        match self.total {
            0 => None,
            1 => self.listed.pop(),
            n => {
                let more = n - self.listed.len();
                let tail = if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                };
                let texts: Vec<&str> = self.listed.iter().map(|f| f.text.as_str()).collect();
                Some(Fault {
                    text: format!("{n} problems: {}{tail}", texts.join("; ")),
                    permanent: !self.passing,
                })
            }
        }
    }

    /// `Ok` when there are none, else all of them as one failure.
    pub fn result(self) -> Result<(), Fault> {
        match self.combined() {
            None => Ok(()),
            Some(fault) => Err(fault),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// True when a system call failing with `errno` fails the same way when the request is sent
/// again: the filesystem's layout or configuration refuses it, or something in the way is not
/// staging's. Everything else (including errnos not named here) may pass.
pub fn errno_is_permanent(errno: Errno) -> bool {
    matches!(
        errno,
        // Across mounts or filesystems: hard links cannot be made, and smrtshare never copies.
        Errno::XDEV
            // Refused by permissions, protected_hardlinks, a read-only mount, immutable files.
            | Errno::PERM
            | Errno::ACCESS
            | Errno::ROFS
            // The source has the most links its filesystem allows.
            | Errno::MLINK
            // A name taken by something staging did not make, or a path that is not what it must
            // be (a symlink, a file where a directory is wanted, a name too long).
            | Errno::EXIST
            | Errno::LOOP
            | Errno::NOTDIR
            | Errno::ISDIR
            | Errno::NAMETOOLONG
            | Errno::INVAL
            // The filesystem cannot do it at all (no user xattrs, no hard links).
            | Errno::NOTSUP
            | Errno::NOSYS
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_classified_by_whether_a_retry_can_cure_them() {
        for permanent in [
            Errno::XDEV,
            Errno::PERM,
            Errno::ACCESS,
            Errno::ROFS,
            Errno::MLINK,
            Errno::EXIST,
            Errno::LOOP,
            Errno::NOTDIR,
            Errno::NAMETOOLONG,
        ] {
            assert!(errno_is_permanent(permanent), "{permanent:?}");
        }
        for passing in [
            Errno::IO,
            Errno::TIMEDOUT,
            Errno::NOSPC,
            Errno::DQUOT,
            Errno::AGAIN,
            Errno::INTR,
            Errno::BUSY,
            Errno::STALE,
            Errno::NOMEM,
            Errno::MFILE,
            Errno::NFILE,
            // A source that vanished while being linked: the next apply resolves it afresh.
            Errno::NOENT,
            Errno::NOTEMPTY,
            Errno::HOSTDOWN,
        ] {
            assert!(!errno_is_permanent(passing), "{passing:?}");
        }
        let io = std::io::Error::from_raw_os_error(Errno::XDEV.raw_os_error());
        assert!(Fault::io(&io, "x").permanent);
        assert!(!Fault::io(&std::io::Error::other("no errno"), "x").permanent);
    }

    #[test]
    fn several_faults_are_permanent_only_when_each_one_is() {
        let of = |faults: Vec<Fault>| {
            let mut all = Faults::default();
            for fault in faults {
                all.push(fault);
            }
            all.combined()
        };
        let lasting = |t: &str| Fault::permanent(t);
        let many = of((0..12).map(|i| lasting(&i.to_string())).collect()).unwrap();
        assert_eq!(
            many.text,
            "12 problems: 0; 1; 2; 3; 4; 5; 6; 7; 8; 9; and 2 more"
        );
        assert!(many.permanent);
        let mixed = of(vec![lasting("a"), Fault::passing("b")]).unwrap();
        assert!(!mixed.permanent, "a retry may cure b");
        assert_eq!(of(vec![lasting("a")]), Some(lasting("a")));
        assert_eq!(of(Vec::new()), None);
        assert_eq!(
            Fault::errno(Errno::IO, "x").context("p/q"),
            Fault::passing("p/q: x")
        );
    }
}
