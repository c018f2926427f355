//! The mesh daemon: hosts WebAssembly components as services.
//!
//! # Layers
//!
//! Each layer (a line below) imports only the layers listed below it,
//! never one above; modules of the same layer never use each other; and
//! no two files import each other:
//!
//! ```text
//! daemon               wires everything; the converge loop (store -> services, cron)
//! api                  the HTTP/JSON control API
//! cron, ingress        schedules, jobs, run history; public HTTP(S) listeners
//! services, registry   supervisor, slots, pools, rollouts, names, routes, sessions;
//!                      code pulled from OCI registries, pinned by digest
//! runtime, container   wasmtime alone: engine, code cache, stores, limits, hooks;
//!                      OCI images run through youki: images, bundles, shim, network
//! store, telemetry,    desired state over a KV (SQLite, etcd); logs, events,
//!   content            metrics, the disk writer; code kept by digest: blobs,
//!                      unpacked files and images, and their collection
//! config               the daemon's settings, built once from flags
//! model, auth, sealed  the words of DESIGN.md as types; API tokens; values
//!                      sealed under a key kept outside the store
//! ```
//!
//! Data flows one way: the control API (`api`) writes desired state to the
//! store (`store`); the daemon's converge loop reads each new snapshot and
//! hands it to the services layer (`services`) and to cron (`cron`), which
//! converge running instances to it through the runtime (`runtime`) and
//! the container layer (`container`). The runtime knows no service: where
//! an instance's outgoing calls go is decided by the services layer
//! through the runtime's `Dispatch` trait. The services layer never reads
//! the store: it is handed desired state. Status flows back up through the
//! services layer for reading.
//!
//! `scripts/check-layers.py` checks these rules from the crate paths every
//! file uses (a layer may use its own modules and those listed below it;
//! `services` never uses `store`), and that no two files import each
//! other; `scripts/test.sh` runs it.
#![deny(missing_docs)]

pub mod acme;
pub mod api;
pub mod auth;
pub mod config;
pub mod container;
pub mod content;
pub mod cron;
pub mod daemon;
pub mod ingress;
pub mod model;
pub mod registry;
pub mod runtime;
pub mod sealed;
pub mod services;
pub mod store;
pub mod telemetry;

pub use config::DaemonConfig;
pub use daemon::{run, DaemonInfo, DAEMON_FILE};
