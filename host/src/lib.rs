//! The mesh daemon: hosts WebAssembly components as services.
//!
//! Data flows one way: the control API (`api`) writes desired state to the
//! state store (`store`); the supervisor (`supervisor`) reads it and
//! converges running instances (`instance`) to it, loading code through the
//! engine (`engine`), which compiles each component once and caches it.
//! Status flows back from the supervisor to the API for reading.
//!
//! - `model`: the words of DESIGN.md as types.
//! - `config`: the daemon's one configuration struct.
//! - `store`: desired state over an etcd-shaped KV (SQLite embedded).
//! - `blobs`: content-addressed code storage.
//! - `engine`: the wasmtime engine, linker, epoch ticker and code cache.
//! - `instance`: one store, its limits, and how a run ended.
//! - `supervisor`: desired versus actual, restarts, back-off, rollouts.
//! - `cron`: schedules, cron job firings and their run history.
//! - `session`: interactive runs: an instance attached to the caller's terminal.
//! - `events`: what happened, for `mesh events`.
//! - `metrics`: counters and the Prometheus text at `/metrics`.
//! - `logs`: instance output, per service, bounded, followable.
//! - `api`: the HTTP/JSON control API.
//! - `dns`: intra-DNS names, the outgoing-request hook, outbound policy.
//! - `ingress`: the public HTTP(S) listeners, endpoints, routing.
//! - `web`: web service instances: reuse, queueing, 503s, trap retirement.
//! - `auth`: tokens.
//! - `daemon`: wires the parts together and runs them.
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod dns;
pub mod engine;
pub mod events;
pub mod ingress;
pub mod instance;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod session;
pub mod store;
pub mod supervisor;
pub mod web;

pub use config::DaemonConfig;
pub use daemon::{run, DaemonInfo, DAEMON_FILE};
