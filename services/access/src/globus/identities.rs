//! SMRT Link logins to Globus identities: a configurable login-to-username mapping, look-ups in
//! batches of at most 100 names, and a cache with a time limit (shorter for names Globus does
//! not know, so a newly made account is seen soon).
//!
//! Look-ups from concurrent callers are merged: one task sends the batches, and while a batch is
//! in flight the names asked for meanwhile gather into the next one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::Globus;
use super::auth::{IdentityRecord, MAX_USERNAMES_PER_CALL};
use super::error::GlobusError;

/// Batches in flight at once.
const PARALLEL_BATCHES: usize = 2;

/// How SMRT Link logins become Globus usernames: an explicit table first, then a login that
/// already holds `@` as it is, then `login@domain`.
#[derive(Clone, Debug, Default)]
pub struct LoginMapping {
    domain: Option<String>,
    table: HashMap<String, String>,
}

impl LoginMapping {
    /// A mapping from an optional domain suffix (`example.edu`) and a table (login → username).
    pub fn new(domain: Option<&str>, table: HashMap<String, String>) -> anyhow::Result<Self> {
        let domain = domain
            .map(|d| d.trim().trim_start_matches('@').to_owned())
            .filter(|d| !d.is_empty());
        if let Some(domain) = &domain {
            anyhow::ensure!(
                valid_username_part(domain),
                "the username domain {domain:?} holds characters a username cannot"
            );
        }
        for (login, username) in &table {
            anyhow::ensure!(
                valid_username_part(username),
                "the login table maps {login:?} to {username:?}, which is not a valid username"
            );
        }
        Ok(Self { domain, table })
    }

    /// Reads a table: one `login username` (or `login = username`, `login,username`) per line;
    /// `#` starts a comment.
    pub fn parse_table(text: &str) -> anyhow::Result<HashMap<String, String>> {
        let mut table = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line
                .split(|c: char| c == '=' || c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .collect();
            let [login, username] = parts.as_slice() else {
                anyhow::bail!(
                    "line {}: expected `login username`, found {line:?}",
                    number + 1
                );
            };
            if table
                .insert((*login).to_owned(), (*username).to_owned())
                .is_some()
            {
                anyhow::bail!("line {}: login {login:?} is listed twice", number + 1);
            }
        }
        Ok(table)
    }

    /// Reads a table file (see [`Self::parse_table`]).
    pub fn load_table(path: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the login table {}", path.display()))?;
        Self::parse_table(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The Globus username of a login, or `None` when the mapping gives none.
    pub fn username(&self, login: &str) -> Option<String> {
        if let Some(username) = self.table.get(login) {
            return Some(username.clone());
        }
        if login.contains('@') {
            return Some(login.to_owned());
        }
        self.domain.as_ref().map(|d| format!("{login}@{d}"))
    }

    /// Why a login has no username, for messages.
    pub fn why_unmapped(&self) -> &'static str {
        if self.domain.is_some() {
            "the login maps to no Globus username"
        } else {
            "the login is not in the login table and no username domain is configured"
        }
    }
}

fn valid_username_part(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 256
        && !text
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
}

#[derive(Debug)]
struct Entry {
    identity: Option<IdentityRecord>,
    until: Instant,
}

#[derive(Debug)]
struct Job {
    usernames: Vec<String>,
    reply: oneshot::Sender<Result<Vec<IdentityRecord>, GlobusError>>,
}

/// Resolves usernames to identities, cached.
#[derive(Debug)]
pub struct IdentityResolver {
    mapping: LoginMapping,
    cache: Mutex<HashMap<String, Entry>>,
    found_ttl: Duration,
    missing_ttl: Duration,
    batches: mpsc::UnboundedSender<Job>,
}

impl IdentityResolver {
    /// A resolver; spawns the batching task (which ends when the resolver is dropped).
    pub fn new(
        globus: Arc<Globus>,
        mapping: LoginMapping,
        found_ttl: Duration,
        missing_ttl: Duration,
    ) -> Self {
        let (batches, jobs) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(globus, jobs));
        Self {
            mapping,
            cache: Mutex::new(HashMap::new()),
            found_ttl,
            missing_ttl,
            batches,
        }
    }

    /// The mapping.
    pub fn mapping(&self) -> &LoginMapping {
        &self.mapping
    }

    /// The identities of `usernames` (keys lowercased): `None` for usernames Globus does not
    /// know. Cached answers cost no call.
    pub async fn resolve(
        &self,
        usernames: &[String],
    ) -> Result<HashMap<String, Option<IdentityRecord>>, GlobusError> {
        let wanted: BTreeSet<String> = usernames.iter().map(|u| u.to_lowercase()).collect();
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let now = Instant::now();
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, e| e.until > now);
            for username in wanted {
                match cache.get(&username) {
                    Some(entry) => {
                        out.insert(username, entry.identity.clone());
                    }
                    None => missing.push(username),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let mut replies = Vec::new();
        for chunk in missing.chunks(MAX_USERNAMES_PER_CALL) {
            let (reply, answer) = oneshot::channel();
            self.batches
                .send(Job {
                    usernames: chunk.to_vec(),
                    reply,
                })
                .map_err(|_| GlobusError::Connection("the look-up task has stopped".to_owned()))?;
            replies.push((chunk.to_vec(), answer));
        }
        for (chunk, answer) in replies {
            let found = answer.await.map_err(|_| {
                GlobusError::Connection("the look-up task has stopped".to_owned())
            })??;
            let now = Instant::now();
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for username in chunk {
                let identity = found
                    .iter()
                    .find(|i| i.username.eq_ignore_ascii_case(&username))
                    .cloned();
                let ttl = if identity.is_some() {
                    self.found_ttl
                } else {
                    self.missing_ttl
                };
                cache.insert(
                    username.clone(),
                    Entry {
                        identity: identity.clone(),
                        until: now + ttl,
                    },
                );
                out.insert(username, identity);
            }
        }
        Ok(out)
    }
}

/// Sends look-ups: each batch takes the waiting jobs that fit in one call.
async fn send_batches(globus: Arc<Globus>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let parallel = Arc::new(Semaphore::new(PARALLEL_BATCHES));
    let mut carried: Option<Job> = None;
    loop {
        let Ok(permit) = parallel.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut names: BTreeSet<String> = first.usernames.iter().cloned().collect();
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            let added = job.usernames.iter().filter(|u| !names.contains(*u)).count();
            if names.len() + added > MAX_USERNAMES_PER_CALL {
                carried = Some(job);
                break;
            }
            names.extend(job.usernames.iter().cloned());
            batch.push(job);
        }
        let globus = globus.clone();
        tokio::spawn(async move {
            let names: Vec<String> = names.into_iter().collect();
            let result = globus.lookup_usernames(&names).await;
            for job in batch {
                let _ = job.reply.send(result.clone());
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_comes_first_then_the_domain() {
        let table = LoginMapping::parse_table(
            "# comment\nalice alice.smith@uni.example\nbob = robert@other.example\ncarol,c@x.example\n",
        )
        .expect("parses");
        let mapping = LoginMapping::new(Some("@example.edu"), table).expect("valid");
        assert_eq!(
            mapping.username("alice").as_deref(),
            Some("alice.smith@uni.example")
        );
        assert_eq!(
            mapping.username("bob").as_deref(),
            Some("robert@other.example")
        );
        assert_eq!(mapping.username("carol").as_deref(), Some("c@x.example"));
        assert_eq!(
            mapping.username("dave").as_deref(),
            Some("dave@example.edu")
        );
        assert_eq!(
            mapping.username("eve@lab.org").as_deref(),
            Some("eve@lab.org")
        );
        let no_domain = LoginMapping::new(None, HashMap::new()).expect("valid");
        assert_eq!(no_domain.username("dave"), None);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(LoginMapping::parse_table("alice").is_err());
        assert!(LoginMapping::parse_table("alice a@x\nalice b@x").is_err());
        assert!(LoginMapping::parse_table("a b c").is_err());
        let mut table = HashMap::new();
        table.insert("x".to_owned(), "a,b@x".to_owned());
        assert!(LoginMapping::new(None, table).is_err());
    }
}
