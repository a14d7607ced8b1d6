//! The storage trait on SQL, for SQLite and PostgreSQL: one implementation over sqlx's typed
//! drivers (`SqlTx<sqlx::Sqlite>`, `SqlTx<sqlx::Postgres>`). The statements are the same text on
//! both (`$n` placeholders, `ON CONFLICT`, `RETURNING`); where the two databases differ, [`Db`]
//! says how: the statement that begins a write, row locks, the stamp sequence.

mod changes;
mod jobs;
mod projects;
mod tasks;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Transaction};

use super::tx::Tx;
use super::{Result, StoreError};

/// What differs between the two databases.
pub trait Db: Database {
    /// Begins a transaction that writes. SQLite takes its write lock at once (`BEGIN IMMEDIATE`),
    /// so a transaction that reads first never fails to upgrade.
    const BEGIN_WRITE: &'static str;
    /// Whether rows are locked one by one (PostgreSQL, where several replicas write at once);
    /// SQLite's writer holds the whole database, so its statements lock nothing (see [`lock`]).
    const ROW_LOCKS: bool;
    /// Takes the next read stamp; answers one row with a column `value`.
    const NEXT_STAMP: &'static str;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Db for sqlx::Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const ROW_LOCKS: bool = false;
    const NEXT_STAMP: &'static str =
        "UPDATE stamps SET value = value + 1 WHERE id = 1 RETURNING value";
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Db for sqlx::Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const ROW_LOCKS: bool = true;
    const NEXT_STAMP: &'static str = "SELECT nextval('read_stamps') AS value";
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// A transaction on one of the two databases, or a connection whose statements commit one by
/// one (for work of one statement, where `BEGIN` and `COMMIT` would only add round trips). On
/// SQLite a writer also holds this process's write permit (see [`super::Store`]), so writers
/// queue in the process instead of in SQLite's busy handler.
pub struct SqlTx<DB: Database> {
    conn: Conn<DB>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Conn<DB: Database> {
    Tx(Transaction<'static, DB>),
    Plain(PoolConnection<DB>),
}

impl<DB: Database> SqlTx<DB> {
    /// Wraps a begun transaction.
    pub fn new(
        tx: Transaction<'static, DB>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            conn: Conn::Tx(tx),
            _permit: permit,
        }
    }

    /// Wraps a connection whose statements commit one by one.
    pub fn plain(
        conn: PoolConnection<DB>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            conn: Conn::Plain(conn),
            _permit: permit,
        }
    }

    /// The connection statements run on.
    fn conn(&mut self) -> &mut DB::Connection {
        match &mut self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(conn) => conn,
        }
    }
}

#[async_trait]
impl<DB: Db> Tx for SqlTx<DB>
where
    SqlTx<DB>: super::tx::ChangeTx + super::tx::TaskTx + super::tx::ProjectTx + super::tx::JobTx,
{
    async fn commit(self: Box<Self>) -> Result<()> {
        match self.conn {
            Conn::Tx(tx) => Ok(tx.commit().await?),
            Conn::Plain(_) => Ok(()),
        }
    }
}

/// The locking clause `clause` (`FOR UPDATE SKIP LOCKED`: claims, so replicas claiming at once
/// take different rows; `FOR UPDATE`: rows the transaction goes on to change; `FOR NO KEY
/// UPDATE`: rows whose key stays, so links to them can still be made) where rows are locked,
/// nothing on SQLite.
fn lock<DB: Db>(clause: &str) -> String {
    if DB::ROW_LOCKS {
        format!(" {clause}")
    } else {
        String::new()
    }
}

/// `$from, $from+1, ...`: `n` placeholders.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a text column that holds one of the model's enums.
fn parse_col<R, T>(row: &R, column: &str, parse: fn(&str) -> Option<T>) -> Result<T>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{column} = {text:?}")))
}

/// Lines of a stored list ('' is the empty list).
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
