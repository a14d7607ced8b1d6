//! Throwaway databases: one per test, on either backend.

use anyhow::Context as _;
use smrtshare_common::db::{Backend, install_drivers};
use sqlx::Executor as _;

/// A throwaway database for one test: a SQLite file in a temporary directory, or a PostgreSQL
/// database of its own (created on the server at `SMRTSHARE_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`, and dropped when the value is dropped).
#[derive(Debug)]
pub struct TestDatabase {
    /// URL to hand to the code under test.
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A fresh SQLite database.
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Ok(Self {
            url,
            backend: Backend::Sqlite,
            admin_url: None,
            name: String::new(),
            _dir: Some(dir),
        })
    }

    /// A fresh PostgreSQL database on the test server.
    pub async fn postgres() -> anyhow::Result<Self> {
        install_drivers();
        let admin_url = std::env::var("SMRTSHARE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("smrtshare_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .with_context(
                || "connecting to the test PostgreSQL server (is it running on 127.0.0.1:5432?)",
            )?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&name);
        Ok(Self {
            url: url.to_string(),
            backend: Backend::Postgres,
            admin_url: Some(admin_url),
            name,
            _dir: None,
        })
    }

    /// A fresh database of the given backend.
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(admin_url) = self.admin_url.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        // Drop runs inside or outside a runtime; a thread of its own with a small runtime works in both.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut admin =
                    <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("warning: could not drop test database: {error:#}");
        }
    }
}
