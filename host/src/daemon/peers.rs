//! The other hosts of a cluster, as this one reaches them, with the
//! operator's token they share: code this host lacks is pulled from its
//! registry by the digest its version pinned (never by tag), when it came
//! from one, or else (or when the registry fails) fetched from whichever
//! live host holds it, by digest, and checked against the digest on
//! arrival; requests for services that run only elsewhere are forwarded
//! over one HTTP/2 connection per host; `service ls` asks each what it
//! runs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use crate::api::here::{CYCLIC_HEADER, HOST_HEADER, SCHEME_HEADER, VIA_HEADER};
use crate::api::wire::HereInstances;
use crate::api::OtherHosts;
use crate::model::{Digest, ServiceKey};
use crate::runtime::http::empty_body;
use crate::services::code::BoxFuture;
use crate::services::Fetch;
use crate::services::{Call, Forward, Refusal};
use crate::store::Store;

/// Longest a pull of code from its registry may take before the other
/// hosts are asked instead.
const REGISTRY_FETCH_TIME: Duration = Duration::from_secs(300);

/// Longest a host sending code may go without sending any of it.
const FETCH_STALL: Duration = Duration::from_secs(30);

/// The live hosts' API addresses by name, and when they were read.
type Addresses = (Option<Instant>, HashMap<String, String>);

/// Fetches code from the other hosts.
#[derive(Clone)]
pub struct Peers {
    store: Store,
    /// This host's name (never asked).
    me: String,
    /// The operator's token the hosts share.
    token: String,
    /// Largest code accepted (the larger upload limit, of components or
    /// of images).
    max_bytes: u64,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Requests forwarded to other hosts: HTTP/2, one connection per host
    /// kept open.
    forwarder: Client<HttpConnector, WasiBody>,
    /// The live hosts' addresses, as last read, and when.
    addresses: Arc<Mutex<Addresses>>,
    /// Where the next forwarded request starts among a service's hosts.
    next: Arc<AtomicUsize>,
    /// Pulls code that came from a registry.
    pulling: Pulling,
}

/// What a host needs to pull code from the registry it came from.
#[derive(Clone)]
pub struct Pulling {
    /// The registries.
    pub registries: Arc<crate::registry::Registries>,
    /// Opens the environments' registry logins.
    pub sealer: Arc<crate::sealed::Sealer>,
}

impl Peers {
    /// Peers of host `me`, reached with `token`.
    pub fn new(
        store: Store,
        me: String,
        token: String,
        max_bytes: u64,
        pulling: Pulling,
    ) -> Arc<Peers> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Arc::new(Peers {
            store,
            me,
            token,
            max_bytes,
            // Code and listings: a few idle connections per host at most.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(2)
                .build(connector.clone()),
            forwarder: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .http2_keep_alive_interval(Some(Duration::from_secs(5)))
                .build(connector),
            addresses: Arc::default(),
            next: Arc::default(),
            pulling,
        })
    }

    /// The environment and source of code `digest`, when a kept version
    /// of some stack pulled it from a registry.
    async fn source_of(&self, digest: &Digest) -> Option<(String, crate::model::Source)> {
        let envs = self.store.environments().await.ok()?;
        for env in envs {
            let Ok(versions) = self
                .store
                .list::<crate::model::Version>(crate::store::key::env_versions(&env.value.name))
                .await
            else {
                continue;
            };
            for version in versions {
                let found = version
                    .value
                    .components
                    .iter()
                    .filter(|(_, d)| *d == digest)
                    .find_map(|(name, _)| version.value.sources.get(name));
                if let Some(source) = found {
                    return Some((env.value.name.clone(), source.clone()));
                }
            }
        }
        None
    }

    /// Pulls code `digest` from its registry by the manifest digest its
    /// version pinned, with its environment's login, into `into`; its size.
    async fn pull_pinned(
        &self,
        env: &str,
        source: &crate::model::Source,
        digest: &Digest,
        into: &std::path::Path,
    ) -> Result<u64, String> {
        let pinned = source.pinned();
        let host = pinned.split('/').next().unwrap_or("").to_ascii_lowercase();
        let credentials =
            crate::registry::credentials_for(&self.store, &self.pulling.sealer, env, &host)
                .await
                .map_err(|e| format!("{e:#}"))?;
        let limits = crate::registry::Limits {
            component_bytes: self.max_bytes,
            image_bytes: self.max_bytes,
            quota: None,
            private_allowed: true,
        };
        // Bounded, so a registry that stalls only delays the fall back to
        // the other hosts.
        let pulled = tokio::time::timeout(
            REGISTRY_FETCH_TIME,
            self.pulling
                .registries
                .pull(&pinned, env, credentials.as_ref(), limits, into),
        )
        .await
        .map_err(|_| format!("no answer within {}s", REGISTRY_FETCH_TIME.as_secs()))?
        .map_err(|e| e.to_string())?;
        match pulled {
            crate::registry::Pulled::Component {
                bytes, digest: got, ..
            } => {
                if &got != digest {
                    return Err(format!("{pinned} holds {got}, not {digest}"));
                }
                tokio::fs::write(into, &bytes)
                    .await
                    .map_err(|e| format!("writing {}: {e}", into.display()))?;
                Ok(bytes.len() as u64)
            }
            crate::registry::Pulled::Image {
                digest: got, size, ..
            } => {
                if &got != digest {
                    return Err(format!("{pinned} makes image {got}, not {digest}"));
                }
                Ok(size)
            }
        }
    }

    /// A GET of `path` on the host at `address`, with the shared token:
    /// its status and body (at most `limit` bytes).
    async fn get(
        &self,
        address: &str,
        path: &str,
        limit: usize,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let request = http::Request::get(format!("http://{address}{path}"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// The code from the host at `address`, written to `into` as it
    /// comes (images are large) and checked against `digest`.
    async fn fetch_from(
        &self,
        address: &str,
        digest: &Digest,
        into: &std::path::Path,
    ) -> Result<u64, String> {
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt as _;
        let request = http::Request::get(format!("http://{address}/v1/code/{digest}"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_STALL, self.client.request(request))
            .await
            .map_err(|_| format!("no answer in {FETCH_STALL:?}"))?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let said = Limited::new(body, 4096)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&said).trim()
            ));
        }
        let mut file = tokio::fs::File::create(into)
            .await
            .map_err(|e| format!("creating {}: {e}", into.display()))?;
        let (mut hasher, mut size) = (sha2::Sha256::new(), 0u64);
        loop {
            let frame = tokio::time::timeout(FETCH_STALL, body.frame())
                .await
                .map_err(|_| format!("it sent nothing for {FETCH_STALL:?}"))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| format!("reading its answer: {e}"))?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(format!("it sent more than {} bytes", self.max_bytes));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", into.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest.as_str() {
            return Err(format!("it sent code whose digest is {got}"));
        }
        Ok(size)
    }
}

/// How long the hosts' addresses are used before they are read again.
const ADDRESSES_FOR: Duration = Duration::from_secs(1);

impl Peers {
    /// The API address of each live host, read at most every
    /// [`ADDRESSES_FOR`].
    async fn addresses(&self) -> HashMap<String, String> {
        {
            let cached = self.addresses.lock();
            if cached.0.is_some_and(|at| at.elapsed() < ADDRESSES_FOR) {
                return cached.1.clone();
            }
        }
        let Ok(hosts) = self.store.nodes().await else {
            return self.addresses.lock().1.clone();
        };
        let fresh: HashMap<String, String> = hosts
            .live
            .into_iter()
            .map(|n| (n.name, n.address))
            .collect();
        *self.addresses.lock() = (Some(Instant::now()), fresh.clone());
        fresh
    }

    async fn forward_to(
        &self,
        address: &str,
        key: &ServiceKey,
        request: http::Request<WasiBody>,
        call: Call,
    ) -> Result<http::Response<HyperOutgoingBody>, hyper_util::client::legacy::Error> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // `/` (with or without a query) goes to the service's own route,
        // anything longer below it.
        let rest = path.strip_prefix('/').unwrap_or(path);
        let slash = if rest.is_empty() || rest.starts_with('?') {
            ""
        } else {
            "/"
        };
        let uri = format!(
            "http://{address}/v1/here/call/{}/{}/{}{slash}{rest}",
            key.env, key.stack, key.name
        );
        parts.uri = uri.parse().unwrap_or_default();
        let headers = &mut parts.headers;
        if let Some(host) = headers.remove(http::header::HOST) {
            headers.insert(HOST_HEADER, host);
        }
        let bearer = format!("Bearer {}", self.token);
        if let Ok(value) = http::HeaderValue::from_str(&bearer) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let (via, scheme, cyclic) = match call {
            Call::Ingress(Scheme::Https) => ("ingress", "https", false),
            Call::Ingress(_) => ("ingress", "http", false),
            Call::Dns(cyclic) => ("dns", "http", cyclic),
        };
        headers.insert(VIA_HEADER, http::HeaderValue::from_static(via));
        headers.insert(SCHEME_HEADER, http::HeaderValue::from_static(scheme));
        if cyclic {
            headers.insert(CYCLIC_HEADER, http::HeaderValue::from_static("1"));
        }
        parts.version = http::Version::HTTP_2;
        let response = self
            .forwarder
            .request(http::Request::from_parts(parts, body))
            .await?;
        let (parts, body) = response.into_parts();
        Ok(http::Response::from_parts(
            parts,
            body.map_err(wasmtime_wasi_http::Error::Hyper)
                .boxed_unsync(),
        ))
    }
}

impl Forward for Peers {
    fn forward(
        &self,
        key: &ServiceKey,
        nodes: &[String],
        request: http::Request<WasiBody>,
        call: Call,
    ) -> BoxFuture<'static, Result<http::Response<HyperOutgoingBody>, Refusal>> {
        let peers = self.clone();
        let key = key.clone();
        let nodes = nodes.to_vec();
        Box::pin(async move {
            let addresses = peers.addresses().await;
            let live: Vec<&String> = nodes
                .iter()
                .filter(|n| **n != peers.me && addresses.contains_key(*n))
                .collect();
            if live.is_empty() {
                return Err(Refusal::unavailable(
                    format!("{key} runs on no host that is up"),
                    1,
                ));
            }
            let first = peers.next.fetch_add(1, Ordering::Relaxed) % live.len();
            // A request without a body can be sent again to the next host
            // when one cannot be reached (it died or is stopping, and the
            // placements have not caught up yet).
            let (parts, body) = request.into_parts();
            let again = body.is_end_stream().then(|| parts.clone());
            let mut request = Some(http::Request::from_parts(parts, body));
            let mut failed = Vec::new();
            for i in 0..live.len() {
                let node = live[(first + i) % live.len()];
                let Some(sent) = request.take() else { break };
                match peers
                    .forward_to(&addresses[node], &key, sent, call.clone())
                    .await
                {
                    Ok(response) => return Ok(response),
                    Err(e) => {
                        tracing::warn!(service = %key, node = %node, error = %e, "forwarding to another host failed");
                        failed.push(node.as_str());
                        if e.is_connect() {
                            request = again
                                .clone()
                                .map(|parts| http::Request::from_parts(parts, empty_body()));
                        }
                    }
                }
            }
            Err(Refusal::unavailable(
                format!("{key}: no host running it answered ({})", failed.join(", ")),
                1,
            ))
        })
    }
}

/// Longest another host may take to say what it runs.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer about what another host runs.
const MAX_ANSWER_BYTES: usize = 64 << 20;

impl OtherHosts for Peers {
    fn instances(&self, env: &str) -> BoxFuture<'static, Vec<HereInstances>> {
        let peers = self.clone();
        let path = format!("/v1/here/instances?env={env}");
        Box::pin(async move {
            let Ok(hosts) = peers.store.nodes().await else {
                return Vec::new();
            };
            let asks = hosts
                .live
                .iter()
                .filter(|h| h.name != peers.me)
                .map(|host| {
                    let peers = &peers;
                    let path = &path;
                    async move {
                        let answer = tokio::time::timeout(
                            ASK_TIMEOUT,
                            peers.get(&host.address, path, MAX_ANSWER_BYTES),
                        )
                        .await;
                        match answer {
                            Ok(Ok((status, body))) if status.is_success() => {
                                serde_json::from_slice::<Vec<HereInstances>>(&body)
                                    .unwrap_or_default()
                            }
                            _ => {
                                tracing::debug!(node = %host.name, "no answer about its instances");
                                Vec::new()
                            }
                        }
                    }
                });
            futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }
}

impl Fetch for Peers {
    fn fetch_into(
        &self,
        digest: &Digest,
        into: std::path::PathBuf,
    ) -> BoxFuture<'static, Result<u64, String>> {
        let digest = digest.clone();
        let peers = self.clone();
        Box::pin(async move {
            // From its registry, by digest, when it came from one.
            if let Some((env, source)) = peers.source_of(&digest).await {
                match peers.pull_pinned(&env, &source, &digest, &into).await {
                    Ok(size) => {
                        tracing::info!(digest = digest.short(), from = %source.pinned(), bytes = size, "pulled code from its registry");
                        return Ok(size);
                    }
                    Err(e) => {
                        tracing::warn!(
                            digest = digest.short(),
                            "pulling from the registry failed, asking the other hosts: {e}"
                        );
                    }
                }
            }
            let hosts = peers
                .store
                .nodes()
                .await
                .map_err(|e| format!("listing the hosts: {e:#}"))?;
            // Hosts that list the code first; then the others, which may
            // hold it beyond what they list.
            let mut others: Vec<_> = hosts.live.iter().filter(|h| h.name != peers.me).collect();
            others.sort_by_key(|h| !h.holds.contains(&digest));
            let mut failures = Vec::new();
            for host in others {
                match peers.fetch_from(&host.address, &digest, &into).await {
                    Ok(size) => {
                        tracing::info!(digest = digest.short(), from = %host.name, bytes = size, "fetched code from another host");
                        return Ok(size);
                    }
                    Err(e) => failures.push(format!("{}: {e}", host.name)),
                }
            }
            Err(format!(
                "code {} is not stored on this host, and no other host sent it ({})",
                digest.short(),
                if failures.is_empty() {
                    "no other host is up".to_string()
                } else {
                    failures.join("; ")
                }
            ))
        })
    }
}
