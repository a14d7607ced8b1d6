//! Named singleton leases (owner, expiry, version), taken by compare-and-set so several replicas
//! never run the same singleton work at once and a crashed holder's lease lapses by itself.

use sqlx::Row as _;

use super::{Result, Store};

impl Store {
    /// Takes (or renews) the lease `name` for `owner` until now + `ttl_ms`. Succeeds when the
    /// lease is free, expired, or already held by `owner`; the version check makes the
    /// take-over a compare-and-set.
    pub async fn try_lease(&self, name: &str, owner: &str, ttl_ms: i64) -> Result<bool> {
        let now = self.now();
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.write(|tx| {
            let (name, owner) = (name.clone(), owner.clone());
            Box::pin(async move {
                sqlx::query("INSERT INTO leases (name, owner, expires_at, version) VALUES ($1, '', 0, 0) ON CONFLICT (name) DO NOTHING")
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query("SELECT owner, expires_at, version FROM leases WHERE name = $1")
                    .bind(&name)
                    .fetch_one(&mut *tx)
                    .await?;
                let holder: String = row.try_get("owner")?;
                let expires_at: i64 = row.try_get("expires_at")?;
                let version: i64 = row.try_get("version")?;
                if holder != owner && expires_at > now {
                    return Ok(false);
                }
                let taken = sqlx::query("UPDATE leases SET owner = $1, expires_at = $2, version = version + 1 WHERE name = $3 AND version = $4")
                    .bind(&owner)
                    .bind(now + ttl_ms)
                    .bind(&name)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                Ok(taken.rows_affected() == 1)
            })
        })
        .await
    }

    /// Gives the lease up if `owner` holds it.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.write(|tx| {
            let (name, owner) = (name.clone(), owner.clone());
            Box::pin(async move {
                sqlx::query("UPDATE leases SET owner = '', expires_at = 0, version = version + 1 WHERE name = $1 AND owner = $2")
                    .bind(&name)
                    .bind(&owner)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
