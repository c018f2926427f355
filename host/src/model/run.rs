//! Cron runs: how each firing of a job started and ended.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How one cron run ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited non-zero, trapped, ran out of memory or could not start.
    Failed,
    /// Not started: the previous run was still going at the firing time.
    Skipped,
    /// Stopped after the job's `--timeout`.
    TimedOut,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::TimedOut => "timed_out",
        })
    }
}

/// What started a cron run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    /// The schedule fired.
    Schedule,
    /// `mesh svc trigger`.
    Manual,
}

/// One firing of a cron job: a fresh instance run to completion (or a
/// firing skipped because the previous run was still going).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Run {
    /// 1, 2, 3, ... per job, kept across daemon restarts.
    pub number: u64,
    /// Instance id of the run, `<service>.r<number>`; `None` when skipped.
    pub instance: Option<String>,
    /// What started it.
    pub trigger: RunTrigger,
    /// When the schedule said it should start (the trigger time for manual runs).
    pub scheduled_at: DateTime<Utc>,
    /// When it really started.
    pub started_at: DateTime<Utc>,
    /// How long it ran; 0 for a skipped firing.
    pub duration_ms: u64,
    /// Microseconds from the firing to the fresh instance running guest
    /// code (loading and instantiating); `None` when it never ran.
    #[serde(default)]
    pub start_us: Option<u64>,
    /// Exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// How it ended.
    pub status: RunStatus,
    /// Why, for people: `exited with code 3`, `timed out after 2s`.
    pub message: Option<String>,
}
