//! `smrtshare-demo`: writes the demo SMRT Link data the local stack serves.

use std::path::PathBuf;

use clap::Parser;

/// Generate the demo run trees and SMRT Link JSON.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Output directory: `data/` (run trees and SMRT Link's `jobs_root`, the staging source
    /// root) and `smrtlink/` (projects.json, datasets.json and analysis_jobs.json, the SMRT Link
    /// stand-in's seed) are written inside.
    #[arg(long, env = "SMRTSHARE_DEMO_DIR")]
    out: PathBuf,
    /// Replace an existing demo in the output directory.
    #[arg(long)]
    force: bool,
    /// Also write three analysis jobs (`smrtlink/analysis_jobs.json`, their outputs under
    /// `data/jobs_root`): job 41 finished in project 2, job 42 in project 3 running and
    /// finishing 90 s after generation, job 43 failed in project 4. `scripts/stack` asks for them.
    #[arg(long, env = "SMRTSHARE_DEMO_ANALYSIS_JOBS")]
    analysis_jobs: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let marker = args.out.join("smrtlink").join("projects.json");
    if marker.exists() && !args.force {
        eprintln!(
            "demo already present in {} (use --force to regenerate)",
            args.out.display()
        );
        if args.analysis_jobs && !args.out.join("smrtlink/analysis_jobs.json").exists() {
            eprintln!(
                "note: this demo predates its analysis jobs; regenerate it (scripts/stack --fresh) to have them"
            );
        }
        return Ok(());
    }
    if args.force {
        for sub in ["data", "smrtlink"] {
            let dir = args.out.join(sub);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    let demo = smrtshare_demo::generate_demo_with(
        &args.out,
        &smrtshare_demo::DemoOptions {
            analysis_jobs: args.analysis_jobs,
            ..smrtshare_demo::DemoOptions::default()
        },
    )?;
    eprintln!(
        "demo written: {} projects, {} analysis jobs; data root {}, SMRT Link seed {}",
        demo.projects.len(),
        demo.jobs.len(),
        demo.data_root.display(),
        demo.smrtlink_dir.display()
    );
    if let Some(running) = demo.jobs.iter().find(|j| !j.schedule.is_empty()) {
        eprintln!(
            "analysis job {} ({}) runs from {}s and finishes {}s from now",
            running.id,
            running.name,
            smrtshare_demo::RUNNING_JOB_STARTS_AFTER.as_secs(),
            smrtshare_demo::RUNNING_JOB_FINISHES_AFTER.as_secs()
        );
    }
    Ok(())
}
