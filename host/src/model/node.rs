//! Hosts: the machines of a cluster, each running the instances placed on
//! it. On one machine, the daemon itself is the only host.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A live host as it reports itself (kept under its lease in a cluster).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    /// Its name (`mesh up --node`), unique in the cluster.
    pub name: String,
    /// Its data directory's own id: the same host restarted (on another
    /// port, say) has the same.
    #[serde(default)]
    pub id: String,
    /// Where the other hosts reach it (`mesh up --advertise`).
    pub address: String,
    /// What it can run: `wasm`, and `container` when it can.
    pub runs: Vec<String>,
    /// Live instances it has room for (`--max-instances`).
    pub capacity_instances: u32,
    /// Memory of the machine, in bytes.
    pub capacity_memory_bytes: u64,
    /// Instances live on it now.
    pub used_instances: u32,
    /// The code it holds (at most [`Node::MAX_HOLDS`] digests): the
    /// placer prefers hosts that need not fetch a service's code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<super::Digest>,
    /// When this run of the host started.
    pub started_at: DateTime<Utc>,
}

impl Node {
    /// Most digests a host lists as held (its record stays small; code
    /// beyond it is simply not preferred).
    pub const MAX_HOLDS: usize = 1000;
}

/// Whether a host takes instances.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Alive and taking instances.
    Ready,
    /// Alive, and its instances are being moved away.
    Draining,
    /// Not heard from within its lease (drained or not).
    Down,
}

impl NodeState {
    /// The word `node ls` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// A host being drained: kept in desired state until it is resumed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drain {
    /// Since when.
    pub since: DateTime<Utc>,
}

/// Where a service's instances run in a cluster: the leader's decision,
/// kept in desired state, which each host follows for its own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Placement {
    /// Environment.
    pub env: String,
    /// Stack.
    pub stack: String,
    /// Service.
    pub service: String,
    /// Each instance number (1-based) and the host it runs on.
    pub numbers: std::collections::BTreeMap<u32, String>,
}

impl Placement {
    /// The key of the service it places.
    pub fn key(&self) -> super::ServiceKey {
        super::ServiceKey {
            env: self.env.clone(),
            stack: self.stack.clone(),
            name: self.service.clone(),
        }
    }

    /// The numbers placed on `node`.
    pub fn on(&self, node: &str) -> Vec<u32> {
        self.numbers
            .iter()
            .filter(|(_, n)| n.as_str() == node)
            .map(|(&number, _)| number)
            .collect()
    }
}
