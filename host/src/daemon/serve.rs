//! Serving a built host: it joins its cluster (when it has one), starts
//! the converge loop, the placer and its membership, serves the control
//! API, the ingress and the containers' proxy, and announces itself in
//! `daemon.json`. What [`Host::spawn`] returns is the running host, which
//! stops with [`Running::shutdown`].

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::config::{
    DaemonConfig, DEFAULT_API_MAX_CONNECTIONS, DEFAULT_API_MAX_PER_CLIENT, SHUTDOWN_GRACE,
};
use crate::container::Containers;
use crate::cron::Scheduler;
use crate::ingress::{ConnLimits, Connections, Ingress, Limits};
use crate::services::{Fetch, Supervisor};
use crate::store::LeaseId;
use crate::telemetry::DiskWriter;

use super::build::Host;
use super::converge::Converge;
use super::files::{self, DaemonInfo};
use super::{firings, listen, node, peers, placer};

/// How long a starting host waits for its first reading of the desired
/// state before it serves anyway.
const FIRST_APPLY: std::time::Duration = std::time::Duration::from_secs(10);

/// A host serving until [`Running::shutdown`].
pub struct Running {
    /// What `daemon.json` says: where it listens, the operator's token.
    pub(super) info: DaemonInfo,
    /// The data directory, where `daemon.json` is removed at the end.
    pub(super) data_dir: PathBuf,
    /// The data directory's lock, released once everything stopped.
    pub(super) lock: File,
    /// Turned true to stop: listeners drain, followers end.
    pub(super) stop: watch::Sender<bool>,
    /// What runs until then.
    pub(super) tasks: Tasks,
    /// Cron jobs, stopped after the listeners.
    pub(super) scheduler: Arc<Scheduler>,
    /// Instances, stopped after the listeners.
    pub(super) supervisor: Arc<Supervisor>,
    /// Containers, each given its stop timeout at the end.
    pub(super) containers: Arc<Containers>,
    /// Flushed last.
    pub(super) writer: Arc<DiskWriter>,
}

/// The tasks of a running host.
pub(super) struct Tasks {
    /// The converge loop.
    pub(super) converger: JoinHandle<()>,
    /// The leader's placing of instances, in a cluster.
    pub(super) placing: Option<JoinHandle<()>>,
    /// This host's membership of its cluster, which leaves on stop.
    pub(super) membership: Option<JoinHandle<()>>,
    /// The listeners' tasks: the API, the ingress, HTTPS, the proxies.
    pub(super) servers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Where the host listens and the operator's token, as `daemon.json`
    /// says.
    pub fn info(&self) -> &DaemonInfo {
        &self.info
    }
}

/// The other hosts of a cluster, as this host's parts reach them.
struct Cluster {
    /// Asked for the instances they run.
    others: Arc<dyn api::OtherHosts>,
    /// Asked for code this host lacks.
    fetch: Arc<dyn Fetch>,
}

impl Host {
    /// Starts serving: every task of the host is spawned on the current
    /// runtime, and `daemon.json` is written once all listen.
    pub async fn spawn(self) -> anyhow::Result<Running> {
        let me = self.me()?;
        let cluster = match self.clustered {
            true => Some(self.join(&me).await?),
            false => None,
        };
        self.supervisor
            .parts()
            .directory
            .set_platform(self.listeners.addresses()?);
        let (stop, stopping) = watch::channel(false);
        let node = me.node.clone();
        let (tasks, applied) = self.start_tasks(me, cluster.as_ref(), &stopping).await?;
        // The ingress answers once it knows the routes: a host that just
        // (re)started must not say 404 for an endpoint that exists. Its
        // listeners are bound, so connections wait in the backlog.
        let mut first = applied.clone();
        if tokio::time::timeout(FIRST_APPLY, first.changed())
            .await
            .is_err()
        {
            tracing::warn!(
                "the desired state was not read within {}s; serving with what is known",
                FIRST_APPLY.as_secs()
            );
        }
        let state = self.api_state(applied, stopping.clone(), node, cluster);
        let mut tasks = tasks;
        // A rollout that fails here is rolled back in desired state.
        let (failures, failed) = tokio::sync::mpsc::channel(crate::services::MAX_PENDING_FAILURES);
        self.supervisor.report_failures_to(failures);
        tasks.servers.push(tokio::spawn(api::roll_back_failures(
            state.clone(),
            failed,
            stopping.clone(),
        )));
        if let (Some(settings), Some(certs)) = (&self.config.acme, &self.acme_certs) {
            let acme = crate::acme::Acme::new(
                settings.clone(),
                self.store.clone(),
                self.sealer.clone(),
                certs.clone(),
                self.supervisor.events().clone(),
                self.config.node.clone(),
            );
            tasks.servers.push(tokio::spawn(acme.run(stopping)));
        }
        self.serve(state, tasks, stop)
    }

    /// Starts the converge loop, the containers' proxy and, in a cluster,
    /// the placer and this host's membership; returns them with the
    /// revision the loop last applied.
    async fn start_tasks(
        &self,
        me: node::Me,
        cluster: Option<&Cluster>,
        stopping: &watch::Receiver<bool>,
    ) -> anyhow::Result<(Tasks, watch::Receiver<u64>)> {
        // In a cluster this host runs what is placed on it while it is a
        // member (holds its lease).
        let (lease_tx, lease_rx) = watch::channel(None);
        let (converge, applied) = self.converge(cluster, lease_rx.clone());
        let servers = self.proxies(stopping.clone()).await?;
        let converger = tokio::spawn(converge.run());
        let (placing, membership) = match self.clustered {
            true => {
                let name = me.node.name.clone();
                let placing = placer::run(self.store.clone(), name, lease_rx);
                let membership = node::keep(self.store.clone(), me, lease_tx, stopping.clone());
                (Some(tokio::spawn(placing)), Some(membership))
            }
            false => (None, None),
        };
        let mut servers = servers;
        let metrics = self.supervisor.parts().metrics.clone();
        servers.push(tokio::spawn(metrics.sample_until(stopping.clone())));
        servers.push(tokio::spawn(prune_until(
            self.registries.clone(),
            self.engine.clone(),
            stopping.clone(),
        )));
        let tasks = Tasks {
            converger,
            placing,
            membership,
            servers,
        };
        Ok((tasks, applied))
    }

    /// Serves the control API (`state`) and the ingress on the bound
    /// listeners, and announces the host in `daemon.json`.
    fn serve(
        self,
        state: ApiState,
        mut tasks: Tasks,
        stop: watch::Sender<bool>,
    ) -> anyhow::Result<Running> {
        let info = listen::describe(&self.config, &self.listeners, &self.admin_token)?;
        let ingress = self.ingress()?;
        let api_connections = api_connections(&self.config);
        let Host {
            config,
            lock,
            writer,
            scheduler,
            supervisor,
            containers,
            listeners,
            ..
        } = self;
        let stopping = stop.subscribe();
        let api = api::router(state);
        let servers = &mut tasks.servers;
        servers.push(listen::serve_api(
            api_connections,
            listeners.api,
            api,
            containers.clone(),
            stopping.clone(),
        ));
        servers.push(
            ingress
                .clone()
                .serve(listeners.http, None, stopping.clone()),
        );
        if let Some((listener, acceptor)) = listeners.https {
            servers.push(ingress.serve(listener, Some(acceptor), stopping));
        }
        files::write_daemon_file(&config.data_dir, &info)?;
        tracing::info!(api = %info.api_url, http = %info.http_url, data_dir = %config.data_dir.display(), "mesh is up");
        tracing::info!(
            "dashboard: {}/ui/ (sign in with the operator token, `token` in {})",
            info.api_url,
            config.data_dir.join(files::DAEMON_FILE).display()
        );
        Ok(Running {
            info,
            data_dir: config.data_dir,
            lock,
            stop,
            tasks,
            scheduler,
            supervisor,
            containers,
            writer,
        })
    }

    /// This host as the other hosts of a cluster see it.
    fn me(&self) -> anyhow::Result<node::Me> {
        let address = self
            .listeners
            .advertised(self.config.advertise.as_deref(), self.clustered)?;
        Ok(node::Me::new(
            &self.config,
            files::node_id(&self.config.data_dir)?,
            address,
            self.containers.gateway().is_some(),
            self.engine.clone(),
        ))
    }

    /// Joins the cluster as `me` and lets the parts reach the other hosts.
    async fn join(&self, me: &node::Me) -> anyhow::Result<Cluster> {
        node::join(&self.store, me).await?;
        let peers = peers::Peers::new(
            self.store.clone(),
            self.config.node.clone(),
            self.admin_token.clone(),
            self.config
                .max_upload_bytes
                .max(self.config.max_image_bytes),
            peers::Pulling {
                registries: self.registries.clone(),
                sealer: self.sealer.clone(),
            },
        );
        self.code.fetch_with(peers.clone());
        self.supervisor.forward_with(peers.clone());
        self.scheduler
            .claim_with(Arc::new(firings::StoreFirings::new(self.store.clone())));
        Ok(Cluster {
            others: peers.clone(),
            fetch: peers,
        })
    }

    /// The converge loop from the store to this host's parts, and the
    /// revision it last applied.
    fn converge(
        &self,
        cluster: Option<&Cluster>,
        lease: watch::Receiver<Option<LeaseId>>,
    ) -> (Converge, watch::Receiver<u64>) {
        let (converge, applied) = Converge::new(
            self.store.clone(),
            self.supervisor.clone(),
            self.scheduler.clone(),
            self.engine.clone(),
        );
        let converge = converge
            .bounding(self.containers.clone())
            .pruning(self.registries.clone());
        let converge = match cluster {
            Some(cluster) => {
                converge.on_node(self.config.node.clone(), lease, cluster.fetch.clone())
            }
            None => converge,
        };
        (converge, applied)
    }

    /// The ingress, bounded as the configuration says.
    fn ingress(&self) -> anyhow::Result<Arc<Ingress>> {
        let limits = Limits {
            max_header_bytes: self.config.max_header_bytes,
            max_body_bytes: self.config.max_body_bytes,
            conn: conn_limits(&self.config),
        };
        Ok(Ingress::new(
            self.supervisor.clone(),
            self.metrics.clone(),
            limits,
            self.listeners.https_port()?,
            self.acme_certs.clone(),
        ))
    }

    /// The containers' proxy to services, when containers run here.
    async fn proxies(
        &self,
        stopping: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        match self.containers.gateway() {
            Some(gateway) => {
                crate::ingress::proxy::serve(
                    self.callers.clone(),
                    gateway,
                    conn_limits(&self.config),
                    stopping,
                )
                .await
            }
            None => Ok(Vec::new()),
        }
    }

    /// What the control API's handlers share.
    fn api_state(
        &self,
        applied: watch::Receiver<u64>,
        stopping: watch::Receiver<bool>,
        node: crate::model::Node,
        cluster: Option<Cluster>,
    ) -> ApiState {
        ApiState {
            store: self.store.clone(),
            engine: self.engine.clone(),
            containers: self.containers.clone(),
            code: self.code.clone(),
            supervisor: self.supervisor.clone(),
            scheduler: self.scheduler.clone(),
            applied,
            logs: self.logs.clone(),
            config: Arc::new(self.config.clone()),
            admin_token: self.admin_token.as_str().into(),
            stopping,
            runs: Default::default(),
            streams: Default::default(),
            places: Default::default(),
            uploads: Default::default(),
            node,
            clustered: self.clustered,
            others: cluster.map(|c| c.others),
            sealer: self.sealer.clone(),
            registries: self.registries.clone(),
            ingress: api::IngressPorts {
                http: self.listeners.http.local_addr().ok().map(|a| a.port()),
                https: self.listeners.https_port().ok().flatten(),
            },
        }
    }
}

/// The control API's own count of connections: the ingress's bounds,
/// fewer of them.
fn api_connections(config: &DaemonConfig) -> Arc<Connections> {
    let conn = conn_limits(config);
    Connections::new(
        "api",
        ConnLimits {
            max_connections: DEFAULT_API_MAX_CONNECTIONS,
            max_per_client: conn.max_per_client.min(DEFAULT_API_MAX_PER_CLIENT),
            ..conn
        },
        None,
    )
}

/// The bounds of every connection `config` asks for.
fn conn_limits(config: &DaemonConfig) -> ConnLimits {
    ConnLimits {
        max_connections: config.max_connections,
        max_per_client: config.max_connections_per_client,
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        grace: SHUTDOWN_GRACE,
    }
}

/// How often the registries' blob cache is pruned besides code collection
/// (which runs when stacks change): so blobs of failed or forgotten pulls
/// do not pile up while nothing is deployed.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Prunes the blob cache every [`PRUNE_EVERY`] until `stopping`.
async fn prune_until(
    registries: Arc<crate::registry::Registries>,
    engine: Arc<crate::runtime::Engine>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let (registries, engine) = (registries.clone(), engine.clone());
        let _ = tokio::task::spawn_blocking(move || {
            registries.prune(|digest| engine.content().has_code(digest));
        })
        .await;
    }
}
