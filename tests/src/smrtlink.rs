//! SMRT Link as the tests drive it: a web-UI user whose project writes NGINX mirrors to the
//! coordinator's intake, and the stand-in's admin API for changes that never pass the proxy.

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use smrtshare_common::Secret;
use smrtshare_smrtlink::model::{Project, ProjectRequest};
use smrtshare_smrtlink::{ClientConfig, SmrtLinkClient};

/// A SMRT Link web-UI session behind NGINX: each write goes to SMRT Link, then the request line
/// is mirrored to the coordinator's intake (`POST/PUT/DELETE …/smrt-link/projects[/{id}]`).
#[derive(Debug)]
pub struct WebUi {
    client: SmrtLinkClient,
    intake: String,
    http: reqwest::Client,
    versioned: bool,
}

impl WebUi {
    /// A session as `user` at the stand-in's `api` URL, mirroring to `intake` (`host:port`).
    pub fn new(api: &str, user: &str, password: &str, intake: &str) -> anyhow::Result<Self> {
        let client = SmrtLinkClient::new(ClientConfig::new(
            api.parse().context("the stand-in's API URL")?,
            user,
            Secret::new(password),
        ))?;
        Ok(Self {
            client,
            intake: intake.to_owned(),
            http: reqwest::Client::new(),
            versioned: true,
        })
    }

    /// The SMRT Link client itself (reads, and writes that are not mirrored).
    pub fn client(&self) -> &SmrtLinkClient {
        &self.client
    }

    /// The path as NGINX forwards it: alternately `/SMRTLink/2.0.0/smrt-link/…` (the web UI
    /// behind the SMRT Link proxy) and `/smrt-link/…`, since the intake accepts both.
    fn mirrored_path(&mut self, tail: &str) -> String {
        self.versioned = !self.versioned;
        if self.versioned {
            format!("/SMRTLink/2.0.0/smrt-link/{tail}")
        } else {
            format!("/smrt-link/{tail}")
        }
    }

    /// Sends a mirrored request to the intake, as NGINX's `mirror` does: the answer is not
    /// awaited by the user, so a refused connection is reported, not raised.
    pub async fn mirror(&mut self, method: Method, tail: &str) -> Mirrored {
        let path = self.mirrored_path(tail);
        let url = format!("http://{}{path}", self.intake);
        match self
            .http
            .request(method, url)
            .header("content-type", "application/json")
            .body("{\"ignored\": true}")
            .send()
            .await
        {
            Ok(answer) => Mirrored::Answered(answer.status()),
            Err(error) => Mirrored::Failed(error.to_string()),
        }
    }

    /// Creates a project at SMRT Link, then mirrors `POST …/projects`.
    pub async fn create_project(
        &mut self,
        request: &ProjectRequest,
    ) -> anyhow::Result<(Project, Mirrored)> {
        let project = self.client.create_project(request).await?;
        let mirrored = self.mirror(Method::POST, "projects").await;
        Ok((project, mirrored))
    }

    /// Updates a project at SMRT Link, then mirrors `PUT …/projects/{id}`.
    pub async fn update_project(
        &mut self,
        id: i64,
        request: &ProjectRequest,
    ) -> anyhow::Result<(Project, Mirrored)> {
        let project = self.client.update_project(id, request).await?;
        let mirrored = self.mirror(Method::PUT, &format!("projects/{id}")).await;
        Ok((project, mirrored))
    }

    /// Deletes a project at SMRT Link, then mirrors `DELETE …/projects/{id}`.
    pub async fn delete_project(&mut self, id: i64) -> anyhow::Result<Mirrored> {
        self.client.delete_project(id).await?;
        Ok(self.mirror(Method::DELETE, &format!("projects/{id}")).await)
    }
}

/// What became of a mirrored request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mirrored {
    /// The intake answered with this status.
    Answered(StatusCode),
    /// No answer (the coordinator was down).
    Failed(String),
}

impl Mirrored {
    /// True for the intake's 202.
    pub fn accepted(&self) -> bool {
        *self == Self::Answered(StatusCode::ACCEPTED)
    }
}

/// The stand-in's admin API (`/admin/...`): changes made inside SMRT Link that no proxy sees.
#[derive(Clone, Debug)]
pub struct SmrtLinkAdmin {
    base: String,
    http: reqwest::Client,
}

impl SmrtLinkAdmin {
    /// The admin API of the stand-in at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/admin{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await?;
        let status = answer.status();
        let text = answer.text().await?;
        if !status.is_success() {
            bail!("{method} /admin{path}: {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET /admin/state`: every project (full records), dataset and job.
    pub async fn state(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/state", None).await
    }

    /// Adds a member or changes its role (`OWNER`, `CAN_EDIT`, `CAN_VIEW`).
    pub async fn put_member(&self, project: i64, login: &str, role: &str) -> anyhow::Result<()> {
        self.call(
            Method::PUT,
            &format!("/projects/{project}/members/{login}"),
            Some(json!({ "role": role })),
        )
        .await
        .map(drop)
    }

    /// Removes a member.
    pub async fn delete_member(&self, project: i64, login: &str) -> anyhow::Result<()> {
        self.call(
            Method::DELETE,
            &format!("/projects/{project}/members/{login}"),
            None,
        )
        .await
        .map(drop)
    }

    /// Renames a project.
    pub async fn rename(&self, project: i64, name: &str) -> anyhow::Result<()> {
        self.call(
            Method::PATCH,
            &format!("/projects/{project}"),
            Some(json!({ "name": name })),
        )
        .await
        .map(drop)
    }

    /// Moves a dataset into a project.
    pub async fn move_dataset(&self, uuid: &str, project: i64) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/datasets/{uuid}/move"),
            Some(json!({ "project_id": project })),
        )
        .await
        .map(drop)
    }

    /// Creates a project; answers its id.
    pub async fn create_project(
        &self,
        name: &str,
        members: &[(&str, &str)],
        datasets: &[&str],
    ) -> anyhow::Result<i64> {
        let members: Vec<Value> = members
            .iter()
            .map(|(login, role)| json!({ "login": login, "role": role }))
            .collect();
        let answer = self
            .call(
                Method::POST,
                "/projects",
                Some(json!({ "name": name, "members": members, "datasets": datasets })),
            )
            .await?;
        answer["id"]
            .as_i64()
            .with_context(|| format!("no id in {answer}"))
    }

    /// Sets the stand-in's faults (`Faults` as JSON: `delay_ms`, `endpoints`, `fail_next`, …).
    pub async fn set_faults(&self, faults: Value) -> anyhow::Result<()> {
        self.call(Method::PUT, "/faults", Some(faults))
            .await
            .map(drop)
    }

    /// Requests the stand-in has seen at `endpoint` (`get_project`, `list_projects`, …),
    /// counted on arrival, before any injected delay.
    pub async fn requests(&self, endpoint: &str) -> anyhow::Result<u64> {
        let counters = self.call(Method::GET, "/counters", None).await?;
        Ok(counters["requests"][endpoint].as_u64().unwrap_or(0))
    }

    /// Clears every fault.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.call(Method::DELETE, "/faults", None).await.map(drop)
    }

    /// Deletes a project (its datasets return to project 1).
    pub async fn delete_project(&self, project: i64) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/projects/{project}"), None)
            .await
            .map(drop)
    }
}
