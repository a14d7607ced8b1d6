//! Fault injection and request accounting.
//!
//! A [`FaultPlan`] answers a share of requests (of chosen kinds) with a fault drawn from a
//! weighted mix, and can also script faults for the next requests of a kind ("the next create
//! loses its answer"). Draws come from the stand-in's seeded generator, so a run with the same
//! seed and the same request order makes the same decisions. [`Counts`] records every request by
//! kind and by answer.

use std::collections::BTreeMap;

use rand::Rng as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /v2/oauth2/token`.
    Token,
    /// `GET /v2/api/identities`.
    Identities,
    /// `GET /v0.10/endpoint/{id}/access_list`.
    List,
    /// `GET /v0.10/endpoint/{id}/access/{rule}`.
    Get,
    /// `POST /v0.10/endpoint/{id}/access`.
    Create,
    /// `PUT /v0.10/endpoint/{id}/access/{rule}`.
    Update,
    /// `DELETE /v0.10/endpoint/{id}/access/{rule}`.
    Delete,
    /// `POST /v2/groups`.
    GroupCreate,
    /// `GET /v2/groups/my_groups`.
    GroupList,
    /// `GET /v2/groups/{id}`.
    GroupGet,
    /// `POST /v2/groups/{id}` (membership actions).
    GroupMembers,
    /// `DELETE /v2/groups/{id}`.
    GroupDelete,
    /// Anything else (answered 404 or 405).
    Other,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 13] = [
        Kind::Token,
        Kind::Identities,
        Kind::List,
        Kind::Get,
        Kind::Create,
        Kind::Update,
        Kind::Delete,
        Kind::GroupCreate,
        Kind::GroupList,
        Kind::GroupGet,
        Kind::GroupMembers,
        Kind::GroupDelete,
        Kind::Other,
    ];

    /// The kind of a request, or `None` for the stand-in's own admin API (never counted).
    pub fn of(method: &http::Method, path: &str) -> Option<Kind> {
        if path.starts_with("/admin/") || path == "/admin" || path == "/healthz" {
            return None;
        }
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let kind = match (method.as_str(), segments.as_slice()) {
            ("POST", ["", "v2", "oauth2", "token"]) => Kind::Token,
            ("GET", ["", "v2", "api", "identities"]) => Kind::Identities,
            ("GET", ["", "v0.10", "endpoint", _, "access_list"]) => Kind::List,
            ("POST", ["", "v0.10", "endpoint", _, "access"]) => Kind::Create,
            ("GET", ["", "v0.10", "endpoint", _, "access", _]) => Kind::Get,
            ("PUT", ["", "v0.10", "endpoint", _, "access", _]) => Kind::Update,
            ("DELETE", ["", "v0.10", "endpoint", _, "access", _]) => Kind::Delete,
            ("POST", ["", "v2", "groups"]) => Kind::GroupCreate,
            ("GET", ["", "v2", "groups", "my_groups"]) => Kind::GroupList,
            ("GET", ["", "v2", "groups", _]) => Kind::GroupGet,
            ("POST", ["", "v2", "groups", _]) => Kind::GroupMembers,
            ("DELETE", ["", "v2", "groups", _]) => Kind::GroupDelete,
            _ => Kind::Other,
        };
        Some(kind)
    }
}

/// A way to answer a request badly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// 429 with `Retry-After`; the request is not processed.
    TooManyRequests {
        /// Seconds in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// 503 `ServiceUnavailable`; not processed.
    ServiceUnavailable,
    /// 502 `ExternalError.DirListingFailed.Timeout` (not retryable); not processed.
    ExternalError,
    /// 502 `EndpointError` (not retryable); not processed.
    EndpointError,
    /// 500 `InternalError` (retryable); not processed.
    InternalError,
    /// 504 `GatewayTimeout` (retryable); not processed.
    GatewayTimeout,
    /// Waits, then processes and answers normally.
    Slow {
        /// How long to wait first.
        millis: u64,
    },
    /// Processes at once, then holds the answer back.
    SlowAnswer {
        /// How long the answer is held.
        millis: u64,
    },
    /// Closes the connection without processing the request or answering.
    DropRequest,
    /// Processes the request, then closes the connection without answering (the change is
    /// made; the caller never learns).
    DropAnswer,
    /// Expires every token, then processes the request (Transfer calls answer 401).
    ExpireTokens,
    /// Answers with this Globus error without processing the request: a refusal that could
    /// happen for reasons outside the test (the limit reached by someone else, a permission
    /// taken away), e.g. on the retry of a request whose first answer was lost.
    Refuse {
        /// HTTP status (4xx).
        status: u16,
        /// Globus error code (`LimitExceeded`, `PermissionDenied`, ...).
        code: String,
    },
}

/// A fault with a weight in a mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedFault {
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
    /// Relative weight.
    pub weight: u32,
}

/// A fault for the next request of a kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptedFault {
    /// Which kind of request it hits; `None` for the next request of any kind.
    pub kind: Option<Kind>,
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
}

/// Which requests fail, and how.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Share of eligible requests answered with a fault from `mix` (0.0 to 1.0).
    #[serde(default)]
    pub share: f64,
    /// The faults drawn from, by weight.
    #[serde(default)]
    pub mix: Vec<WeightedFault>,
    /// Eligible kinds; empty means every kind.
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Faults for the next matching requests, used first and once each, in order.
    #[serde(default)]
    pub script: Vec<ScriptedFault>,
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// `share` of every request answered with a fault from `mix` (fault, weight).
    pub fn mixed(share: f64, mix: &[(Fault, u32)]) -> Self {
        Self {
            share,
            mix: mix
                .iter()
                .map(|(fault, weight)| WeightedFault {
                    fault: fault.clone(),
                    weight: *weight,
                })
                .collect(),
            kinds: Vec::new(),
            script: Vec::new(),
        }
    }

    /// Restricts the random faults to these kinds.
    pub fn only(mut self, kinds: &[Kind]) -> Self {
        self.kinds = kinds.to_vec();
        self
    }

    /// Adds a scripted fault for the next request of `kind` (after those already scripted).
    pub fn then(mut self, kind: Kind, fault: Fault) -> Self {
        self.script.push(ScriptedFault {
            kind: Some(kind),
            fault,
        });
        self
    }

    /// The fault for a request of `kind`, if any; consumes a scripted fault.
    pub(crate) fn decide(&mut self, kind: Kind, rng: &mut StdRng) -> Option<Fault> {
        if let Some(index) = self
            .script
            .iter()
            .position(|s| s.kind.is_none_or(|k| k == kind))
        {
            return Some(self.script.remove(index).fault);
        }
        if self.share <= 0.0 || self.mix.is_empty() {
            return None;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return None;
        }
        if rng.random::<f64>() >= self.share {
            return None;
        }
        let total: u64 = self.mix.iter().map(|w| u64::from(w.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rng.random_range(0..total);
        for weighted in &self.mix {
            let weight = u64::from(weighted.weight);
            if pick < weight {
                return Some(weighted.fault.clone());
            }
            pick -= weight;
        }
        None
    }
}

/// How a request was answered, for counting: the HTTP status and the Globus code, or
/// status 0 and code `dropped` when the connection was closed without an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountEntry {
    /// The request kind.
    pub kind: Kind,
    /// HTTP status; 0 when the connection was dropped.
    pub status: u16,
    /// Globus code of the answer (`Created`, `Exists`, `RateLimited`, ...), `ok` for success
    /// answers without one, `dropped` for dropped connections.
    pub code: String,
    /// How many.
    pub count: u64,
}

/// Requests seen, by kind and answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every (kind, answer) seen, with its count.
    pub entries: Vec<CountEntry>,
    /// The most requests in flight at once.
    pub peak_in_flight: usize,
}

impl Counts {
    pub(crate) fn from_map(map: &BTreeMap<(Kind, u16, String), u64>, peak: usize) -> Self {
        Self {
            entries: map
                .iter()
                .map(|((kind, status, code), count)| CountEntry {
                    kind: *kind,
                    status: *status,
                    code: code.clone(),
                    count: *count,
                })
                .collect(),
            peak_in_flight: peak,
        }
    }

    fn sum(&self, keep: impl Fn(&CountEntry) -> bool) -> u64 {
        self.entries
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.count)
            .sum()
    }

    /// Requests of a kind, however answered.
    pub fn requests(&self, kind: Kind) -> u64 {
        self.sum(|e| e.kind == kind)
    }

    /// Requests of a kind answered with a 2xx status.
    pub fn succeeded(&self, kind: Kind) -> u64 {
        self.sum(|e| e.kind == kind && (200..300).contains(&e.status))
    }

    /// Requests of a kind answered with this Globus code.
    pub fn with_code(&self, kind: Kind, code: &str) -> u64 {
        self.sum(|e| e.kind == kind && e.code == code)
    }

    /// Requests of any kind answered with this HTTP status (0: dropped).
    pub fn with_status(&self, status: u16) -> u64 {
        self.sum(|e| e.status == status)
    }

    /// Every request.
    pub fn total(&self) -> u64 {
        self.sum(|_| true)
    }

    /// Requests that may change something at Globus (rule create, update, delete; group create,
    /// membership actions, group delete), however answered.
    pub fn writes(&self) -> u64 {
        self.sum(|e| {
            matches!(
                e.kind,
                Kind::Create
                    | Kind::Update
                    | Kind::Delete
                    | Kind::GroupCreate
                    | Kind::GroupMembers
                    | Kind::GroupDelete
            )
        })
    }

    /// Requests per kind, for printing.
    pub fn by_kind(&self) -> BTreeMap<Kind, u64> {
        let mut out = BTreeMap::new();
        for entry in &self.entries {
            *out.entry(entry.kind).or_default() += entry.count;
        }
        out
    }

    /// The difference `self - earlier`, entry by entry.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut map: BTreeMap<(Kind, u16, String), i128> = BTreeMap::new();
        for e in &self.entries {
            *map.entry((e.kind, e.status, e.code.clone())).or_default() += i128::from(e.count);
        }
        for e in &earlier.entries {
            *map.entry((e.kind, e.status, e.code.clone())).or_default() -= i128::from(e.count);
        }
        Counts {
            entries: map
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|((kind, status, code), n)| CountEntry {
                    kind,
                    status,
                    code,
                    count: u64::try_from(n).unwrap_or(0),
                })
                .collect(),
            peak_in_flight: self.peak_in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let plan = FaultPlan::mixed(
            0.3,
            &[
                (Fault::ServiceUnavailable, 1),
                (Fault::DropRequest, 1),
                (
                    Fault::TooManyRequests {
                        retry_after_secs: 1,
                    },
                    1,
                ),
            ],
        );
        let draw = |seed| {
            let mut plan = plan.clone();
            let mut rng = StdRng::seed_from_u64(seed);
            (0..500)
                .map(|_| plan.decide(Kind::Create, &mut rng))
                .collect::<Vec<_>>()
        };
        let first = draw(7);
        assert_eq!(first, draw(7));
        let faulted = first.iter().filter(|f| f.is_some()).count();
        assert!((100..200).contains(&faulted), "{faulted} of 500 faulted");
        assert_ne!(first, draw(8));
    }

    #[test]
    fn scripted_faults_come_first_and_once() {
        let mut plan = FaultPlan::none().then(Kind::Create, Fault::DropAnswer);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(plan.decide(Kind::Delete, &mut rng), None);
        assert_eq!(plan.decide(Kind::Create, &mut rng), Some(Fault::DropAnswer));
        assert_eq!(plan.decide(Kind::Create, &mut rng), None);
    }

    #[test]
    fn kinds_follow_the_routes() {
        let m = |s: &str| http::Method::from_bytes(s.as_bytes()).expect("method");
        assert_eq!(Kind::of(&m("POST"), "/v2/oauth2/token"), Some(Kind::Token));
        assert_eq!(
            Kind::of(&m("DELETE"), "/v0.10/endpoint/e/access/r"),
            Some(Kind::Delete)
        );
        assert_eq!(
            Kind::of(&m("GET"), "/v0.10/endpoint/e/access_list"),
            Some(Kind::List)
        );
        assert_eq!(Kind::of(&m("GET"), "/admin/counts"), None);
        assert_eq!(Kind::of(&m("POST"), "/v2/groups"), Some(Kind::GroupCreate));
        assert_eq!(
            Kind::of(&m("GET"), "/v2/groups/my_groups"),
            Some(Kind::GroupList)
        );
        assert_eq!(
            Kind::of(&m("POST"), "/v2/groups/g"),
            Some(Kind::GroupMembers)
        );
        assert_eq!(
            Kind::of(&m("DELETE"), "/v2/groups/g"),
            Some(Kind::GroupDelete)
        );
        assert_eq!(Kind::of(&m("GET"), "/nothing"), Some(Kind::Other));
    }
}
