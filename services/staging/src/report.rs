//! One code path for doing and for planning: every change goes through [`Report::act`], which in a
//! dry run records the action as planned and calls nothing, and otherwise makes the call, records
//! its outcome and explains a failure in words an operator can act on.

use rustix::io::Errno;

use crate::fault::Fault;
use crate::fs::{Ops, describe};
use crate::model::{Action, ActionKind, ItemId, Outcome};

/// Why a call failed: its errno and, when the caller found out more, the detail (for a link
/// refused with `EXDEV`: which mounts the source and the directory are on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The errno.
    pub errno: Errno,
    /// What the caller found out about it.
    pub detail: Option<String>,
}

impl From<Errno> for Failure {
    fn from(errno: Errno) -> Self {
        Self {
            errno,
            detail: None,
        }
    }
}

/// An action about to be taken.
#[derive(Clone, Debug)]
pub struct Act {
    kind: ActionKind,
    path: String,
    from_path: String,
    source: String,
    item: Option<ItemId>,
}

impl Act {
    /// An action on `path` (relative to the root).
    pub fn new(kind: ActionKind, path: impl Into<String>) -> Self {
        Self {
            kind,
            path: path.into(),
            from_path: String::new(),
            source: String::new(),
            item: None,
        }
    }

    /// The old path of a rename, move or publish.
    pub fn from(mut self, from: impl Into<String>) -> Self {
        self.from_path = from.into();
        self
    }

    /// The source of a link.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// The dataset or analysis job the action belongs to.
    pub fn item(mut self, item: ItemId) -> Self {
        self.item = Some(item);
        self
    }

    fn into_action(self, outcome: Outcome) -> Action {
        Action {
            kind: self.kind,
            path: self.path,
            from_path: self.from_path,
            source: self.source,
            item: self.item,
            outcome,
        }
    }

    /// The failure in words an operator can act on, classified by its errno.
    fn explain(&self, failure: Failure) -> Fault {
        let path = &self.path;
        let text = match (self.kind, failure.errno) {
            (ActionKind::LinkFile, Errno::XDEV) => format!(
                "{path}: the source {} and the dataset directory are {}: hard links cannot cross \
                 filesystems or mounts and smrtshare never copies (EXDEV)",
                self.source,
                failure
                    .detail
                    .as_deref()
                    .unwrap_or("on different filesystems or mounts")
            ),
            (ActionKind::LinkFile, Errno::PERM) => format!(
                "{path}: the kernel refused to hard-link {} (EPERM): with fs.protected_hardlinks the staging \
                 user must own the source or be able to read and write it",
                self.source
            ),
            (ActionKind::LinkFile, Errno::MLINK) => format!(
                "{path}: the source {} has the most hard links its filesystem allows",
                self.source
            ),
            (ActionKind::LinkFile, Errno::STALE) => format!(
                "{path}: the source {} changed while being linked (it is no longer the file that was checked); \
                 the link was taken back",
                self.source
            ),
            (ActionKind::LinkFile, Errno::NOENT) => format!(
                "{path}: the source {} disappeared before it was linked",
                self.source
            ),
            (_, Errno::EXIST) => {
                format!("{path}: something else appeared there first; it was left untouched")
            }
            (_, Errno::NOTEMPTY) => format!("{path}: the directory is not empty"),
            (_, Errno::NOSPC) => format!("{path}: no space left on the staging filesystem"),
            (_, Errno::ROFS) => format!("{path}: the staging filesystem is read-only"),
            (_, other) => format!("{path}: {}", describe(other)),
        };
        Fault::errno(failure.errno, text)
    }
}

/// The actions of one operation.
#[derive(Debug)]
pub struct Report<'o, 't> {
    ops: &'o Ops<'t>,
    dry: bool,
    actions: Vec<Action>,
}

impl<'o, 't> Report<'o, 't> {
    /// Starts a report; with `dry` nothing is ever called.
    pub fn new(ops: &'o Ops<'t>, dry: bool) -> Self {
        Self {
            ops,
            dry,
            actions: Vec::new(),
        }
    }

    /// True in a dry run.
    pub fn dry(&self) -> bool {
        self.dry
    }

    /// The counted calls.
    pub fn ops(&self) -> &'o Ops<'t> {
        self.ops
    }

    /// Takes an action: in a dry run records it as planned and returns `Ok(None)`; otherwise
    /// calls `f`, records the outcome and returns its value or the explained failure.
    pub fn act<T, E: Into<Failure>>(
        &mut self,
        act: Act,
        f: impl FnOnce(&Ops<'t>) -> Result<T, E>,
    ) -> Result<Option<T>, Fault> {
        if self.dry {
            self.actions.push(act.into_action(Outcome::Planned));
            return Ok(None);
        }
        match f(self.ops) {
            Ok(value) => {
                self.actions.push(act.into_action(Outcome::Done));
                Ok(Some(value))
            }
            Err(e) => {
                let why = act.explain(e.into());
                self.actions
                    .push(act.into_action(Outcome::Failed(why.clone())));
                Err(why)
            }
        }
    }

    /// Like [`Report::act`], except that the errno `tolerated` is handed back as `Ok(Err(errno))`
    /// with nothing recorded: the caller records what it does instead.
    pub fn act_unless<T>(
        &mut self,
        act: Act,
        tolerated: Errno,
        f: impl FnOnce(&Ops<'t>) -> crate::fs::Result<T>,
    ) -> Result<Result<Option<T>, Errno>, Fault> {
        if self.dry {
            self.actions.push(act.into_action(Outcome::Planned));
            return Ok(Ok(None));
        }
        match f(self.ops) {
            Ok(value) => {
                self.actions.push(act.into_action(Outcome::Done));
                Ok(Ok(Some(value)))
            }
            Err(e) if e == tolerated => Ok(Err(e)),
            Err(e) => {
                let why = act.explain(e.into());
                self.actions
                    .push(act.into_action(Outcome::Failed(why.clone())));
                Err(why)
            }
        }
    }

    /// Records an action whose failure was found without a system call (for example a source that
    /// changed while being linked).
    pub fn fail(&mut self, act: Act, why: Fault) {
        let outcome = if self.dry {
            Outcome::Planned
        } else {
            Outcome::Failed(why)
        };
        self.actions.push(act.into_action(outcome));
    }

    /// Records an action that needs no call (KEEP_FOREIGN).
    pub fn note(&mut self, act: Act) {
        let outcome = if self.dry {
            Outcome::Planned
        } else {
            Outcome::Done
        };
        self.actions.push(act.into_action(outcome));
    }

    /// Records an action that was not attempted because `why`.
    pub fn skip(&mut self, act: Act, why: &str) {
        self.actions
            .push(act.into_action(Outcome::Skipped(why.to_owned())));
    }

    /// True when an action on the dataset or job was recorded.
    pub fn touched(&self, item: ItemId) -> bool {
        self.actions.iter().any(|a| a.item == Some(item))
    }

    /// The actions.
    pub fn finish(self) -> Vec<Action> {
        self.actions
    }
}
