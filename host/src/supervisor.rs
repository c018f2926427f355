//! The supervisor: makes the instances that run match the desired state in
//! the store, and keeps them running.
//!
//! Every service has a row of *slots*, one per desired instance. A slot is
//! a task that starts an instance, waits for it to end, records how it
//! ended, and starts it again after an exponential back-off. The reconcile
//! loop re-reads desired state whenever the store's revision moves and
//! adds or removes slots, and rolls a changed service to its new settings
//! one slot at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cron::{Histories, Job, JobSpec, Schedule, Trigger};
use crate::dns::{Directory, Identity};
use crate::engine::{Engine, Loaded};
use crate::events::Events;
use crate::ingress::Routes;
use crate::instance::{run_command, Interrupt, Launch, Outcome};
use crate::logs::{LogLine, LogStream, Logs, Stream};
use crate::metrics::Metrics;
use crate::model::{
    dns_name, Digest, InstanceState, InstanceStatus, Run, Service, ServiceKey, ServiceType, Stack,
};
use crate::store::{Desired, Store};
use crate::web::WebPool;

/// First back-off after an instance ends.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that ran this long resets its back-off.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Longest wait for one slot to take new settings before a rollout moves on.
const ROLLOUT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a rollout looks at the slot it waits for.
const ROLLOUT_POLL: Duration = Duration::from_millis(10);

/// What a slot runs: everything about a service that, when it changes,
/// means its instances must restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunSpec {
    pub(crate) command: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) memory_bytes: u64,
    /// The component's digest, or why there is none.
    pub(crate) component: Result<Digest, String>,
}

/// A [`RunSpec`] as handed to slots and cron jobs, with an id so a rollout
/// can tell when a slot has taken it, and the stack version it belongs to.
#[derive(Debug)]
pub struct Spec {
    pub(crate) id: u64,
    pub(crate) run: RunSpec,
    pub(crate) version: u64,
}

static NEXT_SPEC_ID: AtomicU64 = AtomicU64::new(1);

/// What a slot shares with the supervisor: its status and which spec it
/// has taken.
struct SlotShared {
    status: InstanceStatus,
    spec_id: u64,
}

struct Slot {
    shared: Arc<Mutex<SlotShared>>,
    spec: watch::Sender<Arc<Spec>>,
    task: JoinHandle<()>,
}

struct ServiceRuntime {
    spec: Arc<Spec>,
    slots: Vec<Slot>,
    rollout: Option<JoinHandle<()>>,
    cron: Option<CronRuntime>,
    web: Option<Arc<WebPool>>,
}

/// A cron job's task and the schedule settings it was made from.
struct CronRuntime {
    job: Job,
    /// Schedule text and time zone the job's [`Schedule`] was parsed from.
    schedule_of: (String, Option<String>),
}

/// The parts slots and jobs need.
#[derive(Clone)]
pub(crate) struct Parts {
    pub(crate) engine: Arc<Engine>,
    pub(crate) logs: Arc<Logs>,
    pub(crate) histories: Arc<Histories>,
    /// Requests that may wait per web instance.
    pub(crate) queue_per_instance: usize,
    /// Intra-DNS names and outbound policies.
    pub(crate) directory: Arc<Directory>,
    /// Counters for `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// What happened, for `mesh events`.
    pub(crate) events: Arc<Events>,
}

impl Parts {
    /// Who an instance of a service is, for the calls it makes.
    pub(crate) fn identity(&self, key: &ServiceKey, instance: &str) -> Identity {
        Identity {
            env: key.env.clone(),
            name: dns_name(&key.stack, &key.name),
            directory: self.directory.clone(),
            log: self.logs.service(key),
            instance: instance.to_string(),
            metrics: self.metrics.service(key),
        }
    }
}

impl RunSpec {
    /// The guest's environment variables for one instance.
    pub(crate) fn env_for(&self, instance: &str) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("MESH_INSTANCE".into(), instance.to_string()));
        env
    }
}

/// Where an ingress request goes.
pub struct Route {
    /// The web service.
    pub key: ServiceKey,
    /// Its pool, once the supervisor has started one.
    pub pool: Option<Arc<WebPool>>,
    /// Whether the endpoint was published as `https://`.
    pub https: bool,
}

/// Converges running instances to desired state.
pub struct Supervisor {
    parts: Parts,
    store: Store,
    runtimes: Mutex<HashMap<ServiceKey, ServiceRuntime>>,
    routes: RwLock<Arc<Routes>>,
    /// Asks for a reconcile that no store change triggers (code loaded).
    kick: Arc<tokio::sync::Notify>,
    /// Interactive runs in progress, by service.
    interactive: Mutex<HashMap<ServiceKey, Vec<Arc<Mutex<InstanceStatus>>>>>,
    /// The store revision the last reconcile included.
    applied: watch::Sender<u64>,
}

impl Supervisor {
    /// A supervisor for the services in `store`, running code through `engine`.
    pub fn new(
        store: Store,
        engine: Arc<Engine>,
        logs: Arc<Logs>,
        histories: Arc<Histories>,
        events: Arc<Events>,
        queue_per_instance: usize,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            parts: Parts {
                engine,
                logs,
                histories,
                queue_per_instance,
                directory: Arc::new(Directory::default()),
                metrics: Arc::new(Metrics::default()),
                events,
            },
            store,
            runtimes: Mutex::new(HashMap::new()),
            routes: RwLock::new(Arc::new(Routes::default())),
            kick: Arc::new(tokio::sync::Notify::new()),
            interactive: Mutex::new(HashMap::new()),
            applied: watch::Sender::new(0),
        })
    }

    /// Reconciles now and then after every committed change, until the
    /// task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut revisions = self.store.subscribe();
        loop {
            revisions.borrow_and_update();
            match self.store.desired().await {
                Ok(desired) => {
                    self.reconcile(&desired);
                    self.applied.send_replace(desired.revision);
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot read desired state"),
            }
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = self.kick.notified() => {}
            }
        }
    }

    /// Waits (at most `limit`) until routes, names, policies and desired
    /// instance counts include every change committed at or before
    /// `revision`, so that a command's answer means its change is in
    /// effect.
    pub async fn applied(&self, revision: u64, limit: std::time::Duration) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(limit, applied.wait_for(|&r| r >= revision)).await;
    }

    /// The instances of one service, in slot order.
    pub fn instances(&self, key: &ServiceKey) -> Vec<InstanceStatus> {
        let interactive: Vec<InstanceStatus> = lock(&self.interactive)
            .get(key)
            .map(|runs| runs.iter().map(|s| lock(s).clone()).collect())
            .unwrap_or_default();
        let runtimes = self.lock();
        let mut all: Vec<InstanceStatus> = runtimes
            .get(key)
            .map(|rt| {
                rt.slots
                    .iter()
                    .map(|s| lock(&s.shared).status.clone())
                    .chain(rt.cron.as_ref().and_then(|c| c.job.current()))
                    .chain(rt.web.iter().flat_map(|w| {
                        // A worker's request instances show once they
                        // have served (or failed) a call.
                        let warm = w.warm();
                        w.instances()
                            .into_iter()
                            .filter(move |i| warm || i.started_at.is_some() || i.restarts > 0)
                    }))
                    .collect()
            })
            .unwrap_or_default();
        all.extend(interactive);
        all
    }

    /// The web service an ingress request for `host` and `path` goes to,
    /// and its pool when the supervisor has started one.
    pub fn route(&self, host: &str, path: &str) -> Option<Route> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (endpoint, key) = routes.find(host, path)?;
        let pool = self.lock().get(key).and_then(|rt| rt.web.clone());
        Some(Route {
            key: key.clone(),
            pool,
            https: endpoint.scheme == "https",
        })
    }

    /// The event log.
    pub fn events(&self) -> &Arc<Events> {
        &self.parts.events
    }

    /// `/metrics` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let keys: Vec<ServiceKey> = self.lock().keys().cloned().collect();
        let mut instances: Vec<(ServiceKey, Vec<InstanceStatus>)> = keys
            .into_iter()
            .map(|key| {
                let list = self.instances(&key);
                (key, list)
            })
            .collect();
        instances.sort_by(|a, b| a.0.cmp(&b.0));
        self.parts
            .metrics
            .render(&instances, self.parts.directory.counts())
    }

    /// Who an instance of a service is, for the calls it makes.
    pub fn identity(&self, key: &ServiceKey, instance: &str) -> Identity {
        self.parts.identity(key, instance)
    }

    /// Shows an interactive run among the service's instances while it lasts.
    pub fn track_interactive(&self, key: &ServiceKey, status: Arc<Mutex<InstanceStatus>>) {
        lock(&self.interactive)
            .entry(key.clone())
            .or_default()
            .push(status);
    }

    /// Forgets an interactive run that ended.
    pub fn untrack_interactive(&self, key: &ServiceKey, status: &Arc<Mutex<InstanceStatus>>) {
        let mut interactive = lock(&self.interactive);
        if let Some(runs) = interactive.get_mut(key) {
            runs.retain(|s| !Arc::ptr_eq(s, status));
            if runs.is_empty() {
                interactive.remove(key);
            }
        }
    }

    /// A job's kept runs, newest first.
    pub fn runs(&self, key: &ServiceKey) -> Vec<Run> {
        self.parts.histories.job(key).newest_first()
    }

    /// The handle that runs a cron job by hand, if the service is one the
    /// supervisor has started.
    pub fn trigger(&self, key: &ServiceKey) -> Option<Trigger> {
        self.lock()
            .get(key)
            .and_then(|rt| rt.cron.as_ref())
            .map(|c| c.job.trigger())
    }

    /// Stops every instance; used at shutdown.
    pub async fn stop_all(&self) {
        let runtimes: Vec<ServiceRuntime> = self.lock().drain().map(|(_, rt)| rt).collect();
        for rt in runtimes {
            stop_runtime(rt).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceKey, ServiceRuntime>> {
        lock(&self.runtimes)
    }

    fn reconcile(&self, desired: &Desired) {
        let stacks: HashMap<(&str, &str), &Stack> = desired
            .stacks
            .iter()
            .map(|s| ((s.env.as_str(), s.name.as_str()), s))
            .collect();
        let mut runtimes = self.lock();
        let mut wanted = std::collections::HashSet::new();
        for service in &desired.services {
            let key = ServiceKey::of(service);
            wanted.insert(key.clone());
            let stack = stacks
                .get(&(service.env.as_str(), service.stack.as_str()))
                .copied();
            let (run, version) = run_spec(service, stack);
            let requests_only = self.serves_only_http(&run);
            // Cron jobs get their instances from the scheduler, web services
            // (and workers whose code only serves HTTP) from their pool.
            let count = match service.service_type() {
                ServiceType::Cron | ServiceType::Web => 0,
                ServiceType::Worker if requests_only => 0,
                ServiceType::Worker => service.instances as usize,
            };
            let rt = runtimes
                .entry(key.clone())
                .or_insert_with(|| ServiceRuntime {
                    spec: new_spec(run.clone(), version),
                    slots: Vec::new(),
                    rollout: None,
                    cron: None,
                    web: None,
                });
            self.converge(&key, rt, run, version, count);
            self.converge_cron(&key, rt, service);
            self.converge_web(&key, rt, service, requests_only);
        }
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Routes::of(&desired.services));
        let names = runtimes
            .iter()
            .filter_map(|(key, rt)| {
                let pool = rt.web.clone()?;
                Some(((key.env.clone(), dns_name(&key.stack, &key.name)), pool))
            })
            .collect();
        let policies = desired
            .envs
            .iter()
            .map(|e| (e.name.clone(), e.outbound.clone()))
            .collect();
        self.parts.directory.set(names, policies);
        let gone: Vec<ServiceKey> = runtimes
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(rt) = runtimes.remove(&key) {
                tracing::info!(service = %key, "service deleted: stopping its instances");
                self.parts.metrics.forget(&key);
                let parts = self.parts.clone();
                tokio::spawn(async move {
                    stop_runtime(rt).await;
                    parts.logs.remove(&key);
                    parts.histories.remove(&key);
                });
            }
        }
    }

    fn converge(
        &self,
        key: &ServiceKey,
        rt: &mut ServiceRuntime,
        run: RunSpec,
        version: u64,
        count: usize,
    ) {
        if rt.spec.run != run {
            tracing::info!(service = %key, version, "settings changed: rolling instances");
            rt.spec = new_spec(run, version);
            if let Some(old) = rt.rollout.take() {
                old.abort();
            }
            let steps: Vec<_> = rt
                .slots
                .iter()
                .map(|s| (s.spec.clone(), s.shared.clone()))
                .collect();
            rt.rollout = Some(tokio::spawn(rollout(steps, rt.spec.clone())));
        } else if rt.spec.version != version {
            // Same code and settings under a new version number: nothing to
            // restart, only the label moves.
            rt.spec = Arc::new(Spec {
                id: rt.spec.id,
                run: rt.spec.run.clone(),
                version,
            });
            for slot in &rt.slots {
                lock(&slot.shared).status.version = version;
            }
        }
        while rt.slots.len() < count {
            let index = rt.slots.len();
            rt.slots.push(self.spawn_slot(key, index, rt.spec.clone()));
        }
        while rt.slots.len() > count {
            if let Some(slot) = rt.slots.pop() {
                slot.task.abort();
            }
        }
    }

    /// Starts, replaces or stops the service's pool of request-serving
    /// instances: a web service's is kept warm; a worker's starts instances
    /// on the first call by intra-DNS name. A new pool replaces the old
    /// when code, settings or instance count change (requests in flight
    /// finish on the old one). Cron jobs take no requests.
    fn converge_web(
        &self,
        key: &ServiceKey,
        rt: &mut ServiceRuntime,
        service: &Service,
        requests_only: bool,
    ) {
        let warm = match service.service_type() {
            ServiceType::Cron => {
                rt.web = None;
                return;
            }
            ServiceType::Web => true,
            ServiceType::Worker => requests_only,
        };
        let current = rt.web.as_ref().is_some_and(|pool| {
            pool.matches(&rt.spec, service.instances, service.fresh_per_request, warm)
        });
        if !current {
            tracing::debug!(service = %key, instances = service.instances, warm, "request pool");
            rt.web = Some(WebPool::start(
                self.parts.clone(),
                key.clone(),
                rt.spec.clone(),
                service.instances,
                service.fresh_per_request,
                warm,
            ));
        }
    }

    /// Whether the code a spec runs has the HTTP handler but no
    /// `wasi:cli/run`: its instances come from its request pool. Code not in
    /// memory yet is loaded in the background, then reconciled again.
    fn serves_only_http(&self, run: &RunSpec) -> bool {
        let Ok(digest) = &run.component else {
            return false;
        };
        if let Some(code) = self.parts.engine.loaded(digest) {
            return code.command.is_none() && code.proxy.is_some();
        }
        let (engine, digest, kick) = (self.parts.engine.clone(), digest.clone(), self.kick.clone());
        tokio::spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || engine.load(&digest)).await;
            if matches!(loaded, Ok(Ok(_))) {
                kick.notify_one();
            }
        });
        false
    }

    /// Starts, updates or stops the service's cron job to match its
    /// schedule. A schedule that stops parsing (it was checked when it was
    /// set, so only a changed dialect could do that) leaves the job stopped.
    fn converge_cron(&self, key: &ServiceKey, rt: &mut ServiceRuntime, service: &Service) {
        let Some(text) = service.schedule.clone() else {
            if let Some(old) = rt.cron.take() {
                tracing::info!(service = %key, "schedule removed: stopping the cron job");
                tokio::spawn(old.job.stop());
            }
            return;
        };
        let schedule_of = (text, service.timezone.clone());
        let timeout = service.timeout_ms.map(Duration::from_millis);
        let schedule = match &rt.cron {
            Some(c) if c.schedule_of == schedule_of => c.job.spec().schedule.clone(),
            _ => match Schedule::parse(&schedule_of.0, schedule_of.1.as_deref()) {
                Ok(schedule) => Arc::new(schedule),
                Err(e) => {
                    tracing::error!(service = %key, error = %e, "cannot schedule");
                    if let Some(old) = rt.cron.take() {
                        tokio::spawn(old.job.stop());
                    }
                    return;
                }
            },
        };
        let spec = Arc::new(JobSpec {
            schedule,
            timeout,
            run: rt.spec.clone(),
        });
        match &mut rt.cron {
            Some(c) => {
                let old = c.job.spec();
                if !Arc::ptr_eq(&old.schedule, &spec.schedule)
                    || old.timeout != spec.timeout
                    || !Arc::ptr_eq(&old.run, &spec.run)
                {
                    c.job.update(spec);
                    c.schedule_of = schedule_of;
                }
            }
            None => {
                tracing::info!(service = %key, schedule = %schedule_of.0, "cron job scheduled");
                let history = self.parts.histories.job(key);
                rt.cron = Some(CronRuntime {
                    job: Job::spawn(self.parts.clone(), key.clone(), history, spec),
                    schedule_of,
                });
            }
        }
    }

    fn spawn_slot(&self, key: &ServiceKey, index: usize, spec: Arc<Spec>) -> Slot {
        let id = format!("{}.{}", key.name, index + 1);
        let shared = Arc::new(Mutex::new(SlotShared {
            status: InstanceStatus::starting(id.clone(), spec.version),
            spec_id: 0,
        }));
        let (tx, rx) = watch::channel(spec);
        let task = tokio::spawn(slot_main(
            self.parts.clone(),
            key.clone(),
            id,
            shared.clone(),
            rx,
        ));
        Slot {
            shared,
            spec: tx,
            task,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Slot state is plain data; a panic mid-update leaves it readable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_spec(run: RunSpec, version: u64) -> Arc<Spec> {
    Arc::new(Spec {
        id: NEXT_SPEC_ID.fetch_add(1, Ordering::Relaxed),
        run,
        version,
    })
}

/// What a service should run, given its stack.
fn run_spec(service: &Service, stack: Option<&Stack>) -> (RunSpec, u64) {
    let component = resolve_component(service, stack);
    let mut env: Vec<(String, String)> = service
        .env_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("MESH_STACK".into(), service.stack.clone()));
    env.push(("MESH_SERVICE".into(), service.name.clone()));
    let run = RunSpec {
        command: service.command.clone(),
        env,
        memory_bytes: service.memory_bytes,
        component,
    };
    (run, stack.map_or(0, |s| s.current))
}

/// The digest of the component a service's command names, or a message
/// saying why there is none.
pub fn resolve_component(service: &Service, stack: Option<&Stack>) -> Result<Digest, String> {
    let name = service.component();
    let stack = match stack {
        Some(stack) if stack.current > 0 => stack,
        _ => {
            return Err(format!(
                "stack {} has no code yet: deploy some with `mesh stack deploy {} PATH`",
                service.stack, service.stack
            ))
        }
    };
    stack
        .components
        .get(name)
        .cloned()
        .ok_or_else(|| no_component_message(name, &stack.name, stack.current, &stack.components))
}

/// `no component named 'ap' in stack app v4 (have: app, payments)`.
pub fn no_component_message(
    name: &str,
    stack: &str,
    version: u64,
    components: &BTreeMap<String, Digest>,
) -> String {
    let have: Vec<&str> = components.keys().map(String::as_str).collect();
    format!(
        "no component named '{name}' in stack {stack} v{version} (have: {})",
        have.join(", ")
    )
}

/// Hands `spec` to each slot in turn, waiting for one to be up on it before
/// moving to the next, so a service keeps serving while it rolls.
/// One step of a rollout: a slot's spec sender and its shared status.
type RolloutStep = (watch::Sender<Arc<Spec>>, Arc<Mutex<SlotShared>>);

async fn rollout(steps: Vec<RolloutStep>, spec: Arc<Spec>) {
    for (tx, shared) in steps {
        tx.send_replace(spec.clone());
        let deadline = Instant::now() + ROLLOUT_STEP_TIMEOUT;
        while Instant::now() < deadline {
            let taken = {
                let s = lock(&shared);
                s.spec_id == spec.id && s.status.state != InstanceState::Starting
            };
            if taken {
                break;
            }
            tokio::time::sleep(ROLLOUT_POLL).await;
        }
    }
}

async fn stop_runtime(rt: ServiceRuntime) {
    if let Some(rollout) = rt.rollout {
        rollout.abort();
    }
    if let Some(cron) = rt.cron {
        cron.job.stop().await;
    }
    for slot in &rt.slots {
        slot.task.abort();
    }
    for slot in rt.slots {
        let _ = slot.task.await;
    }
}

/// The back-off before restart number `failures + 1`.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .checked_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

/// One slot's life: start, run, record, back off, start again; take new
/// settings when handed them. Ends when aborted (which drops the running
/// instance) or when the supervisor drops the slot's spec sender.
async fn slot_main(
    parts: Parts,
    key: ServiceKey,
    id: String,
    shared: Arc<Mutex<SlotShared>>,
    mut specs: watch::Receiver<Arc<Spec>>,
) {
    let who = parts.identity(&key, &id);
    let log = who.log.clone();
    let mut failures: u32 = 0;
    loop {
        let spec = specs.borrow_and_update().clone();
        {
            let mut s = lock(&shared);
            s.spec_id = spec.id;
            s.status.version = spec.version;
            s.status.enter(InstanceState::Starting);
            s.status.started_at = Some(Utc::now());
        }
        let code = match load_code(&parts, &spec.run).await {
            Ok(code) => code,
            Err(message) => {
                tracing::warn!(service = %key, instance = %id, %message, "cannot start");
                set_crashed(&shared, message);
                // Nothing will change until the service or its stack does.
                if specs.changed().await.is_err() {
                    return;
                }
                reset_restarts(&shared, &mut failures);
                continue;
            }
        };
        let launch = Launch {
            args: spec.run.command.clone(),
            env: spec.run.env_for(&id),
            memory_bytes: spec.run.memory_bytes,
            stdout: LogStream::new(log.clone(), &id, Stream::Stdout),
            stderr: LogStream::new(log.clone(), &id, Stream::Stderr),
            who: Some(who.clone()),
            stdin: None,
        };
        let started = Instant::now();
        let mark_running = || {
            let restarts = {
                let mut s = lock(&shared);
                s.status.enter(InstanceState::Running);
                s.status.restarts
            };
            let message = match restarts {
                0 => "started".to_string(),
                n => format!("started again (restart {n})"),
            };
            parts
                .events
                .service(&key, "instance.started", Some(&id), message);
        };
        let run = run_command(
            &parts.engine,
            &code,
            launch,
            Interrupt::default(),
            mark_running,
        );
        let outcome = tokio::select! {
            outcome = run => outcome,
            changed = specs.changed() => {
                if changed.is_err() {
                    return;
                }
                reset_restarts(&shared, &mut failures);
                continue;
            }
        };
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        let delay = backoff(failures);
        failures = failures.saturating_add(1);
        let restarts = {
            let mut s = lock(&shared);
            s.status
                .back_off(outcome.exit_code, outcome.message.clone(), delay);
            s.status.restarts
        };
        who.metrics.restart();
        tracing::info!(service = %key, instance = %id, outcome = %outcome.message, ?delay, restarts, "instance ended");
        let kind = Outcome::event_kind(&outcome.message, "instance.exited");
        parts.events.service(
            &key,
            kind,
            Some(&id),
            format!(
                "{}; restart {restarts} in {:.1}s",
                outcome.message,
                delay.as_secs_f64()
            ),
        );
        log.write(LogLine {
            time: Utc::now(),
            instance: id.clone(),
            stream: Stream::Stderr,
            text: format!(
                "[mesh] {}; restart {restarts} in {:.1}s",
                outcome.message,
                delay.as_secs_f64()
            ),
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            changed = specs.changed() => {
                if changed.is_err() {
                    return;
                }
                reset_restarts(&shared, &mut failures);
            }
        }
    }
}

/// Loads the code a spec runs, or says why it cannot run as a command.
pub(crate) async fn load_code(parts: &Parts, run: &RunSpec) -> Result<Arc<Loaded>, String> {
    let loaded = load_any(parts, run).await?;
    let component = run.command.first().map(String::as_str).unwrap_or("");
    if loaded.command.is_none() && loaded.serves_http() {
        return Err(format!(
            "component '{component}' only serves HTTP (no `wasi:cli/run`): it takes requests by its intra-DNS name, or publish it with `mesh svc publish`"
        ));
    }
    if loaded.command.is_none() {
        return Err(format!(
            "component '{component}' does not export `wasi:cli/run`, so it cannot run as a worker (it exports {})",
            loaded.exports.join(", ")
        ));
    }
    Ok(loaded)
}

/// Loads the code a spec names, whatever it exports.
pub(crate) async fn load_any(parts: &Parts, run: &RunSpec) -> Result<Arc<Loaded>, String> {
    let digest = run.component.clone()?;
    let loaded = match parts.engine.loaded(&digest) {
        Some(loaded) => loaded,
        None => {
            // Reading or compiling code blocks: keep it off the async threads.
            let engine = parts.engine.clone();
            tokio::task::spawn_blocking(move || engine.load(&digest))
                .await
                .map_err(|e| format!("loading code failed: {e}"))?
                .map_err(|e| format!("loading code failed: {e:#}"))?
        }
    };
    Ok(loaded)
}

fn set_crashed(shared: &Mutex<SlotShared>, message: String) {
    let mut s = lock(shared);
    s.status.enter(InstanceState::Crashed);
    s.status.exit_code = None;
    s.status.message = Some(message);
}

fn reset_restarts(shared: &Mutex<SlotShared>, failures: &mut u32) {
    *failures = 0;
    let mut s = lock(shared);
    s.status.restarts = 0;
    s.status.exit_code = None;
    s.status.message = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(9), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn unknown_components_are_named_with_what_exists() {
        let mut components = BTreeMap::new();
        components.insert("app".to_string(), Digest::of(b"a"));
        components.insert("payments".to_string(), Digest::of(b"p"));
        assert_eq!(
            no_component_message("ap", "app", 4, &components),
            "no component named 'ap' in stack app v4 (have: app, payments)"
        );
    }
}
