//! Rollouts of a worker: a service whose code or settings changed takes
//! them one slot at a time, each slot up on the new spec before the next
//! is touched, so the service keeps working while it rolls.
//!
//! When the service ran before, the rollout is guarded: a new instance
//! that crashes (or cannot start) before the rollout has settled, or that
//! is not up within the service's rollout timeout, stops it, and every
//! slot it moved is handed the previous spec again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::slot::SlotHandle;
use super::spec::Spec;

/// Longest wait for one slot to take new settings before an unguarded
/// rollout moves on.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the new instances must keep running, once all are up, for a
/// guarded rollout to count as done.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Between two looks at the slots of a guarded rollout.
const POLL: Duration = Duration::from_millis(20);

/// What a guarded rollout restores and whom it tells how it ended.
pub struct Guard {
    /// The spec the slots ran before.
    pub previous: Arc<Spec>,
    /// Longest a new instance may take to be up.
    pub limit: Duration,
    /// Told how the rollout ended: `Err(why)` when it stopped.
    pub ended: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// A rollout in progress; dropping it stops it where it is.
pub struct Rollout(JoinHandle<()>);

impl Rollout {
    /// Hands `spec` to each slot in turn, waiting for each to be up before
    /// moving to the next; with a `guard`, stops and restores the
    /// previous spec when a new instance fails.
    pub fn start(slots: Vec<SlotHandle>, spec: Arc<Spec>, guard: Option<Guard>) -> Rollout {
        Rollout(tokio::spawn(async move {
            let Some(guard) = guard else {
                for mut slot in slots {
                    slot.roll_to(&spec, STEP_TIMEOUT).await;
                }
                return;
            };
            let outcome = guarded(&slots, &spec, guard.limit).await;
            if outcome.is_err() {
                for slot in &slots {
                    slot.hand(&guard.previous);
                }
            }
            (guard.ended)(outcome);
        }))
    }
}

/// Moves the slots to `spec` one at a time, each up within `limit`, then
/// watches them for [`SETTLE`]; why it stopped, if it did.
async fn guarded(slots: &[SlotHandle], spec: &Arc<Spec>, limit: Duration) -> Result<(), String> {
    let total = slots.len();
    let failed = |moved: &[SlotHandle]| {
        let failures: Vec<String> = moved.iter().filter_map(|s| s.failure(spec)).collect();
        failures
            .first()
            .map(|why| format!("{} of {total} new instances failed: {why}", failures.len()))
    };
    for (i, slot) in slots.iter().enumerate() {
        slot.hand(spec);
        let deadline = Instant::now() + limit;
        while !slot.is_up(spec) {
            if let Some(why) = failed(&slots[..=i]) {
                return Err(why);
            }
            if Instant::now() >= deadline {
                return Err(format!("a new instance was not up in {}s", limit.as_secs()));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let settled = Instant::now() + SETTLE;
    while Instant::now() < settled {
        if let Some(why) = failed(slots) {
            return Err(why);
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

impl Drop for Rollout {
    fn drop(&mut self) {
        self.0.abort();
    }
}
