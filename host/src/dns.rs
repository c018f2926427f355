//! Intra-DNS: every service is reachable from its environment as
//! `http://<stack>-<service>/`, load balanced over its instances, without a
//! socket. Every outgoing `wasi:http` request of every instance passes
//! through [`MeshHooks::send_request`]: a name of a service in the caller's
//! own environment is handed in-process to that service's pool; any other
//! authority goes to the real network, if the environment's outbound
//! policy allows it. A name from another environment is just a host name
//! here: it falls through to DNS and never reaches the other environment.
//!
//! Calls carry `X-Mesh-Caller` (who called) and `X-Mesh-Chain` (the
//! services the request has passed through). Past [`MAX_HOPS`] the hook
//! answers `508 Loop Detected`. A call whose callee is already in its own
//! chain (a cycle, A → B → A) never waits on an instance held up the chain:
//! when the callee has no free instance it gets a one-off extra one.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::logs::{LogLine, ServiceLog, Stream};
use crate::metrics::ServiceMetrics;
use crate::model::Outbound;
use crate::web::WebPool;

/// Most services one request may pass through.
pub const MAX_HOPS: usize = 10;
/// Header naming the calling service, `<stack>-<service>`.
pub const CALLER_HEADER: &str = "x-mesh-caller";
/// Header listing the services a request passed through, comma-separated.
pub const CHAIN_HEADER: &str = "x-mesh-chain";

/// Who can be reached by name, and each environment's outbound policy.
/// The supervisor rewrites it whenever desired state changes.
#[derive(Default)]
pub struct Directory {
    names: RwLock<HashMap<(String, String), Arc<WebPool>>>,
    policies: RwLock<HashMap<String, Outbound>>,
    in_process: AtomicU64,
    outbound: AtomicU64,
    denied: AtomicU64,
}

/// Counts of outgoing requests since the daemon started.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CallCounts {
    /// Dispatched in-process to a service by its intra-DNS name.
    pub in_process: u64,
    /// Sent to the network.
    pub outbound: u64,
    /// Refused by an outbound policy.
    pub denied: u64,
}

impl Directory {
    /// Replaces the names and policies.
    pub fn set(
        &self,
        names: HashMap<(String, String), Arc<WebPool>>,
        policies: HashMap<String, Outbound>,
    ) {
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names;
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = policies;
    }

    /// The pool behind a name in an environment.
    pub fn lookup(&self, env: &str, name: &str) -> Option<Arc<WebPool>> {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(env.to_string(), name.to_ascii_lowercase()))
            .cloned()
    }

    /// An environment's outbound policy.
    pub fn policy(&self, env: &str) -> Outbound {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(env)
            .cloned()
            .unwrap_or_default()
    }

    /// Outgoing request counts.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            in_process: self.in_process.load(Ordering::Relaxed),
            outbound: self.outbound.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
        }
    }
}

/// Who an instance is, for the calls it makes.
#[derive(Clone)]
pub struct Identity {
    /// Its environment.
    pub env: String,
    /// Its service's intra-DNS name.
    pub name: String,
    /// The names and policies.
    pub directory: Arc<Directory>,
    /// Its service's log, where denied calls are noted.
    pub log: Arc<ServiceLog>,
    /// Its instance id.
    pub instance: String,
    /// Its service's counters (memory in use, requests, restarts).
    pub metrics: Arc<ServiceMetrics>,
}

impl Identity {
    /// The same service's identity for another of its instances: what a
    /// pool or a cron job hands each new instance, without looking the
    /// service's log and counters up again.
    pub fn at(&self, instance: &str) -> Identity {
        Identity {
            instance: instance.to_string(),
            ..self.clone()
        }
    }

    /// A `wasi:sockets` check applying the outbound policy to raw TCP and
    /// UDP: IP literals and `localhost` in an allow-list match.
    pub fn socket_check(
        &self,
    ) -> impl Fn(SocketAddr, SocketAddrUse) -> Pin<Box<dyn Future<Output = bool> + Send + Sync>>
           + Send
           + Sync
           + 'static {
        let who = self.clone();
        move |addr, _use| {
            let policy = who.directory.policy(&who.env);
            let ip = addr.ip();
            let literal = policy.allows(&ip.to_string(), addr.port())
                || (ip.is_loopback() && policy.allows("localhost", addr.port()));
            let names = if literal {
                Vec::new()
            } else {
                policy.names_for_port(addr.port())
            };
            let who = who.clone();
            Box::pin(async move {
                // Host names in the list allow the addresses they resolve
                // to (looked up on a task, so this future stays Sync).
                let allowed = literal
                    || tokio::spawn(async move {
                        for name in names {
                            if let Ok(mut found) = tokio::net::lookup_host((name, 0)).await {
                                if found.any(|a| a.ip() == ip) {
                                    return true;
                                }
                            }
                        }
                        false
                    })
                    .await
                    .unwrap_or(false);
                tracing::debug!(%addr, allowed, %policy, "socket check");
                if !allowed {
                    who.directory.denied.fetch_add(1, Ordering::Relaxed);
                    who.note(&format!(
                        "[mesh] connection to {addr} denied by this environment's outbound policy ({policy})"
                    ));
                }
                allowed
            })
        }
    }

    fn note(&self, text: &str) {
        self.log.write(LogLine {
            time: Utc::now(),
            instance: self.instance.clone(),
            stream: Stream::Stderr,
            text: text.to_string(),
        });
    }
}

/// The `wasi:http` hooks of one instance's store.
pub struct MeshHooks {
    who: Option<Identity>,
    /// The services the request this instance is serving passed through.
    pub chain: Vec<String>,
}

impl MeshHooks {
    /// Hooks for an instance; `None` gives a bare host's behaviour.
    pub fn new(who: Option<Identity>) -> MeshHooks {
        MeshHooks {
            who,
            chain: Vec::new(),
        }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for MeshHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let Some(who) = self.who.clone() else {
            return Box::new(network(request, options));
        };
        let host = request.uri().host().unwrap_or("").to_ascii_lowercase();
        let plain_http = request.uri().scheme() != Some(&http::uri::Scheme::HTTPS);
        if plain_http {
            if let Some(pool) = who.directory.lookup(&who.env, &host) {
                who.directory.in_process.fetch_add(1, Ordering::Relaxed);
                let mut chain = self.chain.clone();
                chain.push(who.name.clone());
                if chain.len() > MAX_HOPS {
                    return Box::new(async move {
                        Ok(answer(
                            StatusCode::LOOP_DETECTED,
                            format!(
                                "mesh: call chain longer than {MAX_HOPS} services: {}\n",
                                chain.join(" -> ")
                            ),
                        ))
                    });
                }
                let cyclic = chain.contains(&host);
                let headers = request.headers_mut();
                // In-process there is no peer address: the caller's name
                // stands for it, after any addresses the caller passed on.
                let forwarded_for =
                    match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                        Some(earlier) => format!("{earlier}, {}", who.name),
                        None => who.name.clone(),
                    };
                for (name, value) in [
                    (CALLER_HEADER, who.name.clone()),
                    (CHAIN_HEADER, chain.join(",")),
                    ("x-forwarded-for", forwarded_for),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
                return Box::new(async move {
                    let response = match pool.call(request, Scheme::Http, cyclic).await {
                        Ok(response) => response,
                        Err(refused) => {
                            let mut response =
                                answer(refused.status, format!("mesh: {}\n", refused.message)).0;
                            if let Some(seconds) = refused.retry_after {
                                response
                                    .headers_mut()
                                    .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
                            }
                            return Ok((response, done()));
                        }
                    };
                    Ok((response, done()))
                });
            }
        }
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if plain_http { 80 } else { 443 });
        let policy = who.directory.policy(&who.env);
        if !policy.allows(&host, port) {
            who.directory.denied.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "outbound request to {host}:{port} denied by this environment's outbound policy ({policy}); change it with `mesh env set outbound ...`"
            );
            who.note(&format!("[mesh] {message}"));
            return Box::new(async move {
                Err(wasmtime_wasi_http::Error::InternalError(Some(message)))
            });
        }
        who.directory.outbound.fetch_add(1, Ordering::Relaxed);
        Box::new(network(request, options))
    }
}

/// The real network, as a bare wasmtime host sends it.
async fn network(request: http::Request<WasiBody>, options: Option<RequestOptions>) -> SendResult {
    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
    Ok((
        response.map(http_body_util::BodyExt::boxed_unsync),
        Box::new(io) as Box<dyn Future<Output = _> + Send>,
    ))
}

fn done() -> Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> {
    Box::new(async { Ok(()) })
}

fn answer(
    status: StatusCode,
    text: String,
) -> (
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
) {
    let mut response = http::Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    (response, done())
}
