//! What the daemon tells people about what runs: instance output (logs),
//! what happened (events) and counters (metrics). It depends on the model
//! alone; the layers that run services write to it.
//!
//! - `logs`: instance output per service, bounded, followable.
//! - `events`: what happened, for `mesh events`.
//! - `metrics`: counters and the Prometheus text at `/metrics`.
//! - `recent`: each service's requests of the last minutes, in windows.
//! - `throttle`: a recurring failure reported once per interval.
//! - `writer`: the one task that writes every log, event and run record to
//!   disk, behind a bounded queue, so no async thread blocks on a file.

pub mod events;
pub mod logs;
pub mod metrics;
pub mod recent;
pub mod throttle;
pub mod writer;

pub use events::{Event, Events};
pub use logs::{LogLine, LogStream, Logs, ServiceLog, Stream};
pub use metrics::{CallCounts, CalledBy, Metrics, ServiceMetrics};
pub use recent::{now_secs, UsageStats, WindowStats};
pub use throttle::Throttle;
pub use writer::DiskWriter;
