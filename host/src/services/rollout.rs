//! Rollouts: a service whose code or settings changed takes them one slot
//! at a time, each slot up on the new spec before the next is touched, so
//! the service keeps serving while it rolls.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::slot::SlotHandle;
use super::spec::Spec;

/// Longest wait for one slot to take new settings before a rollout moves on.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A rollout in progress; dropping it stops it where it is.
pub struct Rollout(JoinHandle<()>);

impl Rollout {
    /// Hands `spec` to each slot in turn, waiting on the slot's own change
    /// notifications for it to be up before moving to the next.
    pub fn start(slots: Vec<SlotHandle>, spec: Arc<Spec>) -> Rollout {
        Rollout(tokio::spawn(async move {
            for slot in slots {
                slot.roll_to(&spec, STEP_TIMEOUT).await;
            }
        }))
    }
}

impl Drop for Rollout {
    fn drop(&mut self) {
        self.0.abort();
    }
}
