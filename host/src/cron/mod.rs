//! Cron jobs: services with a schedule. Each firing starts a fresh
//! instance that runs to completion; runs are kept in a history.
//!
//! - `schedule`: the dialect (5-field cron, macros, `@every`), next-fire times.
//! - `job`: one job's task: sleep, fire, skip, time out, trigger by hand.
//! - `history`: the last runs of every job, on disk.

pub mod history;
pub mod job;
pub mod schedule;

pub use history::{Histories, History, RUNS_KEPT};
pub use job::{Job, JobSpec, Started, Trigger};
pub use schedule::{parse_duration, Schedule, ScheduleError};
