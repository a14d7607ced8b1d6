//! Group sharing in the registry: the project's Globus group (an intent before the create,
//! proven by a nonce after a crash) and the members smrtshare added to it. A group's rule is an
//! ordinary rule row with principal `group`.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use smrtshare_common::db::retry_conflicts;

use super::{CONFLICT_ATTEMPTS, Registry};

/// A group row's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// Intent written; the group may or may not exist at Globus.
    Pending,
    /// The group exists with the recorded id.
    Active,
    /// Marked for deletion (its rules first, then the group).
    Deleting,
}

impl GroupState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Deleting => "deleting",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "deleting" => Ok(Self::Deleting),
            other => Err(sqlx::Error::Decode(
                format!("unknown group state {other:?}").into(),
            )),
        }
    }
}

/// The project's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    /// Row id.
    pub id: i64,
    /// SMRT Link project.
    pub project_id: i64,
    /// The Globus group id, once known.
    pub group_id: Option<String>,
    /// The group's name at Globus.
    pub name: String,
    /// The proof of ownership written into the group's description.
    pub nonce: String,
    /// State.
    pub state: GroupState,
    /// When the (latest) intent was written (ms).
    pub intent_at: i64,
    /// When the row last changed (ms).
    pub updated_at: i64,
    /// The last failure concerning the group.
    pub last_error: Option<String>,
}

/// A member row's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// The add is sent or about to be (idempotent: sent again until Globus confirms).
    Pending,
    /// A member of the group.
    Active,
    /// The remove is sent or about to be.
    Removing,
}

impl MemberState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Removing => "removing",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "removing" => Ok(Self::Removing),
            other => Err(sqlx::Error::Decode(
                format!("unknown member state {other:?}").into(),
            )),
        }
    }
}

/// A member smrtshare added (or is adding) to a project's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    /// Row id.
    pub id: i64,
    /// SMRT Link project.
    pub project_id: i64,
    /// SMRT Link login.
    pub login: String,
    /// Globus username.
    pub username: String,
    /// Globus identity id.
    pub identity_id: String,
    /// State.
    pub state: MemberState,
    /// When the row last changed (ms).
    pub updated_at: i64,
    /// The last failure concerning the membership.
    pub last_error: Option<String>,
}

const GROUP_COLUMNS: &str =
    "id, project_id, group_id, name, nonce, state, intent_at, updated_at, last_error";
const MEMBER_COLUMNS: &str =
    "id, project_id, login, username, identity_id, state, updated_at, last_error";

fn decode_group(row: &AnyRow) -> Result<GroupRow, sqlx::Error> {
    Ok(GroupRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        group_id: row.try_get("group_id")?,
        name: row.try_get("name")?,
        nonce: row.try_get("nonce")?,
        state: GroupState::parse(&row.try_get::<String, _>("state")?)?,
        intent_at: row.try_get("intent_at")?,
        updated_at: row.try_get("updated_at")?,
        last_error: row.try_get("last_error")?,
    })
}

fn decode_member(row: &AnyRow) -> Result<MemberRow, sqlx::Error> {
    Ok(MemberRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        login: row.try_get("login")?,
        username: row.try_get("username")?,
        identity_id: row.try_get("identity_id")?,
        state: MemberState::parse(&row.try_get::<String, _>("state")?)?,
        updated_at: row.try_get("updated_at")?,
        last_error: row.try_get("last_error")?,
    })
}

impl Registry {
    /// The project's group, if any.
    pub async fn group(&self, project_id: i64) -> Result<Option<GroupRow>, sqlx::Error> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM access_groups WHERE project_id = $1");
        let row = sqlx::query(&sql)
            .bind(project_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(decode_group).transpose()
    }

    /// Every group, by project.
    pub async fn groups(&self) -> Result<Vec<GroupRow>, sqlx::Error> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM access_groups ORDER BY project_id");
        let rows = sqlx::query(&sql).fetch_all(&self.db.pool).await?;
        rows.iter().map(decode_group).collect()
    }

    /// Writes a group intent (before the create). Answers the row; an existing row of the
    /// project is answered as it is.
    pub async fn insert_group_intent(
        &self,
        project_id: i64,
        name: &str,
        nonce: &str,
    ) -> Result<GroupRow, sqlx::Error> {
        let now = self.clock.now_millis();
        let inserted = retry_conflicts(CONFLICT_ATTEMPTS, || async {
            sqlx::query(
                "INSERT INTO access_groups (project_id, group_id, name, nonce, state, intent_at, \
                 created_at, updated_at) VALUES ($1, NULL, $2, $3, 'pending', $4, $4, $4)",
            )
            .bind(project_id)
            .bind(name)
            .bind(nonce)
            .bind(now)
            .execute(&self.db.pool)
            .await
        })
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {}
            Err(error) => return Err(error),
        }
        self.group(project_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    async fn execute_group(
        &self,
        sql: &'static str,
        id: i64,
        text: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now_millis();
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let query = sqlx::query(sql).bind(id).bind(now);
            match text {
                Some(text) => query.bind(text),
                None => query,
            }
            .execute(&self.db.pool)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Records the group Globus made (or one proven ours) for a pending row.
    pub async fn activate_group(&self, id: i64, group_id: &str) -> Result<(), sqlx::Error> {
        self.execute_group(
            "UPDATE access_groups SET state = 'active', group_id = $3, last_error = NULL, \
             updated_at = $2 WHERE id = $1",
            id,
            Some(group_id),
        )
        .await
    }

    /// Marks a group for deletion.
    pub async fn mark_group_deleting(&self, id: i64) -> Result<(), sqlx::Error> {
        self.execute_group(
            "UPDATE access_groups SET state = 'deleting', updated_at = $2 WHERE id = $1",
            id,
            None,
        )
        .await
    }

    /// A group marked for deletion is wanted again.
    pub async fn reactivate_group(&self, id: i64) -> Result<(), sqlx::Error> {
        self.execute_group(
            "UPDATE access_groups SET state = 'active', updated_at = $2 WHERE id = $1",
            id,
            None,
        )
        .await
    }

    /// A fresh intent for a group that is gone at Globus (deleted by hand): made again.
    pub async fn reopen_group(&self, id: i64) -> Result<(), sqlx::Error> {
        self.execute_group(
            "UPDATE access_groups SET state = 'pending', group_id = NULL, intent_at = $2, \
             updated_at = $2 WHERE id = $1",
            id,
            None,
        )
        .await
    }

    /// Records a group's last failure (cut to 500 characters).
    pub async fn set_group_error(&self, id: i64, message: &str) -> Result<(), sqlx::Error> {
        let message: String = message.chars().take(500).collect();
        self.execute_group(
            "UPDATE access_groups SET last_error = $3, updated_at = $2 WHERE id = $1",
            id,
            Some(&message),
        )
        .await
    }

    /// Forgets a group and its member rows (the group is gone at Globus, or never was).
    pub async fn forget_group(&self, id: i64, project_id: i64) -> Result<(), sqlx::Error> {
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            sqlx::query("DELETE FROM access_group_members WHERE project_id = $1")
                .bind(project_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM access_groups WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
        .await
    }

    /// The project's member rows, by login.
    pub async fn members(&self, project_id: i64) -> Result<Vec<MemberRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM access_group_members WHERE project_id = $1 \
             ORDER BY {}, id",
            self.login_order()
        );
        let rows = sqlx::query(&sql)
            .bind(project_id)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(decode_member).collect()
    }

    /// Writes member rows in state `pending` (before the add); existing rows are left as they
    /// are. Answers the project's member rows afterwards.
    pub async fn insert_members(
        &self,
        project_id: i64,
        members: &[(&str, &str, &str)],
    ) -> Result<Vec<MemberRow>, sqlx::Error> {
        let now = self.clock.now_millis();
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            for (login, username, identity) in members {
                sqlx::query(
                    "INSERT INTO access_group_members (project_id, login, username, identity_id, \
                     state, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5) \
                     ON CONFLICT (project_id, identity_id) DO NOTHING",
                )
                .bind(project_id)
                .bind(*login)
                .bind(*username)
                .bind(*identity)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
        .await?;
        self.members(project_id).await
    }

    /// Sets member rows' state (and error; `None` clears it).
    pub async fn set_members(
        &self,
        ids: &[i64],
        state: MemberState,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_millis();
        let error: Option<String> = error.map(|e| e.chars().take(500).collect());
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            for id in ids {
                sqlx::query(
                    "UPDATE access_group_members SET state = $2, last_error = $3, \
                     updated_at = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(state.as_str())
                .bind(error.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Records the last failure on member rows, keeping their state (cut to 500 characters).
    pub async fn set_members_error(&self, ids: &[i64], message: &str) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_millis();
        let message: String = message.chars().take(500).collect();
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            for id in ids {
                sqlx::query(
                    "UPDATE access_group_members SET last_error = $2, updated_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(message.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Forgets member rows.
    pub async fn forget_members(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            for id in ids {
                sqlx::query("DELETE FROM access_group_members WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
        .await
    }
}
