//! Pulls in flight and how far each has come, so `mesh stack deploy REF`
//! can show progress on a pull that takes more than a second
//! (`GET /v1/pulls`: an environment sees its own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One pull's counts, updated as it goes.
pub struct Progress {
    env: String,
    reference: String,
    started: Instant,
    /// Blobs the pull needs, and how many are here.
    pub(super) blobs_total: AtomicU64,
    pub(super) blobs_done: AtomicU64,
    /// Their bytes, and how many are here.
    pub(super) bytes_total: AtomicU64,
    pub(super) bytes_done: AtomicU64,
}

impl Progress {
    /// Counts `n` more bytes here.
    pub(super) fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes back `n` bytes counted (a blob that starts over).
    pub(super) fn take_bytes(&self, n: u64) {
        let _ = self
            .bytes_done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(n))
            });
    }

    /// One more blob is here, with `bytes` not counted as they came.
    pub(super) fn blob_done(&self, bytes: u64) {
        self.blobs_done.fetch_add(1, Ordering::Relaxed);
        self.add_bytes(bytes);
    }
}

/// A pull as `GET /v1/pulls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PullStatus {
    /// The reference as given.
    pub reference: String,
    /// Blobs it needs, and how many are here.
    pub blobs_total: u64,
    /// Blobs here.
    pub blobs_done: u64,
    /// Bytes it needs (0 until the manifest is read).
    pub bytes_total: u64,
    /// Bytes here.
    pub bytes_done: u64,
    /// Milliseconds since it began.
    pub elapsed_ms: u64,
}

/// Every pull in flight.
#[derive(Default)]
pub struct InFlight {
    pulls: Mutex<HashMap<u64, Arc<Progress>>>,
    next: AtomicU64,
}

impl InFlight {
    /// Starts counting a pull; it leaves the list when the returned
    /// guard is dropped, however the pull ends.
    pub(super) fn track(self: &Arc<Self>, env: &str, reference: &str) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(Progress {
            env: env.to_string(),
            reference: reference.to_string(),
            started: Instant::now(),
            blobs_total: AtomicU64::new(0),
            blobs_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
        });
        self.pulls.lock().insert(id, progress.clone());
        Tracked {
            list: self.clone(),
            id,
            progress,
        }
    }

    /// An environment's pulls in flight.
    pub fn of(&self, env: &str) -> Vec<PullStatus> {
        let pulls: Vec<Arc<Progress>> = self
            .pulls
            .lock()
            .values()
            .filter(|p| p.env == env)
            .cloned()
            .collect();
        pulls
            .iter()
            .map(|p| PullStatus {
                reference: p.reference.clone(),
                blobs_total: p.blobs_total.load(Ordering::Relaxed),
                blobs_done: p.blobs_done.load(Ordering::Relaxed),
                bytes_total: p.bytes_total.load(Ordering::Relaxed),
                bytes_done: p.bytes_done.load(Ordering::Relaxed),
                elapsed_ms: p.started.elapsed().as_millis() as u64,
            })
            .collect()
    }
}

/// A pull being counted.
pub(super) struct Tracked {
    list: Arc<InFlight>,
    id: u64,
    pub(super) progress: Arc<Progress>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.list.pulls.lock().remove(&self.id);
    }
}
