//! Certificates from an ACME server (RFC 8555) for every host name
//! published outside `.localhost` (under the operator's alias, a tenant's
//! `--domain`, or any name the operator publishes), obtained and renewed
//! on their own.
//!
//! Every host runs [`Acme::run`]: every few seconds it reads which names
//! are published and what the store holds for them, serves every valid
//! certificate (SNI picks it; `ingress::certs`), and orders the names that
//! have none or whose renewal is due (two thirds into their life, less a
//! random part of a twentieth of it). One host at a time orders a name: it
//! takes the name's lock in the store first (a compare-and-swap; a lock
//! whose holder died runs out after ten minutes). A failed order is
//! recorded with why, retried after a back-off that doubles from 30 s to
//! 6 h, and a name starts at most five orders an hour, an environment ten
//! and a host sixty, so a broken name never hammers the CA and one tenant
//! never uses up the others' orders. An environment has at most 200 names
//! certified. Certificates and their keys
//! (sealed with the hosts' sealing key) live in the store, so every host
//! of a cluster serves them; issuing and failing are events.

mod order;
pub mod records;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use instant_acme::{Account, AccountCredentials, NewAccount};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::AcmeSettings;
use crate::ingress::certs::{AcmeCerts, ChallengeLookup};
use crate::model::Service;
use crate::sealed::{Sealed, Sealer};
use crate::services::code::BoxFuture;
use crate::store::{encode, key, Compare, Store, Txn, Versioned};
use crate::telemetry::{Event, Events};
use records::{Answer, CertRecord, DomainStatus, Lock};

/// Between two looks at what is published and what the store holds.
const TICK: Duration = Duration::from_secs(2);
/// Longest one order may take, start to certificate.
const ORDER_LIMIT: Duration = Duration::from_secs(180);
/// How long a host holds a name's lock while it orders.
const LOCK_FOR: chrono::Duration = chrono::Duration::minutes(10);
/// Orders one host runs at once.
const MAX_PARALLEL: usize = 4;
/// Orders one host starts in an hour, all names together.
const MAX_ORDERS_PER_HOST_HOUR: usize = 60;
/// Orders one environment's names start in an hour, over all hosts: one
/// tenant's failing names cannot use up the host's budget.
const MAX_ORDERS_PER_ENV_HOUR: usize = 10;
/// Most names certified.
const MAX_NAMES: usize = 10_000;
/// Most names certified for one environment.
const MAX_NAMES_PER_ENV: usize = 200;

/// A certificate served, with when it was issued.
type Served = (Option<chrono::DateTime<Utc>>, Arc<CertifiedKey>);

/// The ACME account as the store keeps it.
#[derive(Serialize, Deserialize)]
struct AccountRecord {
    /// The directory it belongs to.
    directory: String,
    /// Its credentials (key included), sealed.
    credentials: Sealed,
}

/// One host's part in keeping certificates.
pub struct Acme {
    settings: AcmeSettings,
    store: Store,
    sealer: Arc<Sealer>,
    certs: Arc<AcmeCerts>,
    events: Arc<Events>,
    /// This host's name, in locks.
    node: String,
    provider: Arc<CryptoProvider>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Certificates served, by name, with when each was issued (so an
    /// unchanged one is not opened again).
    loaded: Mutex<HashMap<String, Served>>,
    /// Names this host is ordering.
    ordering: Mutex<HashSet<String>>,
    /// When this host's orders of the last hour started.
    placed: Mutex<VecDeque<Instant>>,
}

impl Acme {
    /// A host's ACME part, serving through `certs`.
    pub fn new(
        settings: AcmeSettings,
        store: Store,
        sealer: Arc<Sealer>,
        certs: Arc<AcmeCerts>,
        events: Arc<Events>,
        node: String,
    ) -> Arc<Acme> {
        certs.look_up_with(Arc::new(StoreAnswers(store.clone())));
        Arc::new(Acme {
            settings,
            store,
            sealer,
            certs,
            events,
            node,
            provider: Arc::new(ring::default_provider()),
            account: tokio::sync::Mutex::new(None),
            loaded: Mutex::new(HashMap::new()),
            ordering: Mutex::new(HashSet::new()),
            placed: Mutex::new(VecDeque::new()),
        })
    }

    /// Serves and orders certificates until `stopping` turns true; orders
    /// in flight are dropped then (their locks run out).
    pub async fn run(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let mut orders = JoinSet::new();
        // What is published is read again only when desired state changed.
        let mut revisions = self.store.subscribe();
        let mut published: Option<HashMap<String, String>> = None;
        loop {
            while orders.try_join_next().is_some() {}
            if published.is_none() || revisions.has_changed().unwrap_or(false) {
                revisions.borrow_and_update();
                match wanted(&self.store).await {
                    Ok(names) => published = Some(names),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "ACME: cannot read what is published")
                    }
                }
            }
            if let Some(names) = &published {
                if let Err(e) = self.tick(names, &mut orders).await {
                    tracing::warn!(error = %format!("{e:#}"), "ACME: cannot read the certificates");
                }
            }
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Serves what the store holds and starts the orders that are due.
    async fn tick(
        self: &Arc<Self>,
        wanted: &HashMap<String, String>,
        orders: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let records = self.records().await?;
        self.serve(wanted, &records);
        let now = Utc::now();
        let mut env_orders: HashMap<String, usize> = HashMap::new();
        for record in records.values() {
            *env_orders.entry(record.value.env.clone()).or_default() +=
                record.value.orders_since(now - chrono::Duration::hours(1));
        }
        for (name, env) in wanted {
            let due = match records.get(name) {
                Some(record) => record.value.due(now),
                None => CertRecord::new(name, env).due(now),
            };
            let env_budget = env_orders.get(env).copied().unwrap_or(0) < MAX_ORDERS_PER_ENV_HOUR;
            if !due || !env_budget || orders.len() >= MAX_PARALLEL || !self.room_this_hour() {
                continue;
            }
            if !self.ordering.lock().insert(name.clone()) {
                continue;
            }
            let (me, name, env) = (self.clone(), name.clone(), env.clone());
            orders.spawn(async move {
                me.renew(&name, &env).await;
                me.ordering.lock().remove(&name);
            });
        }
        Ok(())
    }

    /// Whether this host may start another order this hour.
    fn room_this_hour(&self) -> bool {
        let mut placed = self.placed.lock();
        while placed
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(3600))
        {
            placed.pop_front();
        }
        placed.len() < MAX_ORDERS_PER_HOST_HOUR
    }

    /// Every name's record, by name.
    async fn records(&self) -> anyhow::Result<HashMap<String, Versioned<CertRecord>>> {
        let list: Vec<Versioned<CertRecord>> =
            self.store.list(key::ALL_ACME_CERTS.to_string()).await?;
        Ok(list
            .into_iter()
            .map(|r| (r.value.name.clone(), r))
            .collect())
    }

    /// Hands the ingress every valid certificate of a published name.
    fn serve(
        &self,
        wanted: &HashMap<String, String>,
        records: &HashMap<String, Versioned<CertRecord>>,
    ) {
        let now = Utc::now();
        let mut loaded = self.loaded.lock();
        loaded.retain(|name, _| wanted.contains_key(name));
        for (name, record) in records {
            let record = &record.value;
            if !wanted.contains_key(name) || record.expires_at.is_none_or(|t| t <= now) {
                loaded.remove(name);
                continue;
            }
            if loaded
                .get(name)
                .is_some_and(|(at, _)| *at == record.issued_at)
            {
                continue;
            }
            match self.open(record) {
                Ok(cert) => {
                    loaded.insert(name.clone(), (record.issued_at, cert));
                }
                Err(e) => {
                    tracing::warn!(%name, error = %format!("{e:#}"), "ACME: cannot serve a stored certificate")
                }
            }
        }
        let issued = loaded
            .iter()
            .map(|(n, (_, c))| (n.clone(), c.clone()))
            .collect();
        self.certs
            .set_issued(issued, wanted.keys().cloned().collect());
    }

    /// A stored certificate with its key opened.
    fn open(&self, record: &CertRecord) -> anyhow::Result<Arc<CertifiedKey>> {
        let (Some(chain_pem), Some(sealed)) = (&record.chain_pem, &record.key) else {
            anyhow::bail!("no certificate");
        };
        let key_pem = self.sealer.unseal(&key_purpose(&record.name), sealed)?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).context("reading the key")?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("reading the chain")?;
        order::certified(chain, key.secret_pkcs8_der().to_vec(), &self.provider)
    }

    /// Orders `name` when its lock is free and it is still due, and
    /// records how it went.
    async fn renew(self: &Arc<Self>, name: &str, env: &str) {
        let held = match self.lock(name).await {
            Ok(Some(held)) => held,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%name, error = %format!("{e:#}"), "ACME: cannot take the name's lock");
                return;
            }
        };
        if let Err(e) = self.renew_locked(name, env).await {
            tracing::warn!(%name, error = %format!("{e:#}"), "ACME: cannot record an order");
        }
        // Released only if still ours (it may have run out and been
        // taken meanwhile).
        let key = key::acme_lock(name);
        let _ = self
            .store
            .commit(
                Txn::new()
                    .when(Compare::ModRev(key.clone(), held))
                    .delete(key),
            )
            .await;
    }

    async fn renew_locked(self: &Arc<Self>, name: &str, env: &str) -> anyhow::Result<()> {
        let found: Option<Versioned<CertRecord>> = self.store.get(key::acme_cert(name)).await?;
        let (mut record, rev) = match found {
            Some(r) => (r.value, Some(r.mod_rev)),
            None => (CertRecord::new(name, env), None),
        };
        let now = Utc::now();
        if !record.due(now) {
            // Another host renewed it meanwhile.
            return Ok(());
        }
        record.ordering(now);
        let rev = self.write(&record, rev).await?;
        self.placed.lock().push_back(Instant::now());
        tracing::info!(%name, "ACME: ordering a certificate");
        let got = tokio::time::timeout(ORDER_LIMIT, self.order(name)).await;
        let got = got.unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the order took longer than {}s",
                ORDER_LIMIT.as_secs()
            ))
        });
        let now = Utc::now();
        match got {
            Ok(issued) => {
                let key = self
                    .sealer
                    .seal(&key_purpose(name), issued.key_pem.as_bytes())?;
                record.issued(issued.chain_pem, key, issued.valid, now, jitter());
                let expires = issued.valid.1;
                self.event(
                    env,
                    "certificate.issued",
                    format!("{name}: issued, expires {}", expires.to_rfc3339()),
                );
            }
            Err(e) => {
                let why = format!("{e:#}");
                record.failed(why.clone(), now, jitter());
                let next = record
                    .next_try
                    .map_or(String::new(), |t| format!("; next try {}", t.to_rfc3339()));
                self.event(env, "certificate.failed", format!("{name}: {why}{next}"));
            }
        }
        record.env = env.to_string();
        self.write(&record, Some(rev)).await?;
        // Served at once here; the other hosts see it at their next look.
        if record.chain_pem.is_some() && record.last_error.is_none() {
            let cert = self.open(&record)?;
            self.loaded
                .lock()
                .insert(name.to_string(), (record.issued_at, cert.clone()));
            self.certs.add_issued(name, cert);
        }
        Ok(())
    }

    /// Writes a name's record if nobody changed it since `rev`.
    async fn write(&self, record: &CertRecord, rev: Option<u64>) -> anyhow::Result<u64> {
        let key = key::acme_cert(&record.name);
        let compare = match rev {
            Some(rev) => Compare::ModRev(key.clone(), rev),
            None => Compare::Absent(key.clone()),
        };
        let revision = self
            .store
            .commit(Txn::new().when(compare).put(key, encode(record)))
            .await
            .context("writing the certificate's record")?;
        Ok(revision)
    }

    /// Takes `name`'s lock for this host: the revision it was taken at, or
    /// `None` when another holds it.
    async fn lock(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let key = key::acme_lock(name);
        let now = Utc::now();
        let held: Option<Versioned<Lock>> = self.store.get(key.clone()).await?;
        let compare = match &held {
            Some(lock) if lock.value.until > now && lock.value.holder != self.node => {
                return Ok(None)
            }
            Some(lock) => Compare::ModRev(key.clone(), lock.mod_rev),
            None => Compare::Absent(key.clone()),
        };
        let lock = Lock {
            holder: self.node.clone(),
            until: now + LOCK_FOR,
        };
        Ok(self
            .store
            .commit(Txn::new().when(compare).put(key, encode(&lock)))
            .await
            .ok())
    }

    /// One order, on this host's account.
    async fn order(&self, name: &str) -> anyhow::Result<order::Issued> {
        let account = self.account().await?;
        order::order(
            &account,
            name,
            self.settings.challenge,
            &self.certs,
            &self.store,
            &self.provider,
        )
        .await
    }

    /// The account the hosts share: the stored one for this directory, or
    /// a new one (stored for the others).
    async fn account(&self) -> anyhow::Result<Account> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let stored: Option<Versioned<AccountRecord>> =
            self.store.get(key::ACME_ACCOUNT.to_string()).await?;
        let account = match stored.filter(|r| r.value.directory == self.settings.directory) {
            Some(record) => {
                let json = self
                    .sealer
                    .unseal("the ACME account", &record.value.credentials)?;
                let credentials: AccountCredentials =
                    serde_json::from_slice(&json).context("reading the ACME account")?;
                self.builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach the ACME server: {e}"))?
            }
            None => self.create_account().await?,
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    async fn create_account(&self) -> anyhow::Result<Account> {
        let contact: Vec<String> = self
            .settings
            .email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create an ACME account at {}: {e}",
                    self.settings.directory
                )
            })?;
        let json = serde_json::to_vec(&credentials)?;
        let record = AccountRecord {
            directory: self.settings.directory.clone(),
            credentials: self.sealer.seal("the ACME account", &json)?,
        };
        self.store
            .commit(Txn::new().put(key::ACME_ACCOUNT, encode(&record)))
            .await
            .context("storing the ACME account")?;
        tracing::info!(directory = %self.settings.directory, "ACME: account created");
        Ok(account)
    }

    fn builder(&self) -> anyhow::Result<instant_acme::AccountBuilder> {
        match &self.settings.ca_file {
            Some(path) => Account::builder_with_root(path)
                .with_context(|| format!("reading --acme-ca {}", path.display())),
            None => Account::builder().context("loading the system's CA certificates"),
        }
    }

    fn event(&self, env: &str, kind: &str, message: String) {
        self.events.record(Event {
            time: Utc::now(),
            env: env.to_string(),
            kind: kind.to_string(),
            service: None,
            instance: None,
            message,
        });
    }
}

/// Each published name ACME covers, with its environment: every endpoint
/// host that is no IP address and not under `.localhost` (the local CA's).
async fn wanted(store: &Store) -> anyhow::Result<HashMap<String, String>> {
    let services: Vec<Versioned<Service>> = store.list(key::ALL_SERVICES.to_string()).await?;
    let mut names = HashMap::new();
    let mut per_env: HashMap<String, usize> = HashMap::new();
    for service in services {
        let env = &service.value.env;
        for endpoint in &service.value.endpoints {
            let room = names.len() < MAX_NAMES
                && per_env.get(env).copied().unwrap_or(0) < MAX_NAMES_PER_ENV;
            if covered(&endpoint.host) && room && !names.contains_key(&endpoint.host) {
                names.insert(endpoint.host.clone(), env.clone());
                *per_env.entry(env.clone()).or_default() += 1;
            }
        }
    }
    Ok(names)
}

/// Whether ACME certifies `host`.
pub fn covered(host: &str) -> bool {
    host != "localhost" && !host.ends_with(".localhost") && host.parse::<IpAddr>().is_err()
}

/// The names of `env` (every environment's for `None`) and their
/// certificates.
pub async fn statuses(store: &Store, env: Option<&str>) -> anyhow::Result<Vec<DomainStatus>> {
    let wanted = wanted(store).await?;
    let records: Vec<Versioned<CertRecord>> = store.list(key::ALL_ACME_CERTS.to_string()).await?;
    let records: HashMap<&str, &CertRecord> = records
        .iter()
        .map(|r| (r.value.name.as_str(), &r.value))
        .collect();
    let now = Utc::now();
    let mut list: Vec<DomainStatus> = wanted
        .iter()
        .filter(|(_, e)| env.is_none_or(|env| env == e.as_str()))
        .map(|(name, e)| match records.get(name.as_str()) {
            Some(record) => DomainStatus {
                env: e.clone(),
                ..DomainStatus::of(record, now)
            },
            None => DomainStatus::of(&CertRecord::new(name, e), now),
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// What a name's key is sealed for.
fn key_purpose(name: &str) -> String {
    format!("the certificate key of {name}")
}

/// A number in [0, 1), for jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// HTTP-01 answers another host wrote to the store.
struct StoreAnswers(Store);

impl ChallengeLookup for StoreAnswers {
    fn answer(&self, token: &str) -> BoxFuture<'static, Option<String>> {
        let (store, token) = (self.0.clone(), token.to_string());
        Box::pin(async move {
            let found: Versioned<Answer> = store.get(key::acme_challenge(&token)).await.ok()??;
            (found.value.until > Utc::now()).then_some(found.value.key_authorization)
        })
    }
}
