//! Intra-DNS: every service is reachable from its environment as
//! `http://<stack>-<service>/`, load balanced over its instances, without a
//! socket. Every outgoing `wasi:http` request of every instance passes
//! through [`Identity`], the runtime's [`Dispatch`] for it: a name of a service in the caller's
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
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full};
use parking_lot::RwLock;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::WasiBody;

use super::callee::Callee;
use crate::model::Egress;
use crate::runtime::dispatch::SocketVerdict;
use crate::runtime::{Dispatch, Outgoing, MAX_HOPS};
use crate::telemetry::{Metrics, ServiceLog, ServiceMetrics};
use wasmtime_wasi::sockets::SocketAddrUse;

/// Header naming the calling service, `<stack>-<service>`.
pub const CALLER_HEADER: &str = "x-mesh-caller";
/// Header listing the services a request passed through, comma-separated.
pub const CHAIN_HEADER: &str = "x-mesh-chain";

/// Intra-DNS names by environment, each to the pool that answers it.
pub type Names = HashMap<String, HashMap<String, Arc<dyn Callee>>>;

/// Who can be reached by name, and each environment's outbound policy.
/// The supervisor rewrites it whenever desired state changes.
pub struct Directory {
    names: RwLock<Names>,
    policies: RwLock<HashMap<String, Arc<Egress>>>,
    /// The daemon's own listeners: no guest reaches them.
    platform: RwLock<Vec<SocketAddr>>,
    /// Where calls are counted.
    metrics: Arc<Metrics>,
}

impl Directory {
    /// An empty directory counting calls in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Directory {
        Directory {
            names: RwLock::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
            platform: RwLock::new(Vec::new()),
            metrics,
        }
    }

    /// Replaces the names and policies.
    pub fn set(&self, names: Names, policies: HashMap<String, Arc<Egress>>) {
        *self.names.write() = names;
        *self.policies.write() = policies;
    }

    /// The pool behind a name in an environment.
    /// `name` is lowercase, as every intra-DNS name is.
    fn lookup(&self, env: &str, name: &str) -> Option<Arc<dyn Callee>> {
        self.names.read().get(env)?.get(name).cloned()
    }

    /// Every intra-DNS name in an environment, sorted.
    pub fn names_in(&self, env: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .names
            .read()
            .get(env)
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// An environment's outbound policy.
    fn policy(&self, env: &str) -> Arc<Egress> {
        self.policies.read().get(env).cloned().unwrap_or_default()
    }

    /// Tells the directory where the daemon itself listens.
    pub fn set_platform(&self, listeners: Vec<SocketAddr>) {
        *self.platform.write() = listeners;
    }

    /// Whether `addr` is one of the daemon's own listeners (on any local
    /// address, when one listens on all of them).
    fn is_platform(&self, addr: SocketAddr) -> bool {
        self.platform.read().iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || own.ip().is_unspecified()
                    || addr.ip().is_unspecified()
                    || crate::model::special(addr.ip()) == Some(crate::model::Special::Loopback))
        })
    }

    /// Whether an environment's guest, having asked for `host`, may
    /// connect to `addr`: never to the daemon's own listeners, and to a
    /// non-public address only as the operator allowed.
    pub fn check_address(&self, env: &str, host: &str, addr: SocketAddr) -> Result<(), String> {
        if self.is_platform(addr) {
            return Err(format!(
                "{addr} is one of the platform's own listeners; call services by name (http://<stack>-<service>/)"
            ));
        }
        self.policy(env).check_address(host, addr.ip(), addr.port())
    }
}

/// Who an instance is, for the calls it makes: the services layer's
/// answer to the runtime's [`Dispatch`].
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

    fn note(&self, text: String) {
        self.log.note(&self.instance, text);
    }

    /// Refuses an outgoing request with `message`, which the guest gets
    /// when it asks for the answer and the service's log shows. The body
    /// the guest may still be writing is read and dropped (bounded), so
    /// that the guest sees the refusal, not a closed stream.
    fn deny(&self, message: String, request: http::Request<WasiBody>) -> Outgoing {
        self.count_denied();
        self.note(format!("[mesh] {message}"));
        tokio::spawn(drain(request.into_body()));
        Outgoing::Denied(message)
    }

    fn count_denied(&self) {
        let calls = &self.directory.metrics.calls;
        calls.denied.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a request for `pool`'s service to it in-process, with the
    /// caller's name, the chain, and `X-Forwarded-For` set.
    fn call_by_name(
        &self,
        pool: Arc<dyn Callee>,
        host: &str,
        mut request: http::Request<WasiBody>,
        chain: &[String],
    ) -> Outgoing {
        let calls = &self.directory.metrics.calls;
        calls.in_process.fetch_add(1, Ordering::Relaxed);
        self.metrics.called(host, crate::telemetry::now_secs());
        let mut chain = chain.to_vec();
        chain.push(self.name.clone());
        if chain.len() > MAX_HOPS {
            let text = format!(
                "mesh: call chain longer than {MAX_HOPS} services: {}\n",
                chain.join(" -> ")
            );
            return Outgoing::Answered(Box::pin(
                async move { answer(StatusCode::LOOP_DETECTED, text) },
            ));
        }
        let cyclic = chain.iter().any(|name| name == host);
        let headers = request.headers_mut();
        // In-process there is no peer address: the caller's name stands
        // for it, after any addresses the caller passed on.
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {}", self.name),
            None => self.name.clone(),
        };
        for (name, value) in [
            (CALLER_HEADER, self.name.clone()),
            (CHAIN_HEADER, chain.join(",")),
            ("x-forwarded-for", forwarded_for),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        Outgoing::Answered(Box::pin(async move {
            match pool.call(request, Scheme::Http, cyclic).await {
                Ok(response) => response,
                Err(refused) => {
                    let mut response =
                        answer(refused.status, format!("mesh: {}\n", refused.message));
                    if let Some(seconds) = refused.retry_after {
                        response
                            .headers_mut()
                            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
                    }
                    response
                }
            }
        }))
    }
}

/// Most of a refused request's body read before it is dropped, and how
/// long reading it may take.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a refused request's body away, up to [`DRAIN_BYTES`] or
/// [`DRAIN_TIME`], whichever ends first.
async fn drain(mut body: WasiBody) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read >= DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

impl Dispatch for Identity {
    fn names(&self) -> Vec<String> {
        self.directory.names_in(&self.env)
    }

    /// A name of a service in the caller's own environment goes to that
    /// service in-process; any other authority to the network, if the
    /// environment's outbound policy allows it.
    fn outgoing(&self, request: http::Request<WasiBody>, chain: &[String]) -> Outgoing {
        let host = request.uri().host().unwrap_or("").to_ascii_lowercase();
        let plain_http = request.uri().scheme() != Some(&http::uri::Scheme::HTTPS);
        if plain_http {
            if let Some(pool) = self.directory.lookup(&self.env, &host) {
                return self.call_by_name(pool, &host, request, chain);
            }
        }
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if plain_http { 80 } else { 443 });
        if is_localhost(&host) {
            // Loopback by definition (RFC 6761): never asked of DNS, and
            // never another environment's service or endpoint.
            return self.deny(
                format!(
                    "outbound request to {host}:{port} refused: names under .localhost are loopback, and only this environment's own service names (stack-service) are served here"
                ),
                request,
            );
        }
        let egress = self.directory.policy(&self.env);
        let policy = &egress.policy;
        if !policy.allows(&host, port) {
            // A name shaped like a service's (no dot) is most likely one
            // that is gone, or in another stack.
            let hint = if plain_http && !host.contains('.') && !host.contains(':') {
                format!(
                    " (no service in this environment is named {host}: deleted, or never created?)"
                )
            } else {
                String::new()
            };
            return self.deny(
                format!(
                    "outbound request to {host}:{port} denied by this environment's outbound policy ({policy}){hint}; change it with `mesh env set outbound ...`"
                ),
                request,
            );
        }
        let calls = &self.directory.metrics.calls;
        calls.outbound.fetch_add(1, Ordering::Relaxed);
        Outgoing::Network(Box::new(request))
    }

    /// Before an outgoing request dials an address its host resolved to.
    fn address(&self, host: &str, addr: SocketAddr) -> Result<(), String> {
        self.directory
            .check_address(&self.env, host, addr)
            .map_err(|why| {
                self.count_denied();
                let message = format!("outbound request to {host}:{} refused: {why}", addr.port());
                self.note(format!("[mesh] {message}"));
                message
            })
    }

    /// The outbound policy applied to raw TCP and UDP: IP literals and
    /// `localhost` in an allow-list match, and host names in it allow the
    /// addresses they resolve to; then the address itself must be public
    /// or opened by the operator. Binding to an ephemeral port is not a
    /// destination and is allowed; listening on the host is not.
    fn socket(&self, addr: SocketAddr, usage: SocketAddrUse) -> SocketVerdict {
        match usage {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                let ephemeral = addr.port() == 0;
                if !ephemeral {
                    self.note(format!(
                        "[mesh] binding {addr} denied: guests may bind only ephemeral ports (port 0)"
                    ));
                }
                return Box::pin(std::future::ready(ephemeral));
            }
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => {
                self.note("[mesh] listening for connections is not allowed: serve HTTP through an endpoint".to_string());
                return Box::pin(std::future::ready(false));
            }
            _ => {}
        }
        let egress = self.directory.policy(&self.env);
        let policy = &egress.policy;
        let ip = addr.ip();
        let literal = policy.allows(&ip.to_string(), addr.port())
            || (crate::model::special(ip) == Some(crate::model::Special::Loopback)
                && policy.allows("localhost", addr.port()));
        let names = if literal {
            Vec::new()
        } else {
            policy.names_for_port(addr.port())
        };
        let address = self
            .directory
            .check_address(&self.env, &ip.to_string(), addr);
        let who = self.clone();
        Box::pin(async move {
            // Looked up on a task, so this future stays Sync; the task
            // ends with it.
            let listed = literal
                || tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                    for name in names.into_iter().filter(|n| !is_localhost(n)) {
                        if let Ok(mut found) = tokio::net::lookup_host((name, 0)).await {
                            if found.any(|a| a.ip() == ip) {
                                return true;
                            }
                        }
                    }
                    false
                }))
                .await
                .unwrap_or(false);
            let policy = &egress.policy;
            tracing::debug!(%addr, listed, %policy, "socket check");
            let refused = if !listed {
                Some(format!(
                    "denied by this environment's outbound policy ({policy})"
                ))
            } else {
                address.err().map(|why| format!("refused: {why}"))
            };
            match refused {
                Some(why) => {
                    who.count_denied();
                    who.note(format!("[mesh] connection to {addr} {why}"));
                    false
                }
                None => true,
            }
        })
    }

    fn memory_changed(&self, bytes: i64) {
        self.metrics.memory_changed(bytes);
    }

    fn cpu_counter(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        Some(self.metrics.cpu_nanos.clone())
    }
}

/// A plain-text response made by the platform.
fn answer(status: StatusCode, text: String) -> http::Response<WasiBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

/// Whether `host` is `localhost` or a name under it (RFC 6761), with or
/// without a trailing dot.
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    //! The directory and the calls of one instance, with a fake callee in
    //! place of a pool.

    use parking_lot::Mutex;
    use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

    use super::*;
    use crate::model::{Outbound, ServiceKey};
    use crate::services::callee::Refusal;
    use crate::services::code::BoxFuture;
    use crate::telemetry::{DiskWriter, Logs};

    /// Answers 200 and keeps what it was called with.
    #[derive(Default)]
    struct FakeCallee {
        calls: Mutex<Vec<(http::HeaderMap, bool)>>,
    }

    impl Callee for FakeCallee {
        fn call(
            self: Arc<Self>,
            request: http::Request<WasiBody>,
            _scheme: Scheme,
            cyclic: bool,
        ) -> BoxFuture<'static, Result<http::Response<HyperOutgoingBody>, Refusal>> {
            self.calls.lock().push((request.headers().clone(), cyclic));
            Box::pin(async { Ok(answer(StatusCode::OK, "called\n".into())) })
        }
    }

    fn setup(policy: Outbound) -> (Identity, Arc<FakeCallee>, Arc<Metrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let directory = Arc::new(Directory::new(metrics.clone()));
        let callee = Arc::new(FakeCallee::default());
        let names = HashMap::from([(
            "default".to_string(),
            HashMap::from([(
                "finance-payments".to_string(),
                callee.clone() as Arc<dyn Callee>,
            )]),
        )]);
        let egress = Egress {
            policy,
            reach: Vec::new(),
        };
        directory.set(
            names,
            HashMap::from([("default".to_string(), Arc::new(egress))]),
        );
        let logs = Logs::new(dir.path(), 1 << 20, DiskWriter::start());
        let key = ServiceKey {
            env: "default".into(),
            stack: "app".into(),
            name: "web".into(),
        };
        let who = Identity {
            env: "default".into(),
            name: "app-web".into(),
            directory,
            log: logs.service(&key),
            instance: "web.1".into(),
            metrics: metrics.service(&key),
        };
        (who, callee, metrics, dir)
    }

    fn get(uri: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::builder().uri(uri).body(body).unwrap()
    }

    async fn answered(outgoing: Outgoing) -> u16 {
        match outgoing {
            Outgoing::Answered(answer) => answer.await.status().as_u16(),
            Outgoing::Network(_) => panic!("went to the network"),
            Outgoing::Denied(message) => panic!("denied: {message}"),
        }
    }

    #[tokio::test]
    async fn names_in_the_environment_are_called_in_process_with_the_chain() {
        let (who, callee, metrics, _dir) = setup(Outbound::Deny);
        let chain = vec!["app-gateway".to_string()];
        assert_eq!(
            answered(who.outgoing(get("http://Finance-Payments/pay"), &chain)).await,
            200
        );
        let (headers, cyclic) = callee.calls.lock()[0].clone();
        assert_eq!(headers[CALLER_HEADER], "app-web");
        assert_eq!(headers[CHAIN_HEADER], "app-gateway,app-web");
        assert_eq!(headers["x-forwarded-for"], "app-web");
        assert!(!cyclic);
        // A callee already up the chain is called as a cycle.
        let chain = vec!["finance-payments".to_string()];
        answered(who.outgoing(get("http://finance-payments/"), &chain)).await;
        assert!(callee.calls.lock()[1].1);
        assert_eq!(metrics.calls.counts().in_process, 2);
    }

    #[tokio::test]
    async fn long_chains_are_cut_with_508() {
        let (who, callee, _metrics, _dir) = setup(Outbound::Deny);
        let chain: Vec<String> = (0..MAX_HOPS).map(|i| format!("app-s{i}")).collect();
        assert_eq!(
            answered(who.outgoing(get("http://finance-payments/"), &chain)).await,
            508
        );
        assert!(callee.calls.lock().is_empty());
    }

    #[tokio::test]
    async fn other_names_follow_the_outbound_policy() {
        let (who, callee, metrics, _dir) = setup(Outbound::Deny);
        // HTTPS to a service name, and names of other environments, are
        // not in-process calls: the policy decides, and it denies.
        for uri in [
            "https://finance-payments/",
            "http://example.com/",
            "http://other-env-name/",
        ] {
            match who.outgoing(get(uri), &[]) {
                Outgoing::Denied(message) => assert!(message.contains("denied"), "{message}"),
                _ => panic!("{uri} was not denied"),
            }
        }
        assert!(callee.calls.lock().is_empty());
        assert_eq!(metrics.calls.counts().denied, 3);
        let (who, _callee, metrics, _dir) = setup(Outbound::Allow);
        assert!(matches!(
            who.outgoing(get("http://example.com/"), &[]),
            Outgoing::Network(_)
        ));
        assert_eq!(metrics.calls.counts().outbound, 1);
    }
}
