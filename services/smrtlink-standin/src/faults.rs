//! Fault injection and request counters.

use std::collections::{BTreeMap, HashMap};

use http::Method;
use serde::{Deserialize, Serialize};

/// The SMRT Link endpoints the stand-in serves, for counters and fault filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /token` with `grant_type=password`.
    Login,
    /// `POST /token` with `grant_type=refresh_token`.
    Refresh,
    /// `GET /status`.
    Status,
    /// `GET /smrt-link/projects`.
    ListProjects,
    /// `GET /smrt-link/projects/{id}`.
    GetProject,
    /// `POST /smrt-link/projects`.
    CreateProject,
    /// `PUT /smrt-link/projects/{id}`.
    UpdateProject,
    /// `DELETE /smrt-link/projects/{id}`.
    DeleteProject,
    /// `GET /smrt-link/datasets/...`.
    GetDataset,
    /// `GET /smrt-link/job-manager/jobs/analysis`.
    ListJobs,
    /// `GET /smrt-link/job-manager/jobs/analysis/{id}`.
    GetJob,
    /// `GET /smrt-link/job-manager/jobs/analysis/{id}/entry-points`.
    JobEntryPoints,
    /// `GET /smrt-link/job-manager/jobs/analysis/{id}/datastore`.
    JobDatastore,
    /// `POST /smrt-link/job-manager/jobs/analysis`.
    CreateJob,
    /// Any other path (answered 404 or 405).
    Other,
}

impl Endpoint {
    /// The endpoint of a request path with the `/SMRTLink/x.y.z` prefix already removed.
    /// `/token` is [`Endpoint::Login`] until its body says `grant_type=refresh_token`.
    pub(crate) fn classify(method: &Method, path: &str) -> Self {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let m = method.clone();
        match parts.as_slice() {
            ["token"] if m == Method::POST => Self::Login,
            ["status"] if m == Method::GET => Self::Status,
            ["smrt-link", "projects"] if m == Method::GET => Self::ListProjects,
            ["smrt-link", "projects"] if m == Method::POST => Self::CreateProject,
            ["smrt-link", "projects", _] if m == Method::GET => Self::GetProject,
            ["smrt-link", "projects", _] if m == Method::PUT => Self::UpdateProject,
            ["smrt-link", "projects", _] if m == Method::DELETE => Self::DeleteProject,
            ["smrt-link", "datasets", _, ..] if m == Method::GET => Self::GetDataset,
            ["smrt-link", "job-manager", "jobs", "analysis"] if m == Method::GET => Self::ListJobs,
            ["smrt-link", "job-manager", "jobs", "analysis"] if m == Method::POST => {
                Self::CreateJob
            }
            ["smrt-link", "job-manager", "jobs", "analysis", _] if m == Method::GET => Self::GetJob,
            [
                "smrt-link",
                "job-manager",
                "jobs",
                "analysis",
                _,
                "entry-points",
            ] if m == Method::GET => Self::JobEntryPoints,
            [
                "smrt-link",
                "job-manager",
                "jobs",
                "analysis",
                _,
                "datastore",
            ] if m == Method::GET => Self::JobDatastore,
            _ => Self::Other,
        }
    }
}

/// How a project listing fails half-way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingFailure {
    /// Headers promise the whole body; half of it is sent, then the connection is dropped.
    CloseMidBody,
    /// A complete answer whose JSON stops half-way (`Content-Length` matches what is sent).
    TruncatedJson,
}

/// Faults the stand-in injects into SMRT Link endpoints (never into the admin API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer the next this-many matching requests with `error_status`.
    pub fail_next: u32,
    /// Share (0 to 1) of matching requests answered with `error_status`, at random.
    pub error_share: f64,
    /// The status of injected errors (a 5xx).
    pub error_status: u16,
    /// Delay before answering each matching request, in milliseconds.
    pub delay_ms: u64,
    /// Which endpoints `fail_next`, `error_share` and `delay_ms` apply to; empty means all.
    /// One filter serves all three.
    pub endpoints: Vec<Endpoint>,
    /// How listings fail half-way, if they do.
    pub listing_failure: Option<ListingFailure>,
    /// How many listings fail that way (`u32::MAX`: every one).
    pub listing_failures: u32,
    /// Which answers fail that way (any GET endpoint; by default the project listing).
    pub listing_endpoints: Vec<Endpoint>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            fail_next: 0,
            error_share: 0.0,
            error_status: 503,
            delay_ms: 0,
            endpoints: Vec::new(),
            listing_failure: None,
            listing_failures: 0,
            listing_endpoints: vec![Endpoint::ListProjects],
        }
    }
}

impl Faults {
    pub(crate) fn applies_to(&self, endpoint: Endpoint) -> bool {
        self.endpoints.is_empty() || self.endpoints.contains(&endpoint)
    }

    /// Whether this request gets an injected error (and uses up one `fail_next`).
    pub(crate) fn take_error(&mut self, endpoint: Endpoint) -> bool {
        if !self.applies_to(endpoint) {
            return false;
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return true;
        }
        self.error_share > 0.0 && rand::random::<f64>() < self.error_share
    }

    /// Whether this answer fails half-way, and how (uses up one `listing_failures`).
    pub(crate) fn take_listing_failure(&mut self, endpoint: Endpoint) -> Option<ListingFailure> {
        let failure = self.listing_failure?;
        if self.listing_failures == 0 || !self.listing_endpoints.contains(&endpoint) {
            return None;
        }
        if self.listing_failures != u32::MAX {
            self.listing_failures -= 1;
        }
        Some(failure)
    }
}

/// A canned answer for one GET path (for odd JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawAnswer {
    /// Path without the `/SMRTLink/x.y.z` prefix, such as `/smrt-link/projects/2`.
    pub path: String,
    /// HTTP status.
    pub status: u16,
    /// Body, sent as `application/json` whatever it holds.
    pub body: String,
}

/// What the stand-in has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests per endpoint (every request that reached the stand-in, faulted or not).
    pub requests: BTreeMap<Endpoint, u64>,
    /// Requests refused with 401 (no, unknown or expired token).
    pub unauthorized: u64,
    /// Injected 5xx answers.
    pub injected_errors: u64,
    /// Listings that failed half-way on purpose.
    pub broken_listings: u64,
}

impl Counters {
    /// Requests seen at one endpoint.
    pub fn get(&self, endpoint: Endpoint) -> u64 {
        self.requests.get(&endpoint).copied().unwrap_or(0)
    }

    pub(crate) fn count(&mut self, endpoint: Endpoint) {
        *self.requests.entry(endpoint).or_default() += 1;
    }
}

/// Faults, canned answers and counters.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    pub(crate) raw: HashMap<String, RawAnswer>,
    pub(crate) counters: Counters,
}
