//! Per-project serialisation: operations on one project run one at a time, different projects
//! in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

/// One async mutex per project, made on first use and dropped when nobody holds or awaits it.
#[derive(Debug, Default)]
pub struct ProjectLocks {
    locks: Mutex<HashMap<i64, Weak<tokio::sync::Mutex<()>>>>,
}

impl ProjectLocks {
    /// Waits for the project's turn; the guard ends it.
    pub async fn lock(&self, project_id: i64) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > 256 {
                locks.retain(|_, weak| weak.strong_count() > 0);
            }
            match locks.get(&project_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(project_id, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_project_waits_other_projects_do_not() {
        let locks = Arc::new(ProjectLocks::default());
        let held = locks.lock(2).await;
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(3)).await;
        assert!(other.is_ok(), "project 3 must not wait for project 2");
        let same = tokio::time::timeout(Duration::from_secs(1), locks.lock(2)).await;
        assert!(same.is_err(), "project 2 must wait for its holder");
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), locks.lock(2)).await;
        assert!(again.is_ok());
    }
}
