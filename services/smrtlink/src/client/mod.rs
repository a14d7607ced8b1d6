//! The SMRT Link REST client.
//!
//! [`SmrtLinkClient`] is cheap to clone and share: clones use one connection pool and one token.
//! Every call sends `Authorization: Bearer ..` and `X-User-ID`; on a 401 the token is renewed
//! once (refresh grant, else a fresh login) and the call repeated. 5xx answers, connection
//! failures and timeouts are retried with capped exponential backoff and jitter; 4xx never are.

mod auth;
mod jobs;
mod transport;

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tracing::warn;
use uuid::Uuid;

pub use auth::AuthStats;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::model::read::array_items;
use crate::model::{
    AnalysisJob, AnalysisJobRequest, Dataset, FieldError, Project, ProjectRequest, ProjectSummary,
    ServerStatus,
};
use transport::{Answer, Body, Call};

/// A SMRT Link client. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct SmrtLinkClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: ClientConfig,
    http: reqwest::Client,
    tokens: auth::TokenCache,
    auth_counters: auth::AuthCounters,
}

fn protocol(endpoint: &str, error: FieldError) -> Error {
    Error::Protocol {
        endpoint: endpoint.to_owned(),
        message: error.to_string(),
    }
}

impl SmrtLinkClient {
    /// Builds a client (reads the CA file; makes no request). Logs a warning when certificate
    /// verification is switched off.
    pub fn new(config: ClientConfig) -> Result<Self> {
        match config.base_url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Error::Config(format!(
                    "SMRT Link URL {} must be http:// or https://, not {other}://",
                    config.base_url
                )));
            }
        }
        if config.retry.max_attempts == 0 {
            return Err(Error::Config(
                "retry policy needs at least one attempt".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("smrtshare/", env!("CARGO_PKG_VERSION")))
            .use_rustls_tls();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read SMRT Link CA file {}: {e}",
                    path.display()
                ))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!(
                    "SMRT Link CA file {} is not PEM: {e}",
                    path.display()
                ))
            })?;
            if certificates.is_empty() {
                return Err(Error::Config(format!(
                    "SMRT Link CA file {} holds no certificate",
                    path.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if config.insecure {
            warn!(
                url = %config.base_url,
                "TLS certificate verification for SMRT Link is switched OFF (insecure): any server can pose as SMRT Link"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                tokens: auth::TokenCache::default(),
                auth_counters: auth::AuthCounters::default(),
            }),
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Logins and refreshes made so far.
    pub fn auth_stats(&self) -> AuthStats {
        self.inner.auth_counters.stats()
    }

    /// Logs in now (or reuses the cached token); useful as a start-up check of the credentials.
    pub async fn login(&self) -> Result<()> {
        self.inner.token().await.map(|_| ())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body,
        idempotent: bool,
    ) -> Result<(String, Answer)> {
        let endpoint = format!("{method} {path}");
        let answer = self
            .inner
            .execute(Call {
                url: self.inner.api_url(path),
                method,
                endpoint: endpoint.clone(),
                body,
                idempotent,
                basic: None,
            })
            .await?;
        Ok((endpoint, answer))
    }

    async fn get(&self, path: &str) -> Result<(String, Answer)> {
        self.call(Method::GET, path, Body::None, true).await
    }

    /// `GET /status`: SMRT Link's server status (a readiness check).
    pub async fn status(&self) -> Result<ServerStatus> {
        let (endpoint, answer) = self.get("/status").await?;
        let value = expect_ok(&endpoint, &answer)?;
        ServerStatus::from_json(&value, "status").map_err(|e| protocol(&endpoint, e))
    }

    /// `GET /smrt-link/projects`: every project, in no particular order. A listing that fails
    /// half-way (connection dropped, body cut off, invalid JSON, an odd item) is an error, never
    /// a short list; duplicate ids are an error too.
    pub async fn list_projects(&self) -> Result<Vec<ProjectSummary>> {
        let (endpoint, answer) = self.get("/smrt-link/projects").await?;
        let value = expect_ok(&endpoint, &answer)?;
        let items = array_items(&value, "projects").map_err(|e| protocol(&endpoint, e))?;
        let mut projects = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        for (path, item) in items {
            let project =
                ProjectSummary::from_json(item, &path).map_err(|e| protocol(&endpoint, e))?;
            if !seen.insert(project.id) {
                return Err(Error::Protocol {
                    endpoint,
                    message: format!("{path}.id: project {} is listed twice", project.id),
                });
            }
            projects.push(project);
        }
        Ok(projects)
    }

    /// `GET /smrt-link/projects/{id}`: the project with members and datasets; `None` when SMRT
    /// Link answers 404 (deleted or never existed).
    pub async fn get_project(&self, id: i64) -> Result<Option<Project>> {
        let (endpoint, answer) = self.get(&format!("/smrt-link/projects/{id}")).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = expect_ok(&endpoint, &answer)?;
        let project = Project::from_json(&value, "project").map_err(|e| protocol(&endpoint, e))?;
        if project.id != id {
            return Err(Error::Protocol {
                endpoint,
                message: format!(
                    "project.id: asked for project {id}, got project {}",
                    project.id
                ),
            });
        }
        Ok(Some(project))
    }

    /// `GET /smrt-link/datasets/search/{uuid}`: the full dataset record (any dataset type, the
    /// naming fields included); `None` when SMRT Link has no such dataset (it answers `{}`, or 404).
    pub async fn get_dataset(&self, uuid: Uuid) -> Result<Option<Dataset>> {
        let (endpoint, answer) = self
            .get(&format!("/smrt-link/datasets/search/{uuid}"))
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = expect_ok(&endpoint, &answer)?;
        if value.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(None);
        }
        let dataset = Dataset::from_json(&value, "dataset").map_err(|e| protocol(&endpoint, e))?;
        if dataset.uuid != uuid {
            return Err(Error::Protocol {
                endpoint,
                message: format!("dataset.uuid: asked for {uuid}, got {}", dataset.uuid),
            });
        }
        Ok(Some(dataset))
    }

    /// `POST /smrt-link/projects`, as the web UI creates a project; answers the new project.
    /// smrtshare never writes to SMRT Link: this is for tests and tools acting as the web UI.
    /// Not retried once the request may have arrived.
    pub async fn create_project(&self, request: &ProjectRequest) -> Result<Project> {
        let body = serde_json::to_value(request).map_err(|e| Error::Config(e.to_string()))?;
        let (endpoint, answer) = self
            .call(Method::POST, "/smrt-link/projects", Body::Json(body), false)
            .await?;
        let value = expect_ok(&endpoint, &answer)?;
        Project::from_json(&value, "project").map_err(|e| protocol(&endpoint, e))
    }

    /// `PUT /smrt-link/projects/{id}`, as the web UI edits a project; answers the project.
    pub async fn update_project(&self, id: i64, request: &ProjectRequest) -> Result<Project> {
        let body = serde_json::to_value(request).map_err(|e| Error::Config(e.to_string()))?;
        let (endpoint, answer) = self
            .call(
                Method::PUT,
                &format!("/smrt-link/projects/{id}"),
                Body::Json(body),
                true,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound { endpoint });
        }
        let value = expect_ok(&endpoint, &answer)?;
        Project::from_json(&value, "project").map_err(|e| protocol(&endpoint, e))
    }

    /// `DELETE /smrt-link/projects/{id}`, as the web UI deletes a project.
    pub async fn delete_project(&self, id: i64) -> Result<()> {
        let (endpoint, answer) = self
            .call(
                Method::DELETE,
                &format!("/smrt-link/projects/{id}"),
                Body::None,
                true,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound { endpoint });
        }
        expect_success(&endpoint, &answer)
    }

    /// `POST /smrt-link/job-manager/jobs/analysis`, as the web UI starts an analysis; answers
    /// the new job. Not retried once the request may have arrived.
    pub async fn create_analysis_job(&self, request: &AnalysisJobRequest) -> Result<AnalysisJob> {
        let body = serde_json::to_value(request).map_err(|e| Error::Config(e.to_string()))?;
        let (endpoint, answer) = self
            .call(
                Method::POST,
                "/smrt-link/job-manager/jobs/analysis",
                Body::Json(body),
                false,
            )
            .await?;
        let value = expect_ok(&endpoint, &answer)?;
        AnalysisJob::from_json(&value, "job").map_err(|e| protocol(&endpoint, e))
    }
}

/// A 2xx answer's status, else the matching error.
fn expect_success(endpoint: &str, answer: &Answer) -> Result<()> {
    let status = answer.status;
    if status.is_success() {
        return Ok(());
    }
    if status.is_client_error() {
        return Err(Error::Rejected {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            message: answer.message(),
        });
    }
    Err(Error::Protocol {
        endpoint: endpoint.to_owned(),
        message: format!("unexpected HTTP {}: {}", status.as_u16(), answer.message()),
    })
}

/// A 2xx answer's JSON body, else the matching error.
fn expect_ok(endpoint: &str, answer: &Answer) -> Result<Value> {
    expect_success(endpoint, answer)?;
    answer.json(endpoint)
}

fn read_list<T>(
    endpoint: &str,
    value: &Value,
    what: &str,
    read: impl Fn(&Value, &str) -> Result<T, FieldError>,
) -> Result<Vec<T>> {
    array_items(value, what)
        .map_err(|e| protocol(endpoint, e))?
        .into_iter()
        .map(|(path, item)| read(item, &path).map_err(|e| protocol(endpoint, e)))
        .collect()
}
