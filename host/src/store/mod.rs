//! The state store: desired state (environments, stacks, versions,
//! services) as typed records over a [`Kv`] backend.
//!
//! - `kv`: the etcd-shaped interface every backend implements.
//! - `sqlite`: the embedded backend, one file in the data directory.
//! - `etcd`: the cluster backend, an etcd v3 cluster the hosts share.
//!
//! Code itself (blobs, unpacked files and images) is kept apart, by
//! `content`.
//!
//! Keys:
//! - `/meta/operator_token_sha256`: the hash of the operator's token (the
//!   token is in the data directory's `operator.token`, mode 0600).
//! - `/tokens/<sha256>`: which environment a token acts on.
//! - `/envs/<env>`, `/stacks/<env>/<stack>`,
//!   `/versions/<env>/<stack>/<number, zero-padded>`,
//!   `/services/<env>/<stack>/<service>`.
//! - `/endpoints/<host><path>`: the service an endpoint is bound to.

mod etcd;
mod kv;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use etcd::EtcdKv;
pub use kv::{Change, Compare, KeyValue, Kv, KvError, LeaseId, Op, Txn};
pub use sqlite::SqliteKv;

use crate::model::{
    Desired, Digest, Drain, Environment, Node, Service, Stack, Version, DEFAULT_ENVIRONMENT,
};

/// The hosts of a cluster as the store knows them.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    /// Up now (under their leases), by name.
    pub live: Vec<Node>,
    /// Every host that ever joined, as it last joined, by name.
    pub known: Vec<Node>,
    /// Hosts being drained, by name.
    pub drains: Vec<(String, Drain)>,
}

/// Typed, async access to desired state.
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
}

/// A record read from the store with the revision it was last written at,
/// for compare-and-swap updates.
#[derive(Clone, Debug)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its `mod_rev`.
    pub mod_rev: u64,
}

/// Key builders, so every key is spelled in one place.
pub mod key {
    /// sha256 of the operator's token.
    pub const OPERATOR_TOKEN: &str = "/meta/operator_token_sha256";
    /// Where stores before hashing kept the operator's token in clear.
    pub const LEGACY_ADMIN_TOKEN: &str = "/meta/admin_token";

    /// Token hash to environment.
    pub fn token(sha256: &str) -> String {
        format!("/tokens/{sha256}")
    }
    /// An environment.
    pub fn env(env: &str) -> String {
        format!("/envs/{env}")
    }
    /// A stack.
    pub fn stack(env: &str, stack: &str) -> String {
        format!("/stacks/{env}/{stack}")
    }
    /// Every stack of an environment.
    pub fn stacks(env: &str) -> String {
        format!("/stacks/{env}/")
    }
    /// One version of a stack.
    pub fn version(env: &str, stack: &str, number: u64) -> String {
        format!("/versions/{env}/{stack}/{number:010}")
    }
    /// Every version of every stack of an environment.
    pub fn env_versions(env: &str) -> String {
        format!("/versions/{env}/")
    }
    /// Every version of every stack.
    pub const ALL_VERSIONS: &str = "/versions/";
    /// Every version of a stack.
    pub fn versions(env: &str, stack: &str) -> String {
        format!("/versions/{env}/{stack}/")
    }
    /// A service.
    pub fn service(env: &str, stack: &str, name: &str) -> String {
        format!("/services/{env}/{stack}/{name}")
    }
    /// Every service of an environment.
    pub fn services(env: &str) -> String {
        format!("/services/{env}/")
    }
    /// Every service of every environment.
    pub const ALL_SERVICES: &str = "/services/";
    /// Who holds an endpoint (host and path), across all environments: the
    /// ingress is shared, so an endpoint has one owner.
    pub fn endpoint(host: &str, path: &str) -> String {
        format!("/endpoints/{host}{path}")
    }
    /// Who holds an intra-DNS name in an environment: created with the
    /// service, in the same transaction, so two services can never take
    /// the same name, even when created at once.
    pub fn dns_name(env: &str, name: &str) -> String {
        format!("/names/{env}/{name}")
    }
    /// Which environment a custom domain is assigned to.
    pub fn domain(domain: &str) -> String {
        format!("/domains/{domain}")
    }
    /// Every endpoint on one host, whatever its path.
    pub fn host_endpoints(host: &str) -> String {
        format!("/endpoints/{host}/")
    }
    /// Every stack of every environment.
    pub const ALL_STACKS: &str = "/stacks/";
    /// Every environment.
    pub const ALL_ENVS: &str = "/envs/";
    /// An environment's login for a registry (its password sealed).
    pub fn registry_login(env: &str, host: &str) -> String {
        format!("/registry-logins/{env}/{host}")
    }
    /// Every registry login of an environment.
    pub fn registry_logins(env: &str) -> String {
        format!("/registry-logins/{env}/")
    }
    /// A host of the cluster, kept under its lease while it lives.
    pub fn node(name: &str) -> String {
        format!("/nodes/{name}")
    }
    /// Every live host.
    pub const ALL_NODES: &str = "/nodes/";
    /// A host that joined once, kept after it dies (until removed).
    pub fn known_node(name: &str) -> String {
        format!("/known-nodes/{name}")
    }
    /// Every host that joined once.
    pub const ALL_KNOWN_NODES: &str = "/known-nodes/";
    /// A host being drained (until it is resumed).
    pub fn drain(name: &str) -> String {
        format!("/drains/{name}")
    }
    /// Every drained host.
    pub const ALL_DRAINS: &str = "/drains/";
    /// Where a service's instances run in a cluster.
    pub fn placement(env: &str, stack: &str, service: &str) -> String {
        format!("/placements/{env}/{stack}/{service}")
    }
    /// Every placement.
    pub const ALL_PLACEMENTS: &str = "/placements/";
    /// Which host places instances now (bound to its lease).
    pub const LEADER: &str = "/leader";
    /// The operator's token the hosts of a cluster share, so each host's
    /// `daemon.json` works on every host.
    pub const CLUSTER_OPERATOR_TOKEN: &str = "/cluster/operator_token";
    /// The last scheduled time of a cron job fired anywhere in a cluster.
    pub fn cron_last(env: &str, stack: &str, service: &str) -> String {
        format!("/cron/last/{env}/{stack}/{service}")
    }
    /// Every cron job's last firing.
    pub const ALL_CRON_LAST: &str = "/cron/last/";
    /// A cron job's last runs in a cluster, whichever host ran them.
    pub fn cron_runs(env: &str, stack: &str, service: &str) -> String {
        format!("/cron/runs/{env}/{stack}/{service}")
    }
    /// Every cron job's shared runs.
    pub const ALL_CRON_RUNS: &str = "/cron/runs/";
    /// Everything ACME keeps: certificates, the account, locks, answers.
    pub const ALL_ACME: &str = "/acme/";
    /// A host name's certificate from ACME, its key sealed, and how its
    /// orders went.
    pub fn acme_cert(name: &str) -> String {
        format!("/acme/certs/{name}")
    }
    /// Every host name's certificate from ACME.
    pub const ALL_ACME_CERTS: &str = "/acme/certs/";
    /// The ACME account (its key sealed), shared by the hosts.
    pub const ACME_ACCOUNT: &str = "/acme/account";
    /// Which host orders a name now, and until when.
    pub fn acme_lock(name: &str) -> String {
        format!("/acme/locks/{name}")
    }
    /// The answer to an HTTP-01 challenge, for whichever host the CA asks.
    pub fn acme_challenge(token: &str) -> String {
        format!("/acme/challenges/{token}")
    }
    /// Keys that change often and are not desired state: a change to them
    /// alone does not wake the converge loop.
    pub const VOLATILE: &[&str] = &[ALL_NODES, ALL_CRON_LAST, ALL_CRON_RUNS, ALL_ACME];
}

/// Serialises a record for the store.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, maps with string keys):
    // serialising them cannot fail.
    serde_json::to_vec(value).expect("store records serialise to JSON")
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> anyhow::Result<T> {
    serde_json::from_slice(&kv.value)
        .with_context(|| format!("decoding the record at `{}`", kv.key))
}

impl Store {
    /// Opens the embedded SQLite store in `data_dir`.
    pub fn open_sqlite(data_dir: &Path) -> anyhow::Result<Store> {
        let path = data_dir.join("state.db");
        let kv = SqliteKv::open(&path)
            .with_context(|| format!("opening the state store {}", path.display()))?;
        Ok(Store { kv: Arc::new(kv) })
    }

    /// Connects to an etcd cluster (`endpoints` as `http://host:port`),
    /// failing when no member answers.
    pub async fn open_etcd(endpoints: Vec<String>) -> anyhow::Result<Store> {
        let shown = endpoints.join(",");
        let kv = tokio::task::spawn_blocking(move || EtcdKv::connect(endpoints, key::VOLATILE))
            .await
            .context("connecting to etcd")?
            .with_context(|| format!("opening the state store at etcd {shown}"))?;
        Ok(Store { kv: Arc::new(kv) })
    }

    /// Wraps any backend.
    pub fn new(kv: Arc<dyn Kv>) -> Store {
        Store { kv }
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Kv) -> Result<R, KvError> + Send + 'static,
    ) -> Result<R, KvError> {
        let kv = self.kv.clone();
        tokio::task::spawn_blocking(move || f(kv.as_ref()))
            .await
            .map_err(|e| KvError::Backend(format!("store task failed: {e}")))?
    }

    /// Reads and decodes one record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: String,
    ) -> anyhow::Result<Option<Versioned<T>>> {
        let found = self.blocking(move |kv| kv.get(&key)).await?;
        found
            .map(|kv| {
                Ok(Versioned {
                    value: decode(&kv)?,
                    mod_rev: kv.mod_rev,
                })
            })
            .transpose()
    }

    /// Reads and decodes every record under a prefix, in key order.
    pub async fn list<T: DeserializeOwned>(
        &self,
        prefix: String,
    ) -> anyhow::Result<Vec<Versioned<T>>> {
        let (rows, _) = self.blocking(move |kv| kv.range(&prefix)).await?;
        rows.iter()
            .map(|kv| {
                Ok(Versioned {
                    value: decode(kv)?,
                    mod_rev: kv.mod_rev,
                })
            })
            .collect()
    }

    /// Commits a transaction durably; returns its revision.
    pub async fn commit(&self, txn: Txn) -> Result<u64, KvError> {
        self.blocking(move |kv| kv.txn(txn)).await
    }

    /// A lease of `ttl` (a shared store only).
    pub async fn grant_lease(&self, ttl: std::time::Duration) -> Result<LeaseId, KvError> {
        self.blocking(move |kv| kv.grant_lease(ttl)).await
    }

    /// Keeps a lease alive; `false` when it had expired.
    pub async fn keep_lease(&self, lease: LeaseId) -> Result<bool, KvError> {
        self.blocking(move |kv| kv.keep_lease(lease)).await
    }

    /// Ends a lease, deleting its keys.
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.blocking(move |kv| kv.revoke_lease(lease)).await
    }

    /// Writes a record bound to a lease (see [`Kv::put_leased`]).
    pub async fn put_leased<T: Serialize>(
        &self,
        key: String,
        value: &T,
        lease: LeaseId,
        only_if_absent: bool,
    ) -> Result<u64, KvError> {
        let value = encode(value);
        self.blocking(move |kv| kv.put_leased(&key, value, lease, only_if_absent))
            .await
    }

    /// The hosts, read at one revision.
    pub async fn nodes(&self) -> anyhow::Result<Hosts> {
        let (mut ranges, _) = self
            .blocking(|kv| kv.ranges(&[key::ALL_NODES, key::ALL_KNOWN_NODES, key::ALL_DRAINS]))
            .await?;
        let drains = ranges.pop().unwrap_or_default();
        let known = ranges.pop().unwrap_or_default();
        let live = ranges.pop().unwrap_or_default();
        let drains = drains
            .iter()
            .map(|kv| {
                let name = kv.key.trim_start_matches(key::ALL_DRAINS).to_string();
                decode(kv).map(|d| (name, d))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Hosts {
            live: live.iter().map(decode).collect::<anyhow::Result<_>>()?,
            known: known.iter().map(decode).collect::<anyhow::Result<_>>()?,
            drains,
        })
    }

    /// The operator's token of the cluster: `mine` when this host is the
    /// first, else the one the first host stored.
    pub async fn cluster_operator_token(&self, mine: &str) -> anyhow::Result<String> {
        let first = Txn::new()
            .when(Compare::Absent(key::CLUSTER_OPERATOR_TOKEN.to_string()))
            .put(key::CLUSTER_OPERATOR_TOKEN, encode(&mine));
        match self.commit(first).await {
            Ok(_) => Ok(mine.to_string()),
            Err(KvError::Conflict(_)) => self
                .get::<String>(key::CLUSTER_OPERATOR_TOKEN.to_string())
                .await?
                .map(|v| v.value)
                .context("the cluster's operator token vanished while it was read"),
            Err(e) => Err(e).context("sharing the operator's token"),
        }
    }

    /// A receiver of the latest committed revision.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.kv.subscribe()
    }

    /// Makes sure the `default` environment exists and records the hash
    /// of the operator's token (the token itself lives only in the data
    /// directory's `operator.token` and `daemon.json`, both 0600).
    ///
    /// Hosts of a cluster started together bootstrap one store at once:
    /// one of them creates the environment, and the others, whose commit
    /// then conflicts, read it again and find it there.
    pub async fn bootstrap(&self, operator_token: &str) -> anyhow::Result<()> {
        /// Reads before giving up: the second finds the environment made.
        const TRIES: usize = 3;
        let mut tried = 0;
        loop {
            tried += 1;
            match self.commit(self.bootstrap_txn(operator_token).await?).await {
                Ok(_) => return Ok(()),
                Err(KvError::Conflict(_)) if tried < TRIES => continue,
                Err(e) => return Err(e).context("creating the default environment"),
            }
        }
    }

    /// The bootstrap's change as the store is now: the operator's token,
    /// and the default environment unless it exists.
    async fn bootstrap_txn(&self, operator_token: &str) -> anyhow::Result<Txn> {
        let mut txn = Txn::new()
            .put(
                key::OPERATOR_TOKEN,
                encode(&crate::auth::token_hash(operator_token)),
            )
            // Stores written before tokens were hashed kept it in clear.
            .delete(key::LEGACY_ADMIN_TOKEN);
        let env_key = key::env(DEFAULT_ENVIRONMENT);
        if self.get::<Environment>(env_key.clone()).await?.is_none() {
            let env_token = crate::auth::new_token();
            let env = Environment {
                name: DEFAULT_ENVIRONMENT.to_string(),
                token_sha256: crate::auth::token_hash(&env_token),
                created_at: chrono::Utc::now(),
                outbound: Default::default(),
                reach: Vec::new(),
                domains: Vec::new(),
                quotas: None,
            };
            txn = txn
                .when(Compare::Absent(env_key.clone()))
                .put(env_key, encode(&env))
                .put(key::token(&env.token_sha256), encode(&env.name));
        }
        Ok(txn)
    }

    /// The operator's token as stores written before tokens were hashed
    /// kept it, if this one is such a store.
    pub async fn legacy_operator_token(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .get::<String>(key::LEGACY_ADMIN_TOKEN.to_string())
            .await?
            .map(|v| v.value))
    }

    /// The environment a (non-admin) token acts on, if any.
    pub async fn environment_of_token(&self, token: &str) -> anyhow::Result<Option<String>> {
        let found = self
            .get::<String>(key::token(&crate::auth::token_hash(token)))
            .await?;
        Ok(found.map(|v| v.value))
    }

    /// One service.
    pub async fn service(
        &self,
        env: &str,
        stack: &str,
        name: &str,
    ) -> anyhow::Result<Option<Versioned<Service>>> {
        self.get(key::service(env, stack, name)).await
    }

    /// Every environment.
    pub async fn environments(&self) -> anyhow::Result<Vec<Versioned<Environment>>> {
        self.list(key::ALL_ENVS.to_string()).await
    }

    /// Every service of an environment.
    pub async fn services(&self, env: &str) -> anyhow::Result<Vec<Versioned<Service>>> {
        self.list(key::services(env)).await
    }

    /// One stack.
    pub async fn stack(&self, env: &str, stack: &str) -> anyhow::Result<Option<Versioned<Stack>>> {
        self.get(key::stack(env, stack)).await
    }

    /// Every stack of an environment.
    pub async fn stacks(&self, env: &str) -> anyhow::Result<Vec<Versioned<Stack>>> {
        self.list(key::stacks(env)).await
    }

    /// Every kept version of a stack, oldest first.
    pub async fn versions(
        &self,
        env: &str,
        stack: &str,
    ) -> anyhow::Result<Vec<Versioned<Version>>> {
        self.list(key::versions(env, stack)).await
    }

    /// The code one environment keeps: each stack's current bundle and
    /// each kept version's, as (stack, digests), read at one revision.
    #[allow(clippy::type_complexity)]
    pub async fn code_of(
        &self,
        env: &str,
    ) -> anyhow::Result<(Vec<(String, Vec<Digest>)>, Vec<(String, Vec<Digest>)>)> {
        let prefixes = [key::stacks(env), key::env_versions(env)];
        let (mut ranges, _) = self
            .blocking(move |kv| kv.ranges(&[prefixes[0].as_str(), prefixes[1].as_str()]))
            .await?;
        let versions = ranges.pop().unwrap_or_default();
        let stacks = ranges.pop().unwrap_or_default();
        let stacks = stacks
            .iter()
            .map(|kv| decode::<Stack>(kv).map(|s| (s.name, s.components.into_values().collect())))
            .collect::<anyhow::Result<_>>()?;
        let versions = versions
            .iter()
            .map(|kv| {
                decode::<Version>(kv).map(|v| {
                    let stack = kv.key.rsplit('/').nth(1).unwrap_or_default().to_string();
                    (stack, v.components.into_values().collect())
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((stacks, versions))
    }

    /// Every code digest a kept stack version or a stack's current code
    /// names: the code that must stay stored.
    pub async fn code_in_use(
        &self,
    ) -> anyhow::Result<std::collections::HashSet<crate::model::Digest>> {
        let (mut ranges, _) = self
            .blocking(|kv| kv.ranges(&[key::ALL_VERSIONS, key::ALL_STACKS]))
            .await?;
        let stacks = ranges.pop().unwrap_or_default();
        let versions = ranges.pop().unwrap_or_default();
        let mut digests = std::collections::HashSet::new();
        for kv in &versions {
            let version: Version = decode(kv)?;
            digests.extend(version.components.into_values());
        }
        for kv in &stacks {
            let stack: Stack = decode(kv)?;
            digests.extend(stack.components.into_values());
        }
        Ok(digests)
    }

    /// All desired state the supervisor acts on: every service and every
    /// stack of every environment, with a revision it includes every
    /// change up to.
    pub async fn desired(&self) -> anyhow::Result<Desired> {
        let (mut ranges, revision) = self
            .blocking(|kv| {
                kv.ranges(&[
                    key::ALL_SERVICES,
                    key::ALL_STACKS,
                    key::ALL_ENVS,
                    key::ALL_PLACEMENTS,
                ])
            })
            .await?;
        let placements = ranges.pop().unwrap_or_default();
        let envs = ranges.pop().unwrap_or_default();
        let stacks = ranges.pop().unwrap_or_default();
        let services = ranges.pop().unwrap_or_default();
        Ok(Desired {
            revision,
            services: services.iter().map(decode).collect::<anyhow::Result<_>>()?,
            stacks: stacks.iter().map(decode).collect::<anyhow::Result<_>>()?,
            envs: envs.iter().map(decode).collect::<anyhow::Result<_>>()?,
            placements: placements
                .iter()
                .map(decode)
                .collect::<anyhow::Result<_>>()?,
            placed: None,
        })
    }
}
