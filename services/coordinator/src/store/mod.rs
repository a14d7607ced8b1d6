//! The coordinator's tables (DESIGN.md section 5) on SQLite or PostgreSQL.
//!
//! Three layers, each with one job:
//! - [`crate::rules`]: the rules (merge, supersede, finality, status, backoff, stamps), pure;
//! - this module: what the coordinator asks of its database, each a short transaction that reads
//!   what a rule needs, applies it, and writes what it decided (`changes`, `tasks`, `projects`,
//!   `leases`, `queries`);
//! - [`tx`], the storage trait (one plain statement per method), and [`sql`], its one
//!   implementation for sqlx's two typed drivers.
//!
//! No transaction is held across an RPC or a read of SMRT Link. Conflicts (SQLite busy,
//! PostgreSQL serialization failures, deadlocks and unique violations from a concurrent insert)
//! are retried in one place, [`Store::retrying`].

mod changes;
mod jobs;
mod leases;
mod projects;
mod queries;
mod rows;
mod sql;
mod tasks;
mod tx;

pub use changes::{Found, NewChange, ReadRecorded, effect};
pub use jobs::{JobFound, JobsRecorded};
pub use projects::ProjectRow;
pub use queries::{ProjectSummary, TargetStatusRow};
pub use rows::{
    ChangeFilter, ChangeRow, JobClaim, JobRow, KnownProject, LatestTask, ReadClaim, ReplicaRow,
    RunningTask, TaskClaim, TaskRow,
};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use smrtshare_common::db::Backend;
use tokio::sync::Semaphore;

use self::sql::{Db, SqlTx};
use self::tx::Tx;
use crate::clock::Clock;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; a later try may succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A write met a concurrent one (retried by the store; callers see it only as `Unavailable`).
    #[error("a concurrent write conflicted: {0}")]
    Conflict(String),
    /// A statement failed in a way no retry cures (a bug, or a schema the code does not expect).
    #[error("database error: {0}")]
    Internal(String),
    /// A row held something the code cannot read (a bug or a hand edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A fenced write found its claim taken by another worker; nothing was written. The store's
    /// callers answer this as "not recorded"; it never reaches theirs.
    #[error("the claim was lost to another worker")]
    Lost,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let text = error.to_string();
        match &error {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => Self::Unavailable(text),
            E::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or_default();
                if smrtshare_common::db::is_conflict(&error)
                    // Unique violations: PostgreSQL 23505; SQLite constraint unique/primary key.
                    || matches!(code, "23505" | "2067" | "1555")
                {
                    Self::Conflict(text)
                } else if code.starts_with("08")   // PostgreSQL connection exceptions
                    || code.starts_with("53")      // insufficient resources
                    || code.starts_with("57")      // operator intervention (shutdown, cancel)
                    || matches!(code, "10" | "13" | "14")
                // SQLite I/O error, disk full, cannot open
                {
                    Self::Unavailable(text)
                } else {
                    Self::Internal(text)
                }
            }
            _ => Self::Internal(text),
        }
    }
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Longest text stored in message columns; longer messages are cut (recording a failure must
/// never fail because the failure was long).
pub const MAX_MESSAGE: usize = 2000;

/// Most tries of a transaction that meets conflicts.
const MOST_TRIES: u32 = 8;

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The coordinator's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    clock: Clock,
    /// SQLite: this process's one writer. Writers queue here rather than in SQLite's busy handler,
    /// which sleeps in steps of up to 100 ms.
    writer: Arc<Semaphore>,
}

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens (and migrates) the database at `url`.
    pub async fn open(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let pool = match Backend::of_url(url)? {
            Backend::Sqlite => Pool::Sqlite(
                smrtshare_common::db::sqlite_pool(url, max_connections, &SQLITE_MIGRATIONS).await?,
            ),
            Backend::Postgres => Pool::Postgres(
                smrtshare_common::db::postgres_pool(url, max_connections, &POSTGRES_MIGRATIONS)
                    .await?,
            ),
        };
        Ok(Self {
            pool,
            clock,
            writer: Arc::new(Semaphore::new(1)),
        })
    }

    /// The clock every row time comes from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Now, in epoch milliseconds.
    pub fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Begins a transaction that writes.
    async fn begin(&self) -> Result<Box<dyn Tx>> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let permit = self.write_permit().await?;
                begun(pool, sqlx::Sqlite::BEGIN_WRITE, Some(permit)).await
            }
            Pool::Postgres(pool) => begun(pool, sqlx::Postgres::BEGIN_WRITE, None).await,
        }
    }

    /// A connection for work of one statement that reads: it sees one snapshot, and needs no
    /// `BEGIN` or `COMMIT`.
    async fn begin_read(&self) -> Result<Box<dyn Tx>> {
        match &self.pool {
            Pool::Sqlite(pool) => Ok(Box::new(SqlTx::plain(pool.acquire().await?, None))),
            Pool::Postgres(pool) => Ok(Box::new(SqlTx::plain(pool.acquire().await?, None))),
        }
    }

    /// A transaction that only reads: one consistent view over several statements.
    async fn begin_snapshot(&self) -> Result<Box<dyn Tx>> {
        match &self.pool {
            Pool::Sqlite(pool) => begun(pool, "BEGIN", None).await,
            Pool::Postgres(pool) => begun(pool, "BEGIN", None).await,
        }
    }

    /// A connection for work of one statement that writes (SQLite: with the write permit).
    async fn begin_single_write(&self) -> Result<Box<dyn Tx>> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let permit = self.write_permit().await?;
                Ok(Box::new(SqlTx::plain(pool.acquire().await?, Some(permit))))
            }
            Pool::Postgres(pool) => Ok(Box::new(SqlTx::plain(pool.acquire().await?, None))),
        }
    }

    /// SQLite's write permit.
    async fn write_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.writer
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))
    }

    /// Runs `attempt` (a whole transaction) until it does not meet a conflict, at most
    /// [`MOST_TRIES`] times with a short growing pause; then the database counts as
    /// unavailable. `attempt` may run more than once, so it only touches the database.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Err(StoreError::Conflict(error)) if tries < MOST_TRIES => {
                    tracing::debug!(
                        tries,
                        what,
                        error,
                        "database conflict; trying the transaction again"
                    );
                    tokio::time::sleep(Duration::from_millis(2 << tries.min(6))).await;
                }
                Err(StoreError::Conflict(error)) => {
                    return Err(StoreError::Unavailable(format!(
                        "{what}: still conflicting after {tries} tries: {error}"
                    )));
                }
                other => return other,
            }
        }
    }
}

/// A transaction begun on `pool` with `begin`.
async fn begun<DB: Db>(
    pool: &sqlx::Pool<DB>,
    begin: &'static str,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Box<dyn Tx>>
where
    SqlTx<DB>: Tx + 'static,
{
    let tx = pool.begin_with(begin).await?;
    Ok(Box::new(SqlTx::new(tx, permit)))
}

/// Cuts a message for storage: at most [`MAX_MESSAGE`] bytes, and no NUL (PostgreSQL's text
/// holds none; recording a failure must not fail on one a service sent).
pub(crate) fn message(text: &str) -> String {
    let text = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    crate::model::truncate(&text, MAX_MESSAGE)
}
