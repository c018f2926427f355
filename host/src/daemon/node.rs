//! This host as a member of a cluster: its record in the shared store,
//! bound to a lease it keeps alive, so the other hosts (and the leader
//! that places instances) know it is up, what it can take and what it
//! holds; when it dies its lease runs out and its record goes with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::DaemonConfig;
use crate::model::Node;
use crate::runtime::seats::Seat;
use crate::runtime::Engine;
use anyhow::Context as _;

use crate::store::{encode, key, LeaseId, Store, Txn};

/// How long a host stays listed after its last heartbeat.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a host renews its lease and reports what it holds.
pub const BEAT: Duration = Duration::from_secs(1);

/// What this host reports about itself.
pub struct Me {
    /// The record, but for what changes.
    pub node: Node,
    /// Its instances and code.
    pub engine: Arc<Engine>,
}

impl Me {
    /// This host as `config` makes it: `id` its data directory's, reached
    /// at `address`, running containers when `containers`, its instances
    /// and code those of `engine`.
    pub fn new(
        config: &DaemonConfig,
        id: String,
        address: String,
        containers: bool,
        engine: Arc<Engine>,
    ) -> Me {
        let mut runs = vec!["wasm".to_string()];
        if containers {
            runs.push("container".to_string());
        }
        Me {
            node: Node {
                name: config.node.clone(),
                id,
                address,
                runs,
                capacity_instances: config.max_instances,
                capacity_memory_bytes: machine_memory(),
                used_instances: 0,
                holds: Vec::new(),
                started_at: chrono::Utc::now(),
            },
            engine,
        }
    }

    fn now(&self) -> Node {
        let mut holds = self.engine.content().stored_digests();
        holds.sort_unstable();
        holds.truncate(Node::MAX_HOLDS);
        Node {
            used_instances: self.engine.seats().live(Seat::Service),
            holds,
            ..self.node.clone()
        }
    }
}

/// Registers this host, failing when another host (another data
/// directory) already holds its name.
pub async fn join(store: &Store, me: &Me) -> anyhow::Result<()> {
    let hosts = store.nodes().await?;
    if let Some(other) = hosts.live.iter().find(|n| n.name == me.node.name) {
        anyhow::ensure!(
            other.id == me.node.id,
            "a host named `{}` is already up at {} (--node names must differ; a dead host's name is free {} s after its death)",
            other.name,
            other.address,
            LEASE_TTL.as_secs()
        );
    }
    // Remembered after it dies, so `node ls` can say it is down.
    store
        .commit(Txn::new().put(key::known_node(&me.node.name), encode(&me.node)))
        .await
        .context("recording this host")?;
    Ok(())
}

/// Keeps this host's record alive until `stop`, then removes it. `lease`
/// holds the lease while this host is a member, `None` while it is not
/// (not yet, or its lease ran out): a host that is not a member runs
/// nothing, since its instances may be placed elsewhere already.
pub fn keep(
    store: Store,
    me: Me,
    lease: watch::Sender<Option<LeaseId>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let granted = match store.grant_lease(LEASE_TTL).await {
                Ok(granted) => granted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take a lease for this host; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(BEAT) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            let ended = beat(&store, &me, granted, &lease, &mut stop).await;
            lease.send_replace(None);
            if ended {
                // Leaving: the others see it at once, not a lease later.
                let _ = store.revoke_lease(granted).await;
                return;
            }
        }
    })
}

/// Writes the record under `granted` and renews it every beat; returns
/// `true` when stopped, `false` when the lease was lost (or not renewed
/// for a whole lease period, so it may be).
async fn beat(
    store: &Store,
    me: &Me,
    granted: LeaseId,
    lease: &watch::Sender<Option<LeaseId>>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut written: Option<Node> = None;
    let mut renewed = Instant::now();
    let mut stored = me.engine.content().stored_changes();
    loop {
        let node = me.now();
        if written.as_ref() != Some(&node) {
            match store
                .put_leased(key::node(&node.name), &node, granted, false)
                .await
            {
                Ok(_) => {
                    written = Some(node);
                    lease.send_if_modified(|l| {
                        let new = l.is_none();
                        *l = Some(granted);
                        new
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot report this host"),
            }
        }
        stored.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(BEAT) => {}
            _ = stop.changed() => return true,
            // Code came or went: said at once, renewed at the next beat.
            _ = stored.changed() => {
                if renewed.elapsed() < BEAT {
                    continue;
                }
            }
        }
        match store.keep_lease(granted).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!("this host's lease ran out (the store was out of reach too long): joining again");
                return false;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew this host's lease"),
        }
        if renewed.elapsed() >= LEASE_TTL {
            tracing::warn!("this host's lease was not renewed for {LEASE_TTL:?}: it may have run out, so this host stops its instances until it joins again");
            return false;
        }
    }
}

/// Memory of the machine, in bytes (0 when unknown).
fn machine_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
