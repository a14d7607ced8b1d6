//! The coordinator's tables (DESIGN.md section 5), through one code path for SQLite and
//! PostgreSQL. Every multi-statement write is one short transaction; none is held across an RPC.

mod changes;
mod leases;
mod projects;
mod tasks;

pub use changes::{ChangeClaim, ChangeRow, NewChange, ReadOutcome};
pub use projects::{ProjectRow, TargetStatusRow};
pub use tasks::{Backoff, NextClaim, TaskClaim, TaskResult, TaskRow};

use smrtshare_common::db::{Backend, Database};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection as _, Row as _, Transaction};

use crate::clock::Clock;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A row held something the code cannot read (a bug or a hand edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A fenced write found its claim taken by another worker; the transaction was rolled back.
    /// The store's callers answer this as "not recorded"; it never reaches theirs.
    #[error("the claim was lost to another worker")]
    Lost,
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Longest text stored in message columns; longer messages are cut (recording a failure must
/// never fail because the failure was long).
pub const MAX_MESSAGE: usize = 2000;

/// The coordinator's database.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    clock: Clock,
    /// SQLite only: serialises this process's write transactions, so writers queue here in
    /// order instead of failing `BEGIN IMMEDIATE` with SQLITE_BUSY and sleeping in SQLite's busy
    /// handler (whose sleeps grow to 100 ms). Another process on the same file still meets the
    /// busy timeout. `None` on PostgreSQL, where row locks let writers run side by side.
    ///
    /// The mutex keeps the writers' connection: one writer at a time needs only one, and keeping
    /// it spares each write transaction the pool's acquire (and its liveness check).
    write_lock: Option<std::sync::Arc<tokio::sync::Mutex<Option<PoolConnection<Any>>>>>,
    /// Connections kept out of the pool between uses by the workers' and readers' hot path (see
    /// [`Store::kept`]), and the permits that bound how many are out at once.
    kept: std::sync::Arc<std::sync::Mutex<Vec<PoolConnection<Any>>>>,
    kept_permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A connection from [`Store::kept`]. [`Kept::keep`] puts it back for the next use; dropped
/// without that (a statement failed), it goes back to the pool, whose check on return closes it
/// if it is broken.
struct Kept<'s> {
    conn: Option<PoolConnection<Any>>,
    store: &'s Store,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Kept<'_> {
    /// Keeps the connection for the next use.
    fn keep(mut self) {
        if let Some(conn) = self.conn.take() {
            let mut kept = self
                .store
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.push(conn);
        }
    }
}

impl std::ops::Deref for Kept<'_> {
    type Target = PoolConnection<Any>;
    fn deref(&self) -> &Self::Target {
        self.conn
            .as_ref()
            .expect("a kept connection is present until kept or dropped")
    }
}

impl std::ops::DerefMut for Kept<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn
            .as_mut()
            .expect("a kept connection is present until kept or dropped")
    }
}

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens (and migrates) the database at `url`.
    pub async fn open(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let db = smrtshare_common::db::connect(
            url,
            max_connections,
            &SQLITE_MIGRATIONS,
            &POSTGRES_MIGRATIONS,
        )
        .await?;
        let write_lock = (db.backend == Backend::Sqlite)
            .then(|| std::sync::Arc::new(tokio::sync::Mutex::new(None)));
        // Keep all but two connections at most (SQLite's writer holds one more), so the API and
        // resync always find one in the pool.
        let keep = usize::try_from(max_connections.saturating_sub(2))
            .unwrap_or(0)
            .max(1);
        Ok(Self {
            db,
            clock,
            write_lock,
            kept: std::sync::Arc::default(),
            kept_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(keep)),
        })
    }

    /// The clock every row time comes from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    /// Now, in epoch milliseconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A connection for the workers' and readers' hot path: one kept from an earlier use, or a
    /// new one from the pool; [`Kept::keep`] keeps it again. At most all but two of the pool's
    /// connections are out this way at once.
    ///
    /// sqlx's pool pings every connection returned to it before another task may take it (a
    /// round trip, in a task of its own); while workers and readers go from one task to the
    /// next, that doubled their trips to the database and made them queue for connections.
    /// A kept connection is not returned, so not pinged: it is kept only after it served a
    /// statement without a connection-level error (a transaction a cancelled future left open
    /// is rolled back by sqlx before the connection's next use).
    async fn kept(&self) -> Result<Kept<'_>> {
        // A permit first: at most that many connections are out of the pool this way, so a
        // caller waits for one to be kept again rather than for the pool, which would not hear
        // of it.
        let permit = self
            .kept_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        let conn = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match conn {
            Some(conn) => conn,
            None => self.db.pool.acquire().await?,
        };
        Ok(Kept {
            conn: Some(conn),
            store: self,
            _permit: permit,
        })
    }

    /// SQLite: waits for this process's turn to write (see `write_lock`); `None` on PostgreSQL.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, Option<PoolConnection<Any>>>> {
        match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// Runs a write transaction, retrying (bounded) on conflicts: SQLite busy, PostgreSQL
    /// serialization failures and deadlocks, and unique violations from a concurrent insert.
    /// On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`), so two
    /// writers never deadlock upgrading a read lock.
    async fn write<T, F>(&self, mut body: F) -> Result<T>
    where
        F: for<'t, 'c> FnMut(
            &'t mut Transaction<'c, Any>,
        ) -> futures::future::BoxFuture<'t, Result<T>>,
    {
        let mut tries = 0u32;
        loop {
            tries += 1;
            let outcome = match self.write_turn().await {
                // SQLite: the turn (taken before any connection, so queued writers hold none)
                // comes with the writers' connection.
                Some(mut slot) => {
                    let outcome = async {
                        if slot.is_none() {
                            *slot = Some(self.db.pool.acquire().await?);
                        }
                        let conn = slot.as_mut().expect("the writers' connection was just set");
                        let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                        run(tx, &mut body).await
                    }
                    .await;
                    if let Err(StoreError::Database(error)) = &outcome
                        && broken(error)
                    {
                        // A fresh connection from the pool next time.
                        *slot = None;
                    }
                    outcome
                }
                None => match self.kept().await {
                    Ok(mut conn) => {
                        let outcome = match conn.begin().await {
                            Ok(tx) => run(tx, &mut body).await,
                            Err(error) => Err(error.into()),
                        };
                        if !matches!(&outcome, Err(StoreError::Database(error)) if broken(error)) {
                            conn.keep();
                        }
                        outcome
                    }
                    Err(error) => Err(error),
                },
            };
            match outcome {
                Err(StoreError::Database(error)) if tries < 8 && retryable(&error) => {
                    tracing::debug!(tries, %error, "database conflict; retrying transaction");
                    tokio::time::sleep(std::time::Duration::from_millis(5 << tries.min(6))).await;
                }
                other => return other,
            }
        }
    }
}

/// Runs `body` in `tx` and commits, or rolls back when it failed.
async fn run<T, F>(mut tx: Transaction<'_, Any>, body: &mut F) -> Result<T>
where
    F: for<'t, 'c> FnMut(&'t mut Transaction<'c, Any>) -> futures::future::BoxFuture<'t, Result<T>>,
{
    match body(&mut tx).await {
        Ok(value) => tx.commit().await.map(|()| value).map_err(StoreError::from),
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// Errors after which a kept connection is not trusted again.
fn broken(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
    )
}

/// Conflicts a retry of the whole transaction cures.
fn retryable(error: &sqlx::Error) -> bool {
    if smrtshare_common::db::is_conflict(error) {
        return true;
    }
    match error {
        // 23505: PostgreSQL unique_violation; 2067/1555: SQLite constraint unique/primary key.
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("23505" | "2067" | "1555"))
        }
        _ => false,
    }
}

/// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite, where `BEGIN IMMEDIATE` already
/// serialises writers.
fn skip_locked(tx: &Transaction<'_, Any>) -> &'static str {
    if tx.backend_name() == "PostgreSQL" {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    }
}

/// Reads a text column that holds one of our enums.
fn parse_col<T>(row: &AnyRow, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{column} = {text:?}")))
}

/// Cuts a message for storage.
fn message(text: &str) -> String {
    crate::model::truncate(text, MAX_MESSAGE)
}
