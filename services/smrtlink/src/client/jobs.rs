//! The client's analysis-job calls. Answers are checked against the question: a job record for
//! another job, a listing with a job twice or a job of another project than the one asked for,
//! a datastore file of another job are [`Error::Protocol`], never passed on.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};

use super::transport::{Body, Call};
use super::{SmrtLinkClient, expect_ok, protocol, read_list};
use crate::error::{Error, Result};
use crate::model::read::array_items;
use crate::model::{AnalysisJob, DataStoreFile, EntryPoint};

const JOBS: &str = "/smrt-link/job-manager/jobs/analysis";

impl SmrtLinkClient {
    /// `GET /smrt-link/job-manager/jobs/analysis[?projectId=..]`: analysis jobs, of one project
    /// or all, as SMRT Link lists them by default: soft-deleted jobs are left out (see
    /// [`Self::list_all_analysis_jobs`]; should a server list one anyway, it comes with
    /// `is_active: false`). In no particular order.
    pub async fn list_analysis_jobs(&self, project_id: Option<i64>) -> Result<Vec<AnalysisJob>> {
        self.list_jobs(project_id, false).await
    }

    /// `GET /smrt-link/job-manager/jobs/analysis?showAll=true[&projectId=..]`: every analysis
    /// job, soft-deleted ones (`is_active: false`) included.
    pub async fn list_all_analysis_jobs(
        &self,
        project_id: Option<i64>,
    ) -> Result<Vec<AnalysisJob>> {
        self.list_jobs(project_id, true).await
    }

    async fn list_jobs(&self, project_id: Option<i64>, show_all: bool) -> Result<Vec<AnalysisJob>> {
        let mut url = self.inner.api_url(JOBS);
        {
            let mut query = url.query_pairs_mut();
            if let Some(id) = project_id {
                query.append_pair("projectId", &id.to_string());
            }
            if show_all {
                query.append_pair("showAll", "true");
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let endpoint = match url.query() {
            Some(q) => format!("GET {JOBS}?{q}"),
            None => format!("GET {JOBS}"),
        };
        let answer = self
            .inner
            .execute(Call {
                method: Method::GET,
                url,
                endpoint: endpoint.clone(),
                body: Body::None,
                idempotent: true,
                basic: None,
            })
            .await?;
        let value = expect_ok(&endpoint, &answer)?;
        let items = array_items(&value, "jobs").map_err(|e| protocol(&endpoint, e))?;
        let mut jobs = Vec::with_capacity(items.len());
        let mut seen = HashSet::with_capacity(items.len());
        for (path, item) in items {
            let job = AnalysisJob::from_json(item, &path).map_err(|e| protocol(&endpoint, e))?;
            let odd = |message: String| Error::Protocol {
                endpoint: endpoint.clone(),
                message: format!("{path}: {message}"),
            };
            if !seen.insert(job.id) {
                return Err(odd(format!("job {} is listed twice", job.id)));
            }
            if let Some(asked) = project_id
                && job.project_id != asked
            {
                return Err(odd(format!(
                    "asked for the jobs of project {asked}, got job {} of project {}",
                    job.id, job.project_id
                )));
            }
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// `GET /smrt-link/job-manager/jobs/analysis/{id}`: the job, `None` when SMRT Link answers
    /// 404 (it never existed, or was removed). A soft-deleted job is answered as it is, with
    /// `is_active: false`.
    pub async fn get_analysis_job(&self, id: i64) -> Result<Option<AnalysisJob>> {
        let (endpoint, answer) = self.get(&format!("{JOBS}/{id}")).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = expect_ok(&endpoint, &answer)?;
        let job = AnalysisJob::from_json(&value, "job").map_err(|e| protocol(&endpoint, e))?;
        if job.id != id {
            return Err(Error::Protocol {
                endpoint,
                message: format!("job.id: asked for job {id}, got job {}", job.id),
            });
        }
        Ok(Some(job))
    }

    /// `GET /smrt-link/job-manager/jobs/analysis/{id}/entry-points`: the job's input datasets.
    /// [`Error::NotFound`] when the job does not exist.
    pub async fn analysis_job_entry_points(&self, id: i64) -> Result<Vec<EntryPoint>> {
        let (endpoint, answer) = self.get(&format!("{JOBS}/{id}/entry-points")).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound { endpoint });
        }
        let value = expect_ok(&endpoint, &answer)?;
        read_list(&endpoint, &value, "entryPoints", EntryPoint::from_json)
    }

    /// `GET /smrt-link/job-manager/jobs/analysis/{id}/datastore`: the job's output files (with
    /// `path`) that SMRT Link has imported so far; complete once the job is `SUCCESSFUL`.
    /// [`Error::NotFound`] when the job does not exist.
    pub async fn analysis_job_datastore(&self, id: i64) -> Result<Vec<DataStoreFile>> {
        let (endpoint, answer) = self.get(&format!("{JOBS}/{id}/datastore")).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound { endpoint });
        }
        let value = expect_ok(&endpoint, &answer)?;
        let files = read_list(&endpoint, &value, "datastore", DataStoreFile::from_json)?;
        if let Some((i, file)) = files
            .iter()
            .enumerate()
            .find(|(_, f)| f.job_id.is_some_and(|j| j != id))
        {
            return Err(Error::Protocol {
                endpoint,
                message: format!(
                    "datastore[{i}].jobId: asked for the files of job {id}, got a file of job {}",
                    file.job_id.unwrap_or_default()
                ),
            });
        }
        Ok(files)
    }
}
