//! Worker slots: one task per desired instance of a worker. A slot starts
//! an instance, waits for it to end, records how it ended, and starts it
//! again after an exponential back-off; handed a new spec, it restarts on
//! it. The supervisor owns each slot; dropping or stopping the slot ends
//! its task and the instance with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backoff::{backoff, STABLE_AFTER};
use super::directory::Identity;
use super::parts::{launch, Parts};
use super::spec::Spec;
use crate::model::{InstanceState, InstanceStatus, ServiceKey};
use crate::runtime::{Ending, Interrupt, Outcome};

/// What a slot shows the supervisor: its instance's status and the spec
/// it has taken. Rollouts wait on its changes.
#[derive(Clone, Debug)]
pub struct SlotState {
    /// The instance.
    pub status: InstanceStatus,
    /// The id of the spec the slot runs.
    pub spec_id: u64,
}

/// One worker slot and the handles to steer it.
pub struct Slot {
    /// Its instance number (1-based).
    number: u32,
    state: watch::Sender<SlotState>,
    spec: watch::Sender<Arc<Spec>>,
    task: Option<JoinHandle<()>>,
}

impl Slot {
    /// Its instance number (1-based).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Starts instance `number` (1-based) of a service on `spec`.
    pub fn spawn(parts: &Parts, key: &ServiceKey, number: u32, spec: Arc<Spec>) -> Slot {
        let id = format!("{}.{number}", key.name);
        let state = watch::Sender::new(SlotState {
            status: InstanceStatus::starting(id.clone(), spec.version),
            spec_id: 0,
        });
        let (tx, specs) = watch::channel(spec);
        let task = SlotTask {
            parts: parts.clone(),
            who: parts.identity(key, &id),
            key: key.clone(),
            id,
            state: state.clone(),
            failures: 0,
        };
        Slot {
            number,
            state,
            spec: tx,
            task: Some(tokio::spawn(task.run(specs))),
        }
    }

    /// The slot's instance now.
    pub fn status(&self) -> InstanceStatus {
        self.state.borrow().status.clone()
    }

    /// Moves the instance to a new version number without restarting it
    /// (same code and settings).
    pub fn relabel(&self, version: u64) {
        self.state.send_modify(|s| s.status.version = version);
    }

    /// A handle a rollout uses to move the slot to a new spec.
    pub fn handle(&self) -> SlotHandle {
        SlotHandle {
            spec: self.spec.clone(),
            state: self.state.subscribe(),
        }
    }

    /// Stops the slot's task (and its instance) and waits for it to end.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Whoever drops a slot ends it; `stop` also waits.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What a rollout holds of a slot: it can hand it a spec and watch it
/// take it, without the supervisor's lock.
pub struct SlotHandle {
    spec: watch::Sender<Arc<Spec>>,
    state: watch::Receiver<SlotState>,
}

impl SlotHandle {
    /// Hands the slot `spec` and waits (at most `limit`) until it runs it
    /// and its instance is past starting.
    pub async fn roll_to(&mut self, spec: &Arc<Spec>, limit: Duration) {
        self.spec.send_replace(spec.clone());
        let id = spec.id;
        let up = self
            .state
            .wait_for(|s| s.spec_id == id && s.status.state != InstanceState::Starting);
        let _ = tokio::time::timeout(limit, up).await;
    }

    /// Hands the slot `spec` without waiting.
    pub fn hand(&self, spec: &Arc<Spec>) {
        self.spec.send_replace(spec.clone());
    }

    /// Whether the slot's instance on `spec` is up: running, or ended
    /// cleanly.
    pub fn is_up(&self, spec: &Spec) -> bool {
        let s = self.state.borrow();
        s.spec_id == spec.id
            && match s.status.state {
                InstanceState::Running => true,
                InstanceState::Exited | InstanceState::Backoff => s.status.exit_code == Some(0),
                _ => false,
            }
    }

    /// Why the slot's instance on `spec` failed, if it did: it ended
    /// other than cleanly (crashed, trapped, ran out of memory) or cannot
    /// start.
    pub fn failure(&self, spec: &Spec) -> Option<String> {
        let s = self.state.borrow();
        let failed = s.spec_id == spec.id
            && match s.status.state {
                InstanceState::Crashed => true,
                _ => s.status.restarts > 0 && s.status.exit_code != Some(0),
            };
        failed.then(|| {
            s.status
                .message
                .clone()
                .unwrap_or_else(|| "it failed".to_string())
        })
    }
}

/// A slot's task.
struct SlotTask {
    parts: Parts,
    who: Identity,
    key: ServiceKey,
    id: String,
    state: watch::Sender<SlotState>,
    failures: u32,
}

impl SlotTask {
    /// Start, run, record, back off, start again; take new settings when
    /// handed them. Ends when aborted or when the slot's spec sender goes.
    async fn run(mut self, mut specs: watch::Receiver<Arc<Spec>>) {
        loop {
            let spec = specs.borrow_and_update().clone();
            self.state.send_modify(|s| {
                s.spec_id = spec.id;
                s.status.version = spec.version;
                s.status.enter(InstanceState::Starting);
                s.status.started_at = Some(Utc::now());
            });
            let code = match spec.run.load_command(self.parts.code.as_ref()).await {
                Ok(code) => code,
                Err(problem) => {
                    tracing::warn!(service = %self.key, instance = %self.id, %problem, "cannot start");
                    self.crashed(None, problem.to_string());
                    // Nothing will change until the service or its stack does.
                    if specs.changed().await.is_err() {
                        return;
                    }
                    self.reset_restarts();
                    continue;
                }
            };
            let started = Instant::now();
            let running = self.mark_running();
            let run = code.run(
                launch(&self.who, &spec.run, &self.id),
                Interrupt::default(),
                running,
            );
            let outcome = tokio::select! {
                outcome = run => outcome,
                changed = specs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reset_restarts();
                    continue;
                }
            };
            if outcome.ending == Ending::Unrunnable {
                // Its command is not there: starting again will not help.
                tracing::warn!(service = %self.key, instance = %self.id, outcome = %outcome.message, "cannot run");
                self.crashed_with(&outcome);
                if specs.changed().await.is_err() {
                    return;
                }
                self.reset_restarts();
                continue;
            }
            let delay = self.ended(&outcome, started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                changed = specs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reset_restarts();
                }
            }
        }
    }

    /// What runs once the instance exists: its state and an event.
    fn mark_running(&self) -> Box<dyn FnOnce() + Send> {
        let (state, events) = (self.state.clone(), self.parts.events.clone());
        let (key, id) = (self.key.clone(), self.id.clone());
        Box::new(move || {
            let mut restarts = 0;
            state.send_modify(|s| {
                s.status.enter(InstanceState::Running);
                restarts = s.status.restarts;
            });
            let message = match restarts {
                0 => "started".to_string(),
                n => format!("started again (restart {n})"),
            };
            events.service(&key, "instance.started", Some(&id), message);
        })
    }

    /// Records how a run ended; returns the back-off before the next.
    fn ended(&mut self, outcome: &Outcome, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.failures = 0;
        }
        let delay = backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        let mut restarts = 0;
        self.state.send_modify(|s| {
            s.status
                .back_off(outcome.exit_code, outcome.message.clone(), delay);
            restarts = s.status.restarts;
        });
        self.who.metrics.restart();
        tracing::info!(service = %self.key, instance = %self.id, outcome = %outcome.message, ?delay, restarts, "instance ended");
        let text = format!(
            "{}; restart {restarts} in {:.1}s",
            outcome.message,
            delay.as_secs_f64()
        );
        let kind = outcome.event_kind("instance.exited");
        self.parts
            .events
            .service(&self.key, kind, Some(&self.id), text.clone());
        self.who.log.note(&self.id, format!("[mesh] {text}"));
        delay
    }

    /// The instance cannot start with these settings: shown as crashed
    /// (with its exit code, when it had one) until they change.
    fn crashed(&self, exit_code: Option<i32>, message: String) {
        self.state.send_modify(|s| {
            s.status.enter(InstanceState::Crashed);
            s.status.exit_code = exit_code;
            s.status.message = Some(message);
        });
    }

    fn crashed_with(&self, outcome: &Outcome) {
        self.crashed(outcome.exit_code, outcome.message.clone());
        let text = format!(
            "{}; not restarted until the service or its stack changes",
            outcome.message
        );
        self.parts
            .events
            .service(&self.key, "instance.crashed", Some(&self.id), text.clone());
        self.who.log.note(&self.id, format!("[mesh] {text}"));
    }

    fn reset_restarts(&mut self) {
        self.failures = 0;
        self.state.send_modify(|s| {
            s.status.restarts = 0;
            s.status.exit_code = None;
            s.status.message = None;
        });
    }
}
