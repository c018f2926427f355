//! Instances: where each one is in its life, as the supervisor reports it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where one instance is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Loading code and instantiating.
    Starting,
    /// Running guest code.
    Running,
    /// Ended and waiting out its back-off before the next start.
    Backoff,
    /// Cannot start with the current settings (e.g. the command names no
    /// component); not retried until the service or its stack changes.
    Crashed,
    /// Ran to completion and will not be restarted (one-shot runs).
    Exited,
    /// Stopped by the platform (scale down, delete, shutdown).
    Stopped,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Backoff => "backoff",
            InstanceState::Crashed => "crashed",
            InstanceState::Exited => "exited",
            InstanceState::Stopped => "stopped",
        })
    }
}

/// What the supervisor knows of one instance right now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    /// `<service>.<n>`, stable across restarts of the same slot.
    pub id: String,
    /// Current state.
    pub state: InstanceState,
    /// Restarts since the slot started or its settings last changed.
    pub restarts: u32,
    /// Exit code of the last run, if it exited with one (traps have none).
    pub exit_code: Option<i32>,
    /// Human explanation of the state, e.g. `exceeded memory limit 64 MiB`.
    pub message: Option<String>,
    /// When the current (or last) run started.
    pub started_at: Option<DateTime<Utc>>,
    /// Stack version the instance runs.
    pub version: u64,
    /// While in `backoff`: how long the wait before the next start is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// `wasm` (a store) or `container`.
    #[serde(default = "wasm_kind")]
    pub kind: String,
    /// The host it runs on.
    #[serde(default)]
    pub node: String,
}

fn wasm_kind() -> String {
    "wasm".into()
}

impl InstanceStatus {
    /// A slot about to start its first run.
    pub fn starting(id: String, version: u64) -> InstanceStatus {
        InstanceStatus {
            id,
            state: InstanceState::Starting,
            restarts: 0,
            exit_code: None,
            message: None,
            started_at: None,
            version,
            backoff_ms: None,
            kind: wasm_kind(),
            node: String::new(),
        }
    }

    /// Moves to `state`; the back-off wait only means something in
    /// `backoff`, so any other state clears it.
    pub fn enter(&mut self, state: InstanceState) {
        self.state = state;
        if state != InstanceState::Backoff {
            self.backoff_ms = None;
        }
    }

    /// Enters `backoff` after a run ended with `message`, restarting after
    /// `delay`.
    pub fn back_off(&mut self, exit_code: Option<i32>, message: String, delay: Duration) {
        self.state = InstanceState::Backoff;
        self.restarts = self.restarts.saturating_add(1);
        self.exit_code = exit_code;
        self.message = Some(message);
        self.backoff_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    }

    /// The message as `service ls` shows it: in `backoff`, with the wait,
    /// e.g. `exited with code 3; back-off 3.2s after 5 restarts`.
    pub fn describe(&self) -> String {
        let message = self.message.clone().unwrap_or_default();
        match (self.state, self.backoff_ms) {
            (InstanceState::Backoff, Some(ms)) => {
                let plural = if self.restarts == 1 { "" } else { "s" };
                format!(
                    "{message}; back-off {:.1}s after {} restart{plural}",
                    ms as f64 / 1000.0,
                    self.restarts
                )
            }
            _ => message,
        }
    }
}

/// A service's last rollout on one host: its instances replaced one at a
/// time by ones running new code or settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rollout {
    /// The revision of desired state that started it.
    pub revision: u64,
    /// The stack version it rolls from.
    pub from_version: u64,
    /// The stack version it rolls to.
    pub to_version: u64,
    /// `rolling`, `done` or `failed`.
    pub state: RolloutState,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

impl Rollout {
    /// Ends it as `state`, for `reason` when it stopped.
    pub fn end(&mut self, state: RolloutState, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
        self.ended_at = Some(Utc::now());
    }
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// New instances are coming up, old ones going.
    Rolling,
    /// Every instance runs the new code or settings.
    Done,
    /// A new instance did not come up in time: the previous instances
    /// were restored.
    Failed,
}
