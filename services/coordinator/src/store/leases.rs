//! Named singleton leases (owner, expiry, version: taken and renewed by compare-and-set, so
//! several replicas never run the same singleton work at once), the replicas registry, and the
//! release of a restarted replica's claims.

use super::rows::{LeaseRow, ReplicaRow};
use super::{Result, Store, StoreError};
use crate::rules;

impl Store {
    /// Takes the lease `name` for `owner` until now + `ttl_ms` when [`rules::lease_free`] allows;
    /// answers the version taken, which renewals and the release name.
    pub async fn try_lease(&self, name: &str, owner: &str, ttl_ms: i64) -> Result<Option<i64>> {
        let now = self.now();
        self.retrying("taking a lease", || async move {
            let mut tx = self.begin().await?;
            let current = tx.lease(name).await?;
            if let Some(l) = &current
                && !rules::lease_free(&l.owner, l.expires_at, owner, now)
            {
                return Ok(None);
            }
            let next = LeaseRow {
                name: name.to_owned(),
                owner: owner.to_owned(),
                expires_at: now + ttl_ms,
                version: current.as_ref().map_or(1, |l| l.version + 1),
            };
            if !tx
                .put_lease(&next, current.as_ref().map(|l| l.version))
                .await?
            {
                // Made by a concurrent first taker: read it again.
                return Err(StoreError::Conflict(format!(
                    "lease {name} was written meanwhile"
                )));
            }
            tx.commit().await?;
            Ok(Some(next.version))
        })
        .await
    }

    /// Moves the expiry of the lease `owner` took as `version` to now + `ttl_ms`; false when it
    /// holds it no longer.
    pub async fn renew_lease(
        &self,
        name: &str,
        owner: &str,
        version: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let expires_at = self.now() + ttl_ms;
        self.put_own_lease(name, owner, version, |l| LeaseRow { expires_at, ..l })
            .await
    }

    /// Gives up the lease `owner` took as `version`, if it still holds it.
    pub async fn release_lease(&self, name: &str, owner: &str, version: i64) -> Result<bool> {
        self.put_own_lease(name, owner, version, |l| LeaseRow {
            owner: String::new(),
            expires_at: 0,
            version: l.version + 1,
            ..l
        })
        .await
    }

    /// Writes `change(lease)` if `owner` holds the lease as `version`; false when it does not.
    async fn put_own_lease(
        &self,
        name: &str,
        owner: &str,
        version: i64,
        change: impl Fn(LeaseRow) -> LeaseRow,
    ) -> Result<bool> {
        let change = &change;
        self.retrying("writing a lease", || async move {
            let mut tx = self.begin().await?;
            let held = match tx.lease(name).await? {
                Some(l) if l.owner == owner && l.version == version => {
                    tx.put_lease(&change(l), Some(version)).await?
                }
                _ => false,
            };
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// The process registered under a replica name, if any.
    pub async fn replica(&self, name: &str) -> Result<Option<ReplicaRow>> {
        let mut tx = self.begin_read().await?;
        let replica = tx.replica(name).await?;
        tx.commit().await?;
        Ok(replica)
    }

    /// Registers this process under its replica name and ends every lease the name holds (a
    /// previous process of this replica is gone: its claims are taken back at once instead of
    /// lapsing). Answers how many reads, tasks and named leases were released.
    pub async fn register_replica(&self, me: &ReplicaRow) -> Result<[u64; 3]> {
        self.retrying("registering the replica", || async move {
            let mut tx = self.begin().await?;
            tx.put_replica(me).await?;
            let released = tx.expire_claims(&me.name).await?;
            tx.commit().await?;
            Ok(released)
        })
        .await
    }

    /// Records this process's heartbeat; false when another process registered under its name.
    pub async fn beat(&self, name: &str, instance: &str) -> Result<bool> {
        let now = self.now();
        self.retrying("recording a heartbeat", || async move {
            let mut tx = self.begin().await?;
            let mine = tx.beat(name, instance, now).await?;
            tx.commit().await?;
            Ok(mine)
        })
        .await
    }
}
