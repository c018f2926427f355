//! The daemon, as a value in three steps after linkerd2-proxy's
//! `Config::build → App::spawn → drain`: [`Host::build`] opens the data
//! directory and the store and makes every part, [`Host::spawn`] serves
//! the control API and the ingress and runs the converge loop (and, in a
//! cluster, this host's membership), and [`Running::shutdown`] drains and
//! stops them in order. [`run`] is `mesh up`: the three, with SIGTERM or
//! Ctrl-C between the last two.
//!
//! - `build`: the data directory, the store and the parts.
//! - `serve`: the tasks of a running host.
//! - `shutdown`: stopping them in order.
//! - `listen`: the listeners, `daemon.json`'s view of them, the API's.
//! - `converge`: the loop that hands each new revision of desired state
//!   to the services layer and cron, and collects unused code.
//! - `files`: the data directory's lock and `daemon.json`.
//! - `firings`: cron firings claimed in a cluster's store, once each.
//! - `node`: this host's record in a cluster's store, under a lease.
//! - `peers`: the other hosts, as this one fetches code from them.
//! - `placer`: the leader's placing of instances on hosts.

mod build;
mod converge;
mod files;
mod firings;
mod listen;
mod node;
mod peers;
mod placer;
mod serve;
mod shutdown;

pub use build::Host;
pub use converge::Converge;
pub use files::{DaemonInfo, DAEMON_FILE};
pub use serve::Running;

use crate::config::DaemonConfig;

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let running = Host::build(config).await?.spawn().await?;
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// SIGTERM or Ctrl-C, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
