//! The containers' way out: an HTTP proxy the daemon runs on its bridge
//! address (`HTTP_PROXY` in every container), and the same on port 80
//! there, where a container's `/etc/hosts` sends the intra-DNS names. A
//! request is taken only from a container of this daemon, told apart by
//! its bridge address, and goes where that container's instance would
//! send it: to a service of its own environment by name, or to the
//! network within its environment's outbound policy, each address checked
//! as for a wasm guest. HTTPS tunnels (`CONNECT`) are refused.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use wasmtime_wasi_http::WasiBody;

use super::conn::{ConnLimits, Connections};
use crate::runtime::send_outgoing;
use crate::services::container::{Callers, PROXY_PORT};

/// Headers meant for the proxy, not passed on.
const PROXY_HEADERS: &[&str] = &[
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Binds the proxy on `gateway` (port [`PROXY_PORT`], and 80 when free)
/// and serves it until `stop`.
pub async fn serve(
    callers: Arc<Callers>,
    gateway: Ipv4Addr,
    limits: ConnLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use anyhow::Context as _;
    let connections = Connections::new("container proxy", limits, None);
    let mut tasks = Vec::new();
    for port in [PROXY_PORT, 80] {
        let addr = SocketAddr::from((gateway, port));
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if port == 80 => {
                tracing::warn!(%addr, error = %e, "containers cannot call services on port 80 by name; the proxy still works");
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("binding the container proxy to {addr}"))
            }
        };
        let callers = callers.clone();
        let builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        tasks.push(connections.clone().serve(
            listener,
            None,
            builder,
            move |peer, _https| {
                let callers = callers.clone();
                hyper::service::service_fn(move |request| {
                    let callers = callers.clone();
                    async move { Ok::<_, Infallible>(handle(&callers, peer, request).await) }
                })
            },
            stop.clone(),
        ));
    }
    Ok(tasks)
}

fn refuse(status: StatusCode, message: String) -> Response<WasiBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message + "\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

async fn handle(
    callers: &Callers,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<WasiBody> {
    let Some(dispatch) = callers.dispatch_for(peer.ip()) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "mesh: this proxy serves the daemon's containers only".into(),
        );
    };
    if request.method() == http::Method::CONNECT {
        return refuse(
            StatusCode::NOT_IMPLEMENTED,
            "mesh: HTTPS tunnels through the proxy are not supported; call services by name over http://".into(),
        );
    }
    if request.uri().authority().is_none() {
        // Sent straight to port 80 under an intra-DNS name: the Host
        // header names the service.
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        match http::Uri::try_from(format!("http://{host}{path}")) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "mesh: the request names no host".into(),
                )
            }
        }
    }
    for name in PROXY_HEADERS {
        request.headers_mut().remove(*name);
    }
    let request = request.map(|body| {
        body.map_err(wasmtime_wasi_http::Error::Hyper)
            .boxed_unsync()
    });
    match send_outgoing(dispatch, request).await {
        Ok(response) => response,
        Err(e) => refuse(StatusCode::BAD_GATEWAY, format!("mesh: {e}")),
    }
}
