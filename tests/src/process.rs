//! One child process of the stack: started with its stdout and stderr appended to a log file,
//! waited on through the JSON lines it logs, killed with SIGKILL on demand and on drop, and
//! restartable with the same arguments.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// How long a process may take to log a line the harness waits for.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A program, its arguments and its environment: enough to start it again.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// A spec for `program` with no arguments.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends one flag and its value.
    pub fn flag(self, name: &str, value: impl Into<OsString>) -> Self {
        self.args([OsString::from(name), value.into()])
    }

    /// This spec with `extra` applied: a `--flag value` pair the spec already holds replaces its value,
    /// the rest is appended (clap refuses most flags given twice).
    pub fn with_overrides(mut self, extra: &[String]) -> Self {
        let mut rest = Vec::new();
        let mut i = 0;
        while i < extra.len() {
            let flag = &extra[i];
            let value = extra.get(i + 1).filter(|v| !v.starts_with("--"));
            match value {
                Some(value)
                    if flag.starts_with("--") && self.args.iter().any(|a| a == flag.as_str()) =>
                {
                    self.set_flag(flag, value);
                    i += 2;
                }
                _ => {
                    rest.push(flag.clone());
                    i += 1;
                }
            }
        }
        self.args(rest)
    }

    /// Replaces the value following `name` (used to pin a port chosen by the kernel at the first
    /// start, so a restart listens where the others already point).
    pub fn set_flag(&mut self, name: &str, value: impl Into<OsString>) {
        if let Some(index) = self.args.iter().position(|a| a == name)
            && index + 1 < self.args.len()
        {
            self.args[index + 1] = value.into();
        }
    }
}

/// A running (or killed) child process whose output goes to `log`.
#[derive(Debug)]
pub struct Process {
    name: String,
    spec: Spec,
    log: PathBuf,
    child: Option<Child>,
    /// Byte offset in the log where the current incarnation's output starts.
    log_start: u64,
    starts: u32,
}

impl Process {
    /// Starts `spec`, appending its output to `log`.
    pub fn start(name: &str, spec: Spec, log: &Path) -> anyhow::Result<Self> {
        let mut process = Self {
            name: name.to_owned(),
            spec,
            log: log.to_path_buf(),
            child: None,
            log_start: 0,
            starts: 0,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        if !self.spec.program.is_file() {
            bail!(
                "{} is missing: run `cargo build --workspace --bins` first",
                self.spec.program.display()
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        self.log_start = file.metadata()?.len();
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        // Settings the test does not pass must not leak in from the environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SMRTSHARE_") {
                command.env_remove(key);
            }
        }
        command.env_remove("RUST_LOG");
        for (key, value) in &self.spec.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.spec.program.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file (every incarnation appends to it).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The spec it runs (mutable, to pin addresses before a restart).
    pub fn spec_mut(&mut self) -> &mut Spec {
        &mut self.spec
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap: what `kill -9` does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (what Ctrl-C on `scripts/stack` sends), then waits up to `limit` for a clean
    /// exit; fails when the process had to be killed or exited with an error.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        anyhow::ensure!(sent.success(), "kill -TERM {} failed", child.id());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "{} exited with {status} after SIGTERM; log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                );
                return Ok(());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not stop within {limit:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts it again with the same arguments, appending to the same log.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Fails when the process has exited (with the log's tail).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the current incarnation logs a JSON line whose `message` starts with `message`,
    /// and answers that line.
    pub async fn wait_for_log(&mut self, message: &str) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            let start = usize::try_from(self.log_start).unwrap_or(0).min(text.len());
            for line in String::from_utf8_lossy(&text[start..]).lines() {
                if let Ok(value) = serde_json::from_str::<Value>(line)
                    && value["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
                {
                    return Ok(value);
                }
            }
            self.check_running()?;
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{} logged no {message:?} within {START_TIMEOUT:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
