//! One cron job's life: sleep until the schedule's next firing, start a
//! fresh instance (a new store from the cached, pre-instantiated
//! component) that runs `wasi:cli/run` to its end, record the run.
//!
//! A firing that finds the previous run still going is recorded as
//! `skipped` instead of starting a second one, so slow jobs never pile up.
//! A run longer than the job's timeout is interrupted (`timed_out`).
//! Firings missed while the daemon was down are not replayed: the first
//! firing after a start is the schedule's next one after "now". In a
//! cluster each firing is claimed first ([`Firings`]), so two hosts never
//! fire the same scheduled time, and a job that moved to another host
//! (its host died) resumes after the last firing claimed anywhere: what
//! was missed in the move, up to [`CATCH_UP`], fires late but once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::history::History;
use super::schedule::Schedule;
use crate::model::{
    format_duration, InstanceState, InstanceStatus, Run, RunStatus, RunTrigger, ServiceKey,
};
use crate::runtime::{Interrupt, Launch, Outcome};
use crate::services::code::BoxFuture;
use crate::services::parts::launch;
use crate::services::{Identity, Parts, Spec, Supervisor, Tracked};

/// A firing may wake this much before its time (timer and wall clock
/// disagree slightly) and still count as on time.
const EARLY_WAKE_SLACK: chrono::TimeDelta = chrono::TimeDelta::milliseconds(5);

/// What a job runs and when.
pub struct JobSpec {
    /// When it fires.
    pub schedule: Arc<Schedule>,
    /// Longest a run may take.
    pub timeout: Option<Duration>,
    /// The command, env, memory limit and code of each run.
    pub run: Arc<Spec>,
}

/// A run started by hand: its number and instance id.
#[derive(Clone, Debug)]
pub struct Started {
    /// Run number.
    pub number: u64,
    /// Instance id, `<service>.r<number>`.
    pub instance: String,
}

/// Why a run could not start.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotStarted {
    /// The previous run is still going.
    #[error("run {number} ({instance}) is still going")]
    Busy {
        /// Its number.
        number: u64,
        /// Its instance id.
        instance: String,
    },
    /// The job is being stopped.
    #[error("the job is shutting down")]
    Gone,
}

type TriggerReply = oneshot::Sender<Result<Started, NotStarted>>;

/// What a run shares with the job: how long it took to get its instance
/// running.
#[derive(Default)]
struct Shared {
    start_took: Option<Duration>,
}

/// Longest stretch of missed firings a job that moved between hosts
/// catches up on.
pub const CATCH_UP: Duration = Duration::from_secs(60);

/// The scheduled firings of every job, claimed across the hosts of a
/// cluster.
pub trait Firings: Send + Sync + 'static {
    /// The last scheduled time of `key` claimed anywhere.
    fn last(&self, key: &ServiceKey) -> BoxFuture<'static, Option<DateTime<Utc>>>;
    /// Claims the firing of `key` at `at`: `true` for exactly one caller,
    /// and only while `at` is later than every firing claimed before.
    fn claim(&self, key: &ServiceKey, at: DateTime<Utc>) -> BoxFuture<'static, bool>;
    /// The last runs of `key` shared by whichever hosts ran them.
    fn runs(&self, key: &ServiceKey) -> BoxFuture<'static, Vec<Run>>;
    /// Shares the last runs of `key` this host knows (merged with what
    /// is shared already).
    fn share(&self, key: &ServiceKey, runs: Vec<Run>) -> BoxFuture<'static, ()>;
}

/// A running job task and the handles to steer it.
pub struct Job {
    specs: watch::Sender<Arc<JobSpec>>,
    triggers: mpsc::Sender<TriggerReply>,
    task: JoinHandle<()>,
}

impl Job {
    /// Starts the job's task.
    pub(crate) fn spawn(
        supervisor: Arc<Supervisor>,
        key: ServiceKey,
        history: Arc<History>,
        spec: Arc<JobSpec>,
        firings: Option<Arc<dyn Firings>>,
    ) -> Job {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (specs, spec_rx) = watch::channel(spec);
        let (triggers, trigger_rx) = mpsc::channel(8);
        let parts = supervisor.parts().clone();
        let who = parts.identity(&key, &key.name);
        let task = tokio::spawn(
            JobTask {
                parts,
                supervisor,
                key,
                who,
                history,
                shared,
                running: None,
                firings,
                catching_up: false,
                sharing: None,
            }
            .run(spec_rx, trigger_rx),
        );
        Job {
            specs,
            triggers,
            task,
        }
    }

    /// The spec the job runs now.
    pub fn spec(&self) -> Arc<JobSpec> {
        self.specs.borrow().clone()
    }

    /// Hands the job new settings; a run in progress finishes on the old ones.
    pub fn update(&self, spec: Arc<JobSpec>) {
        self.specs.send_replace(spec);
    }

    /// A handle that starts runs by hand.
    pub fn trigger(&self) -> Trigger {
        Trigger(self.triggers.clone())
    }

    /// Stops the job and any run in progress.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts a job's run by hand; usable without holding the supervisor's lock.
#[derive(Clone)]
pub struct Trigger(mpsc::Sender<TriggerReply>);

impl Trigger {
    /// Starts a run now, unless one is going.
    pub async fn fire(&self) -> Result<Started, NotStarted> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.map_err(|_| NotStarted::Gone)?;
        rx.await.map_err(|_| NotStarted::Gone)?
    }
}

/// A run in progress.
struct Running {
    number: u64,
    instance: String,
    trigger: RunTrigger,
    scheduled_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    started: Instant,
    timeout: Option<Duration>,
    outcome: Pin<Box<dyn Future<Output = (Outcome, bool)> + Send>>,
    /// Shows the run among the service's instances while it goes.
    _shown: Tracked,
}

/// What woke the job up.
enum Event {
    Finished((Outcome, bool)),
    Due(DateTime<Utc>),
    Trigger(TriggerReply),
    Changed,
    Closed,
}

struct JobTask {
    parts: Parts,
    supervisor: Arc<Supervisor>,
    key: ServiceKey,
    /// The job's identity (log, counters); each run gets `who.at(id)`.
    who: Identity,
    history: Arc<History>,
    shared: Arc<Mutex<Shared>>,
    running: Option<Running>,
    /// In a cluster: where each firing is claimed first.
    firings: Option<Arc<dyn Firings>>,
    /// Whether the last firing was a late one, caught up.
    catching_up: bool,
    /// In a cluster: the job's ended runs, for its task that shares them.
    sharing: Option<watch::Sender<Vec<Run>>>,
}

impl JobTask {
    async fn run(
        mut self,
        mut specs: watch::Receiver<Arc<JobSpec>>,
        mut triggers: mpsc::Receiver<TriggerReply>,
    ) {
        let mut after = Utc::now();
        if let Some(firings) = &self.firings {
            // Taken over from another host: on from its last firing, with
            // the runs it recorded.
            if let Some(last) = firings.last(&self.key).await {
                let catch_up = chrono::Duration::from_std(CATCH_UP).unwrap_or_default();
                after = last.max(after - catch_up).min(after);
            }
            self.history.adopt(firings.runs(&self.key).await);
            // The runs ended here are shared by a task of the job's own,
            // which ends when the job does (its sender dropped).
            let (tx, rx) = watch::channel(Vec::new());
            tokio::spawn(share_runs(firings.clone(), self.key.clone(), rx));
            self.sharing = Some(tx);
        }
        loop {
            let spec = specs.borrow_and_update().clone();
            let next = spec.schedule.next_after(after);
            let event = tokio::select! {
                outcome = finished(&mut self.running) => Event::Finished(outcome),
                () = sleep_until(next) => match next {
                    Some(at) => Event::Due(at),
                    None => Event::Changed,
                },
                reply = triggers.recv() => match reply {
                    Some(reply) => Event::Trigger(reply),
                    None => Event::Closed,
                },
                changed = specs.changed() => match changed {
                    Ok(()) => Event::Changed,
                    Err(_) => Event::Closed,
                },
            };
            match event {
                Event::Finished(outcome) => self.finish(outcome),
                Event::Due(at) if Utc::now() + EARLY_WAKE_SLACK < at => {
                    // The wall clock moved back while we slept: wait again.
                }
                Event::Due(at) => {
                    after = at;
                    if let Some(firings) = &self.firings {
                        if !firings.claim(&self.key, at).await {
                            // Another host fired it.
                            continue;
                        }
                        // A late firing (caught up after a move), and the
                        // first after one, waits for the run before it
                        // rather than being skipped: claimed, it is fired
                        // nowhere else.
                        let late = Utc::now() - at > chrono::Duration::seconds(1);
                        if (late || self.catching_up) && self.running.is_some() {
                            let outcome = finished(&mut self.running).await;
                            self.finish(outcome);
                        }
                        self.catching_up = late;
                    }
                    if let Err(message) = self.start(&spec, RunTrigger::Schedule, at) {
                        self.skip(at, message);
                    }
                }
                Event::Trigger(reply) => {
                    let _ = reply.send(self.start(&spec, RunTrigger::Manual, Utc::now()));
                }
                Event::Changed => {
                    let new = specs.borrow().clone();
                    // The supervisor makes a new schedule only when its
                    // text or time zone changed.
                    if !Arc::ptr_eq(&new.schedule, &spec.schedule) {
                        // A new schedule counts from now, not from the last firing.
                        after = Utc::now();
                    }
                }
                Event::Closed => return,
            }
        }
    }

    /// Starts a fresh instance, or says which run is still going.
    fn start(
        &mut self,
        spec: &Arc<JobSpec>,
        trigger: RunTrigger,
        scheduled_at: DateTime<Utc>,
    ) -> Result<Started, NotStarted> {
        if let Some(r) = &self.running {
            return Err(NotStarted::Busy {
                number: r.number,
                instance: r.instance.clone(),
            });
        }
        let number = self.history.next_number();
        let instance = format!("{}.r{number}", self.key.name);
        let started_at = Utc::now();
        self.shared.lock().start_took = None;
        let shown = self.supervisor.track(
            &self.key,
            Arc::new(Mutex::new(InstanceStatus {
                started_at: Some(started_at),
                ..InstanceStatus::starting(instance.clone(), spec.run.version)
            })),
        );
        // Recorded now, so a run cut off by the daemon stopping is known.
        self.history.record(Run {
            number,
            instance: Some(instance.clone()),
            trigger,
            scheduled_at,
            started_at,
            duration_ms: 0,
            start_us: None,
            exit_code: None,
            status: RunStatus::Running,
            message: None,
        });
        tracing::info!(service = %self.key, instance, ?trigger, "cron run starting");
        self.parts.events.service(
            &self.key,
            "cron.fired",
            Some(&instance),
            format!("run {number} ({trigger:?})").to_lowercase(),
        );
        let launch = launch(&self.who, &spec.run.run, &instance);
        let outcome = Box::pin(run_once(
            self.parts.clone(),
            spec.clone(),
            launch,
            self.shared.clone(),
            shown.status().clone(),
        ));
        self.running = Some(Running {
            number,
            instance: instance.clone(),
            trigger,
            scheduled_at,
            started_at,
            started: Instant::now(),
            timeout: spec.timeout,
            outcome,
            _shown: shown,
        });
        Ok(Started { number, instance })
    }

    fn skip(&mut self, scheduled_at: DateTime<Utc>, why: NotStarted) {
        let number = self.history.next_number();
        let message = format!("skipped: {why}");
        tracing::info!(service = %self.key, number, %message, "cron firing skipped");
        self.note(&format!("[mesh] run {number} {message}"), &self.key.name);
        self.who.metrics.cron_run(RunStatus::Skipped);
        self.parts.events.service(
            &self.key,
            "cron.skipped",
            None,
            format!("run {number} {message}"),
        );
        self.history.record(Run {
            number,
            instance: None,
            trigger: RunTrigger::Schedule,
            scheduled_at,
            started_at: Utc::now(),
            duration_ms: 0,
            start_us: None,
            exit_code: None,
            status: RunStatus::Skipped,
            message: Some(message),
        });
        self.share();
    }

    fn finish(&mut self, (outcome, timed_out): (Outcome, bool)) {
        let Some(run) = self.running.take() else {
            return;
        };
        let start_took = self.shared.lock().start_took.take();
        let elapsed = run.started.elapsed();
        let (status, message) = match (timed_out, run.timeout) {
            (true, Some(limit)) => (
                RunStatus::TimedOut,
                format!("timed out after {}", format_duration(limit)),
            ),
            _ if outcome.succeeded() => (RunStatus::Succeeded, outcome.message),
            _ => (RunStatus::Failed, outcome.message),
        };
        self.note(
            &format!(
                "[mesh] run {} {status} in {} ({message})",
                run.number,
                format_duration(elapsed)
            ),
            &run.instance,
        );
        self.who.metrics.cron_run(status);
        self.parts.events.service(
            &self.key,
            "cron.finished",
            Some(&run.instance),
            format!(
                "run {} {status} in {} ({message})",
                run.number,
                format_duration(elapsed)
            ),
        );
        self.history.record(Run {
            number: run.number,
            instance: Some(run.instance),
            trigger: run.trigger,
            scheduled_at: run.scheduled_at,
            started_at: run.started_at,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            start_us: start_took.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            exit_code: outcome.exit_code,
            status,
            message: Some(message),
        });
        self.share();
    }

    /// Hands the job's last ended runs to its sharing task (in a
    /// cluster), after a run ends or a firing is skipped.
    fn share(&self) {
        let Some(sharing) = &self.sharing else {
            return;
        };
        let ended: Vec<Run> = self
            .history
            .newest_first()
            .into_iter()
            .filter(|r| r.status != RunStatus::Running)
            .take(SHARED_RUNS)
            .collect();
        sharing.send_replace(ended);
    }

    /// Writes a platform line to the job's log.
    fn note(&self, text: &str, instance: &str) {
        self.who.log.note(instance, text.to_string());
    }
}

/// Runs of a job shared in a cluster, newest first: its last few.
pub const SHARED_RUNS: usize = 20;

/// Shares each new list of a job's ended runs until the job ends (the
/// sender is dropped); a list that changes while one is being written is
/// written next, so at most one write per job is in flight.
async fn share_runs(
    firings: Arc<dyn Firings>,
    key: ServiceKey,
    mut runs: watch::Receiver<Vec<Run>>,
) {
    while runs.changed().await.is_ok() {
        let latest = runs.borrow_and_update().clone();
        if !latest.is_empty() {
            firings.share(&key, latest).await;
        }
    }
}

/// Waits for the run in progress, or forever when there is none.
async fn finished(running: &mut Option<Running>) -> (Outcome, bool) {
    match running {
        Some(run) => run.outcome.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until a wall-clock time, or forever for `None`.
async fn sleep_until(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            super::clock::sleep_until(std::time::Instant::now() + wait).await;
        }
        None => std::future::pending().await,
    }
}

/// Loads the code and runs one fresh instance to its end; the flag says
/// whether it was stopped for taking too long.
async fn run_once(
    parts: Parts,
    spec: Arc<JobSpec>,
    launch: Launch,
    shared: Arc<Mutex<Shared>>,
    status: Arc<Mutex<InstanceStatus>>,
) -> (Outcome, bool) {
    let fired = Instant::now();
    let code = match spec.run.run.load_command(parts.code.as_ref()).await {
        Ok(code) => code,
        Err(problem) => return (Outcome::failed(problem.to_string()), false),
    };
    let interrupt = Interrupt::default();
    let mark_running = Box::new(move || {
        shared.lock().start_took = Some(fired.elapsed());
        status.lock().enter(InstanceState::Running);
    });
    let run = code.run(launch, interrupt.clone(), mark_running);
    tokio::pin!(run);
    match spec.timeout {
        None => (run.await, false),
        Some(limit) => tokio::select! {
            outcome = &mut run => (outcome, false),
            () = tokio::time::sleep(limit) => {
                interrupt.trigger();
                (run.await, true)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(123)), "2m3s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
