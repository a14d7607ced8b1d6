//! Memory: many requests at once, each with a large dataset XML (dense metadata: tens of thousands
//! of small elements, as a big barcoded run's sample sheet makes), against servers of their own:
//! what one such parse alone takes (the factor the parse budget assumes), and the peak resident
//! memory (VmHWM) of the burst.

use std::fmt::Write as _;
use std::path::Path;

use smrtshare_demo::{Ids, PlainSpec};

use crate::server::{Server, pass, requests};

/// What the memory phase measured (KiB unless named otherwise).
pub struct Memory {
    pub requests: usize,
    pub xml_bytes: u64,
    /// One parse alone: VmHWM after start, and after the apply.
    pub single: (u64, u64),
    /// The burst: VmHWM after start, VmHWM after the burst, VmRSS after the burst.
    pub burst: (u64, u64, u64),
    /// Parses that waited for the budget.
    pub waits: u64,
}

impl Memory {
    /// Peak bytes of one parse per byte of XML.
    pub fn factor(&self) -> f64 {
        (self.single.1.saturating_sub(self.single.0) * 1024) as f64 / self.xml_bytes as f64
    }
}

/// Grows a dataset XML to `bytes` with a second collection holding many barcoded samples.
fn inflate(xml: &Path, bytes: usize) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(xml)?;
    let (head, tail) = text
        .split_once("\t\t</Collections>")
        .ok_or_else(|| anyhow::anyhow!("{}: no </Collections>", xml.display()))?;
    let mut extra = String::with_capacity(bytes);
    extra.push_str("\t\t\t<CollectionMetadata Context=\"extra\" MetaType=\"CollectionMetadata\">\n\t\t\t\t<pbmeta:WellSample Name=\"extra\">\n\t\t\t\t\t<pbsample:BioSamples>\n");
    let mut i = 0u64;
    while head.len() + extra.len() + tail.len() < bytes {
        let _ = write!(
            extra,
            "\t\t\t\t\t\t<pbsample:BioSample Name=\"Sample {i}\" UniqueId=\"{}\">\n\t\t\t\t\t\t\t<pbsample:DNABarcodes>\n\t\t\t\t\t\t\t\t<pbsample:DNABarcode Name=\"bc{i}--bc{i}\" UniqueId=\"{}\"/>\n\t\t\t\t\t\t\t</pbsample:DNABarcodes>\n\t\t\t\t\t\t</pbsample:BioSample>\n",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4()
        );
        i += 1;
    }
    extra.push_str("\t\t\t\t\t</pbsample:BioSamples>\n\t\t\t\t</pbmeta:WellSample>\n\t\t\t</CollectionMetadata>\n");
    std::fs::write(xml, format!("{head}{extra}\t\t</Collections>{tail}"))?;
    Ok(std::fs::metadata(xml)?.len())
}

pub async fn run(base: &Path, token: &Path, count: usize, bytes: usize) -> anyhow::Result<Memory> {
    let work = smrtshare_testkit::tempfile::tempdir_in(base)?;
    let src = work.path().join("src");
    let mut ids = Ids::starting_at(1);
    let mut specs = Vec::new();
    let mut xml_bytes = 0;
    for i in 0..count {
        let record = smrtshare_demo::write_plain_dataset(
            &src,
            &PlainSpec {
                run_dir: format!("r{i:03}/1_A01"),
                movie: format!("m84100_big_{i:03}"),
                well_sample: format!("Well {i}"),
                sample: format!("Sample {i}"),
                name: format!("Big {i}"),
                data_files: 2,
                bytes: 64,
            },
            &mut ids,
        )?;
        xml_bytes = inflate(&record.xml_path, bytes)?;
        specs.push(smrtshare_demo::ProjectSpec {
            id: 2 + i as i64,
            name: format!("Big {i}"),
            members: Vec::new(),
            datasets: vec![record],
        });
    }
    let requests = requests(&specs, &Default::default());
    let complete = |r: &smrtshare_api::staging::v1::ApplyProjectResponse| {
        anyhow::ensure!(r.complete, "project {} incomplete: {r:?}", r.project_id);
        Ok(())
    };
    let start = |name: &str| -> anyhow::Result<Server> {
        let (root, state) = (
            work.path().join(name),
            work.path().join(format!("{name}-state")),
        );
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&state)?;
        Server::start(&root, &src, &state, token, &[])
    };

    let alone = start("alone")?;
    let before = alone.status_kib("VmHWM").unwrap_or(0);
    pass(&alone.client()?, &requests[..1], 1, complete).await?;
    let single = (before, alone.status_kib("VmHWM").unwrap_or(0));
    alone.stop()?;

    let server = start("burst")?;
    let before = server.status_kib("VmHWM").unwrap_or(0);
    let concurrency = std::env::var("SMRTSHARE_BENCH_XML_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(count);
    pass(&server.client()?, &requests, concurrency, complete).await?;
    let burst = (
        before,
        server.status_kib("VmHWM").unwrap_or(0),
        server.status_kib("VmRSS").unwrap_or(0),
    );
    let waits =
        server.said("waiting for XML parsing memory (other large dataset XMLs are being parsed)");
    server.stop()?;
    Ok(Memory {
        requests: count,
        xml_bytes,
        single,
        burst,
        waits,
    })
}
