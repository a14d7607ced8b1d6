//! The rule registry: one row per rule smrtshare means to hold, in SQLite (embedded default) or
//! PostgreSQL through one code path.
//!
//! States: `pending` (an intent written before a create; the rule may or may not exist at
//! Globus), `active` (exists with the recorded `access_id`), `deleting` (marked; forgotten once
//! Globus confirms), `external` (the member's access comes from a rule smrtshare did not create;
//! smrtshare never changes or deletes it).

use sqlx::Row as _;
use sqlx::any::AnyRow;

use smrtshare_common::db::{self, Backend, Database, retry_conflicts};

use crate::clock::Clock;

mod groups;
mod notes;

pub use groups::{GroupRow, GroupState, MemberRow, MemberState};
pub use notes::Unresolved;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Attempts of one write when the database reports a conflict (busy, serialization).
const CONFLICT_ATTEMPTS: u32 = 8;

/// A row's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowState {
    /// Intent written; the rule may or may not exist at Globus.
    Pending,
    /// The rule exists at Globus with the recorded id.
    Active,
    /// Marked for deletion.
    Deleting,
    /// Access comes from a rule smrtshare did not create.
    External,
}

impl RowState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Deleting => "deleting",
            Self::External => "external",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "deleting" => Ok(Self::Deleting),
            "external" => Ok(Self::External),
            other => Err(sqlx::Error::Decode(
                format!("unknown rule state {other:?}").into(),
            )),
        }
    }
}

/// Whom a rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A member's Globus identity (rule sharing).
    Identity,
    /// The project's Globus group (group sharing).
    Group,
}

impl Principal {
    /// Globus' `principal_type`, also the stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Group => "group",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "identity" => Ok(Self::Identity),
            "group" => Ok(Self::Group),
            other => Err(sqlx::Error::Decode(
                format!("unknown principal type {other:?}").into(),
            )),
        }
    }
}

/// One registry row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRow {
    /// Row id.
    pub id: i64,
    /// SMRT Link project.
    pub project_id: i64,
    /// Whom the rule grants.
    pub principal: Principal,
    /// The member's SMRT Link login (empty for a group's rule).
    pub login: String,
    /// The Globus username the login mapped to (a group's rule: the group's name).
    pub username: String,
    /// The principal: the member's identity id, or the group id.
    pub identity_id: String,
    /// The Globus path, `/…/`.
    pub path: String,
    /// `r`.
    pub permissions: String,
    /// The Globus rule id, once known.
    pub access_id: Option<String>,
    /// State.
    pub state: RowState,
    /// Expiry at Globus (ms since the epoch).
    pub expires_at: Option<i64>,
    /// When the (latest) intent was written (ms).
    pub intent_at: i64,
    /// When the row was made (ms).
    pub created_at: i64,
    /// When the row last changed (ms).
    pub updated_at: i64,
    /// The last failure concerning this rule.
    pub last_error: Option<String>,
}

const COLUMNS: &str = "id, project_id, principal_type, login, username, identity_id, path, \
                       permissions, access_id, state, expires_at, intent_at, created_at, \
                       updated_at, last_error";

fn decode(row: &AnyRow) -> Result<RuleRow, sqlx::Error> {
    Ok(RuleRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        principal: Principal::parse(&row.try_get::<String, _>("principal_type")?)?,
        login: row.try_get("login")?,
        username: row.try_get("username")?,
        identity_id: row.try_get("identity_id")?,
        path: row.try_get("path")?,
        permissions: row.try_get("permissions")?,
        access_id: row.try_get("access_id")?,
        state: RowState::parse(&row.try_get::<String, _>("state")?)?,
        expires_at: row.try_get("expires_at")?,
        intent_at: row.try_get("intent_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_error: row.try_get("last_error")?,
    })
}

/// A new intent.
#[derive(Clone, Debug)]
pub struct NewIntent<'a> {
    /// Project.
    pub project_id: i64,
    /// Whom the rule grants.
    pub principal: Principal,
    /// Login (empty for a group's rule).
    pub login: &'a str,
    /// Username (a group's rule: the group's name).
    pub username: &'a str,
    /// Identity id, or group id.
    pub identity_id: &'a str,
    /// Path.
    pub path: &'a str,
    /// Permissions.
    pub permissions: &'a str,
    /// The expiry the create will ask for (ms).
    pub expires_at: Option<i64>,
}

/// What writing an intent gave.
#[derive(Clone, Debug)]
pub enum Inserted {
    /// The new pending row.
    Row(RuleRow),
    /// Another row already holds this identity and path (another project's, or a stale one).
    HeldBy(RuleRow),
}

/// The registry.
#[derive(Clone, Debug)]
pub struct Registry {
    db: Database,
    clock: Clock,
}

impl Registry {
    /// Opens the database at `url` and runs the migrations.
    pub async fn open(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let db = db::connect(
            url,
            max_connections,
            &SQLITE_MIGRATIONS,
            &POSTGRES_MIGRATIONS,
        )
        .await?;
        Ok(Self { db, clock })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    /// Byte-wise ordering of logins on both backends.
    fn login_order(&self) -> &'static str {
        match self.db.backend {
            Backend::Sqlite => "login",
            Backend::Postgres => "login COLLATE \"C\"",
        }
    }

    async fn fetch<'q>(
        &self,
        sql: &'q str,
        bind: impl FnOnce(Query<'q>) -> Query<'q>,
    ) -> Result<Vec<RuleRow>, sqlx::Error> {
        let rows = bind(sqlx::query(sql)).fetch_all(&self.db.pool).await?;
        rows.iter().map(decode).collect()
    }

    /// One row by id.
    pub async fn row(&self, id: i64) -> Result<Option<RuleRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM access_rules WHERE id = $1");
        Ok(self.fetch(&sql, |q| q.bind(id)).await?.into_iter().next())
    }

    /// A project's rows, ordered by login then path.
    pub async fn project_rows(&self, project_id: i64) -> Result<Vec<RuleRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM access_rules WHERE project_id = $1 ORDER BY {}, path, id",
            self.login_order()
        );
        self.fetch(&sql, |q| q.bind(project_id)).await
    }

    /// Every row, ordered by project then login.
    pub async fn all_rows(&self) -> Result<Vec<RuleRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM access_rules ORDER BY project_id, {}, path, id",
            self.login_order()
        );
        self.fetch(&sql, |q| q).await
    }

    /// Active rows whose expiry falls before `before_ms`.
    pub async fn due_for_renewal(&self, before_ms: i64) -> Result<Vec<RuleRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM access_rules \
             WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at < $1 \
             ORDER BY project_id, id"
        );
        self.fetch(&sql, |q| q.bind(before_ms)).await
    }

    /// Rows in one state.
    pub async fn rows_in_state(&self, state: RowState) -> Result<Vec<RuleRow>, sqlx::Error> {
        let sql =
            format!("SELECT {COLUMNS} FROM access_rules WHERE state = $1 ORDER BY project_id, id");
        self.fetch(&sql, |q| q.bind(state.as_str())).await
    }

    /// The row holding an identity on a path, if any.
    pub async fn holder(
        &self,
        identity_id: &str,
        path: &str,
    ) -> Result<Option<RuleRow>, sqlx::Error> {
        let sql =
            format!("SELECT {COLUMNS} FROM access_rules WHERE identity_id = $1 AND path = $2");
        Ok(self
            .fetch(&sql, |q| q.bind(identity_id).bind(path))
            .await?
            .into_iter()
            .next())
    }

    /// Rows per state.
    pub async fn counts_by_state(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM access_rules GROUP BY state")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }

    /// Writes an intent (a pending row) before a create.
    pub async fn insert_intent(&self, new: &NewIntent<'_>) -> Result<Inserted, sqlx::Error> {
        let now = self.clock.now_millis();
        let inserted = retry_conflicts(CONFLICT_ATTEMPTS, || async {
            sqlx::query(
                "INSERT INTO access_rules (project_id, login, username, identity_id, path, \
                 permissions, access_id, state, expires_at, intent_at, created_at, updated_at, \
                 principal_type) \
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, 'pending', $7, $8, $8, $8, $9) RETURNING id",
            )
            .bind(new.project_id)
            .bind(new.login)
            .bind(new.username)
            .bind(new.identity_id)
            .bind(new.path)
            .bind(new.permissions)
            .bind(new.expires_at)
            .bind(now)
            .bind(new.principal.as_str())
            .fetch_one(&self.db.pool)
            .await
        })
        .await;
        match inserted {
            Ok(row) => {
                let id: i64 = row.try_get("id")?;
                let row = self.row(id).await?.ok_or(sqlx::Error::RowNotFound)?;
                Ok(Inserted::Row(row))
            }
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                match self.holder(new.identity_id, new.path).await? {
                    Some(holder) => Ok(Inserted::HeldBy(holder)),
                    None => Err(sqlx::Error::Database(error)),
                }
            }
            Err(error) => Err(error),
        }
    }

    async fn execute<'q>(
        &self,
        sql: &'static str,
        id: i64,
        bind: impl Fn(Query<'q>) -> Query<'q>,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now_millis();
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            bind(sqlx::query(sql).bind(id).bind(now))
                .execute(&self.db.pool)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Records the rule Globus made (or one adopted) for a pending row. Answers the row that
    /// held the same rule id before, if any (see [`Self::claim_access_id`]).
    pub async fn activate(
        &self,
        id: i64,
        access_id: &str,
        expires_at: Option<i64>,
    ) -> Result<Option<RuleRow>, sqlx::Error> {
        self.claim_access_id(id, access_id, RowState::Active, expires_at)
            .await
    }

    /// Records that a rule smrtshare did not create gives the member access. Answers the row
    /// that held the same rule id before, if any.
    pub async fn mark_external(
        &self,
        id: i64,
        access_id: &str,
        expires_at: Option<i64>,
    ) -> Result<Option<RuleRow>, sqlx::Error> {
        self.claim_access_id(id, access_id, RowState::External, expires_at)
            .await
    }

    /// Gives row `id` the Globus rule `access_id` in `state`, in one transaction. Globus never
    /// names two rules with one id, so another row still holding this id holds a stale record:
    /// its rule is gone (a Globus that was reset, as a restarted stand-in is). That row gets a
    /// fresh intent (state `pending`, no id), so the next apply or verify creates its rule again,
    /// and is answered for logging. A row that was being deleted is forgotten instead.
    pub async fn claim_access_id(
        &self,
        id: i64,
        access_id: &str,
        state: RowState,
        expires_at: Option<i64>,
    ) -> Result<Option<RuleRow>, sqlx::Error> {
        let now = self.clock.now_millis();
        let select =
            format!("SELECT {COLUMNS} FROM access_rules WHERE access_id = $1 AND id <> $2");
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            let displaced = match sqlx::query(&select)
                .bind(access_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(row) => Some(decode(&row)?),
                None => None,
            };
            match &displaced {
                Some(stale) if stale.state == RowState::Deleting => {
                    sqlx::query("DELETE FROM access_rules WHERE id = $1")
                        .bind(stale.id)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(stale) => {
                    sqlx::query(
                        "UPDATE access_rules SET state = 'pending', access_id = NULL, \
                         intent_at = $2, updated_at = $2, last_error = $3 WHERE id = $1",
                    )
                    .bind(stale.id)
                    .bind(now)
                    .bind(format!(
                        "globus now names another rule {access_id}: this rule is gone and is made again"
                    ))
                    .execute(&mut *tx)
                    .await?;
                }
                None => {}
            }
            sqlx::query(
                "UPDATE access_rules SET state = $3, access_id = $4, expires_at = $5, \
                 last_error = NULL, updated_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .bind(state.as_str())
            .bind(access_id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(displaced)
        })
        .await
    }

    /// Opens a fresh intent on a row: the rule is to be created (again).
    pub async fn reopen(&self, id: i64, expires_at: Option<i64>) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE access_rules SET state = 'pending', access_id = NULL, expires_at = $3, \
             intent_at = $2, updated_at = $2 WHERE id = $1",
            id,
            |q| q.bind(expires_at),
        )
        .await
    }

    /// Marks a row for deletion (first phase of a delete).
    pub async fn mark_deleting(&self, id: i64) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE access_rules SET state = 'deleting', updated_at = $2 WHERE id = $1",
            id,
            |q| q,
        )
        .await
    }

    /// Records a new expiry.
    pub async fn set_expiry(&self, id: i64, expires_at: Option<i64>) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE access_rules SET expires_at = $3, last_error = NULL, updated_at = $2 \
             WHERE id = $1",
            id,
            |q| q.bind(expires_at),
        )
        .await
    }

    /// Records the last failure (cut to 500 characters, so recording cannot fail on size).
    pub async fn set_error(&self, id: i64, message: &str) -> Result<(), sqlx::Error> {
        let message: String = message.chars().take(500).collect();
        self.execute(
            "UPDATE access_rules SET last_error = $3, updated_at = $2 WHERE id = $1",
            id,
            move |q| q.bind(message.clone()),
        )
        .await
    }

    /// Forgets a row (last phase of a delete, or an intent that made nothing).
    pub async fn forget(&self, id: i64) -> Result<(), sqlx::Error> {
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            sqlx::query("DELETE FROM access_rules WHERE id = $1")
                .bind(id)
                .execute(&self.db.pool)
                .await
        })
        .await
        .map(|_| ())
    }
}
