//! The supervisor: makes the instances that run match desired state, and
//! keeps them running.
//!
//! It is handed each new snapshot of desired state ([`Supervisor::apply`]);
//! it does not read the store itself. For every service it owns a row of
//! worker slots (`slot.rs`), a pool of request-serving instances
//! (`pool/`) and a rollout in progress (`rollout.rs`); it writes the
//! routing table and the intra-DNS directory. Whatever it starts it stops:
//! a deleted service's slots and pool end, its log is closed and removed,
//! its counters go. Instances owned elsewhere (an interactive run, a cron
//! job's run) are shown with the service's while their [`Tracked`] guard
//! lives. How rollouts are run, recorded and undone is `release.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

mod release;

use super::callee::Callee;
use super::callee::Refusal;
use super::code::CodeSource;
use super::directory::{Directory, Identity, Names};
use super::parts::Parts;
use super::pool::{PoolSettings, Reuse, Start, WebPool};
use super::remote::{Forward, Remote};
use super::rollout::Rollout;
use super::routes::Routes;
use super::slot::Slot;
use super::spec::{RunSpec, Spec};
use crate::model::{
    dns_name, Desired, Digest, Egress, InstanceStatus, Rollout as RolloutRecord, Service,
    ServiceKey, ServiceType, Stack,
};
use crate::telemetry::{Events, Logs, Metrics};
use tokio_util::task::AbortOnDropHandle;

/// What the supervisor runs for one service.
struct ServiceRuntime {
    spec: Arc<Spec>,
    slots: Vec<Slot>,
    rollout: Option<Rollout>,
    web: Option<Arc<WebPool>>,
    /// Its pool's rollout (or restore) in progress; dropping it stops it.
    web_rollout: Option<AbortOnDropHandle<()>>,
    /// The pool whose rollout failed: not tried again until what the
    /// service should run changes.
    refused: Option<Arc<WebPool>>,
    /// What its worker slots failed to roll to, likewise.
    refused_run: Option<RunSpec>,
    /// Its last rollout here.
    release: Arc<Mutex<Option<RolloutRecord>>>,
}

/// A rollout that failed on this host, for whoever restores the
/// previous version in desired state (the daemon, with a rollback).
#[derive(Clone, Debug)]
pub struct RolloutFailure {
    /// The service.
    pub key: ServiceKey,
    /// The stack version restored.
    pub from_version: u64,
    /// The stack version that did not come up.
    pub to_version: u64,
    /// Why, in one line.
    pub reason: String,
}

/// Rollout failures not yet taken by the daemon, at most.
pub const MAX_PENDING_FAILURES: usize = 64;

/// Where an ingress request goes.
pub struct Route {
    /// Who serves it.
    pub target: Target,
    /// Whether the endpoint was published as `https://`.
    pub https: bool,
    /// Whether its answers carry HSTS (`--https-only`).
    pub hsts: bool,
}

/// Who serves an endpoint's requests.
pub enum Target {
    /// This host's instances.
    Local(Arc<WebPool>),
    /// Another host's (in a cluster, when none runs here).
    Remote(Arc<Remote>),
}

impl Route {
    /// Serves one request from the ingress.
    pub async fn handle(
        &self,
        request: http::Request<WasiBody>,
        scheme: Scheme,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        match &self.target {
            Target::Local(pool) => pool.handle(request, scheme).await,
            Target::Remote(remote) => remote.handle(request, scheme).await,
        }
    }
}

/// Routes and the pools behind them, published together at each apply.
#[derive(Default)]
struct Published {
    routes: Routes,
    pools: HashMap<ServiceKey, Arc<WebPool>>,
    /// Services all of whose instances run on other hosts.
    remotes: HashMap<ServiceKey, Arc<Remote>>,
}

/// Instances owned elsewhere, shown among their service's.
type TrackedMap = HashMap<ServiceKey, Vec<Arc<Mutex<InstanceStatus>>>>;

/// Converges running instances to desired state.
pub struct Supervisor {
    parts: Parts,
    runtimes: Mutex<HashMap<ServiceKey, ServiceRuntime>>,
    /// What ingress requests read: routes and the pools behind them, as
    /// of the last apply, so a request takes no supervisor lock.
    published: RwLock<Arc<Published>>,
    /// Digests being loaded in the background for `serves_only_http`.
    loading: Mutex<HashSet<Digest>>,
    tracked: Arc<Mutex<TrackedMap>>,
    /// Told when the supervisor wants to be applied again.
    kick: Notify,
    /// Deleted services being stopped, waited for by `stop_all`.
    stopping: tokio_util::task::TaskTracker,
    /// How requests reach services that run only on other hosts.
    forward: std::sync::OnceLock<Arc<dyn Forward>>,
    /// Where failed rollouts are reported.
    failures: std::sync::OnceLock<tokio::sync::mpsc::Sender<RolloutFailure>>,
    /// The revision of desired state being applied.
    revision: std::sync::atomic::AtomicU64,
    me: Weak<Supervisor>,
}

impl Supervisor {
    /// A supervisor running code from `code`.
    pub fn new(
        code: Arc<dyn CodeSource>,
        logs: Arc<Logs>,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        queue_per_instance: usize,
    ) -> Arc<Supervisor> {
        Arc::new_cyclic(|me| Supervisor {
            parts: Parts {
                code,
                logs,
                queue_per_instance,
                directory: Arc::new(Directory::new(metrics.clone())),
                metrics,
                events,
            },
            runtimes: Mutex::new(HashMap::new()),
            published: RwLock::new(Arc::new(Published::default())),
            loading: Mutex::new(HashSet::new()),
            tracked: Arc::new(Mutex::new(HashMap::new())),
            kick: Notify::new(),
            stopping: tokio_util::task::TaskTracker::new(),
            forward: std::sync::OnceLock::new(),
            failures: std::sync::OnceLock::new(),
            revision: std::sync::atomic::AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// The parts owners of instances share (for cron jobs and sessions).
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Notified when loaded code changed what some service runs as, so
    /// the caller should apply desired state again.
    pub fn kicked(&self) -> &Notify {
        &self.kick
    }

    /// Converges to `desired`: slots, pools, routes, names and policies.
    pub fn apply(&self, desired: &Desired) {
        self.revision
            .store(desired.revision, std::sync::atomic::Ordering::Relaxed);
        let mut runtimes = self.runtimes.lock();
        let mut wanted = HashSet::new();
        // In a cluster: services with instances somewhere.
        let placed: HashSet<ServiceKey> = desired
            .placements
            .iter()
            .filter(|p| !p.numbers.is_empty())
            .map(|p| p.key())
            .collect();
        for (key, service, stack) in desired.services_with_stacks() {
            let numbers = desired.numbers_here(&key, service);
            // Served by other hosts: no pool here.
            let elsewhere = numbers.is_empty() && placed.contains(&key);
            self.converge_service(&mut runtimes, &key, service, stack, &numbers, elsewhere);
            wanted.insert(key);
        }
        let gone: Vec<ServiceKey> = runtimes
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(rt) = runtimes.remove(&key) {
                self.stop_deleted(key, rt);
            }
        }
        // Names and routes of what is left: nothing reaches a deleted
        // service's pool, and nothing here keeps it alive.
        let pools: HashMap<ServiceKey, Arc<WebPool>> = runtimes
            .iter()
            .filter_map(|(key, rt)| Some((key.clone(), rt.web.clone()?)))
            .collect();
        let remotes = self.remotes(desired, &pools);
        self.publish_names(&pools, &remotes, desired);
        *self.published.write() = Arc::new(Published {
            routes: Routes::of(&desired.services),
            pools,
            remotes,
        });
    }

    fn converge_service(
        &self,
        runtimes: &mut HashMap<ServiceKey, ServiceRuntime>,
        key: &ServiceKey,
        service: &Service,
        stack: Option<&Stack>,
        numbers: &[u32],
        elsewhere: bool,
    ) {
        let code = self.parts.code.clone();
        let (run, version) = RunSpec::of(service, stack, &|d| code.is_image(d));
        let requests_only = self.serves_only_http(&run);
        // Cron jobs get their instances from the scheduler, web services
        // (and workers whose code only serves HTTP) from their pool.
        let slots = match service.service_type() {
            ServiceType::Cron | ServiceType::Web => &[][..],
            ServiceType::Worker if requests_only => &[][..],
            ServiceType::Worker => numbers,
        };
        let rt = runtimes
            .entry(key.clone())
            .or_insert_with(|| ServiceRuntime {
                spec: Spec::new(run.clone(), version),
                slots: Vec::new(),
                rollout: None,
                web: None,
                web_rollout: None,
                refused: None,
                refused_run: None,
                release: Arc::default(),
            });
        self.converge_slots(key, rt, (run, version), slots, service.rollout_timeout());
        if elsewhere {
            release::drop_web(rt, false);
        } else {
            self.converge_web(key, rt, service, requests_only, numbers);
        }
    }

    /// In a cluster, the services that run only on other hosts (each
    /// kept from the last apply while it runs on the same hosts).
    fn remotes(
        &self,
        desired: &Desired,
        pools: &HashMap<ServiceKey, Arc<WebPool>>,
    ) -> HashMap<ServiceKey, Arc<Remote>> {
        let Some(forward) = self.forward.get() else {
            return HashMap::new();
        };
        let before = self.published.read().clone();
        let mut remotes = HashMap::new();
        for placement in &desired.placements {
            let key = placement.key();
            if pools.contains_key(&key) {
                continue;
            }
            let mut nodes: Vec<String> = placement.numbers.values().cloned().collect();
            nodes.sort();
            nodes.dedup();
            if nodes.is_empty() {
                continue;
            }
            let remote = match before.remotes.get(&key) {
                Some(old) if old.same(&nodes) => old.clone(),
                _ => Remote::new(key.clone(), nodes, forward.clone()),
            };
            remotes.insert(key, remote);
        }
        remotes
    }

    /// Sends requests for services that run only on other hosts through
    /// `forward` from now on.
    pub fn forward_with(&self, forward: Arc<dyn Forward>) {
        let _ = self.forward.set(forward);
    }

    /// Reports rollouts that fail on this host to `failures` from now on
    /// (dropped, with a warning, when more than it holds wait).
    pub fn report_failures_to(&self, failures: tokio::sync::mpsc::Sender<RolloutFailure>) {
        let _ = self.failures.set(failures);
    }

    /// The service's last rollout on this host, if it had one.
    pub fn rollout(&self, key: &ServiceKey) -> Option<RolloutRecord> {
        let runtimes = self.runtimes.lock();
        let release = runtimes.get(key)?.release.clone();
        drop(runtimes);
        let record = release.lock().clone();
        record
    }

    /// This host's pool of a service, if it runs instances of it here:
    /// what another host's forwarded request is handed to.
    pub fn local_pool(&self, key: &ServiceKey) -> Option<Arc<WebPool>> {
        self.published.read().pools.get(key).cloned()
    }

    /// Intra-DNS names (every service with a pool, here or on another
    /// host) and outbound policies.
    fn publish_names(
        &self,
        pools: &HashMap<ServiceKey, Arc<WebPool>>,
        remotes: &HashMap<ServiceKey, Arc<Remote>>,
        desired: &Desired,
    ) {
        let mut names = Names::new();
        let callees = pools
            .iter()
            .map(|(key, pool)| (key, pool.clone() as Arc<dyn Callee>))
            .chain(
                remotes
                    .iter()
                    .map(|(key, remote)| (key, remote.clone() as Arc<dyn Callee>)),
            );
        for (key, callee) in callees {
            names
                .entry(key.env.clone())
                .or_default()
                .insert(dns_name(&key.stack, &key.name), callee);
        }
        let policies = desired
            .envs
            .iter()
            .map(|e| (e.name.clone(), Arc::new(Egress::of(e))))
            .collect();
        self.parts.directory.set(names, policies);
    }

    /// Stops everything a deleted service ran; its log and counters go at
    /// once, so nothing still running for it writes anywhere.
    fn stop_deleted(&self, key: ServiceKey, rt: ServiceRuntime) {
        tracing::info!(service = %key, "service deleted: stopping its instances");
        self.parts.metrics.forget(&key);
        self.parts.logs.remove(&key);
        self.stopping.spawn(stop_runtime(rt));
    }

    /// What kind of instances the service runs: `container` when its
    /// code is an image, else `wasm`.
    pub fn kind(&self, key: &ServiceKey) -> &'static str {
        let runtimes = self.runtimes.lock();
        match runtimes.get(key).map(|rt| &rt.spec.run.component) {
            Some(Ok(digest)) if self.parts.code.is_image(digest) => "container",
            _ => "wasm",
        }
    }

    /// Why the service's requests each get a fresh instance, when they do.
    pub fn fresh_because(&self, key: &ServiceKey) -> Option<String> {
        let runtimes = self.runtimes.lock();
        runtimes.get(key)?.web.as_ref()?.fresh_because()
    }

    /// The instances of one service, in slot order,
    /// then its pool's, then those owned elsewhere.
    pub fn instances(&self, key: &ServiceKey) -> Vec<InstanceStatus> {
        let tracked: Vec<InstanceStatus> = self
            .tracked
            .lock()
            .get(key)
            .map(|runs| runs.iter().map(|s| s.lock().clone()).collect())
            .unwrap_or_default();
        let mut all: Vec<InstanceStatus> = self
            .runtimes
            .lock()
            .get(key)
            .map(|rt| {
                rt.slots
                    .iter()
                    .map(Slot::status)
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
        all.extend(tracked);
        all
    }

    /// Every service's instances, by key.
    pub fn all_instances(&self) -> Vec<(ServiceKey, Vec<InstanceStatus>)> {
        let mut keys: Vec<ServiceKey> = self.runtimes.lock().keys().cloned().collect();
        keys.sort();
        keys.into_iter()
            .map(|key| {
                let list = self.instances(&key);
                (key, list)
            })
            .collect()
    }

    /// The pool of the web service an ingress request for `host` and
    /// `path` goes to. Routes and pools are published together, so every
    /// route has its pool.
    pub fn route(&self, host: &str, path: &str) -> Option<Route> {
        let published = self.published.read().clone();
        let (endpoint, key) = published.routes.find(host, path)?;
        let target = match published.pools.get(key) {
            Some(pool) => Target::Local(pool.clone()),
            None => Target::Remote(published.remotes.get(key)?.clone()),
        };
        Some(Route {
            target,
            https: endpoint.scheme == "https",
            hsts: endpoint.hsts,
        })
    }

    /// The event log.
    pub fn events(&self) -> &Arc<Events> {
        &self.parts.events
    }

    /// `/metrics` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.parts.metrics.render(&self.all_instances())
    }

    /// The requests this host answered for a service over the last
    /// minutes, as of `now_secs`.
    pub fn recent_requests(
        &self,
        key: &ServiceKey,
        now_secs: u64,
    ) -> Vec<crate::telemetry::WindowStats> {
        self.parts.metrics.recent(key, now_secs)
    }

    /// A service's memory and CPU use on this host over the last minutes.
    pub fn recent_usage(
        &self,
        key: &ServiceKey,
        now_secs: u64,
    ) -> Vec<crate::telemetry::UsageStats> {
        self.parts.metrics.usage(key, now_secs)
    }

    /// The services that called `key`'s by name on this host.
    pub fn callers_of(&self, key: &ServiceKey) -> Vec<crate::telemetry::CalledBy> {
        self.parts.metrics.callers_of(key)
    }

    /// Who an instance of a service is, for the calls it makes.
    pub fn identity(&self, key: &ServiceKey, instance: &str) -> Identity {
        self.parts.identity(key, instance)
    }

    /// Shows an instance owned elsewhere among the service's while the
    /// returned guard lives.
    pub fn track(&self, key: &ServiceKey, status: Arc<Mutex<InstanceStatus>>) -> Tracked {
        self.tracked
            .lock()
            .entry(key.clone())
            .or_default()
            .push(status.clone());
        Tracked {
            map: self.tracked.clone(),
            key: key.clone(),
            status,
        }
    }

    /// Stops every instance; used at shutdown.
    pub async fn stop_all(&self) {
        let runtimes: Vec<ServiceRuntime> =
            self.runtimes.lock().drain().map(|(_, rt)| rt).collect();
        for rt in runtimes {
            stop_runtime(rt).await;
        }
        // The names lead to pools whose callers' identities lead back to
        // the names: forgotten, so that the pools and their code go too.
        self.parts.directory.set(Names::new(), Default::default());
        self.stopping.close();
        self.stopping.wait().await;
    }

    /// Rolls the worker slots to `run` (of stack version `version`), each
    /// new instance up within `limit` when the rollout is guarded, and
    /// keeps one slot per number in `numbers`.
    fn converge_slots(
        &self,
        key: &ServiceKey,
        rt: &mut ServiceRuntime,
        (run, version): (RunSpec, u64),
        numbers: &[u32],
        limit: std::time::Duration,
    ) {
        if rt.spec.run != run {
            if rt.refused_run.as_ref() == Some(&run) {
                // Its rollout failed: the previous spec stays until what
                // the service should run changes again.
                return self.keep_slots(key, rt, numbers);
            }
            tracing::info!(service = %key, version, "settings changed: rolling instances");
            rt.refused_run = None;
            release::replaced(&rt.release);
            let previous = std::mem::replace(&mut rt.spec, Spec::new(run, version));
            // Only the slots that stay roll (the others are dropped below).
            let staying = || rt.slots.iter().filter(|s| numbers.contains(&s.number()));
            let handles = staying().map(Slot::handle).collect();
            // A worker whose instances run well is guarded: a new
            // instance that fails stops the rollout and the previous spec
            // comes back. One already failing is not (the change may be
            // its fix).
            let healthy = staying().any(|s| release::running_well(&s.status()));
            let guard =
                (!numbers.is_empty() && healthy).then(|| self.guard(key, rt, previous, limit));
            // A rollout already going is dropped, and so stopped.
            rt.rollout = Some(Rollout::start(handles, rt.spec.clone(), guard));
        } else {
            // Asked for what runs (after a rollback, say): what failed may
            // be asked for again.
            rt.refused_run = None;
            if rt.spec.version != version {
                // Same code and settings under a new version number:
                // nothing to restart, only the label moves.
                rt.spec = rt.spec.relabelled(version);
                for slot in &rt.slots {
                    slot.relabel(version);
                }
            }
        }
        self.keep_slots(key, rt, numbers);
    }

    /// Keeps one slot per instance number in `numbers`, on the current spec.
    fn keep_slots(&self, key: &ServiceKey, rt: &mut ServiceRuntime, numbers: &[u32]) {
        // Dropped slots end their tasks.
        rt.slots.retain(|slot| numbers.contains(&slot.number()));
        for &number in numbers {
            if !rt.slots.iter().any(|slot| slot.number() == number) {
                rt.slots
                    .push(Slot::spawn(&self.parts, key, number, rt.spec.clone()));
            }
        }
        rt.slots.sort_by_key(Slot::number);
    }

    /// Starts, replaces or stops the service's pool of request-serving
    /// instances: a web service's is kept warm; a worker's starts instances
    /// on the first call by intra-DNS name. A new pool replaces the old
    /// when code, settings or instance count change (requests in flight
    /// finish on the old one, which refills nothing). Cron jobs take no
    /// requests.
    fn converge_web(
        &self,
        key: &ServiceKey,
        rt: &mut ServiceRuntime,
        service: &Service,
        requests_only: bool,
        numbers: &[u32],
    ) {
        let warm = match service.service_type() {
            ServiceType::Cron => {
                release::drop_web(rt, false);
                return;
            }
            ServiceType::Web => true,
            ServiceType::Worker => requests_only,
        };
        let settings = PoolSettings {
            instances: numbers.len() as u32,
            reuse: if service.fresh_per_request {
                Reuse::Never
            } else if service.always_reuse {
                Reuse::Always
            } else {
                Reuse::Auto
            },
            warm,
            cpu_limit: service.cpu_limit(),
        };
        let health = service.health.as_ref();
        let wanted = |pool: &Arc<WebPool>| pool.matches(&rt.spec, settings, numbers, health);
        if let Some(pool) = rt.web.as_ref().filter(|pool| wanted(pool)) {
            pool.relabel(rt.spec.version);
            // Back on what runs: a rollout that failed before may be tried
            // again once it is asked for again.
            if rt.web_rollout.as_ref().is_none_or(|t| t.is_finished()) {
                rt.refused = None;
            }
            return;
        }
        if rt.refused.as_ref().is_some_and(wanted) {
            // Its rollout failed: the previous pool stays until what the
            // service should run changes again.
            return;
        }
        rt.refused = None;
        tracing::debug!(service = %key, instances = service.instances, warm, "request pool");
        // A web service whose instances are up rolls to the new pool one
        // instance at a time; otherwise the new pool replaces it at once.
        let old = rt.web.take().map(|old| self.superseding(rt, old));
        let rolls = warm && old.as_ref().is_some_and(|old| old.live() > 0);
        let start = Start {
            // What the old pool learned of the same code holds for the new.
            learned: old.as_ref().and_then(|old| old.learned_for(&rt.spec)),
            health: health.cloned(),
            enabled: rolls.then_some(0),
            // Serving meanwhile, from the moment the new pool is published.
            previous: old.clone().filter(|_| rolls),
        };
        let new = WebPool::start_knowing(
            self.parts.clone(),
            key.clone(),
            rt.spec.clone(),
            settings,
            numbers.to_vec(),
            start,
        );
        rt.web = Some(new.clone());
        match old {
            Some(old) if rolls => self.roll(key, rt, old, new, service.rollout_timeout()),
            Some(old) => old.retire_into(&new),
            None => {}
        }
    }

    /// Whether the code a spec runs has the HTTP handler but no
    /// `wasi:cli/run`: its instances come from its request pool. Code not in
    /// memory yet is loaded in the background, then applied again.
    fn serves_only_http(&self, run: &RunSpec) -> bool {
        let Ok(digest) = &run.component else {
            return false;
        };
        if let Some(code) = self.parts.code.loaded(digest) {
            return !code.runs_command() && code.serves_http();
        }
        // One background load per digest, however many applies ask.
        if !self.loading.lock().insert(digest.clone()) {
            return false;
        }
        let load = self.parts.code.load(digest);
        let (me, digest) = (self.me.clone(), digest.clone());
        tokio::spawn(async move {
            let loaded = load.await.is_ok();
            if let Some(me) = me.upgrade() {
                me.loading.lock().remove(&digest);
                if loaded {
                    me.kick.notify_one();
                }
            }
        });
        false
    }
}

/// An instance owned elsewhere (an interactive run, a cron run), shown
/// among its service's until this guard is dropped.
pub struct Tracked {
    map: Arc<Mutex<TrackedMap>>,
    key: ServiceKey,
    status: Arc<Mutex<InstanceStatus>>,
}

impl Tracked {
    /// The tracked status, to update.
    pub fn status(&self) -> &Arc<Mutex<InstanceStatus>> {
        &self.status
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        if let Some(runs) = map.get_mut(&self.key) {
            runs.retain(|s| !Arc::ptr_eq(s, &self.status));
            if runs.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

async fn stop_runtime(mut rt: ServiceRuntime) {
    drop(rt.rollout.take());
    release::drop_web(&mut rt, true);
    for slot in rt.slots {
        slot.stop().await;
    }
}
