//! Stopping a running host, in order: the listeners drain their
//! connections while the instances serving them still run, the host
//! leaves its cluster, then cron jobs, instances and containers stop,
//! what is written reaches the disk, `daemon.json` goes, and last the
//! data directory's lock is let go.

use tokio::task::JoinHandle;

use crate::config::SHUTDOWN_GRACE;

use super::files;
use super::serve::Running;

impl Running {
    /// Stops the host; once this returns nothing of it runs or listens,
    /// and another host may open its data directory.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: draining connections, stopping instances");
        let _ = self.stop.send(true);
        let tasks = self.tasks;
        tasks.converger.abort();
        if let Some(placing) = &tasks.placing {
            placing.abort();
        }
        drain(tasks.servers).await;
        if let Some(membership) = tasks.membership {
            // Leaves the cluster (its lease revoked) before stopping
            // instances.
            let _ = membership.await;
        }
        self.scheduler.stop_all().await;
        self.supervisor.stop_all().await;
        // Containers had SIGTERM; each gets its stop timeout.
        self.containers
            .stopped(crate::model::MAX_STOP_TIMEOUT)
            .await;
        self.writer.flush().await;
        files::remove_daemon_file(&self.data_dir);
        tracing::info!("mesh stopped");
        drop(self.lock);
    }
}

/// Waits for the listeners' tasks, which drain their connections while
/// the instances serving them still run, for at most the grace period;
/// then ends those still going.
async fn drain(servers: Vec<JoinHandle<()>>) {
    let aborts: Vec<_> = servers.iter().map(JoinHandle::abort_handle).collect();
    let all = futures::future::join_all(servers);
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
}
