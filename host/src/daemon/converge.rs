//! The converge loop: the one place that reads desired state from the
//! store and hands it down. After every committed change (and whenever
//! the supervisor asks) it reads one snapshot, applies it to the services
//! layer and to cron, and publishes the revision it applied, which the
//! API waits on so that a command's answer means its change is in effect.
//! When stacks change it also drops code no kept version names.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cron::Scheduler;
use std::collections::HashMap;

use crate::container::Containers;
use crate::model::{Desired, Digest, Quotas, Stack, DEFAULT_ENVIRONMENT, FILES_ENTRY};
use crate::runtime::Engine;
use crate::services::Fetch;
use crate::services::Supervisor;
use crate::store::{LeaseId, Store};

/// Pause before reading desired state again after a failed read.
const RETRY_READ: std::time::Duration = std::time::Duration::from_secs(1);

/// What the loop reads and drives.
pub struct Converge {
    store: Store,
    supervisor: Arc<Supervisor>,
    scheduler: Arc<Scheduler>,
    engine: Arc<Engine>,
    /// The store revision the last apply included.
    applied: watch::Sender<u64>,
    /// In a cluster: this host's name, and its lease while it is a member.
    node: Option<(String, watch::Receiver<Option<LeaseId>>)>,
    /// In a cluster: where code this host lacks comes from.
    fetch: Option<Arc<dyn Fetch>>,
    /// Files archives being fetched now, by task: the tasks end with the
    /// loop.
    fetching: tokio::task::JoinSet<()>,
    fetching_ids: HashMap<tokio::task::Id, Digest>,
    /// Containers, whose task bounds follow the environments' quotas.
    containers: Option<Arc<Containers>>,
    /// The registries' blob cache, pruned with the code.
    registries: Option<Arc<crate::registry::Registries>>,
}

impl Converge {
    /// A loop from `store` to the supervisor and the scheduler, and a
    /// receiver of the revision it last applied.
    pub fn new(
        store: Store,
        supervisor: Arc<Supervisor>,
        scheduler: Arc<Scheduler>,
        engine: Arc<Engine>,
    ) -> (Converge, watch::Receiver<u64>) {
        let (applied, rx) = watch::channel(0);
        let converge = Converge {
            store,
            supervisor,
            scheduler,
            engine,
            applied,
            node: None,
            fetch: None,
            fetching: tokio::task::JoinSet::new(),
            fetching_ids: HashMap::new(),
            containers: None,
            registries: None,
        };
        (converge, rx)
    }

    /// Keeps `containers`' task bounds at the environments' quotas.
    pub fn bounding(mut self, containers: Arc<Containers>) -> Converge {
        self.containers = Some(containers);
        self
    }

    /// Prunes `registries`' blob cache whenever code is collected.
    pub fn pruning(mut self, registries: Arc<crate::registry::Registries>) -> Converge {
        self.registries = Some(registries);
        self
    }

    /// Runs only what the leader placed on host `name`, and nothing while
    /// `member` is false.
    pub fn on_node(
        mut self,
        name: String,
        member: watch::Receiver<Option<LeaseId>>,
        fetch: Arc<dyn Fetch>,
    ) -> Converge {
        self.node = Some((name, member));
        self.fetch = Some(fetch);
        self
    }

    /// Fetches the files archives of the stacks whose services run here
    /// and that this host does not hold (components are fetched as they
    /// are loaded); instances that need them start once they are here.
    fn fetch_files(&mut self, desired: &Desired) {
        // Fetches that ended (or failed) may be tried again.
        while let Some(ended) = self.fetching.try_join_next_with_id() {
            let id = ended.map_or_else(|e| e.id(), |(id, ())| id);
            self.fetching_ids.remove(&id);
        }
        let (Some(fetch), Some(placed)) = (&self.fetch, &desired.placed) else {
            return;
        };
        for (key, service, stack) in desired.services_with_stacks() {
            let Some(digest) = stack.and_then(|s| s.components.get(FILES_ENTRY)) else {
                continue;
            };
            if !placed.contains_key(&key)
                || self.engine.content().has_code(digest)
                || self.fetching_ids.values().any(|d| d == digest)
            {
                continue;
            }
            let (fetch, engine) = (fetch.clone(), self.engine.clone());
            let (digest, name) = (
                digest.clone(),
                format!("the files of stack {}", service.stack),
            );
            let shown = digest.clone();
            let task = self.fetching.spawn(async move {
                let incoming = engine.content().incoming();
                let got = match fetch.fetch_into(&digest, incoming.path().into()).await {
                    Ok(_) => {
                        let digest = digest.clone();
                        tokio::task::spawn_blocking(move || {
                            let bytes = std::fs::read(incoming.path())?;
                            engine.content().accept_files(&name, digest, &bytes)
                        })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map(|_| ()).map_err(|e| format!("{e:#}")))
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = got {
                    tracing::warn!(digest = digest.short(), error = %e, "cannot fetch a stack's files");
                }
            });
            self.fetching_ids.insert(task.id(), shown);
        }
    }

    /// Applies now and after every change, until the task is dropped.
    pub async fn run(mut self) {
        let mut revisions = self.store.subscribe();
        let mut stacks: Option<Vec<Stack>> = None;
        let mut member = self.node.as_ref().map(|(_, m)| m.clone());
        loop {
            revisions.borrow_and_update();
            match self.store.desired().await {
                Ok(mut desired) => {
                    if let Some((name, member)) = &mut self.node {
                        if member.borrow_and_update().is_some() {
                            desired.place_on(name);
                        } else {
                            desired.placed = Some(Default::default());
                        }
                    }
                    self.apply(&desired);
                    self.fetch_files(&desired);
                    if stacks.as_ref() != Some(&desired.stacks) {
                        self.collect_code().await;
                        stacks = Some(desired.stacks);
                    }
                }
                Err(e) => {
                    // A remote store may be back in a moment: try again
                    // rather than wait for a change that was perhaps missed.
                    tracing::error!(error = %format!("{e:#}"), "cannot read desired state");
                    tokio::time::sleep(RETRY_READ).await;
                    continue;
                }
            }
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = self.supervisor.kicked().notified() => {}
                changed = async {
                    match member.as_mut() {
                        Some(member) => member.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        member = None;
                    }
                }
            }
        }
    }

    fn apply(&self, desired: &Desired) {
        // Bounds first, so containers started for this state meet them.
        if let Some(containers) = &self.containers {
            containers.set_task_limits(task_limits(desired));
        }
        self.supervisor.apply(desired);
        self.scheduler.apply(desired);
        self.applied.send_replace(desired.revision);
    }

    /// Removes code blobs, compiled files and loaded components that no
    /// kept version names.
    async fn collect_code(&self) {
        let keep = match self.store.code_in_use().await {
            Ok(keep) => keep,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot list the code in use");
                return;
            }
        };
        let engine = self.engine.clone();
        let registries = self.registries.clone();
        let collected = tokio::task::spawn_blocking(move || {
            let result = engine.retain(&keep);
            if let Some(registries) = registries {
                registries.prune(|digest| engine.content().has_code(digest));
            }
            result
        });
        match collected.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "cannot remove unused code"),
            Err(e) => tracing::warn!(error = %e, "code collection failed"),
        }
    }
}

/// Each environment's task limit: its quota, else its kind's default
/// (the operator's environment is bounded only by the host's total).
fn task_limits(desired: &Desired) -> HashMap<String, u64> {
    desired
        .envs
        .iter()
        .map(|env| {
            let limit = match (&env.quotas, env.name == DEFAULT_ENVIRONMENT) {
                (Some(quotas), _) => quotas.max_tasks,
                (None, true) => u32::MAX,
                (None, false) => Quotas::TENANT.max_tasks,
            };
            (env.name.clone(), u64::from(limit))
        })
        .collect()
}
