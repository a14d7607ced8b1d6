//! SMRT Link analysis jobs: their directories under `jobs_root` with the output files a job
//! leaves (small stand-ins for BAMs), and `analysis_jobs.json`, the job records the SMRT Link
//! stand-in serves (each with its `entryPoints`, its `datastore` and, for jobs still to finish,
//! the stand-in's `standinSchedule`).

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::xml::attr;

/// File types, as SMRT Link's datastore names them (pbcommand's `FileTypes`).
pub mod file_types {
    /// A BAM file.
    pub const BAM: &str = "PacBio.FileTypes.bam";
    /// A BAM's `.bai` index.
    pub const BAM_BAI: &str = "PacBio.FileTypes.bam_bai";
    /// A pbreports JSON report.
    pub const JSON_REPORT: &str = "PacBio.FileTypes.JsonReport";
    /// A log file (the job's master log among them).
    pub const LOG: &str = "PacBio.FileTypes.log";
    /// A mapped-HiFi-reads dataset XML.
    pub const CONSENSUS_ALIGNMENT_SET: &str = "PacBio.DataSet.ConsensusAlignmentSet";
}

/// A job directory as SMRT Link lays out `jobs_root`: job 1589 is `0000/0000001/0000001589`.
pub fn job_dir(jobs_root: &Path, id: i64) -> PathBuf {
    jobs_root
        .join(format!("{:04}", id / 1_000_000))
        .join(format!("{:07}", id / 1000))
        .join(format!("{id:010}"))
}

/// SMRT Link's timestamp format.
fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One file in a job's datastore.
#[derive(Clone, Debug)]
pub struct OutputFile {
    /// Absolute path (it exists).
    pub path: PathBuf,
    /// `fileTypeId`.
    pub file_type_id: &'static str,
    /// Display name.
    pub name: String,
    /// The task output it came from.
    pub source_id: String,
}

/// A state the job enters later (the stand-in's schedule).
#[derive(Clone, Debug)]
pub struct Step {
    /// When.
    pub at: DateTime<Utc>,
    /// The state it enters.
    pub state: &'static str,
}

/// An analysis job as written.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// Job id.
    pub id: i64,
    /// Job UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Project.
    pub project_id: i64,
    /// Workflow (`subJobTypeId`).
    pub pipeline: String,
    /// State now (`SUCCESSFUL`, `FAILED`, `CREATED`, ...).
    pub state: &'static str,
    /// Why it failed.
    pub error_message: Option<String>,
    /// The job directory.
    pub dir: PathBuf,
    /// Input dataset UUIDs.
    pub inputs: Vec<String>,
    /// Its datastore.
    pub outputs: Vec<OutputFile>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed state (for jobs with no schedule).
    pub updated_at: DateTime<Utc>,
    /// States it enters later.
    pub schedule: Vec<Step>,
}

/// What a mapping job maps and where.
#[derive(Clone, Debug)]
pub struct MappingSpec {
    /// Job id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Project.
    pub project_id: i64,
    /// Input dataset UUIDs.
    pub inputs: Vec<String>,
    /// Bytes of the mapped BAM.
    pub bytes: usize,
}

fn output(
    dir: &Path,
    rel: &str,
    file_type_id: &'static str,
    name: &str,
    source_id: &str,
) -> OutputFile {
    OutputFile {
        path: dir.join(rel),
        file_type_id,
        name: name.to_owned(),
        source_id: source_id.to_owned(),
    }
}

/// The job's master log, written with a few lines of what happened.
fn write_log(dir: &Path, id: i64, lines: &[&str]) -> anyhow::Result<OutputFile> {
    let log = output(
        dir,
        "pbscala-job.stdout",
        file_types::LOG,
        "SMRT Link Job Log",
        "pbsmrtpipe::master.log",
    );
    let mut text = format!("[INFO] starting analysis job {id}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    crate::write_text(&log.path, &text)?;
    Ok(log)
}

/// The dataset XML of the mapped reads (it names the BAM and its index; it is read, never staged).
fn alignment_set_xml(name: &str, bam: &str, bai: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<pbds:ConsensusAlignmentSet xmlns:pbbase=\"http://pacificbiosciences.com/PacBioBaseDataModel.xsd\" xmlns:pbds=\"http://pacificbiosciences.com/PacBioDatasets.xsd\" CreatedAt=\"2024-03-12T09:14:02.113Z\" MetaType=\"PacBio.DataSet.ConsensusAlignmentSet\" Name=\"{}\" Tags=\"mapping\" UniqueId=\"{}\" Version=\"3.0.1\">\n\
\t<pbbase:ExternalResources>\n\
\t\t<pbbase:ExternalResource MetaType=\"PacBio.AlignmentFile.ConsensusAlignmentBamFile\" ResourceId=\"{}\" UniqueId=\"{}\" Version=\"3.0.1\">\n\
\t\t\t<pbbase:FileIndices>\n\
\t\t\t\t<pbbase:FileIndex MetaType=\"PacBio.Index.BamIndex\" ResourceId=\"{}\" UniqueId=\"{}\" Version=\"3.0.1\"/>\n\
\t\t\t</pbbase:FileIndices>\n\
\t\t</pbbase:ExternalResource>\n\
\t</pbbase:ExternalResources>\n\
\t<pbds:DataSetMetadata>\n\t\t<pbds:TotalLength>15000000</pbds:TotalLength>\n\t\t<pbds:NumRecords>1000</pbds:NumRecords>\n\t</pbds:DataSetMetadata>\n\
</pbds:ConsensusAlignmentSet>\n",
        attr(name),
        uuid::Uuid::new_v4(),
        attr(bam),
        uuid::Uuid::new_v4(),
        attr(bai),
        uuid::Uuid::new_v4(),
    )
}

/// Writes a HiFi mapping job's directory: `outputs/mapped.bam` with its `.bai`, the
/// `mapped.consensusalignmentset.xml` naming them, `outputs/mapping_stats.report.json`, and the
/// job log. Answers the job, `SUCCESSFUL` since `finished` (set `state` and `schedule` on the
/// answer for a job still to finish).
pub fn write_mapping_job(
    jobs_root: &Path,
    spec: &MappingSpec,
    created: DateTime<Utc>,
    finished: DateTime<Utc>,
) -> anyhow::Result<JobRecord> {
    let dir = job_dir(jobs_root, spec.id);
    let out = dir.join("outputs");
    let pipeline = "cromwell.workflows.pb_align_ccs";
    let bam = output(
        &out,
        "mapped.bam",
        file_types::BAM,
        "Mapped BAM",
        "pbmm2.tasks.pbmm2_align-out-0",
    );
    let bai = output(
        &out,
        "mapped.bam.bai",
        file_types::BAM_BAI,
        "Mapped BAM Index",
        "pbmm2.tasks.pbmm2_align-out-1",
    );
    let xml = output(
        &out,
        "mapped.consensusalignmentset.xml",
        file_types::CONSENSUS_ALIGNMENT_SET,
        "Mapped Reads",
        "pbcoretools.tasks.consolidate_alignments-out-0",
    );
    let report = output(
        &out,
        "mapping_stats.report.json",
        file_types::JSON_REPORT,
        "Mapping Report",
        "pbreports.tasks.mapping_stats-out-0",
    );
    crate::write_data(&bam.path, spec.bytes)?;
    crate::write_data(&bai.path, spec.bytes / 8 + 1)?;
    crate::write_text(
        &xml.path,
        &alignment_set_xml(&spec.name, "mapped.bam", "mapped.bam.bai"),
    )?;
    let report_json = json!({
        "id": "mapping_stats",
        "title": "Mapping Report",
        "version": "1.0.1",
        "uuid": uuid::Uuid::new_v4(),
        "attributes": [
            {"id": "mapping_stats.mapped_reads_n", "name": "Number of Mapped Reads", "value": 1000},
            {"id": "mapping_stats.mapped_bases_n", "name": "Number of Mapped Bases (bp)", "value": 15000000},
        ],
        "plotGroups": [],
        "tables": [],
    });
    crate::write_text(&report.path, &format!("{report_json:#}\n"))?;
    let log = write_log(
        &dir,
        spec.id,
        &["[INFO] pbmm2 align --preset HIFI", "[INFO] job finished"],
    )?;
    Ok(JobRecord {
        id: spec.id,
        uuid: uuid::Uuid::new_v4().to_string(),
        name: spec.name.clone(),
        project_id: spec.project_id,
        pipeline: pipeline.to_owned(),
        state: "SUCCESSFUL",
        error_message: None,
        dir,
        inputs: spec.inputs.clone(),
        outputs: vec![bam, bai, xml, report, log],
        created_at: created,
        updated_at: finished,
        schedule: Vec::new(),
    })
}

/// Writes a job that failed: its directory holds the job log only.
pub fn write_failed_job(
    jobs_root: &Path,
    spec: &MappingSpec,
    pipeline: &str,
    error: &str,
    created: DateTime<Utc>,
    failed: DateTime<Utc>,
) -> anyhow::Result<JobRecord> {
    let dir = job_dir(jobs_root, spec.id);
    let log = write_log(&dir, spec.id, &[&format!("[ERROR] {error}")])?;
    Ok(JobRecord {
        id: spec.id,
        uuid: uuid::Uuid::new_v4().to_string(),
        name: spec.name.clone(),
        project_id: spec.project_id,
        pipeline: pipeline.to_owned(),
        state: "FAILED",
        error_message: Some(error.to_owned()),
        dir,
        inputs: spec.inputs.clone(),
        outputs: vec![log],
        created_at: created,
        updated_at: failed,
        schedule: Vec::new(),
    })
}

/// The record SMRT Link keeps for a job, as `GET …/jobs/analysis/{id}` answers it, with the
/// seed-only lists `entryPoints`, `datastore` and `standinSchedule`.
pub fn job_json(job: &JobRecord) -> Value {
    let settings =
        json!({"pipelineId": job.pipeline, "name": job.name, "projectId": job.project_id});
    let finished = job.schedule.last().map_or(job.updated_at, |s| s.at);
    let mut record = json!({
        "id": job.id,
        "uuid": job.uuid,
        "name": job.name,
        "comment": "",
        "state": job.state,
        "jobTypeId": "analysis",
        "subJobTypeId": job.pipeline,
        "projectId": job.project_id,
        "path": job.dir.to_string_lossy(),
        "createdAt": stamp(job.created_at),
        "updatedAt": stamp(job.updated_at),
        "jobUpdatedAt": stamp(job.updated_at),
        "createdBy": "admin",
        "isActive": true,
        "isMultiJob": false,
        "tags": "",
        "jsonSettings": settings.to_string(),
        "smrtlinkVersion": "13.1.0.221970",
        "entryPoints": job.inputs.iter().map(|uuid| json!({
            "jobId": job.id, "datasetUUID": uuid, "datasetType": "PacBio.DataSet.ConsensusReadSet"
        })).collect::<Vec<_>>(),
        "datastore": job.outputs.iter().map(|file| json!({
            "uuid": uuid::Uuid::new_v4(),
            "fileTypeId": file.file_type_id,
            "sourceId": file.source_id,
            "fileSize": fs::metadata(&file.path).map(|m| m.len()).unwrap_or(0),
            "createdAt": stamp(finished),
            "modifiedAt": stamp(finished),
            "importedAt": stamp(finished),
            "path": file.path.to_string_lossy(),
            "isChunked": false,
            "isActive": true,
            "name": file.name,
            "description": file.name,
            "jobId": job.id,
            "jobUUID": job.uuid,
        })).collect::<Vec<_>>(),
    });
    if job.state != "CREATED" {
        record["jobStartedAt"] = json!(stamp(job.created_at + TimeDelta::seconds(30)));
    }
    if matches!(
        job.state,
        "SUCCESSFUL" | "FAILED" | "TERMINATED" | "ABORTED"
    ) {
        record["jobCompletedAt"] = json!(stamp(job.updated_at));
    }
    if let Some(error) = &job.error_message {
        record["errorMessage"] = json!(error);
    }
    if !job.schedule.is_empty() {
        record["standinSchedule"] = job
            .schedule
            .iter()
            .map(|s| json!({"at": stamp(s.at), "state": s.state}))
            .collect();
    }
    record
}

/// `analysis_jobs.json`: every job record, as a list.
pub fn analysis_jobs_json(jobs: &[JobRecord]) -> Value {
    Value::Array(jobs.iter().map(job_json).collect())
}
