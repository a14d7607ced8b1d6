//! What the coordinator needs from SMRT Link, as a trait: the real client (see
//! [`crate::smrtlink`]) implements it, and the coordinator's logic never sees HTTP.

use futures::future::BoxFuture;

use crate::model::{AnalysisJobTruth, JobOutput, ProjectTruth};

/// Why SMRT Link could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    /// Unreachable, 5xx after retries, or timed out.
    #[error("SMRT Link is unavailable: {0}")]
    Unavailable(String),
    /// SMRT Link refused the configured credentials.
    #[error("SMRT Link refused the credentials: {0}")]
    Auth(String),
    /// SMRT Link answered something that cannot be used (odd JSON, missing fields).
    #[error("SMRT Link answered oddly: {0}")]
    Protocol(String),
}

/// Reads SMRT Link's truth.
pub trait ProjectSource: Send + Sync + 'static {
    /// Ids of every active project (project 1 included if SMRT Link lists it). Fails as a whole
    /// when the listing is incomplete: a short list must never be mistaken for deletions.
    fn list_project_ids(&self) -> BoxFuture<'_, Result<Vec<i64>, SourceError>>;

    /// One project with members and active datasets; `None` when SMRT Link no longer has it
    /// (404, or soft-deleted).
    fn get_project(&self, id: i64) -> BoxFuture<'_, Result<Option<ProjectTruth>, SourceError>>;

    /// The project a dataset belongs to now (`None`: SMRT Link does not know it, or it is not
    /// active).
    fn dataset_project(&self, uuid: &str) -> BoxFuture<'_, Result<Option<i64>, SourceError>>;

    /// Every active analysis job.
    fn list_analysis_jobs(&self) -> BoxFuture<'_, Result<Vec<AnalysisJobTruth>, SourceError>>;

    /// One analysis job; `None` when SMRT Link no longer has it (404, or soft-deleted).
    fn get_analysis_job(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<AnalysisJobTruth>, SourceError>>;

    /// The active output files of an analysis job.
    fn analysis_outputs(&self, id: i64) -> BoxFuture<'_, Result<Vec<JobOutput>, SourceError>>;
}
