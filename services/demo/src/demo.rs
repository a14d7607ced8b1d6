//! The demo the local stack serves (`smrtshare-demo`, `scripts/stack`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::jobs::{
    JobRecord, MappingSpec, Step, analysis_jobs_json, write_failed_job, write_mapping_job,
};
use crate::{
    DatasetRecord, Ids, PlainSpec, ProjectSpec, RunSpec, datasets_json, projects_json,
    write_barcoded_run, write_json, write_plain_dataset,
};

/// When the demo's running job starts, after the demo was generated.
pub const RUNNING_JOB_STARTS_AFTER: Duration = Duration::from_secs(10);
/// When the demo's running job finishes (SUCCESSFUL), after the demo was generated.
pub const RUNNING_JOB_FINISHES_AFTER: Duration = Duration::from_secs(90);

/// The generated demo: where everything is.
#[derive(Clone, Debug)]
pub struct Demo {
    /// Root of the run trees (the staging service's source root).
    pub data_root: PathBuf,
    /// Directory holding `projects.json`, `datasets.json` and `analysis_jobs.json` (the SMRT
    /// Link stand-in's seed).
    pub smrtlink_dir: PathBuf,
    /// SMRT Link's `jobs_root`, inside the data root (not created without analysis jobs).
    pub jobs_root: PathBuf,
    /// The projects written.
    pub projects: Vec<ProjectSpec>,
    /// The analysis jobs written.
    pub jobs: Vec<JobRecord>,
}

/// Writes the demo used by the local stack: a General Project (1) holding loose datasets, and
/// three projects to share: "Tomato" (a demultiplexed run with two barcoded samples), "Rice" (two
/// plain datasets, one split into segments) and "Wheat" (an orphaned barcoded child); and three
/// analysis jobs under `data/jobs_root`: job 41 in Tomato, a HiFi mapping SUCCESSFUL a day ago;
/// job 42 in Rice, a HiFi mapping created now, RUNNING after [`RUNNING_JOB_STARTS_AFTER`] and
/// SUCCESSFUL after [`RUNNING_JOB_FINISHES_AFTER`] (absolute times in the stand-in's schedule: a
/// stand-in started later finds it finished, as SMRT Link would); job 43 in Wheat, FAILED with
/// its log only.
pub fn generate_demo(out: &Path) -> anyhow::Result<Demo> {
    generate_demo_with(out, &DemoOptions::default())
}

/// What [`generate_demo_with`] writes.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The time the demo is generated at (job times count from it).
    pub now: DateTime<Utc>,
    /// Whether to write the analysis jobs (`analysis_jobs.json` and `data/jobs_root`).
    pub analysis_jobs: bool,
}

impl Default for DemoOptions {
    /// Now, with analysis jobs.
    fn default() -> Self {
        Self {
            now: Utc::now(),
            analysis_jobs: true,
        }
    }
}

/// [`generate_demo`] with options: as if generated at another time, or without analysis jobs.
pub fn generate_demo_with(out: &Path, options: &DemoOptions) -> anyhow::Result<Demo> {
    let now = options.now;
    let data_root = out.join("data");
    let smrtlink_dir = out.join("smrtlink");
    fs::create_dir_all(&data_root)?;
    fs::create_dir_all(&smrtlink_dir)?;
    let mut ids = Ids::starting_at(100);

    let tomato = write_barcoded_run(
        &data_root,
        &RunSpec {
            run_dir: "r84100_20240301_193255/1_A01".into(),
            movie: "m84100_240301_194028_s1".into(),
            well_sample: "Germany tomato 20 and 21".into(),
            samples: vec![
                ("Tomato 20".into(), "bc1047--bc1047".into()),
                ("Tomato 21".into(), "bc1048--bc1048".into()),
            ],
            bytes: 4096,
        },
        &mut ids,
    )?;
    let wheat_run = write_barcoded_run(
        &data_root,
        &RunSpec {
            run_dir: "r84100_20240415_101010/1_B01".into(),
            movie: "m84100_240415_102233_s2".into(),
            well_sample: "Wheat pool".into(),
            samples: vec![
                ("Wheat A".into(), "bc2001--bc2001".into()),
                ("Wheat B".into(), "bc2002--bc2002".into()),
            ],
            bytes: 2048,
        },
        &mut ids,
    )?;
    let rice_1 = write_plain_dataset(
        &data_root,
        &PlainSpec {
            run_dir: "r84100_20240322_080000/1_C01".into(),
            movie: "m84100_240322_081500_s3".into(),
            well_sample: "Rice IR64".into(),
            sample: "Rice IR64".into(),
            name: "Rice IR64-Cell1".into(),
            data_files: 2,
            bytes: 4096,
        },
        &mut ids,
    )?;
    let rice_2 = write_plain_dataset(
        &data_root,
        &PlainSpec {
            run_dir: "r84100_20240322_080000/1_D01".into(),
            movie: "m84100_240322_091500_s4".into(),
            well_sample: "Rice Nipponbare".into(),
            sample: "Rice Nipponbare".into(),
            name: "Rice Nipponbare-Cell1 (segmented)".into(),
            data_files: 6,
            bytes: 1024,
        },
        &mut ids,
    )?;
    let loose = write_plain_dataset(
        &data_root,
        &PlainSpec {
            run_dir: "r84100_20240501_120000/1_A01".into(),
            movie: "m84100_240501_121212_s1".into(),
            well_sample: "Maize B73".into(),
            sample: "Maize B73".into(),
            name: "Maize B73-Cell1".into(),
            data_files: 2,
            bytes: 2048,
        },
        &mut ids,
    )?;

    let admin = ("admin".to_owned(), "OWNER".to_owned());
    let projects = vec![
        ProjectSpec {
            id: 1,
            name: "General Project".into(),
            members: vec![admin.clone()],
            datasets: vec![loose.clone(), wheat_run.children[0].clone()],
        },
        ProjectSpec {
            id: 2,
            name: "Tomato".into(),
            members: vec![
                admin.clone(),
                ("alice".into(), "CAN_VIEW".into()),
                ("bob".into(), "CAN_EDIT".into()),
            ],
            datasets: vec![tomato.parent.clone()],
        },
        ProjectSpec {
            id: 3,
            name: "Rice".into(),
            members: vec![admin.clone(), ("carol".into(), "CAN_VIEW".into())],
            datasets: vec![rice_1.clone(), rice_2.clone()],
        },
        ProjectSpec {
            id: 4,
            name: "Wheat".into(),
            members: vec![
                admin,
                ("dave".into(), "CAN_VIEW".into()),
                ("alice".into(), "CAN_VIEW".into()),
            ],
            datasets: vec![wheat_run.children[1].clone()],
        },
    ];
    let mut records: Vec<(DatasetRecord, i64)> = Vec::new();
    for p in &projects {
        for d in &p.datasets {
            records.push((d.clone(), p.id));
        }
    }
    // Children not listed in a project are recorded in the General Project, as SMRT Link does.
    for child in &tomato.children {
        records.push((child.clone(), 1));
    }
    records.push((wheat_run.parent.clone(), 1));
    write_json(
        &smrtlink_dir.join("projects.json"),
        &projects_json(&projects),
    )?;
    write_json(
        &smrtlink_dir.join("datasets.json"),
        &datasets_json(&records),
    )?;
    let jobs_root = data_root.join("jobs_root");
    let mut jobs = Vec::new();
    if options.analysis_jobs {
        jobs = write_demo_jobs(
            &jobs_root,
            now,
            [&tomato.children[0], &rice_1, &wheat_run.children[1]],
        )?;
        write_json(
            &smrtlink_dir.join("analysis_jobs.json"),
            &analysis_jobs_json(&jobs),
        )?;
    }
    Ok(Demo {
        data_root,
        smrtlink_dir,
        jobs_root,
        projects,
        jobs,
    })
}

fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    now + TimeDelta::from_std(delay).unwrap_or_default()
}

/// The three demo jobs (see [`generate_demo`]), mapping the given inputs of Tomato, Rice, Wheat.
fn write_demo_jobs(
    jobs_root: &Path,
    now: DateTime<Utc>,
    [tomato, rice, wheat]: [&DatasetRecord; 3],
) -> anyhow::Result<Vec<JobRecord>> {
    let spec = |id, name: &str, project_id, input: &DatasetRecord| MappingSpec {
        id,
        name: name.to_owned(),
        project_id,
        inputs: vec![input.uuid.clone()],
        bytes: 4096,
    };
    let day = TimeDelta::days(1);
    let finished = write_mapping_job(
        jobs_root,
        &spec(41, "HiFi Mapping Tomato 20", 2, tomato),
        now - day - TimeDelta::hours(2),
        now - day,
    )?;
    let mut running = write_mapping_job(
        jobs_root,
        &spec(42, "HiFi Mapping Rice IR64", 3, rice),
        now,
        now,
    )?;
    running.state = "CREATED";
    running.schedule = vec![
        Step {
            at: after(now, RUNNING_JOB_STARTS_AFTER),
            state: "RUNNING",
        },
        Step {
            at: after(now, RUNNING_JOB_FINISHES_AFTER),
            state: "SUCCESSFUL",
        },
    ];
    let failed = write_failed_job(
        jobs_root,
        &spec(43, "Variant Calling Wheat B", 4, wheat),
        "cromwell.workflows.pb_variant_calling",
        "Task pbsv.tasks.call failed: out of memory (exit code 137)",
        now - TimeDelta::hours(5),
        now - TimeDelta::hours(4),
    )?;
    Ok(vec![finished, running, failed])
}
