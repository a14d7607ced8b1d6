//! grpcurl, as an operator runs it against the stack (reflection on, no .proto files).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The grpcurl binary (`SMRTSHARE_GRPCURL`, the workspace's `.tools/bin/grpcurl`, or PATH).
pub fn path() -> PathBuf {
    smrtshare_testkit::grpcurl(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// What one grpcurl run printed.
#[derive(Clone, Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Whether grpcurl exited 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The output parsed as one JSON document (`-format json`, a unary call).
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("{}: not JSON:\n{}", self.command, self.text()))
    }

    /// The output parsed as a sequence of JSON documents (a server stream).
    pub fn json_stream(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<serde_json::Value>()
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: not JSON:\n{}", self.command, self.text()))
    }

    /// Fails unless grpcurl exited 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        anyhow::ensure!(self.success, "{} failed:\n{}", self.command, self.text());
        Ok(self)
    }
}

/// Runs `grpcurl -plaintext [-H 'authorization: Bearer TOKEN'] [-d DATA] ADDRESS ARGS…`.
pub async fn run(
    address: &str,
    token: Option<&str>,
    data: Option<&str>,
    args: &[&str],
) -> anyhow::Result<Output> {
    let tool = path();
    let mut command = tokio::process::Command::from(Command::new(&tool));
    command.arg("-plaintext").args(["-max-time", "30"]);
    let mut shown = vec!["grpcurl".to_owned(), "-plaintext".to_owned()];
    if let Some(token) = token {
        command
            .arg("-H")
            .arg(format!("authorization: Bearer {token}"));
        shown.push("-H 'authorization: Bearer …'".to_owned());
    }
    if let Some(data) = data {
        command.arg("-d").arg(data);
        shown.push(format!("-d '{data}'"));
    }
    command.arg(address).args(args);
    shown.push(address.to_owned());
    shown.extend(args.iter().map(|a| (*a).to_owned()));
    let output = command.output().await.with_context(|| {
        format!(
            "cannot run grpcurl at {} (scripts/test installs it; or set SMRTSHARE_GRPCURL)",
            tool.display()
        )
    })?;
    Ok(Output {
        command: shown.join(" "),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
