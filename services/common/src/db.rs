//! Databases behind one code path: SQLite (embedded default, WAL, busy timeout) and PostgreSQL
//! (for several replicas), both through sqlx's `Any` driver. Queries use `$1` placeholders, which
//! both accept; times are stored as integer milliseconds since the Unix epoch.

use std::future::Future;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions as _, Executor as _};

/// Which database a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend of a database URL.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("unsupported database URL (expected sqlite:// or postgres://)")
        }
    }

    /// `sqlite` or `postgres`: the backend's name in test names and benchmark results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// An open pool and its backend.
#[derive(Clone, Debug)]
pub struct Database {
    /// The pool.
    pub pool: AnyPool,
    /// Its backend, for the few statements that differ.
    pub backend: Backend,
}

/// Installs sqlx's SQLite and PostgreSQL drivers for the `Any` pool (once; later calls do
/// nothing). Every pool this module opens calls it; code that opens an `AnyConnection` itself
/// (the test kit's throwaway databases) calls it first.
pub fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// The settings every SQLite connection runs with: WAL (readers never wait for the writer), a
/// busy timeout, foreign keys, and commits that survive a process crash without an fsync each.
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
];

/// A SQLite URL ready to open: its directory created, and `mode=rwc` so the file is too.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let mut url = url.to_owned();
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if !path.is_empty()
        && path != ":memory:"
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating database directory {}", parent.display()))?;
    }
    if !url.contains("mode=") {
        url.push_str(if url.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        });
    }
    Ok(url)
}

/// Opens `url` and runs the backend's migrations. SQLite files (and their directory) are created
/// when missing and opened with [`SQLITE_PRAGMAS`].
pub async fn connect(
    url: &str,
    max_connections: u32,
    sqlite_migrations: &Migrator,
    postgres_migrations: &Migrator,
) -> anyhow::Result<Database> {
    install_drivers();
    let backend = Backend::of_url(url)?;
    let url = match backend {
        Backend::Sqlite => sqlite_url(url)?,
        Backend::Postgres => url.to_owned(),
    };
    let options = AnyConnectOptions::from_str(&url)
        .context("parsing the database URL")?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    let pool = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite {
            max_connections.max(1)
        } else {
            max_connections
        })
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    for pragma in SQLITE_PRAGMAS {
                        conn.execute(pragma).await?;
                    }
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to the {backend:?} database"))?;
    let migrator = match backend {
        Backend::Sqlite => sqlite_migrations,
        Backend::Postgres => postgres_migrations,
    };
    migrator
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(Database { pool, backend })
}

/// Opens a SQLite database through the typed driver (created when missing, with
/// [`SQLITE_PRAGMAS`]) and runs `migrations`.
pub async fn sqlite_pool(
    url: &str,
    max_connections: u32,
    migrations: &Migrator,
) -> anyhow::Result<sqlx::SqlitePool> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&sqlite_url(url)?)
        .context("parsing the database URL")?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                for pragma in SQLITE_PRAGMAS {
                    conn.execute(pragma).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .context("opening the SQLite database")?;
    migrations
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}

/// Opens a PostgreSQL database through the typed driver and runs `migrations`.
pub async fn postgres_pool(
    url: &str,
    max_connections: u32,
    migrations: &Migrator,
) -> anyhow::Result<sqlx::PgPool> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .context("parsing the database URL")?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .context("connecting to the PostgreSQL database")?;
    migrations
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}

/// True for errors that a retry of the same transaction can cure: SQLite busy or locked,
/// PostgreSQL serialization failures and deadlocks.
pub fn is_conflict(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    match db.code().as_deref() {
        // PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
        Some("40001" | "40P01" | "55P03") => true,
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
        Some(code) => matches!(code, "5" | "6" | "261" | "517" | "262" | "773"),
        None => {
            let message = db.message();
            message.contains("database is locked") || message.contains("database table is locked")
        }
    }
}

/// Runs `attempt` until it succeeds or fails with something other than a conflict, at most
/// `max_attempts` times, with a short growing pause between tries.
pub async fn retry_conflicts<T, F, Fut>(max_attempts: u32, mut attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(error) if tries < max_attempts && is_conflict(&error) => {
                tracing::debug!(tries, %error, "database conflict; retrying");
                let pause = Duration::from_millis(5 * (1 << tries.min(7)));
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// Milliseconds since the Unix epoch, the unit every smrtshare table stores times in.
pub fn now_millis() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
