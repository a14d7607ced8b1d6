//! Per-project serialisation: one operation at a time per project, projects in parallel. An
//! operation that touches several projects (a dataset moving between them) takes their locks in
//! id order, so two such operations can never wait on each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::model::ProjectId;

/// The locks.
#[derive(Debug, Default)]
pub struct Locks {
    map: Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held locks; released when dropped.
#[derive(Debug)]
pub struct Held {
    ids: BTreeSet<ProjectId>,
    _guards: Vec<OwnedMutexGuard<()>>,
}

impl Held {
    /// The projects held.
    pub fn ids(&self) -> &BTreeSet<ProjectId> {
        &self.ids
    }
}

impl Locks {
    /// Takes the locks of `ids`, in id order.
    pub async fn lock(&self, ids: BTreeSet<ProjectId>) -> Held {
        let mutexes: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            ids.iter()
                .map(|id| map.entry(*id).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(mutexes.len());
        for mutex in mutexes {
            guards.push(mutex.lock_owned().await);
        }
        Held {
            ids,
            _guards: guards,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_project_and_no_deadlock_across_orders() {
        let locks = Arc::new(Locks::default());
        let ids = |v: &[i64]| {
            v.iter()
                .map(|i| ProjectId::new(*i).unwrap())
                .collect::<BTreeSet<_>>()
        };
        let held = locks.lock(ids(&[2])).await;
        let other = locks.clone();
        let waiting = tokio::spawn(async move { other.lock(ids(&[3, 2])).await.ids().len() });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let parallel = locks.lock(ids(&[4])).await;
        drop(held);
        assert_eq!(waiting.await.unwrap(), 2);
        drop(parallel);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let locks = locks.clone();
            let set = if i % 2 == 0 {
                ids(&[5, 6])
            } else {
                ids(&[6, 5])
            };
            tasks.push(tokio::spawn(async move { drop(locks.lock(set).await) }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}
