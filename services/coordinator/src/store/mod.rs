//! The coordinator's tables (DESIGN.md section 5), through one code path for SQLite and
//! PostgreSQL. Every multi-statement write runs in one short transaction (on SQLite, writers that
//! queue share one: see `Store::write`); none is held across an RPC.

mod batch;
mod changes;
mod leases;
mod projects;
mod tasks;

pub use changes::{ChangeClaim, ChangeRow, NewChange, ReadOutcome, change_status};
pub use projects::{ProjectRow, TargetStatusRow};
pub use tasks::{Backoff, NextClaim, TaskClaim, TaskResult, TaskRow};

use smrtshare_common::db::{Backend, Database};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection as _, Row as _, Transaction};

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
    /// SQLite only: this process's one writer (see [`Store::write`]). `None` on PostgreSQL,
    /// where row locks let writers run side by side.
    writer: Option<std::sync::Arc<SqliteWriter>>,
    /// Connections kept out of the pool between uses by the workers' and readers' hot path (see
    /// [`Store::kept`]), and the permits that bound how many are out at once.
    kept: std::sync::Arc<std::sync::Mutex<Vec<PoolConnection<Any>>>>,
    kept_permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// PostgreSQL: task results waiting to be recorded together (see [`Store::finish_and_claim`]).
    recorder: std::sync::Arc<tasks::Recorder>,
    /// PostgreSQL: changes waiting to be recorded together (see [`Store::record_change`]).
    intake: std::sync::Arc<changes::Intake>,
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
        let writer = (db.backend == Backend::Sqlite).then(std::sync::Arc::default);
        // Keep all but two connections at most (SQLite's writer holds one more), so the API and
        // resync always find one in the pool.
        let keep = usize::try_from(max_connections.saturating_sub(2))
            .unwrap_or(0)
            .max(1);
        Ok(Self {
            db,
            clock,
            writer,
            kept: std::sync::Arc::default(),
            kept_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(keep)),
            recorder: std::sync::Arc::new(tasks::Recorder::new(
                "task results",
                tasks::MOST_RECORDED,
            )),
            intake: std::sync::Arc::new(changes::Intake::new("changes", changes::MOST_INTAKEN)),
        })
    }

    /// PostgreSQL: how many writes were made together so far, per kind (`changes` recorded by
    /// the intake, `task results`): batches written and the writes they carried. Zero on
    /// SQLite, whose writers share transactions another way (see [`Store::write`]).
    pub fn batched_writes(&self) -> [(&'static str, u64, u64); 2] {
        let (changes, tasks) = (self.intake.written(), self.recorder.written());
        [
            ("changes", changes.0, changes.1),
            ("task results", tasks.0, tasks.1),
        ]
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

    /// Runs a write transaction, retrying (bounded) on conflicts: SQLite busy, PostgreSQL
    /// serialization failures and deadlocks, and unique violations from a concurrent insert.
    /// `body` may run more than once, so it only touches the database.
    ///
    /// On PostgreSQL each call is a transaction of its own on a kept connection.
    ///
    /// On SQLite, which has one writer per database, this process's writers queue for its one
    /// connection (rather than failing `BEGIN IMMEDIATE` with SQLITE_BUSY and sleeping in
    /// SQLite's busy handler), and share transactions when they queue (group commit): a writer
    /// that finds others waiting leaves its transaction open for the next, and the last of the
    /// group (or the 16th) commits for all; each returns once the group is committed. `BEGIN`
    /// and `COMMIT` were half of the time the writer was held under load. A body that fails
    /// rolls back the whole group, and the other members run their bodies again, alone.
    async fn write<T, F>(&self, body: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut AnyConnection) -> futures::future::BoxFuture<'t, Result<T>> + Send,
        T: Send,
    {
        self.write_with(None, body).await
    }

    /// [`Store::write`], with `begin` (PostgreSQL) as the statement that begins the
    /// transaction: `BEGIN` followed by statements that take no parameters (row locks, say),
    /// sent in the same round trip. SQLite ignores it.
    async fn write_with<T, F>(&self, begin: Option<String>, mut body: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut AnyConnection) -> futures::future::BoxFuture<'t, Result<T>> + Send,
        T: Send,
    {
        let mut tries = 0u32;
        let mut alone = false;
        loop {
            tries += 1;
            let outcome = match &self.writer {
                Some(writer) => match self.sqlite_turn(writer, &mut body, alone).await {
                    Ok(Turn::Committed(value)) => Ok(value),
                    Ok(Turn::Grouped(value, group)) => {
                        if writer.committed(&group).await {
                            Ok(value)
                        } else {
                            // Another member failed and took this body's writes with it.
                            alone = true;
                            tries -= 1;
                            continue;
                        }
                    }
                    Err(error) => Err(error),
                },
                None => match self.kept().await {
                    Ok(mut conn) => {
                        let statement = begin.clone().unwrap_or_else(|| "BEGIN".to_owned());
                        let mut begun = true;
                        let outcome = match conn.begin_with(statement).await {
                            Ok(tx) => run(tx, &mut body).await,
                            Err(error) => {
                                begun = false;
                                Err(error.into())
                            }
                        };
                        let mut trusted =
                            !matches!(&outcome, Err(StoreError::Database(error)) if broken(error));
                        if trusted && !begun && begin.is_some() {
                            // A statement after a custom BEGIN that failed (a lock that met a
                            // deadlock, say) leaves the transaction open, aborted, while sqlx
                            // counts none: it is ended here, or the connection is not kept.
                            trusted = simple(&mut conn, "ROLLBACK").await.is_ok();
                        }
                        if trusted {
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
                    alone = true;
                    tokio::time::sleep(std::time::Duration::from_millis(5 << tries.min(6))).await;
                }
                other => return other,
            }
        }
    }

    /// Runs `body` as [`Store::write`] does, except that on PostgreSQL it gets no transaction of
    /// its own: each of its statements commits by itself. For bodies whose every statement is
    /// whole on its own (a single `INSERT ... ON CONFLICT`, say), this saves the round trips
    /// of `BEGIN` and `COMMIT`. SQLite's writers still share transactions.
    async fn write_autocommit<T, F>(&self, mut body: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut AnyConnection) -> futures::future::BoxFuture<'t, Result<T>> + Send,
        T: Send,
    {
        if self.writer.is_some() {
            return self.write(body).await;
        }
        let mut conn = self.kept().await?;
        let outcome = body(&mut conn).await;
        if !matches!(&outcome, Err(StoreError::Database(error)) if broken(error)) {
            conn.keep();
        }
        outcome
    }

    /// Rows of `sql` for a page of ids, grouped by the id in column `by`: `sql` gets the
    /// placeholders of up to 500 ids at a time (one statement per 500), `value` reads a row.
    /// An id with no rows is absent.
    async fn grouped<T>(
        &self,
        ids: &[i64],
        sql: impl Fn(&str) -> String,
        by: &str,
        value: fn(&AnyRow) -> Result<T>,
    ) -> Result<std::collections::HashMap<i64, Vec<T>>> {
        let mut found: std::collections::HashMap<i64, Vec<T>> = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = sql(&placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.db.pool).await? {
                found
                    .entry(row.try_get(by)?)
                    .or_default()
                    .push(value(&row)?);
            }
        }
        Ok(found)
    }

    /// One turn of SQLite's writer: joins the open group transaction (or begins one), runs
    /// `body`, then commits, or leaves the transaction open for the writer queued next. With
    /// `alone`, an open group is committed first and `body` gets a transaction of its own.
    fn sqlite_turn<'a, T, F>(
        &'a self,
        writer: &'a SqliteWriter,
        body: &'a mut F,
        alone: bool,
    ) -> futures::future::BoxFuture<'a, Result<Turn<T>>>
    where
        F: for<'t> FnMut(&'t mut AnyConnection) -> futures::future::BoxFuture<'t, Result<T>> + Send,
        T: Send + 'a,
    {
        Box::pin(async move {
            let mut state = {
                let _queued = Queued::new(&writer.queued);
                writer.state.lock().await
            };
            state.settle().await?;
            if alone && state.open.is_some() {
                state.close(true).await?;
            }
            if state.conn.is_none() {
                state.conn = Some(self.db.pool.acquire().await?);
            }
            if state.open.is_none() {
                let conn = state
                    .conn
                    .as_deref_mut()
                    .expect("the writer's connection was just set");
                if let Err(error) = simple(conn, "BEGIN IMMEDIATE").await {
                    state.drop_conn_if_broken(&error);
                    return Err(error.into());
                }
                state.open = Some(Group::new());
            }
            let group = state
                .open
                .clone()
                .expect("a group transaction was just opened");
            group
                .members
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Until the body returns, the transaction holds a part of it: should this future be
            // dropped half-way, the next writer finds `dirty` and rolls the group back.
            state.dirty = true;
            let conn = state
                .conn
                .as_deref_mut()
                .expect("the writer's connection is set");
            let outcome = body(conn).await;
            state.dirty = false;
            match outcome {
                Err(error) => {
                    // Its statements cannot be undone alone: the group goes, and its other members
                    // run again.
                    state.close(false).await?;
                    Err(error)
                }
                Ok(value) => {
                    let members = group.members.load(std::sync::atomic::Ordering::Relaxed);
                    let waiting = writer.queued.load(std::sync::atomic::Ordering::SeqCst);
                    if alone || waiting == 0 || members >= MAX_GROUP {
                        state.close(true).await?;
                        Ok(Turn::Committed(value))
                    } else {
                        Ok(Turn::Grouped(value, group))
                    }
                }
            }
        })
    }
}

/// Runs one statement without arguments (`BEGIN`, `COMMIT`, `ROLLBACK`). A function of its own,
/// boxed, so the futures that call it stay provably `Send`.
fn simple<'c>(
    conn: &'c mut AnyConnection,
    sql: &'static str,
) -> futures::future::BoxFuture<'c, std::result::Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::query(sql).execute(conn).await.map(|_| ()) })
}

/// Most writers that share one SQLite transaction.
const MAX_GROUP: usize = 16;

/// SQLite's one writer: its connection and the group transaction open on it.
#[derive(Debug, Default)]
struct SqliteWriter {
    state: tokio::sync::Mutex<WriterState>,
    /// Writers waiting for `state`: while there are any, a writer leaves its transaction open.
    queued: std::sync::atomic::AtomicUsize,
}

/// Counts a writer as queued while it waits for the writer's state.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Queued<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct WriterState {
    conn: Option<PoolConnection<Any>>,
    /// The open group transaction.
    open: Option<std::sync::Arc<Group>>,
    /// A body was dropped half-way through (see `Store::sqlite_turn`).
    dirty: bool,
}

/// A group transaction: its members wait for `outcome` (true: committed).
#[derive(Debug)]
struct Group {
    members: std::sync::atomic::AtomicUsize,
    outcome: tokio::sync::watch::Sender<Option<bool>>,
}

impl Group {
    fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            members: std::sync::atomic::AtomicUsize::new(0),
            outcome: tokio::sync::watch::Sender::new(None),
        })
    }
}

/// What a writer's turn came to.
enum Turn<T> {
    /// Its transaction is committed.
    Committed(T),
    /// Its transaction was left open for the writers queued after it.
    Grouped(T, std::sync::Arc<Group>),
}

impl WriterState {
    /// Rolls back the group a dropped body left half-done.
    fn settle(&mut self) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.dirty {
                self.dirty = false;
                tracing::warn!("a database write was cancelled half-way; rolling back its group");
                self.close(false).await?;
            }
            Ok(())
        })
    }

    /// Commits (or rolls back) the open group, if any, and tells its members.
    fn close(&mut self, commit: bool) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(group) = self.open.take() else {
                return Ok(());
            };
            let Some(conn) = self.conn.as_deref_mut() else {
                group.outcome.send_replace(Some(false));
                return Ok(());
            };
            let mut ended = if commit {
                simple(conn, "COMMIT").await.map(|()| true)
            } else {
                Ok(false)
            };
            if !matches!(ended, Ok(true)) {
                // Not committed (or the commit failed, which can leave it open): roll back.
                if let Err(error) = simple(conn, "ROLLBACK").await {
                    ended = Err(error);
                }
            }
            group.outcome.send_replace(Some(matches!(ended, Ok(true))));
            match ended {
                Ok(_) => Ok(()),
                Err(error) => {
                    // The connection's state is unknown: it is closed, never returned to the pool
                    // with a transaction open.
                    if let Some(conn) = self.conn.take() {
                        let _ = conn.detach().close().await;
                    }
                    Err(error.into())
                }
            }
        })
    }

    /// Drops the writer's connection (without returning it to the pool) after an error that
    /// may have broken it.
    fn drop_conn_if_broken(&mut self, error: &sqlx::Error) {
        if broken(error)
            && let Some(conn) = self.conn.take()
        {
            drop(conn.detach());
        }
    }
}

impl SqliteWriter {
    /// Waits until the group is committed (true) or rolled back (false). A member that waits
    /// long closes the group itself: the writer expected to go on may have been cancelled
    /// while it waited.
    fn committed<'a>(
        &'a self,
        group: &'a std::sync::Arc<Group>,
    ) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut outcome = group.outcome.subscribe();
            loop {
                if let Some(committed) = *outcome.borrow_and_update() {
                    return committed;
                }
                tokio::select! {
                    changed = outcome.changed() => {
                        if changed.is_err() {
                            return false;
                        }
                    }
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {
                        let mut state = self.state.lock().await;
                        let still_open = state.open.as_ref().is_some_and(|open| std::sync::Arc::ptr_eq(open, group));
                        if still_open && state.settle().await.is_ok() && state.open.is_some() {
                            let _ = state.close(true).await;
                        }
                    }
                }
            }
        })
    }
}

/// Runs `body` in `tx` and commits, or rolls back when it failed.
async fn run<T, F>(mut tx: Transaction<'_, Any>, body: &mut F) -> Result<T>
where
    F: for<'t> FnMut(&'t mut AnyConnection) -> futures::future::BoxFuture<'t, Result<T>>,
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

/// Whether `tx` talks to PostgreSQL (the store's statements differ from SQLite's only where
/// PostgreSQL can do more in one statement, or must lock rows SQLite's one writer need not).
pub(super) fn is_postgres(tx: &AnyConnection) -> bool {
    tx.backend_name() == "PostgreSQL"
}

/// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite, where `BEGIN IMMEDIATE` already
/// serialises writers.
fn skip_locked(tx: &AnyConnection) -> &'static str {
    if is_postgres(tx) {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    }
}

/// `FOR UPDATE` on PostgreSQL; nothing on SQLite (as [`skip_locked`]).
fn for_update(tx: &AnyConnection) -> &'static str {
    if is_postgres(tx) { " FOR UPDATE" } else { "" }
}

/// `$from, $from+1, ...`: `n` placeholders.
pub(super) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2, $3), ($1, $4, $5), ...`: `rows` rows of the value bound first (`$1`) and `width` more.
pub(super) fn rows_of(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| format!("($1, {})", placeholders(2 + r * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a text column that holds one of our enums.
fn parse_col<T>(row: &AnyRow, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{column} = {text:?}")))
}

/// Cuts a message for storage.
fn message(text: &str) -> String {
    // PostgreSQL's text holds no NUL; recording a failure must not fail on one a service sent.
    let text = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    crate::model::truncate(&text, MAX_MESSAGE)
}
