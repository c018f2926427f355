//! Cron jobs: services with a schedule. Each firing starts a fresh
//! instance that runs to completion; runs are kept in a history.
//!
//! Cron sits above the services layer: it runs its instances through the
//! same code source, logs and identities as slots and pools, and shows a
//! run in progress among its service's instances through the supervisor.
//!
//! - `schedule`: the dialect (5-field cron, macros, `@every`), next-fire times.
//! - `job`: one job's task: sleep, fire, skip, time out, trigger by hand.
//! - `history`: the last runs of every job, on disk.
//! - [`Scheduler`] (here): owns every job, converging them to desired state.

mod clock;
pub mod history;
pub mod job;
pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use history::{Histories, History, RUNS_KEPT};
pub use job::{Firings, Job, JobSpec, NotStarted, Started, Trigger, SHARED_RUNS};
pub use schedule::{parse_duration, Schedule, ScheduleError};

use crate::model::{Desired, Run, Service, ServiceKey, Stack};
use crate::services::{RunSpec, Spec, Supervisor};

/// A job and what it was made from.
struct CronRuntime {
    job: Job,
    /// Schedule text and time zone the job's [`Schedule`] was parsed from.
    schedule_of: (String, Option<String>),
}

/// Every cron job, started, updated and stopped to match desired state.
pub struct Scheduler {
    supervisor: Arc<Supervisor>,
    histories: Arc<Histories>,
    jobs: Mutex<HashMap<ServiceKey, CronRuntime>>,
    /// Every service seen, so a deleted one's history can go.
    known: Mutex<HashSet<ServiceKey>>,
    /// Jobs being stopped, waited for by [`Scheduler::stop_all`].
    stopping: tokio_util::task::TaskTracker,
    /// In a cluster: the firings every host's jobs claim.
    firings: std::sync::OnceLock<Arc<dyn Firings>>,
}

impl Scheduler {
    /// A scheduler running jobs' instances through `supervisor`'s parts.
    pub fn new(supervisor: Arc<Supervisor>, histories: Arc<Histories>) -> Scheduler {
        Scheduler {
            supervisor,
            histories,
            jobs: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
            stopping: tokio_util::task::TaskTracker::new(),
            firings: std::sync::OnceLock::new(),
        }
    }

    /// Claims each scheduled firing through `firings` from now on, so a
    /// job fires once per scheduled time across the hosts of a cluster.
    pub fn claim_with(&self, firings: Arc<dyn Firings>) {
        let _ = self.firings.set(firings);
    }

    /// Converges the jobs to `desired`.
    pub fn apply(&self, desired: &Desired) {
        let mut wanted = HashSet::new();
        for (key, service, stack) in desired.services_with_stacks() {
            self.converge(&key, service, stack, desired.runs_here(&key));
            wanted.insert(key);
        }
        let gone: Vec<ServiceKey> = {
            let mut known = self.known.lock();
            let gone = known.difference(&wanted).cloned().collect();
            *known = wanted;
            gone
        };
        for key in gone {
            if let Some(old) = self.jobs.lock().remove(&key) {
                self.stopping.spawn(old.job.stop());
            }
            self.histories.remove(&key);
        }
    }

    /// Starts, updates or stops one service's job to match its schedule.
    /// A schedule that stops parsing (it was checked when it was set, so
    /// only a changed dialect could do that) leaves the job stopped. In a
    /// cluster only the host the job is placed on (`here`) fires it.
    fn converge(&self, key: &ServiceKey, service: &Service, stack: Option<&Stack>, here: bool) {
        let mut jobs = self.jobs.lock();
        let Some(text) = service.schedule.clone().filter(|_| here) else {
            if let Some(old) = jobs.remove(key) {
                let why = if here {
                    "schedule removed"
                } else {
                    "placed on another host"
                };
                tracing::info!(service = %key, "{why}: stopping the cron job");
                self.stopping.spawn(old.job.stop());
            }
            return;
        };
        let schedule_of = (text, service.timezone.clone());
        let old = jobs
            .get(key)
            .map(|c| (c.job.spec(), c.schedule_of == schedule_of));
        let schedule = match &old {
            Some((spec, true)) => spec.schedule.clone(),
            _ => match Schedule::parse(&schedule_of.0, schedule_of.1.as_deref()) {
                Ok(schedule) => Arc::new(schedule),
                Err(e) => {
                    tracing::error!(service = %key, error = %e, "cannot schedule");
                    if let Some(old) = jobs.remove(key) {
                        self.stopping.spawn(old.job.stop());
                    }
                    return;
                }
            },
        };
        let code = self.supervisor.parts().code.clone();
        let (run, version) = RunSpec::of(service, stack, &|d| code.is_image(d));
        let run = match &old {
            Some((old, _)) if old.run.run == run && old.run.version == version => old.run.clone(),
            Some((old, _)) if old.run.run == run => old.run.relabelled(version),
            _ => Spec::new(run, version),
        };
        let spec = Arc::new(JobSpec {
            schedule,
            timeout: service.timeout_ms.map(Duration::from_millis),
            run,
        });
        match (jobs.get_mut(key), old) {
            (Some(c), Some((old, _))) => {
                if !Arc::ptr_eq(&old.schedule, &spec.schedule)
                    || old.timeout != spec.timeout
                    || !Arc::ptr_eq(&old.run, &spec.run)
                {
                    c.job.update(spec);
                    c.schedule_of = schedule_of;
                }
            }
            _ => {
                tracing::info!(service = %key, schedule = %schedule_of.0, "cron job scheduled");
                let history = self.histories.job(key);
                let job = Job::spawn(
                    self.supervisor.clone(),
                    key.clone(),
                    history,
                    spec,
                    self.firings.get().cloned(),
                );
                jobs.insert(key.clone(), CronRuntime { job, schedule_of });
            }
        }
    }

    /// The handle that runs a job by hand, if the service is one.
    pub fn trigger(&self, key: &ServiceKey) -> Option<Trigger> {
        self.jobs.lock().get(key).map(|c| c.job.trigger())
    }

    /// A job's kept runs, newest first.
    pub fn runs(&self, key: &ServiceKey) -> Vec<Run> {
        self.histories.job(key).newest_first()
    }

    /// Stops every job and run; used at shutdown.
    pub async fn stop_all(&self) {
        let jobs: Vec<CronRuntime> = self.jobs.lock().drain().map(|(_, c)| c).collect();
        for c in jobs {
            c.job.stop().await;
        }
        self.stopping.close();
        self.stopping.wait().await;
    }
}
