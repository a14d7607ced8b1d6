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

/// One line of the login table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// The Globus username.
    pub username: String,
    /// The member's email, for invitations (optional third column).
    pub email: Option<String>,
}

impl From<&str> for TableEntry {
    fn from(username: &str) -> Self {
        Self {
            username: username.to_owned(),
            email: None,
        }
    }
}

/// How SMRT Link logins become Globus usernames: an explicit table first, then a login that
/// already holds `@` as it is, then `login@domain`. The table may also give members' emails.
#[derive(Clone, Debug, Default)]
pub struct LoginMapping {
    domain: Option<String>,
    table: HashMap<String, TableEntry>,
}

/// True for an address Globus would accept in `notify_email`.
pub fn plausible_email(email: &str) -> bool {
    email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
}

impl LoginMapping {
    /// A mapping from an optional domain suffix (`example.edu`) and a table (login → entry).
    pub fn new(domain: Option<&str>, table: HashMap<String, TableEntry>) -> anyhow::Result<Self> {
        let domain = domain
            .map(|d| d.trim().trim_start_matches('@').to_owned())
            .filter(|d| !d.is_empty());
        if let Some(domain) = &domain {
            anyhow::ensure!(
                valid_username_part(domain),
                "the username domain {domain:?} holds characters a username cannot"
            );
        }
        for (login, entry) in &table {
            anyhow::ensure!(
                valid_username_part(&entry.username),
                "the login table maps {login:?} to {:?}, which is not a valid username",
                entry.username
            );
            if let Some(email) = &entry.email {
                anyhow::ensure!(
                    plausible_email(email),
                    "the login table gives {login:?} the email {email:?}, which is not an address"
                );
            }
        }
        Ok(Self { domain, table })
    }

    /// Reads a table: one `login username [email]` (or `login = username`, `login,username`,
    /// comma-separated) per line; `#` starts a comment.
    pub fn parse_table(text: &str) -> anyhow::Result<HashMap<String, TableEntry>> {
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
            let (login, entry) = match parts.as_slice() {
                [login, username] => (*login, TableEntry::from(*username)),
                [login, username, email] => (
                    *login,
                    TableEntry {
                        username: (*username).to_owned(),
                        email: Some((*email).to_owned()),
                    },
                ),
                _ => anyhow::bail!(
                    "line {}: expected `login username [email]`, found {line:?}",
                    number + 1
                ),
            };
            if table.insert(login.to_owned(), entry).is_some() {
                anyhow::bail!("line {}: login {login:?} is listed twice", number + 1);
            }
        }
        Ok(table)
    }

    /// Reads a table file (see [`Self::parse_table`]).
    pub fn load_table(path: &std::path::Path) -> anyhow::Result<HashMap<String, TableEntry>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the login table {}", path.display()))?;
        Self::parse_table(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The Globus username of a login, or `None` when the mapping gives none.
    pub fn username(&self, login: &str) -> Option<String> {
        if let Some(entry) = self.table.get(login) {
            return Some(entry.username.clone());
        }
        if login.contains('@') {
            return Some(login.to_owned());
        }
        self.domain.as_ref().map(|d| format!("{login}@{d}"))
    }

    /// The member's email from the table, if it gives one.
    pub fn email(&self, login: &str) -> Option<&str> {
        self.table.get(login).and_then(|e| e.email.as_deref())
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
    provision: bool,
    cache: Mutex<HashMap<String, Entry>>,
    found_ttl: Duration,
    missing_ttl: Duration,
    batches: mpsc::UnboundedSender<Job>,
}

impl IdentityResolver {
    /// A resolver; spawns the batching task (which ends when the resolver is dropped). With
    /// `provision`, look-ups ask Globus to provision identities it does not know yet.
    pub fn new(
        globus: Arc<Globus>,
        mapping: LoginMapping,
        provision: bool,
        found_ttl: Duration,
        missing_ttl: Duration,
    ) -> Self {
        let (batches, jobs) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(globus, jobs, provision));
        Self {
            mapping,
            provision,
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

    /// True when look-ups provision identities.
    pub fn provisions(&self) -> bool {
        self.provision
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
async fn send_batches(
    globus: Arc<Globus>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    provision: bool,
) {
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
            let result = globus.lookup_usernames(&names, provision).await;
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
            "# comment\nalice alice.smith@uni.example asmith@lab.example\nbob = robert@other.example\ncarol,c@x.example\n",
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
        assert_eq!(mapping.email("alice"), Some("asmith@lab.example"));
        assert_eq!(mapping.email("bob"), None);
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
        assert!(LoginMapping::parse_table("a b c d").is_err());
        let mut table = HashMap::new();
        table.insert("x".to_owned(), TableEntry::from("a,b@x"));
        assert!(LoginMapping::new(None, table).is_err());
        let table = LoginMapping::parse_table("a b@x not-an-address").expect("parses");
        assert!(LoginMapping::new(None, table).is_err());
    }
}
