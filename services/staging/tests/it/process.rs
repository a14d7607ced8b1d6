//! The real `smrtshare-staging` binary as a child process, its JSON log read as it comes.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The staging binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_smrtshare-staging");

/// A running server and its log.
pub struct Spawned {
    pub child: Child,
    /// Its gRPC address.
    pub address: String,
    events: Receiver<serde_json::Value>,
    /// Every event read so far.
    pub seen: Vec<serde_json::Value>,
}

impl Spawned {
    /// Starts `command` (the binary, or a wrapper that execs it) with `--listen 127.0.0.1:0
    /// --log-format json` appended to its arguments by the caller, and waits for its address.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event = serde_json::from_str::<serde_json::Value>(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line }));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let mut spawned = Self {
            child,
            address: String::new(),
            events,
            seen: Vec::new(),
        };
        let listening = spawned.wait_for("grpc server listening");
        spawned.address = listening["address"].as_str().unwrap_or_default().to_owned();
        spawned
    }

    /// Waits (at most a minute) for the first event whose message is `message`.
    pub fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if event["message"] == message {
                        return event;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no {message:?} in the server's log; it said:\n{}",
                    self.seen
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// `http://address`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
