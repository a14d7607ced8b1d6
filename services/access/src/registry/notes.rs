//! What the registry remembers beside rules and groups: invitations sent (once per member and
//! project), members no apply could resolve, and the counts the caps are checked against.

use sqlx::Row as _;

use smrtshare_common::db::retry_conflicts;

use super::{CONFLICT_ATTEMPTS, Registry};

/// A member of a project with no Globus identity (or a login that is not valid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// SMRT Link project.
    pub project_id: i64,
    /// SMRT Link login.
    pub login: String,
    /// The Globus username looked up (empty when the login maps to none).
    pub username: String,
    /// Why it is unresolved.
    pub reason: String,
    /// Since when (ms).
    pub since: i64,
}

impl Registry {
    /// True when `login` of `project_id` was invited before.
    pub async fn invited(&self, project_id: i64, login: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM access_invitations WHERE project_id = $1 AND login = $2",
        )
        .bind(project_id)
        .bind(login)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Records an invitation sent.
    pub async fn record_invitation(
        &self,
        project_id: i64,
        login: &str,
        email: &str,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now_millis();
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            sqlx::query(
                "INSERT INTO access_invitations (project_id, login, email, sent_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, login) DO NOTHING",
            )
            .bind(project_id)
            .bind(login)
            .bind(email)
            .bind(now)
            .execute(&self.db.pool)
            .await
        })
        .await
        .map(|_| ())
    }

    /// Replaces a project's unresolved members with `members` (login, username, reason);
    /// members unresolved before keep their `since`.
    pub async fn set_unresolved(
        &self,
        project_id: i64,
        members: &[(String, String, String)],
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now_millis();
        retry_conflicts(CONFLICT_ATTEMPTS, || async {
            let mut tx = self.db.pool.begin().await?;
            let kept: Vec<String> = members.iter().map(|(login, _, _)| login.clone()).collect();
            let old = sqlx::query("SELECT login FROM access_unresolved WHERE project_id = $1")
                .bind(project_id)
                .fetch_all(&mut *tx)
                .await?;
            for row in old {
                let login: String = row.try_get("login")?;
                if !kept.contains(&login) {
                    sqlx::query(
                        "DELETE FROM access_unresolved WHERE project_id = $1 AND login = $2",
                    )
                    .bind(project_id)
                    .bind(login)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for (login, username, reason) in members {
                sqlx::query(
                    "INSERT INTO access_unresolved (project_id, login, username, reason, since) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, login) \
                     DO UPDATE SET username = excluded.username, reason = excluded.reason",
                )
                .bind(project_id)
                .bind(login)
                .bind(username)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// A project's unresolved members (every project's with `None`), by project and login.
    pub async fn unresolved(
        &self,
        project_id: Option<i64>,
    ) -> Result<Vec<Unresolved>, sqlx::Error> {
        let sql = format!(
            "SELECT project_id, login, username, reason, since FROM access_unresolved \
             WHERE ($1 = 0 OR project_id = $1) ORDER BY project_id, {}",
            self.login_order()
        );
        let rows = sqlx::query(&sql)
            .bind(project_id.unwrap_or(0))
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Unresolved {
                    project_id: r.try_get("project_id")?,
                    login: r.try_get("login")?,
                    username: r.try_get("username")?,
                    reason: r.try_get("reason")?,
                    since: r.try_get("since")?,
                })
            })
            .collect()
    }

    /// Unresolved members in all projects.
    pub async fn count_unresolved(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM access_unresolved")
            .fetch_one(&self.db.pool)
            .await?;
        row.try_get("n")
    }

    /// Rules smrtshare holds or is about to hold on the collection (identity and group rules,
    /// pending, active or being deleted): what counts against the collection's cap. Rules of
    /// others recorded as `external` are counted with the others.
    pub async fn count_held_rules(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM access_rules WHERE state IN ('pending', 'active', 'deleting')",
        )
        .fetch_one(&self.db.pool)
        .await?;
        row.try_get("n")
    }

    /// Rules that give `identity` access, as smrtshare knows them: its own rules (any state,
    /// `external` included) and its memberships of groups (pending or active).
    pub async fn count_identity_rules(&self, identity: &str) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM access_rules \
                     WHERE identity_id = $1 AND principal_type = 'identity') + \
                    (SELECT COUNT(*) FROM access_group_members \
                     WHERE identity_id = $1 AND state IN ('pending', 'active')) AS n",
        )
        .bind(identity)
        .fetch_one(&self.db.pool)
        .await?;
        row.try_get("n")
    }

    /// The identity with the most rules (as [`Self::count_identity_rules`] counts), if any.
    pub async fn busiest_identity(&self) -> Result<Option<(String, i64)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT identity_id, COUNT(*) AS n FROM ( \
                 SELECT identity_id FROM access_rules WHERE principal_type = 'identity' \
                 UNION ALL \
                 SELECT identity_id FROM access_group_members WHERE state IN ('pending', 'active') \
             ) AS held GROUP BY identity_id ORDER BY n DESC, identity_id LIMIT 1",
        )
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|r| Ok((r.try_get("identity_id")?, r.try_get("n")?)))
            .transpose()
    }

    /// Every project with rules, a group or members, ascending.
    pub async fn project_ids(&self) -> Result<Vec<i64>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT project_id FROM access_rules UNION \
             SELECT project_id FROM access_groups UNION \
             SELECT project_id FROM access_group_members ORDER BY project_id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| r.try_get("project_id")).collect()
    }
}
