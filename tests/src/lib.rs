//! Harness for the whole-system tests of the real binaries: [`Stack`] starts demo data, the SMRT
//! Link and Globus stand-ins and the three services as child processes, wired as an operator
//! would; [`world`] reads what SMRT Link says and checks the staged tree, the Globus rules and
//! the coordinator's changes against it.

pub mod browser;
pub mod globus;
pub mod grpcurl;
pub mod logs;
pub mod monitoring;
pub mod process;
pub mod secrets;
pub mod service;
pub mod smrtlink;
pub mod stack;
pub mod world;

use std::path::{Path, PathBuf};

pub use stack::{Service, Stack, StackOptions};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    smrtshare_testkit::workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")))
}
