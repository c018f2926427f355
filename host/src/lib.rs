//! The mesh daemon: hosts WebAssembly components as services.
//!
//! # Layers
//!
//! Each layer imports only the layers listed below it, never one above,
//! and no two files import each other:
//!
//! ```text
//! daemon      wires everything; the converge loop (store -> services, cron)
//! api         the HTTP/JSON control API
//! ingress     public HTTP(S) listeners
//! cron        schedules, jobs, run history
//! services    supervisor, slots, pools, rollouts, names, routes, sessions
//! runtime     wasmtime alone: engine, code cache, stores, limits, hooks
//! telemetry   logs, events, metrics, the disk writer
//! store       desired state over a KV (SQLite), code blobs
//! model       the words of DESIGN.md as types; config; auth
//! ```
//!
//! Data flows one way: the control API (`api`) writes desired state to the
//! store (`store`); the daemon's converge loop reads each new snapshot and
//! hands it to the services layer (`services`) and to cron (`cron`), which
//! converge running instances to it through the runtime (`runtime`). The
//! runtime knows no service: where an instance's outgoing calls go is
//! decided by the services layer through the runtime's `Dispatch` trait.
//! Status flows back up through the services layer for reading.
//!
//! `scripts/check-layers.sh` checks the rule from the `use crate::...`
//! lines of every file (a layer may use its own modules and those listed
//! below it), and that no two files import each other; `scripts/test.sh`
//! runs it.
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod config;
pub mod container;
pub mod content;
pub mod cron;
pub mod daemon;
pub mod ingress;
pub mod model;
pub mod runtime;
pub mod services;
pub mod store;
pub mod telemetry;

pub use config::DaemonConfig;
pub use daemon::{run, DaemonInfo, DAEMON_FILE};
