//! The ingress: the daemon's public HTTP and HTTPS listeners. Each request
//! is matched to an endpoint by its Host and the longest path prefix, and
//! handed, in-process, to an instance of the web service bound there.
//!
//! - `conn`: serving connections with bounds (how many, how many per
//!   client, header-read and idle timeouts), shared with the control API.
//! - `tls`: certificates (given, or issued by a local CA).
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

pub mod conn;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::WasiBody;

use crate::services::{request_host, Route, Supervisor, CALLER_HEADER, CHAIN_HEADER};
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

/// Most requests one HTTP/2 connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// What the ingress needs to answer requests.
pub struct Ingress {
    supervisor: Arc<Supervisor>,
    limits: Limits,
    /// Open connections, over both listeners, and their bounds.
    connections: Arc<Connections>,
    /// The HTTPS listener's port: plain HTTP requests for `https://`
    /// endpoints are redirected there.
    https_port: Option<u16>,
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
    ) -> Arc<Ingress> {
        Arc::new(Ingress {
            supervisor,
            connections: Connections::new("ingress", limits.conn, metrics),
            limits,
            https_port,
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
        let Some(route) = self.supervisor.route(&host, &path) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("mesh: no endpoint for host {host} and path {path}\n"),
            );
        };
        if let (true, Scheme::Http, Some(port)) = (route.https, &scheme, self.https_port) {
            return to_https(&host, port, request.uri());
        }
        let Route { key, pool, .. } = route;
        let limit = self.limits.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large(limit);
        }
        let Some(pool) = pool else {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{key} is starting"),
                Some(1),
            );
        };
        let request = if declared.is_none() && !hyper::body::Body::is_end_stream(request.body()) {
            match read_unsized_body(request, limit).await {
                Ok(request) => forwarded(request, &host, peer, &scheme, limit),
                Err(response) => return response,
            }
        } else {
            forwarded(request, &host, peer, &scheme, limit)
        };
        match pool.handle(request, scheme).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
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

/// A body of unknown length (chunked, or HTTP/2 without content-length)
/// read up to the limit first, so that an oversized one is answered 413
/// before any guest sees it.
async fn read_unsized_body(
    request: Request<Incoming>,
    limit: u64,
) -> Result<
    Request<impl hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static>,
    Response<WasiBody>,
> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(limit)),
        Err(e) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("mesh: cannot read the request body: {e}\n"),
            ))
        }
    };
    let body = Full::new(bytes).map_err(|never| -> hyper::Error { match never {} });
    Ok(Request::from_parts(parts, body))
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

/// The request as the guest sees it: hop-by-hop fields gone, forwarding
/// fields set, the body bounded.
fn forwarded<B>(
    request: Request<B>,
    host: &str,
    peer: SocketAddr,
    scheme: &Scheme,
    limit: u64,
) -> Request<WasiBody>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    let (mut parts, body) = request.into_parts();
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
    let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .map_err(move |e| match e.downcast::<hyper::Error>() {
            Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
            Err(_) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit)),
        })
        .boxed_unsync();
    Request::from_parts(parts, body)
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
