//! The ingress: the daemon's public HTTP and HTTPS listeners. Each request
//! is matched to an endpoint by its Host and the longest path prefix, and
//! handed, in-process, to an instance of the web service bound there.
//!
//! - `conn`: serving connections with bounds (how many, how many per
//!   client, header-read and idle timeouts), shared with the control API.
//! - `tls`: certificates (given, or issued by a local CA).
//! - `certs`: certificates from ACME and the answers to its challenges.
//!
//! Connections are counted (`mesh_ingress_connections`) and bounded: at
//! the limit the listener stops accepting until one closes. On shutdown
//! every open connection is asked to finish what it is doing and close,
//! and is waited for at most the grace period.
//!
//! HTTP/1.1 and HTTP/2 are served on both listeners (h2 by ALPN on TLS, by
//! prior knowledge in clear). Hop-by-hop headers are dropped both ways
//! (RFC 9110 §7.6.1) and `X-Forwarded-For`, `-Proto` and `-Host` are set.
//! Oversized headers get `431` (HTTP/1.1) and oversized bodies `413`.
//! Bodies stream to the guest as it reads them, with back-pressure: the
//! client's sending waits on the guest's reading.

pub mod certs;
pub mod conn;
pub mod proxy;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::WasiBody;

use crate::services::{request_host, Supervisor, CALLER_HEADER, CHAIN_HEADER};
use crate::telemetry::Metrics;
pub use conn::{ConnLimits, Connections};

/// Request limits, from the daemon's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Connection bounds, over all listeners.
    pub conn: ConnLimits,
}

/// The HSTS policy of `--https-only` endpoints: a year.
const HSTS: &str = "max-age=31536000";

/// Most requests one HTTP/2 connection may have open at once (below
/// hyper's default of 200: each may hold a place in a service's queue).
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// What the ingress needs to answer requests.
pub struct Ingress {
    supervisor: Arc<Supervisor>,
    limits: Limits,
    /// Open connections, over both listeners, and their bounds.
    connections: Arc<Connections>,
    /// The HTTPS listener's port: plain HTTP requests for `https://`
    /// endpoints are redirected there.
    https_port: Option<u16>,
    /// Certificates from ACME and the answers to its HTTP-01 challenges.
    acme: Option<Arc<certs::AcmeCerts>>,
}

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

impl Ingress {
    /// An ingress routing to the supervisor's web services.
    pub fn new(
        supervisor: Arc<Supervisor>,
        metrics: Arc<Metrics>,
        limits: Limits,
        https_port: Option<u16>,
        acme: Option<Arc<certs::AcmeCerts>>,
    ) -> Arc<Ingress> {
        Arc::new(Ingress {
            supervisor,
            connections: Connections::new("ingress", limits.conn, Some(metrics)),
            limits,
            https_port,
            acme,
        })
    }

    /// Accepts connections until `stop` turns true; `tls` makes it HTTPS.
    pub fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own bounds sit above ours (HTTP/1.1 cannot go below
        // 8 KiB); `handle` answers 431 at the configured limit itself.
        builder
            .http1()
            .max_buf_size(self.limits.max_header_bytes.max(8192));
        builder
            .http2()
            .max_header_list_size(
                u32::try_from(self.limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
            )
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        let ingress = self.clone();
        self.connections.clone().serve(
            listener,
            tls,
            builder,
            move |peer, https| {
                let scheme = if https { Scheme::Https } else { Scheme::Http };
                ingress.service(peer, scheme)
            },
            stop,
        )
    }

    fn service(
        self: &Arc<Self>,
        peer: SocketAddr,
        scheme: Scheme,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<WasiBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<WasiBody>, Infallible>> + Send,
    > + Clone {
        let ingress = self.clone();
        hyper::service::service_fn(move |request| {
            let ingress = ingress.clone();
            let scheme = scheme.clone();
            async move { Ok(ingress.handle(request, peer, scheme).await) }
        })
    }

    /// Answers one request.
    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: Scheme,
    ) -> Response<WasiBody> {
        let host = match self.check_head(&request) {
            Ok(host) => host,
            Err((status, message)) => return text(status, message),
        };
        let path = request.uri().path().to_string();
        if let Some(acme) = &self.acme {
            if let Some(answer) = acme.http_answer(&path).await {
                return match answer {
                    Some(key_authorization) => text(StatusCode::OK, key_authorization),
                    None => text(
                        StatusCode::NOT_FOUND,
                        "mesh: no such ACME challenge\n".into(),
                    ),
                };
            }
        }
        let Some(route) = self.supervisor.route(&host, &path) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("mesh: no endpoint for host {host} and path {path}\n"),
            );
        };
        if let (true, Scheme::Http, Some(port)) = (route.https, &scheme, self.https_port) {
            return to_https(&host, port, request.uri());
        }
        let limit = self.limits.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large(limit);
        }
        // The body streams to the guest as it reads it (the client waits
        // while it does not); past the limit the guest's read fails. What
        // the guest left unread is read (and dropped) before its answer
        // goes out, so a body over the limit gets 413 however far the
        // guest read it.
        let (mut parts, body) = request.into_parts();
        let share = BodyShare::new(body, limit);
        forwarded(&mut parts, &host, peer, &scheme);
        let body = Bounded {
            share: share.clone(),
        }
        .boxed_unsync();
        let hsts = route.hsts && matches!(scheme, Scheme::Https);
        let answered = route.handle(Request::from_parts(parts, body), scheme).await;
        if share.drain().await {
            return too_large(limit);
        }
        match answered {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if hsts {
                    parts.headers.insert(
                        header::STRICT_TRANSPORT_SECURITY,
                        HeaderValue::from_static(HSTS),
                    );
                }
                Response::from_parts(parts, body)
            }
            Err(refused) => refusal(refused.status, &refused.message, refused.retry_after),
        }
    }

    /// The request's host, or the answer to a request without one or with
    /// a head over the limit.
    fn check_head(&self, request: &Request<Incoming>) -> Result<String, (StatusCode, String)> {
        // Two Host fields could route differently here and in the guest
        // (RFC 9112 §3.2: answer 400).
        if request
            .headers()
            .get_all(header::HOST)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err((
                StatusCode::BAD_REQUEST,
                "mesh: the request has more than one Host field\n".into(),
            ));
        }
        let Some(host) = request_host(request.uri(), request.headers()) else {
            return Err((
                StatusCode::BAD_REQUEST,
                "mesh: the request names no host\n".into(),
            ));
        };
        let head_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
            + request
                .uri()
                .path_and_query()
                .map_or(0, |p| p.as_str().len())
            + request.uri().authority().map_or(0, |a| a.as_str().len());
        if head_bytes > self.limits.max_header_bytes {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "mesh: the request head is larger than the limit of {} bytes\n",
                    self.limits.max_header_bytes
                ),
            ));
        }
        Ok(host)
    }
}

fn too_large(limit: u64) -> Response<WasiBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("mesh: the request body is larger than the limit of {limit} bytes\n"),
    )
}

/// `308` to the same URL over HTTPS, for endpoints published as
/// `https://`.
fn to_https(host: &str, port: u16, uri: &http::Uri) -> Response<WasiBody> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = text(
        StatusCode::PERMANENT_REDIRECT,
        format!("mesh: this endpoint is served over HTTPS: {location}\n"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The request head as the guest sees it: hop-by-hop fields gone,
/// forwarding fields set.
fn forwarded(parts: &mut http::request::Parts, host: &str, peer: SocketAddr, scheme: &Scheme) {
    // An absolute-form target's authority was routed on, so it replaces
    // Host (RFC 9112 §3.2.2): the guest must see the name it was reached
    // by, never the Host field's (another environment's, perhaps).
    if let Some(authority) = parts.uri.authority() {
        let name = match authority.port_u16() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&name) {
            parts.headers.insert(header::HOST, value);
        }
    }
    let original_host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| HeaderValue::from_str(host).ok());
    strip_hop_by_hop(&mut parts.headers);
    // Only the platform says who called, inside an environment.
    parts.headers.remove(CALLER_HEADER);
    parts.headers.remove(CHAIN_HEADER);
    let peer_ip = peer.ip().to_string();
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {peer_ip}"),
        None => peer_ip,
    };
    set(&mut parts.headers, "x-forwarded-for", &forwarded_for);
    let proto = match scheme {
        Scheme::Https => "https",
        _ => "http",
    };
    set(&mut parts.headers, "x-forwarded-proto", proto);
    if let Some(original) = original_host {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), original);
    }
}

/// Longest the ingress reads what a guest left of a request body, to see
/// whether it was over the limit, before the guest's answer goes out.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// A request body, read by the guest through [`Bounded`] and, for what it
/// left, by the ingress; counted against the limit either way.
struct BodyShare {
    body: parking_lot::Mutex<Option<Incoming>>,
    left: std::sync::atomic::AtomicU64,
    limit: u64,
    over: AtomicBool,
    /// The guest let go of the body (it may go on reading while it
    /// streams its answer, so only then is the rest the ingress's).
    released: AtomicBool,
}

impl BodyShare {
    fn new(body: Incoming, limit: u64) -> Arc<BodyShare> {
        Arc::new(BodyShare {
            body: parking_lot::Mutex::new(Some(body)),
            left: std::sync::atomic::AtomicU64::new(limit),
            limit,
            over: AtomicBool::new(false),
            released: AtomicBool::new(false),
        })
    }

    /// Counts `size` more bytes; false once past the limit.
    fn take(&self, size: u64) -> bool {
        let taken = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(size)
            });
        if taken.is_err() {
            self.over.store(true, Ordering::Release);
        }
        taken.is_ok()
    }

    /// Reads and drops what the guest left of the body, if it let go of
    /// it (for at most [`DRAIN_WAIT`]); whether the body went past the
    /// limit.
    async fn drain(&self) -> bool {
        if !self.released.load(Ordering::Acquire) {
            return self.over.load(Ordering::Acquire);
        }
        let body = self.body.lock().take();
        if let Some(mut body) = body.filter(|b| !hyper::body::Body::is_end_stream(b)) {
            let rest = async {
                while let Some(Ok(frame)) = body.frame().await {
                    let size = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if !self.take(size) {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_WAIT, rest).await;
        }
        self.over.load(Ordering::Acquire)
    }
}

/// The guest's view of a request body: frames as they come, an error
/// once past the limit.
struct Bounded {
    share: Arc<BodyShare>,
}

impl Drop for Bounded {
    fn drop(&mut self) {
        self.share.released.store(true, Ordering::Release);
    }
}

impl hyper::body::Body for Bounded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let share = &self.share;
        let polled = match share.body.lock().as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => return Poll::Ready(None),
        };
        let frame = match std::task::ready!(polled) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::Hyper(e)))),
            None => return Poll::Ready(None),
        };
        if share.take(frame.data_ref().map_or(0, |d| d.len() as u64)) {
            Poll::Ready(Some(Ok(frame)))
        } else {
            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                Some(share.limit),
            ))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.share
            .body
            .lock()
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.share
            .body
            .lock()
            .as_ref()
            .map(hyper::body::Body::size_hint)
            .unwrap_or_default()
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Drops hop-by-hop fields: the fixed ones and any `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn text(status: StatusCode, body: String) -> Response<WasiBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn refusal(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response<WasiBody> {
    let mut response = text(status, format!("mesh: {message}\n"));
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }
}
