//! The Globus stand-in's test-side API: the rules on the collection with who made them, the
//! identities, and rules made by a person at the Globus web interface.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// One rule at the stand-in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlobusRule {
    /// Rule id (empty for role grants).
    pub id: String,
    /// Globus username of the principal (the identity id when unknown).
    pub username: String,
    /// Directory path, `/…/`.
    pub path: String,
    /// `r` or `rw`.
    pub permissions: String,
    /// Who made it: `client:<id>`, `person` or `role`.
    pub made_by: String,
}

/// The stand-in at `base` (`http://host:port`) for collection `collection`.
#[derive(Clone, Debug)]
pub struct GlobusAdmin {
    base: String,
    collection: String,
    http: reqwest::Client,
}

impl GlobusAdmin {
    /// The admin API of the stand-in at `base`.
    pub fn new(base: &str, collection: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            collection: collection.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let answer = self
            .http
            .get(format!("{}/admin{path}", self.base))
            .send()
            .await?;
        let status = answer.status();
        let text = answer.text().await?;
        if !status.is_success() {
            bail!("GET /admin{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Identity id → username.
    pub async fn identities(&self) -> anyhow::Result<Vec<(String, String)>> {
        let list = self.get("/identities").await?;
        Ok(list
            .as_array()
            .context("identities are not a list")?
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap_or_default().to_owned(),
                    i["username"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// The id of `username`'s identity.
    pub async fn identity_id(&self, username: &str) -> anyhow::Result<String> {
        self.identities()
            .await?
            .into_iter()
            .find(|(_, u)| u == username)
            .map(|(id, _)| id)
            .with_context(|| format!("no identity {username} at the stand-in"))
    }

    /// Every rule on the collection, sorted.
    pub async fn rules(&self) -> anyhow::Result<Vec<GlobusRule>> {
        let identities = self.identities().await?;
        let list = self
            .get(&format!("/endpoints/{}/rules", self.collection))
            .await?;
        let mut rules: Vec<GlobusRule> = list
            .as_array()
            .context("rules are not a list")?
            .iter()
            .map(|r| {
                let principal = r["principal"].as_str().unwrap_or_default();
                let username = identities
                    .iter()
                    .find(|(id, _)| id == principal)
                    .map_or(principal, |(_, u)| u.as_str())
                    .to_owned();
                let made_by = match r["made_by"]["by"].as_str().unwrap_or_default() {
                    "client" => format!(
                        "client:{}",
                        r["made_by"]["client_id"].as_str().unwrap_or_default()
                    ),
                    other => other.to_owned(),
                };
                GlobusRule {
                    id: r["id"].as_str().unwrap_or_default().to_owned(),
                    username,
                    path: r["path"].as_str().unwrap_or_default().to_owned(),
                    permissions: r["permissions"].as_str().unwrap_or_default().to_owned(),
                    made_by,
                }
            })
            .collect();
        rules.sort();
        Ok(rules)
    }

    /// Sets the stand-in's fault plan (`FaultPlan` as JSON: `share`, `mix`, `kinds`, `script`).
    pub async fn set_faults(&self, plan: &Value) -> anyhow::Result<()> {
        let answer = self
            .http
            .put(format!("{}/admin/faults", self.base))
            .json(plan)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "setting faults: {}",
            answer.text().await?
        );
        Ok(())
    }

    /// Removes every fault.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        let answer = self
            .http
            .delete(format!("{}/admin/faults", self.base))
            .send()
            .await?;
        anyhow::ensure!(answer.status().is_success(), "clearing faults");
        Ok(())
    }

    /// A read rule for `username` on `path`, made by a person at the web interface (not by
    /// smrtshare); answers the rule id.
    pub async fn add_person_rule(&self, username: &str, path: &str) -> anyhow::Result<String> {
        let principal = self.identity_id(username).await?;
        let answer = self
            .http
            .post(format!(
                "{}/admin/endpoints/{}/rules",
                self.base, self.collection
            ))
            .json(&json!({
                "principal_type": "identity",
                "principal": principal,
                "path": path,
                "permissions": "r",
            }))
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await?;
        if !status.is_success() {
            bail!("adding a person's rule: {status}: {body}");
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no id in {body}"))
    }
}
