//! The coordinator's domain types and their text forms in the database.

use std::fmt;

use smrtshare_api::coordinator::v1 as pb;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal => $proto:path),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const VARIANTS: &'static [Self] = &[$(Self::$variant),+];

            /// The form stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses the stored form.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }

            /// The wire enum value.
            pub fn to_proto(self) -> i32 {
                match self { $(Self::$variant => $proto as i32),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Which service a task drives.
    Target {
        /// The staging service.
        Staging = "STAGING" => pb::Target::Staging,
        /// The access service.
        Access = "ACCESS" => pb::Target::Access,
    }
}

impl Target {
    /// Both targets, in the order tasks are created.
    pub const ALL: [Target; 2] = [Target::Staging, Target::Access];
}

text_enum! {
    /// What a task asks of its service.
    Operation {
        /// Apply the full desired state.
        Apply = "APPLY" => pb::Operation::Apply,
        /// Remove the project.
        Remove = "REMOVE" => pb::Operation::Remove,
    }
}

text_enum! {
    /// The state of a task.
    TaskState {
        /// Waiting to run.
        Ready = "READY" => pb::TaskState::Ready,
        /// Claimed by a worker.
        Working = "WORKING" => pb::TaskState::Working,
        /// Succeeded.
        Ok = "OK" => pb::TaskState::Ok,
        /// Failed (maybe with a retry scheduled).
        Failed = "FAILED" => pb::TaskState::Failed,
        /// Replaced by a newer task before it ran again.
        Superseded = "SUPERSEDED" => pb::TaskState::Superseded,
    }
}

text_enum! {
    /// Why a change was recorded.
    ChangeReason {
        /// A mirrored SMRT Link request.
        Mirror = "MIRROR" => pb::ChangeReason::Mirror,
        /// Resync found a difference.
        Resync = "RESYNC" => pb::ChangeReason::Resync,
        /// An operator called a Notify RPC.
        Manual = "MANUAL" => pb::ChangeReason::Manual,
        /// Another project's change touched this one.
        Effect = "EFFECT" => pb::ChangeReason::Effect,
        /// An analysis job of the project finished, moved, was renamed or deleted.
        Analysis = "ANALYSIS" => pb::ChangeReason::Analysis,
    }
}

text_enum! {
    /// What a change is about.
    ChangeKind {
        /// Re-read a project and apply it.
        ProjectChanged = "PROJECT_CHANGED" => pb::ChangeKind::ProjectChanged,
        /// Re-read a project reported deleted.
        ProjectDeleted = "PROJECT_DELETED" => pb::ChangeKind::ProjectDeleted,
        /// List SMRT Link for new projects.
        ProjectsCreated = "PROJECTS_CREATED" => pb::ChangeKind::ProjectsCreated,
        /// List SMRT Link's analysis jobs.
        AnalysisSubmitted = "ANALYSIS_SUBMITTED" => pb::ChangeKind::AnalysisSubmitted,
    }
}

text_enum! {
    /// The overall state of a change.
    ChangeStatus {
        /// Not read yet, or tasks waiting or running.
        InProgress = "IN_PROGRESS" => pb::ChangeStatus::InProgress,
        /// Everything succeeded.
        Ok = "OK" => pb::ChangeStatus::Ok,
        /// Some tasks failed.
        Partial = "PARTIAL" => pb::ChangeStatus::Partial,
        /// Every task failed, or SMRT Link could not be read.
        Failed = "FAILED" => pb::ChangeStatus::Failed,
    }
}

text_enum! {
    /// Whether SMRT Link has been read for a change.
    ReadState {
        /// Waiting for the settle delay to pass.
        Settling = "SETTLING" => pb::ChangeStatus::InProgress,
        /// A reader is reading SMRT Link for it.
        Reading = "READING" => pb::ChangeStatus::InProgress,
        /// Read; tasks (if any) were created.
        Read = "READ" => pb::ChangeStatus::Ok,
        /// SMRT Link could not be read.
        Failed = "FAILED" => pb::ChangeStatus::Failed,
    }
}

/// A project member as SMRT Link lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberTruth {
    /// SMRT Link login.
    pub login: String,
    /// Role: OWNER, CAN_EDIT, CAN_VIEW (or another text SMRT Link may add).
    pub role: String,
}

impl MemberTruth {
    /// Members shared with: those whose role lets them read (CAN_VIEW, CAN_EDIT). OWNER is the
    /// core's own login; a role SMRT Link may add later is not assumed to grant anything.
    pub fn is_shared(&self) -> bool {
        smrtshare_smrtlink::model::Role::parse(&self.role).is_shared()
    }
}

/// A dataset as SMRT Link lists it in a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetTruth {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Path of the dataset XML.
    pub path: String,
    /// Parent UUID, if any.
    pub parent_uuid: Option<String>,
    /// Number of children.
    pub num_children: u32,
}

/// What SMRT Link says about one project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectTruth {
    /// Project id.
    pub id: i64,
    /// Project name.
    pub name: String,
    /// SMRT Link's `updatedAt`, as given.
    pub updated_at: String,
    /// Members.
    pub members: Vec<MemberTruth>,
    /// Datasets.
    pub datasets: Vec<DatasetTruth>,
}

/// An analysis job as SMRT Link lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalysisJobTruth {
    /// Job id.
    pub id: i64,
    /// The project it belongs to.
    pub project_id: i64,
    /// Job state text (CREATED, SUBMITTED, RUNNING, SUCCESSFUL, FAILED, TERMINATED, ABORTED).
    pub state: String,
    /// Job name.
    pub name: String,
    /// SMRT Link's error message, when the job failed.
    pub error: String,
}

/// One output file of an analysis job, as SMRT Link's datastore lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOutput {
    /// Absolute path.
    pub path: String,
    /// SMRT Link's file type.
    pub file_type_id: String,
    /// The task output it came from.
    pub source_id: String,
}

/// A finished analysis job of a project, as staged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalysisOutputs {
    /// Job id.
    pub job_id: i64,
    /// Job name.
    pub name: String,
    /// Its output files.
    pub files: Vec<JobOutput>,
}

/// The desired state of a project, as sent to staging and access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Project id.
    pub project_id: i64,
    /// True when SMRT Link no longer has the project.
    pub deleted: bool,
    /// Project directory name.
    pub directory: String,
    /// Datasets.
    pub datasets: Vec<DatasetTruth>,
    /// Logins shared with, sorted.
    pub shared_logins: Vec<String>,
    /// Finished analysis jobs whose outputs are staged, by job id.
    pub analysis: Vec<AnalysisOutputs>,
}

impl Desired {
    /// The Globus path of the project directory.
    pub fn globus_path(&self) -> String {
        format!("/{}/", self.directory)
    }

    /// A fingerprint of what `target` is sent (staging: the directory and datasets; access: the
    /// path and members): equal for equal states whatever the order of datasets and members. A
    /// task records the one it ran with, so resync can tell a project that is unchanged for that
    /// target since its last final task from one that changed.
    pub fn fingerprint(&self, target: Target) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        // Each field ends with a NUL, which no field holds, so fields cannot run together.
        let mut field = |text: &str| {
            hash.update(text.as_bytes());
            hash.update([0]);
        };
        field(if self.deleted { "deleted" } else { "alive" });
        field(&self.directory);
        match target {
            Target::Staging => {
                let mut datasets: Vec<&DatasetTruth> = self.datasets.iter().collect();
                datasets.sort_by(|a, b| a.uuid.cmp(&b.uuid));
                for d in datasets {
                    field(&d.uuid);
                    field(&d.name);
                    field(&d.path);
                    field(d.parent_uuid.as_deref().unwrap_or_default());
                    field(&d.num_children.to_string());
                }
                field("analysis");
                let mut jobs: Vec<&AnalysisOutputs> = self.analysis.iter().collect();
                jobs.sort_by_key(|j| j.job_id);
                for job in jobs {
                    field(&job.job_id.to_string());
                    field(&job.name);
                    let mut files: Vec<&JobOutput> = job.files.iter().collect();
                    files.sort_by(|a, b| a.path.cmp(&b.path));
                    for f in files {
                        field(&f.path);
                        field(&f.file_type_id);
                    }
                }
            }
            Target::Access => {
                let mut logins: Vec<&str> = self.shared_logins.iter().map(String::as_str).collect();
                logins.sort_unstable();
                logins.dedup();
                for login in logins {
                    field(login);
                }
            }
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Cuts text to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::parse(t.as_str()), Some(t));
        }
        assert_eq!(TaskState::parse("SUPERSEDED"), Some(TaskState::Superseded));
        assert_eq!(ChangeKind::parse("nope"), None);
    }

    #[test]
    fn only_known_reading_roles_are_shared() {
        let member = |role: &str| MemberTruth {
            login: "a".into(),
            role: role.into(),
        };
        assert!(member("CAN_VIEW").is_shared() && member("can_edit").is_shared());
        assert!(!member("OWNER").is_shared());
        assert!(
            !member("CAN_ADMINISTER").is_shared(),
            "an unknown role grants nothing"
        );
        assert!(!member("").is_shared());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééééé", 8);
        assert!(cut.len() <= 8 && cut.ends_with("..."), "{cut}");
    }
}
