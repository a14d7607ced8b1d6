//! Named singleton leases (owner, expiry, version), taken by compare-and-set so several replicas
//! never run the same singleton work at once and a crashed holder's lease lapses by itself.

use sqlx::Row as _;

use super::{Result, Store};

impl Store {
    /// Takes (or renews) the lease `name` for `owner` until now + `ttl_ms`. Succeeds when the
    /// lease is free, expired, or already held by `owner`; the version check makes the
    /// take-over a compare-and-set.
    pub async fn try_lease(&self, name: &str, owner: &str, ttl_ms: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let now = self.now();
        sqlx::query("INSERT INTO leases (name, owner, expires_at, version) VALUES ($1, '', 0, 0) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        let row = sqlx::query("SELECT owner, expires_at, version FROM leases WHERE name = $1")
            .bind(name)
            .fetch_one(&self.db.pool)
            .await?;
        let holder: String = row.try_get("owner")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let version: i64 = row.try_get("version")?;
        if holder != owner && expires_at > now {
            return Ok(false);
        }
        let taken = sqlx::query("UPDATE leases SET owner = $1, expires_at = $2, version = version + 1 WHERE name = $3 AND version = $4")
            .bind(owner)
            .bind(now + ttl_ms)
            .bind(name)
            .bind(version)
            .execute(&self.db.pool)
            .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Gives the lease up if `owner` holds it.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE leases SET owner = '', expires_at = 0, version = version + 1 WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}
