//! An analysis job's outputs as the content of its directory (`Analysis {id}: {name}` by
//! default): which of the files SMRT Link's datastore lists are staged, under which names.
//!
//! A job's directory holds its output files side by side, each under its own base name, as hard
//! links, like a plain dataset's. What differs is that single files fail alone: a file that is
//! missing, not a regular file or outside the source roots, two different files sharing one name,
//! or a name held by something smrtshare did not make fail that file (the job reports each one and
//! counts as failed), and every other output is still staged.
//!
//! Left out by the rules (counted in `skipped`, never failures), unless configured otherwise:
//! - dataset XMLs: file types `PacBio.DataSet.*` (the job's AlignmentSet, ConsensusReadSet, ...
//!   XML names paths on the core's filesystem and means nothing to a Globus user);
//!   `--analysis-include-dataset-xml` stages them;
//! - the job's internal files, by file type: logs (`PacBio.FileTypes.log`), the job's datastore
//!   (`PacBio.FileTypes.Datastore`), generic JSON, which SMRT Link uses for job and workflow
//!   metadata (`PacBio.FileTypes.json`), and scatter/gather chunk lists
//!   (`PacBio.FileTypes.CHUNK`, `GCHUNK`, `SCHUNK`); `--analysis-include-internal` stages them.
//!   Reports (`PacBio.FileTypes.JsonReport`) are results and are staged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::fault::Fault;
use crate::model::{JobSpec, Kind};
use crate::names::Namer;
use crate::resolve::{Layout, Resolver, Source, Want};
use crate::xml::DATASET_META_PREFIX;

/// File types of a job's internal files.
pub const INTERNAL_FILE_TYPES: &[&str] = &[
    "PacBio.FileTypes.log",
    "PacBio.FileTypes.Datastore",
    "PacBio.FileTypes.json",
    "PacBio.FileTypes.CHUNK",
    "PacBio.FileTypes.GCHUNK",
    "PacBio.FileTypes.SCHUNK",
];

/// Which outputs the rules leave out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobRules {
    /// Stage dataset XMLs too.
    pub dataset_xml: bool,
    /// Stage the job's internal files too.
    pub internal: bool,
}

impl JobRules {
    /// True when an output of this file type is staged.
    pub fn stages(&self, file_type: &str) -> bool {
        if file_type.starts_with(DATASET_META_PREFIX) {
            return self.dataset_xml;
        }
        if INTERNAL_FILE_TYPES.contains(&file_type) {
            return self.internal;
        }
        true
    }
}

/// A job's directory content: the layout of the files staged, how many the rules left out, and
/// the files that cannot be staged.
#[derive(Debug)]
pub struct JobLayout {
    /// What its directory should hold.
    pub layout: Layout,
    /// Outputs left out by the rules.
    pub skipped: u32,
    /// Outputs that cannot be staged, each with why.
    pub faults: Vec<Fault>,
}

/// Resolves a job's outputs: each staged file checked like a dataset's (a regular file under a
/// source root, never through a symlink).
pub fn layout(
    resolver: &mut Resolver<'_>,
    namer: &Namer,
    rules: JobRules,
    job: &JobSpec,
) -> JobLayout {
    resolver.start();
    let mut skipped = 0u32;
    let mut faults = Vec::new();
    let mut by_name: BTreeMap<String, Vec<Arc<Source>>> = BTreeMap::new();
    for file in &job.files {
        if !rules.stages(&file.file_type) {
            skipped = skipped.saturating_add(1);
            continue;
        }
        let shown = file.path.display();
        let Some(id) = file.path.to_str() else {
            faults.push(Fault::permanent(format!(
                "{shown}: path is not valid UTF-8"
            )));
            continue;
        };
        match resolver.file(Path::new("/"), id) {
            Ok(source) => {
                let same = by_name.entry(source.name().to_owned()).or_default();
                if !same.iter().any(|s| s.path == source.path) {
                    same.push(source);
                }
            }
            Err(e) => faults.push(e.context(format_args!("output {shown}"))),
        }
    }
    let mut entries = BTreeMap::new();
    for (name, sources) in by_name {
        if let [source] = sources.as_slice() {
            entries.insert(name, Want::File(source.clone()));
            continue;
        }
        let paths: Vec<&str> = sources.iter().map(|s| s.path.as_str()).collect();
        faults.push(Fault::permanent(format!(
            "{} different outputs would be named {name:?} in the job's directory ({}); none of them is staged",
            paths.len(),
            paths.join(", ")
        )));
    }
    JobLayout {
        layout: Layout {
            kind: Kind::Plain,
            name: namer.job(job.id, &job.name),
            entries: Arc::new(entries),
            children: Vec::new(),
            dirs: resolver.dirs_used(),
        },
        skipped,
        faults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_xmls_and_internal_files_are_left_out_unless_configured() {
        let default = JobRules::default();
        for staged in [
            "PacBio.FileTypes.bam",
            "PacBio.FileTypes.JsonReport",
            "PacBio.FileTypes.vcf",
            "PacBio.FileTypes.Fasta",
            "PacBio.Index.PacBioIndex",
            "",
        ] {
            assert!(default.stages(staged), "{staged}");
        }
        for left_out in [
            "PacBio.DataSet.ConsensusAlignmentSet",
            "PacBio.FileTypes.log",
            "PacBio.FileTypes.json",
            "PacBio.FileTypes.Datastore",
            "PacBio.FileTypes.CHUNK",
        ] {
            assert!(!default.stages(left_out), "{left_out}");
        }
        let xml = JobRules {
            dataset_xml: true,
            internal: false,
        };
        assert!(xml.stages("PacBio.DataSet.AlignmentSet"));
        assert!(!xml.stages("PacBio.FileTypes.log"));
        let internal = JobRules {
            dataset_xml: false,
            internal: true,
        };
        assert!(internal.stages("PacBio.FileTypes.log"));
        assert!(!internal.stages("PacBio.DataSet.AlignmentSet"));
    }
}
