//! `smrtshare-demo`: writes the demo SMRT Link data the local stack serves.

use std::path::PathBuf;

use clap::Parser;

/// Generate the demo run trees and SMRT Link JSON.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Output directory: `data/` (run trees, the staging source root) and `smrtlink/`
    /// (projects.json and datasets.json, the SMRT Link stand-in's seed) are written inside.
    #[arg(long, env = "SMRTSHARE_DEMO_DIR")]
    out: PathBuf,
    /// Replace an existing demo in the output directory.
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let marker = args.out.join("smrtlink").join("projects.json");
    if marker.exists() && !args.force {
        eprintln!(
            "demo already present in {} (use --force to regenerate)",
            args.out.display()
        );
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
    let demo = smrtshare_demo::generate_demo(&args.out)?;
    eprintln!(
        "demo written: {} projects; data root {}, SMRT Link seed {}",
        demo.projects.len(),
        demo.data_root.display(),
        demo.smrtlink_dir.display()
    );
    Ok(())
}
