//! Points inside an operation where a test can act (deterministic race tests: a file a user adds
//! at the dangerous instant is added there, by the hook, every time). Nothing is installed in
//! production; an absent hook costs one branch.

use std::fmt;
use std::sync::Arc;

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// A dataset directory being removed was scanned and nothing foreign was found; it is about to
    /// be renamed out of sight into the work area. The path is the directory's, relative to the
    /// root.
    RemovalScanned,
    /// An apply resolved what the project should hold (every source checked) and is about to
    /// change the tree. The path is the project directory's name.
    Resolved,
}

type Hook = dyn Fn(Point, &str) + Send + Sync;

/// The installed hook, if any.
#[derive(Clone, Default)]
pub struct Hooks(Option<Arc<Hook>>);

impl Hooks {
    /// Calls `hook` at every point.
    pub fn new(hook: impl Fn(Point, &str) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(hook)))
    }

    /// An operation reached `point` (about `path`).
    pub fn at(&self, point: Point, path: &str) {
        if let Some(hook) = &self.0 {
            hook(point, path);
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Hooks(installed)"
        } else {
            "Hooks(none)"
        })
    }
}
