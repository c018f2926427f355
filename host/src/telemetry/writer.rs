//! The disk writer: one thread that does every log, event and run-record
//! write, fed by a bounded queue, so no async thread waits on a file.
//!
//! Guest output waits for room in the queue (the guest is slowed, its
//! lines are kept); platform notes, events and run records never wait:
//! when the queue is full their disk copy is dropped and counted (the
//! in-memory copy and live followers still get them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

/// Writes waiting for the disk before writers wait or drop.
pub const QUEUE: usize = 4096;

/// One write to do.
pub type Job = Box<dyn FnOnce() + Send>;

/// The queue in front of the disk-writer thread.
pub struct DiskWriter {
    tx: mpsc::Sender<Job>,
    dropped: AtomicU64,
}

impl DiskWriter {
    /// Starts the writer thread; it ends once every handle is dropped.
    pub fn start() -> Arc<DiskWriter> {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("mesh-disk-writer".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job();
                }
            });
        if let Err(e) = spawned {
            // Without the thread every write is dropped and counted.
            tracing::error!(error = %e, "cannot start the disk writer thread");
        }
        Arc::new(DiskWriter {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a write without waiting; a full queue drops it (counted).
    pub fn submit(&self, job: Job) {
        if self.tx.try_send(job).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            static FULL: super::Throttle = super::Throttle::new();
            if let Some(times) = FULL.hit() {
                tracing::warn!(
                    dropped = n + 1,
                    times,
                    "disk writer queue full: dropping writes (reported once per interval)"
                );
            }
        }
    }

    /// A sender that waits for room (see [`Reserve`]).
    pub fn reserve(&self) -> Reserve {
        Reserve(PollSender::new(self.tx.clone()))
    }

    /// Writes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Returns once every write queued before this call is done.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(());
        });
        if self.tx.send(job).await.is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
impl DiskWriter {
    /// [`DiskWriter::flush`] for code outside the async runtime.
    pub fn flush_blocking(&self) {
        let (done, wait) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(());
        });
        if self.tx.blocking_send(job).is_ok() {
            let _ = wait.blocking_recv();
        }
    }
}

/// A handle that queues writes from poll-based code, waiting for room.
pub struct Reserve(PollSender<Job>);

impl Reserve {
    /// Ready once there is room for one job; `Err` when the writer is gone.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.0.poll_reserve(cx).map_err(|_| ())
    }

    /// Gives back the room [`Reserve::poll_ready`] found, unused.
    pub fn release(&mut self) {
        self.0.abort_send();
    }

    /// Queues a job into the room [`Reserve::poll_ready`] found.
    pub fn send(&mut self, job: Job) {
        let _ = self.0.send_item(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_run_in_order_and_flush_waits_for_them() {
        let writer = DiskWriter::start();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        for i in 0..100 {
            let seen = seen.clone();
            writer.submit(Box::new(move || seen.lock().push(i)));
        }
        writer.flush().await;
        assert_eq!(*seen.lock(), (0..100).collect::<Vec<_>>());
        assert_eq!(writer.dropped(), 0);
    }
}
