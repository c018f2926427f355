//! Releases: a service's rollouts as the supervisor runs them and
//! records them. A web service rolls from its pool to a new one (the
//! pool's `rolling` hand-over); a worker's slots roll one at a time under
//! a guard (`rollout.rs`). Each rollout is recorded (its versions, where
//! it is, why it stopped) for `service ls` and a waiting deploy, ends in
//! an event, and one that fails restores the previous instances here and
//! is reported to whoever restores the previous version in desired state.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::task::AbortOnDropHandle;

use super::{RolloutFailure, ServiceRuntime, Supervisor};
use crate::model::{InstanceStatus, Rollout as RolloutRecord, RolloutState, ServiceKey};
use crate::services::pool::{Handover, Step, WebPool};
use crate::services::rollout::Guard;
use crate::services::spec::Spec;

impl Supervisor {
    /// What a worker's rollout from `previous` restores, and how it
    /// reports its end: recorded, an event, and a failure reported and
    /// not tried again.
    pub(super) fn guard(
        &self,
        key: &ServiceKey,
        rt: &mut ServiceRuntime,
        previous: Arc<Spec>,
        limit: std::time::Duration,
    ) -> Guard {
        let (from_version, to_version) = (previous.version, rt.spec.version);
        let started = self.begin(rt, from_version, to_version);
        let (me, key, failed, restored) = (
            self.me.clone(),
            key.clone(),
            rt.spec.clone(),
            previous.clone(),
        );
        Guard {
            previous,
            limit,
            ended: Box::new(move |outcome| {
                if let Some(me) = me.upgrade() {
                    me.slots_rolled(&key, &failed, restored, outcome, started);
                }
            }),
        }
    }

    /// A worker's rollout to `to` ended: recorded; when it failed, the
    /// slots are back on `previous` (the rollout handed it to them), which
    /// the service keeps until what it should run changes again.
    pub(super) fn slots_rolled(
        &self,
        key: &ServiceKey,
        to: &Arc<Spec>,
        previous: Arc<Spec>,
        outcome: Result<(), String>,
        started: Started,
    ) {
        let mut runtimes = self.runtimes.lock();
        let Some(rt) = runtimes.get_mut(key) else {
            return;
        };
        if rt.spec.id != to.id {
            // Replaced meanwhile.
            return;
        }
        let why = match outcome {
            Ok(()) => {
                self.ended(
                    key,
                    &rt.release,
                    (previous.version, to.version),
                    None,
                    started,
                );
                return;
            }
            Err(why) => why,
        };
        let (from_version, to_version) = (previous.version, to.version);
        tracing::warn!(service = %key, to_version, %why, "rollout failed: the previous spec is back");
        self.ended(
            key,
            &rt.release,
            (from_version, to_version),
            Some(&why),
            started,
        );
        rt.refused_run = Some(to.run.clone());
        rt.spec = previous;
        drop(runtimes);
        self.report(RolloutFailure {
            key: key.clone(),
            from_version,
            to_version,
            reason: why,
        });
    }

    /// Records a rollout starting now from `from_version` to `to_version`.
    /// A record still rolling is ended first, as replaced. Returns what
    /// names this rollout's record.
    pub(super) fn begin(&self, rt: &ServiceRuntime, from_version: u64, to_version: u64) -> Started {
        replaced(&rt.release);
        let started = chrono::Utc::now();
        *rt.release.lock() = Some(RolloutRecord {
            revision: self.revision.load(std::sync::atomic::Ordering::Relaxed),
            from_version,
            to_version,
            state: RolloutState::Rolling,
            reason: None,
            started_at: started,
            ended_at: None,
        });
        started
    }

    /// Records how the rollout `started` names ended (`failed`: why it
    /// stopped), with an event; nothing when a newer one replaced it.
    pub(super) fn ended(
        &self,
        key: &ServiceKey,
        release: &Mutex<Option<RolloutRecord>>,
        (from_version, to_version): (u64, u64),
        failed: Option<&str>,
        started: Started,
    ) {
        let (state, kind, message) = match failed {
            None => (
                RolloutState::Done,
                "rollout.done",
                format!("every instance runs v{to_version}"),
            ),
            Some(why) => (
                RolloutState::Failed,
                "rollout.failed",
                format!(
                    "rollout to v{to_version} stopped: {why}; {}",
                    kept(from_version, to_version)
                ),
            ),
        };
        {
            let mut record = release.lock();
            let Some(record) = record
                .as_mut()
                .filter(|r| r.started_at == started && r.state == RolloutState::Rolling)
            else {
                return;
            };
            record.end(state, failed.map(str::to_string));
        }
        self.parts.events.service(key, kind, None, message);
    }

    /// Hands a failed rollout to whoever restores the previous version in
    /// desired state.
    pub(super) fn report(&self, failure: RolloutFailure) {
        if let Some(failures) = self.failures.get() {
            let key = failure.key.clone();
            if failures.try_send(failure).is_err() {
                tracing::warn!(service = %key, "too many rollout failures waiting: this one is not rolled back in desired state");
            }
        }
    }

    /// The pool a new rollout starts from, when `current` replaces
    /// another in a rollout still going: of the two, the one with more
    /// live instances; the other is retired.
    pub(super) fn superseding(
        &self,
        rt: &mut ServiceRuntime,
        current: Arc<WebPool>,
    ) -> Arc<WebPool> {
        // The record is the pool's only while a pool's rollout runs (a
        // worker's slots keep theirs there too).
        if rt.web_rollout.take().is_some() {
            replaced(&rt.release);
        }
        let Some(previous) = current.take_previous() else {
            return current;
        };
        let _ = previous.take_previous();
        if previous.live() > current.live() {
            previous.enable_all();
            current.retire_into(&previous);
            previous
        } else {
            previous.retire_into(&current);
            current
        }
    }

    /// Rolls a web service from `old` to `new`, one instance at a time;
    /// when a new instance does not come up within `limit`, the old pool
    /// is restored and the failure reported.
    pub(super) fn roll(
        &self,
        key: &ServiceKey,
        rt: &mut ServiceRuntime,
        old: Arc<WebPool>,
        new: Arc<WebPool>,
        limit: std::time::Duration,
    ) {
        let (from_version, to_version) = (old.version(), new.version());
        tracing::info!(service = %key, from_version, to_version, "rolling");
        let started = self.begin(rt, from_version, to_version);
        let (me, key, release) = (self.me.clone(), key.clone(), rt.release.clone());
        let task = tokio::spawn(async move {
            let handover = Handover { from: old, to: new };
            let step = handover.run(limit).await;
            let Some(me) = me.upgrade() else { return };
            match step {
                Step::Done => me.ended(&key, &release, (from_version, to_version), None, started),
                Step::Failed(why) => me.rollout_failed(&key, handover, why, limit, started),
            }
        });
        rt.web_rollout = Some(AbortOnDropHandle::new(task));
    }

    /// A rollout's new pool did not come up: the old pool is restored
    /// here, the new one is not tried again, and the failure is reported.
    pub(super) fn rollout_failed(
        &self,
        key: &ServiceKey,
        failed: Handover,
        why: String,
        limit: std::time::Duration,
        started: Started,
    ) {
        let mut runtimes = self.runtimes.lock();
        let Some(rt) = runtimes.get_mut(key) else {
            return;
        };
        if !rt.web.as_ref().is_some_and(|w| Arc::ptr_eq(w, &failed.to)) {
            // Replaced meanwhile.
            return;
        }
        let (from_version, to_version) = (failed.from.version(), failed.to.version());
        tracing::warn!(service = %key, to_version, %why, "rollout failed: restoring the previous instances");
        self.ended(
            key,
            &rt.release,
            (from_version, to_version),
            Some(&why),
            started,
        );
        rt.web = Some(failed.from.clone());
        rt.refused = Some(failed.to.clone());
        let restore = Handover {
            from: failed.to,
            to: failed.from,
        };
        rt.web_rollout = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            restore.restore(limit).await;
        })));
        drop(runtimes);
        self.report(RolloutFailure {
            key: key.clone(),
            from_version,
            to_version,
            reason: why,
        });
        // Routes and names lead to the restored pool at the next apply.
        self.kick.notify_one();
    }
}

/// Whether an instance runs well: running, and either never restarted or
/// up for longer than a rollout's settling time.
pub(super) fn running_well(status: &InstanceStatus) -> bool {
    let settled = status.started_at.is_some_and(|t| {
        (chrono::Utc::now() - t).to_std().unwrap_or_default() >= crate::services::rollout::SETTLE
    });
    status.state == crate::model::InstanceState::Running && (status.restarts == 0 || settled)
}

/// What names one rollout's record: when it started.
pub(super) type Started = chrono::DateTime<chrono::Utc>;

/// Ends a record still rolling as replaced by a newer change (whose own
/// rollout, if any, records itself).
pub(super) fn replaced(release: &Mutex<Option<RolloutRecord>>) {
    if let Some(record) = release
        .lock()
        .as_mut()
        .filter(|r| r.state == RolloutState::Rolling)
    {
        record.end(
            RolloutState::Failed,
            Some("replaced by a newer change before it ended".to_string()),
        );
    }
}

/// Stops what a service's request pool runs, its rollout included: the
/// pool (`stop` ends its requests in flight too, for a deleted service),
/// the pool it was taking over from, and one whose rollout failed.
pub(super) fn drop_web(rt: &mut ServiceRuntime, stop: bool) {
    if rt.web_rollout.take().is_some() {
        replaced(&rt.release);
    }
    let pools = rt.web.take().into_iter().chain(rt.refused.take());
    for pool in pools {
        let previous = pool.take_previous();
        for pool in std::iter::once(pool).chain(previous) {
            if stop {
                pool.stop();
            } else {
                pool.retire();
            }
        }
    }
}

/// What a failed rollout kept, in words.
fn kept(from_version: u64, to_version: u64) -> String {
    if from_version == to_version {
        "the previous settings are kept".to_string()
    } else {
        format!("v{from_version} is kept")
    }
}
