//! Domain types of the API: validated requests and the reports the core answers with. Wire types
//! become these once, at the handler (see [`crate::service`]); the core never sees raw fields.

use std::collections::HashMap;

use crate::error::Error;
use crate::registry::RuleRow;

/// Most logins in one request.
pub const MAX_LOGINS: usize = 1000;
/// Longest login, in bytes.
pub const MAX_LOGIN_BYTES: usize = 256;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Characters of a value repeated in an error or outcome message at most.
pub const ECHO_CHARS: usize = 80;
/// The directory under the collection root that is staging's own (work area, records): never
/// granted.
pub const PRIVATE_DIR: &str = ".smrtshare";

/// A value as messages repeat it: quoted, and cut to [`ECHO_CHARS`] characters with its full
/// size named, so a huge field never comes back whole.
pub fn echo(value: &str) -> String {
    if value.chars().count() <= ECHO_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(ECHO_CHARS).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

/// The desired access to one project directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyRequest {
    /// SMRT Link project (greater than 1).
    pub project_id: i64,
    /// Globus path, `/…/`.
    pub path: String,
    /// Member logins in request order (a login that is not valid is kept cut to
    /// [`MAX_LOGIN_BYTES`], for its outcome).
    pub logins: Vec<String>,
    /// Why a login is not valid, by index into `logins`: such a login gets a failed outcome of
    /// its own; the rest of the project is applied.
    pub invalid: HashMap<usize, String>,
    /// Plan only.
    pub dry_run: bool,
}

impl ApplyRequest {
    /// Checks every field; the error names the first bad one. Bad logins are not errors: they
    /// are kept for per-member outcomes (see [`Self::invalid`]).
    pub fn new(
        project_id: i64,
        path: String,
        logins: Vec<String>,
        dry_run: bool,
    ) -> Result<Self, Error> {
        let project_id = project_id_field(project_id)?;
        let path = path_field(path)?;
        let (logins, invalid) = logins_field(logins)?;
        Ok(Self {
            project_id,
            path,
            logins,
            invalid,
            dry_run,
        })
    }
}

/// A project id that may be shared (project 1 never is).
pub fn project_id_field(project_id: i64) -> Result<i64, Error> {
    if project_id > 1 {
        Ok(project_id)
    } else {
        Err(Error::invalid(
            "project_id",
            format!(
                "{project_id} is not a shareable project: must be greater than 1 \
                 (project 1, the General Project, is never shared)"
            ),
        ))
    }
}

/// A project directory as a Globus path: `/`-delimited at both ends, not the root, no empty,
/// `.` or `..` segments, no control characters (NUL included), not under staging's private
/// directory `/.smrtshare/`.
pub fn path_field(path: String) -> Result<String, Error> {
    let bad = |reason: &str| Error::invalid("path", format!("{} {reason}", echo(&path)));
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(&format!("is longer than {MAX_PATH_BYTES} bytes")));
    }
    if !path.starts_with('/') || !path.ends_with('/') {
        return Err(bad("must start and end with \"/\""));
    }
    if path == "/" {
        return Err(bad("is the collection root, not a project directory"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("holds a control character (NUL included)"));
    }
    let inner = &path[1..path.len() - 1];
    if inner.split('/').any(str::is_empty) {
        return Err(bad("holds \"//\""));
    }
    if inner.split('/').any(|s| s == "..") {
        return Err(bad("holds a \"..\" segment"));
    }
    if inner.split('/').any(|s| s == ".") {
        return Err(bad("holds a \".\" segment"));
    }
    if inner
        .split('/')
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case(PRIVATE_DIR))
    {
        return Err(bad(&format!(
            "lies under /{PRIVATE_DIR}/, staging's private area, which is never shared"
        )));
    }
    Ok(path)
}

/// Member logins: at most [`MAX_LOGINS`] (more is an error of the request). Each login must be
/// non-empty, at most [`MAX_LOGIN_BYTES`], without whitespace at the ends, commas or control
/// characters (a comma would split a Globus username list); one that is not is answered with
/// the reason, by index, and kept cut to [`MAX_LOGIN_BYTES`].
pub fn logins_field(logins: Vec<String>) -> Result<(Vec<String>, HashMap<usize, String>), Error> {
    if logins.len() > MAX_LOGINS {
        return Err(Error::invalid(
            "logins",
            format!("{} logins; at most {MAX_LOGINS}", logins.len()),
        ));
    }
    let mut invalid = HashMap::new();
    let logins = logins
        .into_iter()
        .enumerate()
        .map(|(index, login)| match login_problem(&login) {
            None => login,
            Some(reason) => {
                invalid.insert(index, format!("logins[{index}] {} {reason}", echo(&login)));
                cut(login, MAX_LOGIN_BYTES)
            }
        })
        .collect();
    Ok((logins, invalid))
}

/// What is wrong with a login, if anything.
fn login_problem(login: &str) -> Option<String> {
    if login.is_empty() {
        return Some("is empty".to_owned());
    }
    if login.len() > MAX_LOGIN_BYTES {
        return Some(format!("is longer than {MAX_LOGIN_BYTES} bytes"));
    }
    if login.trim() != login {
        return Some("has whitespace at an end".to_owned());
    }
    if login.chars().any(|c| c.is_control() || c == ',') {
        return Some("holds a comma or a control character".to_owned());
    }
    None
}

/// `text` cut to at most `bytes` bytes, on a character boundary.
fn cut(mut text: String, bytes: usize) -> String {
    if text.len() > bytes {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// What became of one member's access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// A rule was created or adopted (or would be).
    Granted,
    /// Already held; nothing done.
    AlreadyGranted,
    /// The member left; the rule was deleted (or would be).
    Revoked,
    /// The login maps to no Globus identity.
    UnknownIdentity,
    /// Globus refused or failed.
    Failed,
    /// The rule moved to the new path (or would).
    Moved,
    /// The rule's expiry was pushed back (or would be).
    Renewed,
}

impl OutcomeKind {
    /// True when the outcome leaves the member as wanted.
    pub fn is_done(self) -> bool {
        !matches!(self, Self::UnknownIdentity | Self::Failed)
    }
}

/// Globus error codes that the same request, sent again, meets again: the collection is full,
/// the path or request is invalid, or the client may not do it.
const PERMANENT_CODES: &[&str] = &[
    "LimitExceeded",
    "InvalidPath",
    "BadRequest",
    "PermissionDenied",
    "EndpointNotFound",
    INVALID_LOGIN,
    HELD_BY_ANOTHER_PROJECT,
    COLLECTION_RULE_CAP,
    IDENTITY_RULE_CAP,
];

/// The code of a member not granted because the collection's rule cap is reached.
pub const COLLECTION_RULE_CAP: &str = "CollectionRuleCap";
/// The code of a member not granted because their identity's rule cap is reached.
pub const IDENTITY_RULE_CAP: &str = "IdentityRuleCap";

/// The code of a login that is not valid (empty, too long, a comma...).
pub const INVALID_LOGIN: &str = "InvalidLogin";
/// The code of a member whose identity already holds the path through another project.
pub const HELD_BY_ANOTHER_PROJECT: &str = "HeldByAnotherProject";

/// The outcome for one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberOutcome {
    /// The login.
    pub login: String,
    /// What became of it.
    pub kind: OutcomeKind,
    /// The identity, when known.
    pub identity_id: Option<String>,
    /// The rule id, when a rule exists.
    pub access_id: Option<String>,
    /// Globus' error code, for failures.
    pub globus_code: Option<String>,
    /// A reason, for failures and unusual successes.
    pub message: String,
    /// An invitation email went out with the member's new rule.
    pub invited: bool,
}

impl MemberOutcome {
    /// True for a failure that no retry of the same request cures: the login maps to no
    /// identity, or Globus refused with a code it will answer again (see `PERMANENT_CODES`).
    /// The coordinator ends its task on such failures instead of retrying on a timer.
    pub fn is_permanent(&self) -> bool {
        match self.kind {
            OutcomeKind::UnknownIdentity => true,
            OutcomeKind::Failed => self
                .globus_code
                .as_deref()
                .is_some_and(|code| PERMANENT_CODES.contains(&code)),
            _ => false,
        }
    }

    /// An outcome for a login with nothing else known.
    pub fn new(login: &str, kind: OutcomeKind) -> Self {
        Self {
            login: login.to_owned(),
            kind,
            identity_id: None,
            access_id: None,
            globus_code: None,
            message: String::new(),
            invited: false,
        }
    }

    /// An outcome about a registry row.
    pub fn for_row(row: &RuleRow, kind: OutcomeKind) -> Self {
        Self {
            login: row.login.clone(),
            kind,
            identity_id: Some(row.identity_id.clone()),
            access_id: row.access_id.clone(),
            globus_code: None,
            message: String::new(),
            invited: false,
        }
    }

    /// With a message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// A failure with Globus' code.
    pub fn failed(mut self, code: &str, message: impl Into<String>) -> Self {
        self.kind = OutcomeKind::Failed;
        self.globus_code = Some(code.to_owned());
        self.message = message.into();
        self
    }
}

/// The answer to an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    /// The project.
    pub project_id: i64,
    /// The path applied.
    pub path: String,
    /// Plan only.
    pub dry_run: bool,
    /// Requested logins in order, then revoked members.
    pub members: Vec<MemberOutcome>,
    /// Every member holds a rule and every revocation succeeded.
    pub complete: bool,
}

/// The answer to a revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeReport {
    /// The project.
    pub project_id: i64,
    /// Plan only.
    pub dry_run: bool,
    /// One outcome per rule.
    pub members: Vec<MemberOutcome>,
    /// The project holds no rules any more.
    pub complete: bool,
}

/// What kind of difference Verify found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepairKind {
    /// Missing at Globus (deleted by hand): created again.
    Recreated,
    /// Expired or about to: renewed.
    Renewed,
    /// An open intent matched a rule at Globus: adopted.
    Adopted,
    /// A rule marked for deletion: deleted and forgotten.
    Deleted,
    /// An open intent with no rule at Globus: created.
    Created,
    /// An open intent matched a rule smrtshare did not create: recorded as external.
    External,
    /// A project's access was moved to the configured sharing mode (the new form granted
    /// first, the old one revoked after).
    Migrated,
    /// A member smrtshare had added to a project's group was missing there: added again.
    MemberAdded,
    /// A project's group was gone at Globus: made again, with its members and its rule.
    GroupRecreated,
}

/// One repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// What was (or would be) done.
    pub kind: RepairKind,
    /// The project.
    pub project_id: i64,
    /// The rule, after the repair, when it concerns one rule.
    pub rule: Option<RuleRow>,
    /// What was done, for repairs of a whole project.
    pub detail: String,
    /// Whether it succeeded (false in a dry run).
    pub done: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// The answer to Verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Plan only.
    pub dry_run: bool,
    /// Registry rows checked.
    pub checked: u32,
    /// Rules on the collection smrtshare did not create.
    pub foreign: u32,
    /// Repairs made or planned.
    pub repairs: Vec<Repair>,
    /// How full the caps are, after the repairs.
    pub caps: CapUsage,
    /// What needs an operator (a cap at 90% or more).
    pub warnings: Vec<String>,
}

/// Rules counted against the caps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapUsage {
    /// Rules smrtshare holds or is about to hold on the collection.
    pub smrtshare_rules: i64,
    /// Rules of others on the collection (as of the last Verify).
    pub foreign_rules: i64,
    /// The collection cap.
    pub collection_cap: i64,
    /// The identity with the most rules smrtshare knows of, if any.
    pub busiest_identity: Option<String>,
    /// Its rules.
    pub busiest_identity_rules: i64,
    /// The per-identity cap.
    pub identity_cap: i64,
}

impl CapUsage {
    /// Every rule on the collection.
    pub fn collection_rules(&self) -> i64 {
        self.smrtshare_rules + self.foreign_rules
    }

    /// Warnings for caps used to `share` (0.9) or more.
    pub fn warnings(&self, share: f64) -> Vec<String> {
        let mut out = Vec::new();
        let full = |used: i64, cap: i64| cap > 0 && used as f64 >= share * cap as f64;
        if full(self.collection_rules(), self.collection_cap) {
            out.push(format!(
                "the collection holds {} of its {} access rules ({} smrtshare's, {} others'): \
                 switch to group sharing (SMRTSHARE_ACCESS_SHARING=groups, then Verify), which \
                 needs one rule per project directory",
                self.collection_rules(),
                self.collection_cap,
                self.smrtshare_rules,
                self.foreign_rules
            ));
        }
        if full(self.busiest_identity_rules, self.identity_cap) {
            out.push(format!(
                "identity {} has {} of the {} rules Globus counts for one identity on a \
                 collection: remove the member from finished projects",
                self.busiest_identity.as_deref().unwrap_or("?"),
                self.busiest_identity_rules,
                self.identity_cap
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: Error) -> String {
        match error {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("not invalid-argument: {other}"),
        }
    }

    #[test]
    fn lasting_failures_are_told_from_passing_ones() {
        assert!(MemberOutcome::new("a", OutcomeKind::UnknownIdentity).is_permanent());
        let failed = |code: &str| MemberOutcome::new("a", OutcomeKind::Failed).failed(code, "x");
        assert!(failed("LimitExceeded").is_permanent());
        assert!(failed("InvalidPath").is_permanent());
        assert!(!failed("ServiceUnavailable").is_permanent());
        assert!(!failed("").is_permanent());
        assert!(!MemberOutcome::new("a", OutcomeKind::Granted).is_permanent());
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            field_of(project_id_field(1).expect_err("refused")),
            "project_id"
        );
        assert_eq!(
            field_of(project_id_field(0).expect_err("refused")),
            "project_id"
        );
        assert!(project_id_field(2).is_ok());
        for bad in [
            "", "/", "x/", "/x", "/a//b/", "/../", "/a/../b/", "/./", "/a\0/",
        ] {
            assert_eq!(
                field_of(path_field(bad.into()).expect_err("refused")),
                "path",
                "{bad:?}"
            );
        }
        assert!(path_field("/Project 2: Tomato/".into()).is_ok());
        let huge = format!("/{}", "p".repeat(10 << 20));
        let message = path_field(huge).expect_err("no end slash").to_string();
        assert!(message.len() < 300, "{} bytes echoed", message.len());
        assert!(path_field("/Movie..x/".into()).is_ok());
        for bad in ["/.smrtshare/", "/.smrtshare/work/", "/.SMRTSHARE/x/"] {
            let error = path_field(bad.into()).expect_err(bad);
            assert!(error.to_string().contains("private"), "{error}");
        }
        assert!(path_field("/Project 2/.smrtshare/".into()).is_ok());
        let logins = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let long = "x".repeat(MAX_LOGIN_BYTES + 1);
        let (kept, invalid) =
            logins_field(logins(&["a", "", " b", "c,d", &long, "a"])).expect("per login");
        assert_eq!(kept.len(), 6);
        assert_eq!(
            invalid
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [1, 2, 3, 4].into()
        );
        assert!(invalid[&4].contains("longer than"), "{}", invalid[&4]);
        assert!(invalid[&4].len() < 200, "{}", invalid[&4]);
        assert_eq!(kept[4].len(), MAX_LOGIN_BYTES);
        let many: Vec<String> = (0..=MAX_LOGINS).map(|i| format!("u{i}")).collect();
        assert_eq!(field_of(logins_field(many).expect_err("refused")), "logins");
        assert!(logins_field(logins(&["alice", "bob@lab.org"])).is_ok());
    }
}
