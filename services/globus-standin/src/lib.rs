//! A faithful local Globus, for tests (in-process) and for the local stack (the
//! `smrtshare-globus-standin` binary).
//!
//! It implements what smrtshare uses of Globus (DESIGN.md section 4) over real HTTP:
//! - Auth: `POST /v2/oauth2/token` (HTTP Basic client credentials, `grant_type=client_credentials`,
//!   the Transfer or the Groups scope, one token per resource server; tokens expire) and
//!   `GET /v2/api/identities?usernames=` (HTTP Basic client credentials only; a Transfer token
//!   is refused; at most 100 names; unknown names left out unless `provision=true` provisions
//!   them, status `unused`).
//! - Groups API v2 (`/v2/groups`, see [`groups`]): create, read with memberships, the caller's
//!   groups, batch `add`/`remove` with per-identity errors, delete; a Groups token only.
//! - Transfer `/v0.10/endpoint/{id}/access_list`, `access` (create), `access/{rule}` (get, update,
//!   delete), with Globus' validations and error bodies `{code, message, request_id, resource}`:
//!   `InvalidPath`, `BadRequest`, `Exists`, `LimitExceeded` (1000 rules), `AccessRuleNotFound`,
//!   `EndpointNotFound`, `AuthenticationFailed`. Rules granted through roles are listed with
//!   `id: null`; expired rules are deleted, as Globus deletes them. A rule made with
//!   `notify_email` (and `notify_message`) records the invitation Globus would email.
//!
//! Around that: a fault plan (429 with `Retry-After`, 503, 502 `ExternalError…`, slow answers,
//! dropped connections before or after the change is made, token expiry) drawn from a seeded
//! generator; an optional rate limit of its own (429 beyond it); and counts of requests by kind
//! and answer. Tests drive all of it through [`StandInHandle`]; the binary exposes the same
//! through a small admin HTTP API (see [`admin`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::net::TcpListener;

pub mod admin;
mod auth_api;
pub mod clock;
pub mod faults;
pub mod groups;
mod groups_api;
pub mod model;
mod server;
mod state;
mod transfer_api;

pub use auth_api::MAX_USERNAMES;
pub use clock::Clock;
pub use faults::{CountEntry, Counts, Fault, FaultPlan, Kind, ScriptedFault, WeightedFault};
pub use groups::{Group, Membership, client_identity};
pub use model::{
    ApiError, GROUPS_SCOPE, Identity, Invitation, Maker, NewRule, Rule, TRANSFER_SCOPE,
};
pub use state::RateLimit;

use model::World;
use state::Shared;

/// The collection id a default stand-in serves.
pub const DEFAULT_ENDPOINT: &str = "5a6e1e52-0c0f-4c4b-9d57-2a3c1f0e7b11";
/// The client id a default stand-in accepts.
pub const DEFAULT_CLIENT_ID: &str = "7d3f1c52-1b8e-4c0a-9a61-0c5e2f4d8a10";
/// The secret of [`DEFAULT_CLIENT_ID`].
pub const DEFAULT_CLIENT_SECRET: &str = "standin-secret";

/// How a stand-in starts.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// Confidential clients: (client id, secret).
    pub clients: Vec<(String, String)>,
    /// Collection ids that exist.
    pub endpoints: Vec<String>,
    /// Identities that exist.
    pub identities: Vec<Identity>,
    /// Lifetime of issued tokens (Globus: 48 hours).
    pub token_lifetime: Duration,
    /// Rules per collection (Globus: 1000).
    pub rule_limit: usize,
    /// The stand-in's own rate limit; `None` for none.
    pub rate_limit: Option<RateLimit>,
    /// Seed of the random choices a test may want repeated (faults, tokens, request ids). Rule
    /// ids are not drawn from it: they are random UUIDs from the operating system, as Globus
    /// hands out, so a restarted stand-in never repeats an id it gave before.
    pub seed: u64,
    /// Where "now" comes from.
    pub clock: Clock,
    /// Faults from the start.
    pub faults: FaultPlan,
    /// Give each client the implicit `rw` rule on `/` an access manager holds (listed with
    /// `id: null`, as Globus lists rules granted through roles).
    pub access_manager_rules: bool,
    /// Domains whose usernames identity look-ups with `provision=true` may provision (the
    /// identity is made, status `unused`); empty: every domain.
    pub provision_domains: Vec<String>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            clients: vec![(
                DEFAULT_CLIENT_ID.to_owned(),
                DEFAULT_CLIENT_SECRET.to_owned(),
            )],
            endpoints: vec![DEFAULT_ENDPOINT.to_owned()],
            identities: Vec::new(),
            token_lifetime: Duration::from_secs(172_800),
            rule_limit: 1000,
            rate_limit: None,
            seed: 1,
            clock: Clock::System,
            faults: FaultPlan::none(),
            access_manager_rules: true,
            provision_domains: Vec::new(),
        }
    }
}

impl StandInConfig {
    fn into_shared(self) -> Shared {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let now = self.clock.now();
        let mut endpoints = std::collections::BTreeMap::new();
        for endpoint in &self.endpoints {
            let mut rules = Vec::new();
            if self.access_manager_rules {
                for (client_id, _) in &self.clients {
                    rules.push(Rule {
                        id: None,
                        role_id: Some(model::stable_uuid("role", client_id)),
                        role_type: Some("access_manager".to_owned()),
                        principal_type: "identity".to_owned(),
                        principal: model::stable_uuid("client", client_id),
                        path: "/".to_owned(),
                        permissions: "rw".to_owned(),
                        create_time: now,
                        expiration_date: None,
                        notify_email: None,
                        made_by: Maker::Role,
                    });
                }
            }
            endpoints.insert(endpoint.clone(), rules);
        }
        let world = World {
            clients: self.clients.into_iter().collect(),
            identities: Vec::new(),
            tokens: Default::default(),
            endpoints,
            rule_limit: self.rule_limit,
            token_lifetime: self.token_lifetime,
            next_rule_ids: Default::default(),
            provision_domains: self.provision_domains,
            provisioned: 0,
            invitations: Vec::new(),
            groups: Default::default(),
        };
        let shared = Shared::new(
            world,
            StdRng::from_rng(&mut rng),
            self.clock,
            self.rate_limit,
        );
        shared.set_faults(self.faults);
        shared.with_world(|world, _| {
            for identity in self.identities {
                world.add_identity(identity);
            }
        });
        shared
    }
}

/// The test-side controls of a running stand-in. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StandInHandle {
    shared: Arc<Shared>,
}

impl StandInHandle {
    /// The stand-in's "now".
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.now()
    }

    /// Adds an identity for `username` (id derived from the username) and returns it; an
    /// existing identity is returned unchanged.
    pub fn add_identity(&self, username: &str) -> Identity {
        let identity = Identity::for_username(username);
        self.shared
            .with_world(|world, _| world.add_identity(identity))
    }

    /// The identity of a username (case-insensitive).
    pub fn identity(&self, username: &str) -> Option<Identity> {
        self.shared
            .with_world(|world, _| world.identity_by_username(username).cloned())
    }

    /// Adds a rule "made by someone else": a person at the web interface. Globus' validations
    /// apply (path form, duplicates, the rule limit); the principal need not be known.
    pub fn add_foreign_rule(&self, endpoint: &str, rule: NewRule) -> Result<String, ApiError> {
        let now = self.shared.now();
        self.shared
            .with_world(|world, _| world.create_rule(endpoint, rule, Maker::Person, now))
    }

    /// Adds a rule granted through a role (listed with `id: null`, not counted in the limit).
    pub fn add_role_rule(
        &self,
        endpoint: &str,
        rule: NewRule,
        role_type: &str,
    ) -> Result<(), ApiError> {
        let now = self.shared.now();
        model::validate_new_rule(&rule, now)?;
        self.shared.with_world(|world, _| {
            let rules = world.rules_mut(endpoint, now)?;
            rules.push(Rule {
                id: None,
                role_id: Some(uuid::Uuid::new_v4().to_string()),
                role_type: Some(role_type.to_owned()),
                principal_type: rule.principal_type,
                principal: rule.principal,
                path: rule.path,
                permissions: rule.permissions,
                create_time: now,
                expiration_date: rule.expiration_date,
                notify_email: None,
                made_by: Maker::Role,
            });
            Ok(())
        })
    }

    /// Every live rule of a collection (expired rules are gone), in creation order; `None` for
    /// an unknown collection.
    pub fn rules(&self, endpoint: &str) -> Option<Vec<Rule>> {
        let now = self.shared.now();
        self.shared
            .with_world(|world, _| world.rules_mut(endpoint, now).ok().map(|r| r.clone()))
    }

    /// Deletes a rule by hand (someone at the web interface); false when there was none.
    pub fn delete_rule_by_hand(&self, endpoint: &str, id: &str) -> bool {
        let now = self.shared.now();
        self.shared
            .with_world(|world, _| world.delete_rule(endpoint, id, now).is_ok())
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.set_faults(plan);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.set_faults(FaultPlan::none());
    }

    /// Every token issued so far expires now.
    pub fn expire_tokens(&self) {
        let now = self.shared.now();
        self.shared.with_world(|world, _| world.expire_tokens(now));
    }

    /// Requests so far, by kind and answer.
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        self.shared.reset_counts();
    }

    /// Sets or removes the stand-in's own rate limit.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.set_rate_limit(limit);
    }

    /// The next rules made get these ids, in order, before random ones again: a Globus that
    /// hands out an id it gave before (as this stand-in once did after every restart).
    pub fn repeat_rule_ids(&self, ids: &[&str]) {
        self.shared.with_world(|world, _| {
            world.next_rule_ids = ids.iter().map(|id| (*id).to_owned()).collect();
        });
    }

    /// Invitations sent so far (`notify_email` on rules made through the API).
    pub fn invitations(&self) -> Vec<Invitation> {
        self.shared.with_world(|world, _| world.invitations.clone())
    }

    /// Identities provisioned so far (`provision=true` look-ups).
    pub fn provisioned(&self) -> u64 {
        self.shared.with_world(|world, _| world.provisioned)
    }

    /// Every group, with its memberships.
    pub fn groups(&self) -> Vec<Group> {
        self.shared
            .with_world(|world, _| world.groups.values().cloned().collect())
    }

    /// A group made by a person at the web interface, with these members (and, with
    /// `client_admin`, the client `client_id` as an admin: a group someone else made and shared
    /// the administration of); answers its id.
    pub fn add_foreign_group(
        &self,
        name: &str,
        description: &str,
        members: &[&str],
        client_admin: Option<&str>,
    ) -> String {
        let now = self.shared.now();
        self.shared.with_world(|world, _| {
            let mut group = world
                .create_group(name, description, Maker::Person, now)
                .expect("a valid name");
            for member in members {
                group.memberships.push(Membership {
                    identity_id: (*member).to_owned(),
                    username: String::new(),
                    role: "member".to_owned(),
                    status: "active".to_owned(),
                });
            }
            if let Some(client_id) = client_admin {
                let (identity_id, username) = client_identity(client_id);
                group.memberships.push(Membership {
                    identity_id,
                    username,
                    role: "admin".to_owned(),
                    status: "active".to_owned(),
                });
            }
            world.groups.insert(group.id.clone(), group.clone());
            group.id
        })
    }

    /// Deletes a group by hand (someone at the web interface); false when there was none.
    pub fn delete_group_by_hand(&self, id: &str) -> bool {
        self.shared
            .with_world(|world, _| world.groups.remove(id).is_some())
    }

    /// Removes a member from a group by hand; false when there was no such membership.
    pub fn remove_member_by_hand(&self, group: &str, identity: &str) -> bool {
        self.shared.with_world(|world, _| {
            world.groups.get_mut(group).is_some_and(|g| {
                let before = g.memberships.len();
                g.memberships.retain(|m| m.identity_id != identity);
                g.memberships.len() < before
            })
        })
    }

    /// Changes the rules-per-collection limit.
    pub fn set_rule_limit(&self, limit: usize) {
        self.shared.with_world(|world, _| world.rule_limit = limit);
    }
}

/// A stand-in serving on a loopback port of its own, stopped when dropped.
#[derive(Debug)]
pub struct StandIn {
    handle: StandInHandle,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Starts a stand-in on `127.0.0.1:0` in the current runtime.
    pub async fn start(config: StandInConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the stand-in")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(config.into_shared());
        let router = server::router(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, router, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            handle: StandInHandle { shared },
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the Auth base URL (Auth paths start with `/v2/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Transfer base URL, `http://127.0.0.1:PORT/v0.10`.
    pub fn transfer_url(&self) -> String {
        format!("http://{}/v0.10", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that outlives borrowing the stand-in.
    pub fn handle(&self) -> StandInHandle {
        self.handle.clone()
    }
}

impl std::ops::Deref for StandIn {
    type Target = StandInHandle;

    fn deref(&self) -> &StandInHandle {
        &self.handle
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Serves a stand-in on `listener` until `shutdown` completes (the binary's entry point).
pub async fn serve(
    listener: TcpListener,
    config: StandInConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(config.into_shared());
    let router = server::router(shared);
    server::serve(listener, router, shutdown).await;
    Ok(())
}

impl NewRule {
    /// A read-only rule for an identity on a path, without expiry.
    pub fn identity_read(identity_id: &str, path: &str) -> Self {
        Self {
            principal_type: "identity".to_owned(),
            principal: identity_id.to_owned(),
            path: path.to_owned(),
            permissions: "r".to_owned(),
            expiration_date: None,
            notify_email: None,
            notify_message: None,
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}
