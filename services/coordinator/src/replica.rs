//! This process as a replica: its name (the owner of its claims; by default the host name, so a
//! restarted coordinator finds its own claims), its registration, and its heartbeat.
//!
//! A replica that starts under a name takes every claim of that name back at once: the process
//! that held them is gone. To keep that safe when two live processes are given one name by
//! mistake, the start checks the registry: a process of the name that still beats on this host
//! stops the start with an error; one on another host is waited out until its heartbeat lapses.

use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::lease::LeaseTimes;
use crate::store::{ReplicaRow, Store};

/// This process, as the registry records it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The replica name.
    pub name: String,
    /// This process's own id (new at every start).
    pub instance: String,
    /// Host name.
    pub host: String,
    /// The host's boot id.
    pub boot_id: String,
    /// Process id.
    pub pid: i64,
}

impl Identity {
    /// This process under the replica name `name`.
    pub fn of_this_process(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            host: host_name(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|id| id.trim().to_owned())
                .unwrap_or_default(),
            pid: i64::from(std::process::id()),
        }
    }
}

/// The host name: the default replica name, stable across restarts.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What the registry says about the last process of this replica name.
#[derive(Debug, PartialEq, Eq)]
enum Previous {
    /// None, or one that is gone: its claims are taken back at once.
    Gone,
    /// One that still runs on this host.
    Running(i64),
    /// One that beat recently on another host.
    Elsewhere(String),
}

fn previous(row: Option<&ReplicaRow>, me: &Identity, now: i64, lease_ms: i64) -> Previous {
    let Some(row) = row else {
        return Previous::Gone;
    };
    if row.instance == me.instance || now - row.heartbeat_at >= lease_ms {
        return Previous::Gone;
    }
    if row.host == me.host {
        // This host rebooted since (another boot id), or the process is gone, or it is this
        // process (a restart in place, as in a container that keeps its pid).
        let alive = row.boot_id == me.boot_id
            && row.pid != me.pid
            && std::path::Path::new(&format!("/proc/{}", row.pid)).exists();
        return if alive {
            Previous::Running(row.pid)
        } else {
            Previous::Gone
        };
    }
    Previous::Elsewhere(row.host.clone())
}

/// Registers this process under its replica name and takes the name's claims back; answers when
/// that is safe (see the module documentation).
pub async fn register(store: &Store, me: &Identity, lease: LeaseTimes) -> anyhow::Result<()> {
    let waited_since = tokio::time::Instant::now();
    loop {
        let row = store
            .replica(&me.name)
            .await
            .context("reading the replica registry")?;
        match previous(row.as_ref(), me, store.now(), lease.lease_ms()) {
            Previous::Gone => break,
            Previous::Running(pid) => anyhow::bail!(
                "another coordinator runs as replica {:?} (pid {pid} on this host); give each replica its own --replica-name",
                me.name
            ),
            Previous::Elsewhere(host) => {
                anyhow::ensure!(
                    waited_since.elapsed() < 3 * lease.lease,
                    "replica name {:?} is in use by a coordinator on host {host:?} that keeps beating; give each replica its own --replica-name",
                    me.name
                );
                tracing::warn!(
                    replica = me.name,
                    host,
                    "a coordinator on another host beat under this replica name recently; waiting for it to lapse"
                );
                tokio::time::sleep(lease.renew_every).await;
            }
        }
    }
    let now = store.now();
    let row = ReplicaRow {
        name: me.name.clone(),
        instance: me.instance.clone(),
        host: me.host.clone(),
        boot_id: me.boot_id.clone(),
        pid: me.pid,
        started_at: now,
        heartbeat_at: now,
    };
    let [reads, tasks, leases] = store
        .register_replica(&row)
        .await
        .context("registering the replica")?;
    tracing::info!(
        replica = me.name,
        instance = me.instance,
        reads,
        tasks,
        leases,
        "replica registered; its earlier claims were taken back"
    );
    Ok(())
}

/// Beats every `every` until `stop` fires. When another process registered under the name
/// (this one was taken for dead), `lost` fires: the coordinator stops, since its claims may
/// now be another's.
pub fn spawn_heartbeat(
    store: Store,
    me: Identity,
    every: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match store.beat(&me.name, &me.instance).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        replica = me.name,
                        "another process registered under this replica name; stopping"
                    );
                    lost.cancel();
                    return;
                }
                Err(error) => tracing::warn!(%error, "recording the heartbeat failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            name: "r".into(),
            instance: "new".into(),
            host: "h".into(),
            boot_id: "b".into(),
            pid: i64::from(std::process::id()),
        }
    }

    fn row(host: &str, boot_id: &str, pid: i64, heartbeat_at: i64) -> ReplicaRow {
        ReplicaRow {
            name: "r".into(),
            instance: "old".into(),
            host: host.into(),
            boot_id: boot_id.into(),
            pid,
            started_at: 0,
            heartbeat_at,
        }
    }

    #[test]
    fn a_restart_takes_over_and_a_second_process_does_not() {
        let me = me();
        assert_eq!(previous(None, &me, 100, 15), Previous::Gone);
        // Lapsed heartbeat.
        assert_eq!(
            previous(Some(&row("h", "b", 1, 0)), &me, 100, 15),
            Previous::Gone
        );
        // A dead process on this host (no such pid), or this very pid (a restart in place).
        assert_eq!(
            previous(Some(&row("h", "b", i64::MAX, 95)), &me, 100, 15),
            Previous::Gone
        );
        assert_eq!(
            previous(Some(&row("h", "b", me.pid, 95)), &me, 100, 15),
            Previous::Gone
        );
        // The host rebooted.
        assert_eq!(
            previous(Some(&row("h", "other boot", 1, 95)), &me, 100, 15),
            Previous::Gone
        );
        // A live process on this host: pid 1 always exists.
        assert_eq!(
            previous(Some(&row("h", "b", 1, 95)), &me, 100, 15),
            Previous::Running(1)
        );
        assert_eq!(
            previous(Some(&row("elsewhere", "x", 1, 95)), &me, 100, 15),
            Previous::Elsewhere("elsewhere".into())
        );
    }
}
