//! Configuration: clap flags, each with its environment variable, turned into a checked [`Config`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smrtshare_common::config::{LogArgs, ServerArgs};
use smrtshare_common::server::ServerOptions;

use crate::fs::HIDDEN_DIR;
use crate::names::Templates;
use crate::xml::Limits;

/// The port staging listens on unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);

/// The staging service: keeps one directory of hard-linked dataset files per SMRT Link project
/// under a Globus collection root.
#[derive(Parser, Debug, Clone)]
#[command(name = "smrtshare-staging", version, about, long_about = None)]
pub struct Args {
    /// The staging root (the Globus collection root). It must exist; it is never created or removed.
    #[arg(long, env = "SMRTSHARE_STAGING_ROOT")]
    pub root: PathBuf,

    /// A directory under which dataset XML and data files may lie (repeat the flag, or separate
    /// with commas in the variable). Must be on the staging root's filesystem for hard links.
    #[arg(
        long = "source-root",
        env = "SMRTSHARE_STAGING_SOURCE_ROOTS",
        value_delimiter = ',',
        required = true
    )]
    pub source_roots: Vec<PathBuf>,

    /// Mode of every directory staging creates, in octal (1775: group-writable with the sticky bit,
    /// so group members add and remove their own files but not others').
    #[arg(long, env = "SMRTSHARE_STAGING_DIR_MODE", default_value = "1775", value_parser = parse_mode)]
    pub dir_mode: u32,

    /// The records database (SQLite; created when missing). Default: `<root>/.smrtshare/staging.sqlite3`,
    /// in the root's hidden area, which no Globus user can read.
    #[arg(long, env = "SMRTSHARE_STAGING_DATABASE")]
    pub database: Option<PathBuf>,

    /// Name of a plain dataset's directory; placeholders {movie} {name} {well_sample} {sample}
    /// {barcode} {uuid}. An orphaned child (its parent not in the project) uses its sample as {name}.
    #[arg(
        long,
        env = "SMRTSHARE_STAGING_DATASET_TEMPLATE",
        default_value = "Movie {movie} - {name}"
    )]
    pub dataset_template: String,

    /// Name of a demultiplexed parent's directory; {n} is the number of children.
    #[arg(
        long,
        env = "SMRTSHARE_STAGING_PARENT_TEMPLATE",
        default_value = "Movie {movie} - {well_sample} ({n} barcoded samples)"
    )]
    pub parent_template: String,

    /// Name of a child's directory inside its parent's.
    #[arg(
        long,
        env = "SMRTSHARE_STAGING_CHILD_TEMPLATE",
        default_value = "{sample} ({barcode})"
    )]
    pub child_template: String,

    /// Name of the directory holding a parent's supplemental files.
    #[arg(
        long,
        env = "SMRTSHARE_STAGING_SUPPLEMENTAL_NAME",
        default_value = "Supplemental Run Data"
    )]
    pub supplemental_name: String,

    /// Name of an analysis job's directory in the project directory; placeholders {id} (SMRT
    /// Link's job id) and {name} (the job's name).
    #[arg(
        long,
        env = "SMRTSHARE_STAGING_ANALYSIS_TEMPLATE",
        default_value = "Analysis {id}: {name}"
    )]
    pub analysis_template: String,

    /// Stage the dataset XMLs among an analysis job's outputs (file types `PacBio.DataSet.*`),
    /// which are left out by default: they name paths on the core's filesystem.
    #[arg(long, env = "SMRTSHARE_STAGING_ANALYSIS_INCLUDE_DATASET_XML")]
    pub analysis_include_dataset_xml: bool,

    /// Stage an analysis job's internal files too (logs, its datastore, JSON job metadata and
    /// chunk lists: file types `PacBio.FileTypes.log`, `.Datastore`, `.json`, `.CHUNK`, `.GCHUNK`,
    /// `.SCHUNK`), which are left out by default.
    #[arg(long, env = "SMRTSHARE_STAGING_ANALYSIS_INCLUDE_INTERNAL")]
    pub analysis_include_internal: bool,

    /// Replace the characters Windows cannot store (<>:"\|?*) in names staging makes, and drop
    /// trailing dots and spaces (Globus users download to Windows too).
    #[arg(long, env = "SMRTSHARE_STAGING_WINDOWS_SAFE_NAMES")]
    pub windows_safe_names: bool,

    /// Time limit on the filesystem work of one request (NFS or Lustre can hang), for example `2m`.
    /// A request that exceeds it answers DEADLINE_EXCEEDED; the work finishes in the background.
    #[arg(long, env = "SMRTSHARE_STAGING_FS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    pub fs_timeout: Duration,

    /// Largest dataset XML file read, in bytes.
    #[arg(long, env = "SMRTSHARE_STAGING_MAX_XML_BYTES", default_value_t = Limits::default().max_bytes)]
    pub max_xml_bytes: u64,

    /// Memory shared by every dataset XML parse, in bytes: each parse takes 6 times its file's
    /// size from it while it runs (the most a parse can keep), and parses beyond it wait (a wait is
    /// logged). One XML larger than it allows is parsed alone.
    #[arg(long, env = "SMRTSHARE_STAGING_XML_PARSE_MEMORY", default_value_t = crate::budget::DEFAULT_BYTES)]
    pub xml_parse_memory: u64,

    /// Parsed dataset XMLs, source directory listings and resolved dataset layouts kept between
    /// requests, at most this many of each (each is reused only while its file or directory, or
    /// for a layout every XML and directory it was resolved from, keeps the same inode, size and
    /// ctime); 0 turns the cache off.
    #[arg(long, env = "SMRTSHARE_STAGING_SOURCE_CACHE_ENTRIES", default_value_t = crate::sourcecache::DEFAULT_CAPACITY)]
    pub source_cache_entries: usize,

    /// Server flags.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Log flags.
    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub metrics: smrtshare_common::metrics::MetricsArgs,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{text:?} is not an octal mode such as 1775"))?;
    if mode > 0o7777 {
        return Err(format!("{text:?} is more than 7777"));
    }
    if mode & 0o700 != 0o700 {
        return Err(format!(
            "{text:?} must give the owner (the staging service) rwx"
        ));
    }
    Ok(mode)
}

/// Checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The staging root.
    pub root: PathBuf,
    /// Source roots.
    pub source_roots: Vec<PathBuf>,
    /// Directory mode.
    pub dir_mode: u32,
    /// Records database file.
    pub database: PathBuf,
    /// Naming templates.
    pub templates: Templates,
    /// Which outputs of an analysis job are staged.
    pub job_rules: crate::analysis::JobRules,
    /// Time limit on one request's filesystem work.
    pub fs_timeout: Duration,
    /// XML limits.
    pub limits: Limits,
    /// Memory shared by every XML parse, in bytes.
    pub parse_memory: u64,
    /// Parsed dataset XMLs, source listings and resolved layouts kept between requests, of each
    /// (0: none).
    pub source_cache_entries: usize,
    /// The gRPC server's options (auth, TLS, limits).
    pub server: ServerOptions,
    /// Test hooks (none in production).
    pub hooks: crate::hooks::Hooks,
}

impl Config {
    /// Defaults for a root and its source roots, with the given server options (tests, embedding).
    pub fn new(root: PathBuf, source_roots: Vec<PathBuf>, server: ServerOptions) -> Self {
        Self {
            database: root.join(HIDDEN_DIR).join("staging.sqlite3"),
            root,
            source_roots,
            dir_mode: 0o1775,
            templates: Templates::default(),
            job_rules: crate::analysis::JobRules::default(),
            fs_timeout: Duration::from_secs(300),
            limits: Limits::default(),
            parse_memory: crate::budget::DEFAULT_BYTES,
            source_cache_entries: crate::sourcecache::DEFAULT_CAPACITY,
            server,
            hooks: crate::hooks::Hooks::default(),
        }
    }

    /// The configuration the flags describe (reads the token file).
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let mut config = Self::new(
            args.root.clone(),
            args.source_roots.clone(),
            args.server.options()?,
        );
        config.dir_mode = args.dir_mode;
        if let Some(database) = &args.database {
            config.database = database.clone();
        }
        config.templates = Templates {
            dataset: args.dataset_template.clone(),
            parent: args.parent_template.clone(),
            child: args.child_template.clone(),
            supplemental: args.supplemental_name.clone(),
            job: args.analysis_template.clone(),
            windows_safe: args.windows_safe_names,
        };
        config.job_rules = crate::analysis::JobRules {
            dataset_xml: args.analysis_include_dataset_xml,
            internal: args.analysis_include_internal,
        };
        config.fs_timeout = args.fs_timeout;
        config.limits.max_bytes = args.max_xml_bytes;
        config.parse_memory = args.xml_parse_memory;
        config.source_cache_entries = args.source_cache_entries;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_and_keep_the_owner_in() {
        assert_eq!(parse_mode("1775"), Ok(0o1775));
        assert_eq!(parse_mode("0o2770"), Ok(0o2770));
        assert!(parse_mode("8").is_err());
        assert!(parse_mode("17775").is_err());
        assert!(parse_mode("0575").unwrap_err().contains("owner"));
    }

    #[test]
    fn flags_and_defaults_parse() {
        let args = Args::try_parse_from([
            "smrtshare-staging",
            "--root",
            "/srv/globus",
            "--source-root",
            "/data/a",
            "--source-root",
            "/data/b",
            "--no-auth",
            "--windows-safe-names",
        ])
        .unwrap();
        let config = Config::from_args(&args).unwrap();
        assert_eq!(
            config.source_roots,
            vec![PathBuf::from("/data/a"), PathBuf::from("/data/b")]
        );
        assert_eq!(config.dir_mode, 0o1775);
        assert_eq!(
            config.database,
            PathBuf::from("/srv/globus/.smrtshare/staging.sqlite3")
        );
        assert!(config.templates.windows_safe);
        assert!(
            Args::try_parse_from(["smrtshare-staging", "--root", "/x"]).is_err(),
            "a source root is required"
        );
    }
}
