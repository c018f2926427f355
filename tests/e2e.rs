//! Every end-to-end test, in one binary: linked once, and its tests run
//! side by side (each on its own host, its own ports and data directory),
//! so the slow ones (a lease running out, a container that never listens)
//! overlap instead of queueing behind each other's binary. One module per
//! area; `cargo test -p mesh-cli --test e2e cluster::` runs one of them.

mod support;

mod abuse;
mod acme;
mod bad_input;
mod cluster;
mod container_abuse;
mod containers;
mod cron;
mod daemon;
mod dashboard;
mod dns;
mod lifecycle;
mod monitoring;
mod readme;
mod registries;
mod releases;
mod stacks;
mod tenants;
mod toolchains;
mod web;
mod workers;
