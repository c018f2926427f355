//! Sending a guest's outgoing `wasi:http` request to the real network,
//! with every address the host name resolves to checked (by the instance's
//! dispatcher) before it is connected to. The check sees the address
//! actually dialled, so a name that resolves (or, later, re-resolves) to
//! the host's loopback or a private range is refused: no DNS rebinding.
//!
//! Otherwise it does what wasmtime's default sender does: TCP, TLS with
//! the web PKI roots for `https`, HTTP/1.1, and the connect, first-byte
//! and between-bytes timeouts the guest asked for.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Says whether a request for a host may dial one of its addresses
/// (`Err` says why not).
pub type AddressCheck = Arc<CheckFn>;

/// The function behind an [`AddressCheck`].
pub type CheckFn = dyn Fn(&str, SocketAddr) -> Result<(), String> + Send + Sync;

/// A response and the task driving its connection, as wasmtime wants
/// them back.
pub type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// Connect, first-byte and between-bytes timeout when the guest names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most resolved addresses tried for one request.
const MAX_ADDRESSES: usize = 8;

/// Sends `request`; `check`, when given, must accept each address before
/// it is dialled.
pub async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    check: Option<AddressCheck>,
) -> Sent {
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or(Error::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let between_bytes_timeout = options
        .and_then(|o| o.between_bytes_timeout)
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(Duration::from_millis(1));
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let stream = tokio::time::timeout_at(deadline, dial(&host, port, check.as_deref(), deadline))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The request line names only the path when not talking to a proxy.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let stream: Box<dyn Stream> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let stream = tokio::time::timeout_at(deadline, tls_connector()?.connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    // The handshake only sets the connection up: no I/O, no timeout.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    let mut conn = Box::pin(conn);
    // Drive the connection while waiting for the response head.
    let response = tokio::time::timeout(first_byte_timeout, async {
        let send = sender.send_request(request);
        tokio::pin!(send);
        tokio::select! {
            response = &mut send => response.map_err(Error::from),
            ended = &mut conn => {
                ended.map_err(Error::from)?;
                (&mut send).await.map_err(Error::from)
            }
        }
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|body| {
        Gaps {
            inner: body,
            timer: tokio::time::sleep(between_bytes_timeout),
            gap: between_bytes_timeout,
        }
        .boxed_unsync()
    });
    let io = async move { conn.await.map_err(Error::from) };
    Ok((response, Box::new(io)))
}

/// The first address `host` resolves to that the dispatcher accepts and
/// that answers.
async fn dial(
    host: &str,
    port: u16,
    check: Option<&CheckFn>,
    deadline: tokio::time::Instant,
) -> wasmtime_wasi_http::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Error::DnsError {
                rcode: Some("address not available".into()),
                info_code: None,
            })?
            .take(MAX_ADDRESSES)
            .collect(),
    };
    let mut refused = None;
    let mut failed = None;
    let count = addrs.len();
    for (i, addr) in addrs.into_iter().enumerate() {
        if let Some(check) = check {
            if let Err(why) = check(host, addr) {
                refused = Some(why);
                continue;
            }
        }
        // Each address gets its share of the time left, so one that drops
        // packets does not keep the others from being tried.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / u32::try_from(count - i).unwrap_or(1);
        match tokio::time::timeout(share, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => failed = Some(e),
        }
    }
    match (failed, refused) {
        (Some(e), _) => Err(Error::Connect(e)),
        (None, Some(why)) => Err(Error::InternalError(Some(why))),
        (None, None) => Err(Error::DestinationNotFound),
    }
}

/// A plain or TLS connection.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// One TLS client configuration for every outgoing request: the web PKI
/// roots, no client certificate.
fn tls_connector() -> wasmtime_wasi_http::Result<tokio_rustls::TlsConnector> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .ok()
    });
    config
        .clone()
        .map(tokio_rustls::TlsConnector::from)
        .ok_or(Error::ConfigurationError)
}

pin_project_lite::pin_project! {
    /// A response body that fails when the server goes quiet for longer
    /// than `gap` between two frames (the guest's between-bytes timeout).
    struct Gaps {
        #[pin]
        inner: hyper::body::Incoming,
        #[pin]
        timer: tokio::time::Sleep,
        gap: Duration,
    }
}

impl hyper::body::Body for Gaps {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + *this.gap;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
