//! The five processes of the stack and where their binaries are.

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;

/// One process of the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// The SMRT Link stand-in.
    SmrtLink,
    /// The Globus stand-in.
    Globus,
    /// smrtshare-staging.
    Staging,
    /// smrtshare-access.
    Access,
    /// smrtshare-coordinator.
    Coordinator,
}

impl Service {
    /// Every process, in start order.
    pub const ALL: [Self; 5] = [
        Self::SmrtLink,
        Self::Globus,
        Self::Staging,
        Self::Access,
        Self::Coordinator,
    ];
    /// The three smrtshare gRPC services.
    pub const GRPC: [Self; 3] = [Self::Staging, Self::Access, Self::Coordinator];

    /// Short name (log file stem).
    pub fn name(self) -> &'static str {
        match self {
            Self::SmrtLink => "smrtlink",
            Self::Globus => "globus",
            Self::Staging => "staging",
            Self::Access => "access",
            Self::Coordinator => "coordinator",
        }
    }

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::SmrtLink => "smrtshare-smrtlink-standin",
            Self::Globus => "smrtshare-globus-standin",
            Self::Staging => "smrtshare-staging",
            Self::Access => "smrtshare-access",
            Self::Coordinator => "smrtshare-coordinator",
        }
    }

    /// The fully qualified gRPC service name, for the three smrtshare services.
    pub fn grpc_name(self) -> Option<&'static str> {
        match self {
            Self::Staging => Some(smrtshare_api::service_names::STAGING),
            Self::Access => Some(smrtshare_api::service_names::ACCESS),
            Self::Coordinator => Some(smrtshare_api::service_names::COORDINATOR),
            Self::SmrtLink | Self::Globus => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The built binary `name`: `<target>/debug/<name>`, where `<target>` is `CARGO_TARGET_DIR` or
/// the workspace's `target/`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                crate::workspace_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let path = target.join("debug").join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the binaries first with `cargo build --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}
