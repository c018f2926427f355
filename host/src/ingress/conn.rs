//! Serving connections with bounds: how many are open at once, how many
//! one client address holds, how long a client may take to send a request
//! head and how long a connection may sit idle. Accept errors (no file
//! handles left, say) pause the listener and are reported once per
//! interval. The ingress and the control API both serve through this.
//!
//! Timeouts are kept per connection, not per request: a watchdog task
//! per connection wakes at its deadline, and the request path only stamps
//! an atomic, so they cost nothing measurable per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{Metrics, Throttle};

/// How long an accept error pauses the listener, so it cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a stopping listener waits for more of its backlog.
const BACKLOG_WAIT: Duration = Duration::from_millis(20);
/// How long connections taken just before a stop have to send their
/// request before they are closed gracefully.
const FIRST_REQUEST_WAIT: Duration = Duration::from_millis(100);
/// Longest a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on the connections of one [`Connections`] (the ingress's HTTP
/// and HTTPS listeners share one; the API has its own).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address, over the
    /// listeners sharing these bounds.
    pub max_per_client: usize,
    /// Longest a client may take to send a whole request head, counted
    /// from its first byte.
    pub header_timeout: Duration,
    /// Longest a connection may stay open with no request in flight and
    /// nothing sent.
    pub idle_timeout: Duration,
    /// How long shutdown waits for open connections to finish.
    pub grace: Duration,
}

/// Connections held by each client address, bounded.
struct PerClient {
    counts: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PerClient {
    /// Counts a new connection from `ip`, unless it holds the most already.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut counts = self.counts.lock();
        let held = counts.entry(ip).or_insert(0);
        if *held >= self.max {
            return None;
        }
        *held += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

/// One connection counted against its client address.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.clients.counts.lock();
        if let Some(held) = counts.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A listener's connection bounds and counters.
pub struct Connections {
    limits: ConnLimits,
    open: Arc<Semaphore>,
    clients: Arc<PerClient>,
    /// Where open connections are counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
    /// What these listeners are, for log lines.
    name: &'static str,
}

impl Connections {
    /// Bounds for a listener called `name` in log lines.
    pub fn new(
        name: &'static str,
        limits: ConnLimits,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Connections> {
        Arc::new(Connections {
            open: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            clients: Arc::new(PerClient {
                counts: Mutex::new(HashMap::new()),
                max: limits.max_per_client.max(1),
            }),
            limits,
            metrics,
            name,
        })
    }

    /// Serves every connection `listener` accepts with `service`, until
    /// `stop` turns true; then drains them for at most the grace period.
    pub fn serve<S, B>(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        builder: auto::Builder<TokioExecutor>,
        service: impl Fn(SocketAddr, bool) -> S + Send + Sync + 'static,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()>
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let service = Arc::new(service);
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            // Closes what is still open after the grace period.
            let abort = CancellationToken::new();
            // Serves one accepted connection until it ends, the grace period
            // after a stop runs out, or it idles too long.
            let start = |open: Open| {
                let builder = builder.clone();
                let tls = tls.clone();
                let watcher = graceful.watcher();
                let service = service.clone();
                let limits = self.limits;
                let abort = abort.clone();
                tokio::spawn(async move {
                    let Open {
                        stream,
                        peer,
                        _counted,
                    } = open;
                    let activity = Arc::new(Activity::new());
                    let stream = Watched {
                        inner: stream,
                        activity: activity.clone(),
                        first: true,
                    };
                    let serve = async {
                        match tls {
                            None => {
                                let service = Tracked::new(service(peer, false), activity.clone());
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service);
                                watcher.watch(conn.into_owned()).await
                            }
                            Some(tls) => {
                                let stream = match tokio::time::timeout(
                                    TLS_HANDSHAKE_TIMEOUT,
                                    tls.accept(stream),
                                )
                                .await
                                {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return Ok(());
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return Ok(());
                                    }
                                };
                                // A TLS-ALPN-01 validation ends with the
                                // handshake (RFC 8737 §3).
                                if stream.get_ref().1.alpn_protocol()
                                    == Some(super::certs::ACME_TLS_ALPN)
                                {
                                    return Ok(());
                                }
                                // HTTP/2 sends frames that are no request
                                // head: only the idle timeout applies.
                                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                    activity.speaks_h2();
                                }
                                let service = Tracked::new(service(peer, true), activity.clone());
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service);
                                watcher.watch(conn.into_owned()).await
                            }
                        }
                    };
                    tokio::select! {
                        result = serve => {
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "connection ended");
                            }
                        }
                        why = activity.expired(limits) => {
                            tracing::debug!(%peer, why, "connection closed");
                        }
                        () = abort.cancelled() => {}
                    }
                });
            };
            loop {
                let accepted = tokio::select! {
                    accepted = self.accept(&listener) => accepted,
                    _ = stop.wait_for(|stopped| *stopped) => break,
                };
                if let Some(open) = accepted {
                    start(open);
                }
            }
            // Stopping: no new connection is taken, but none the kernel has
            // already made is reset either (closing a listener resets its
            // backlog). New SYNs are dropped, so a client tries again and
            // finds the port closed; the backlog is taken and served.
            shed_new_connections(&listener);
            while let Ok(accepted) =
                tokio::time::timeout(BACKLOG_WAIT, self.accept(&listener)).await
            {
                if let Some(open) = accepted {
                    start(open);
                }
            }
            drop(listener);
            // A connection just taken may not have read its request yet,
            // and the graceful close would end it unread: let it read.
            tokio::time::sleep(FIRST_REQUEST_WAIT).await;
            if tokio::time::timeout(self.limits.grace, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(listener = self.name, grace = ?self.limits.grace, "connections still open after the grace period: closing them");
            }
            abort.cancel();
        })
    }

    /// The next connection, once there is room for one; `None` after an
    /// accept error (the listener pauses, so it never spins) or for a
    /// client already holding its most connections (closed at once).
    async fn accept(&self, listener: &TcpListener) -> Option<Open> {
        static FAILED: Throttle = Throttle::new();
        static CROWDED: Throttle = Throttle::new();
        let permit = self.open.clone().acquire_owned().await.ok()?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(times) = FAILED.hit() {
                    tracing::warn!(listener = self.name, error = %e, times, "accept failed; pausing the listener (reported once per interval)");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                return None;
            }
        };
        let Some(client) = self.clients.admit(peer.ip()) else {
            if let Some(times) = CROWDED.hit() {
                tracing::warn!(listener = self.name, client = %peer.ip(), max = self.limits.max_per_client, times, "client at its connection limit: closing new ones (reported once per interval)");
            }
            return None;
        };
        let _ = stream.set_nodelay(true);
        Some(Open {
            stream,
            peer,
            _counted: Counted::new(self.metrics.clone(), permit, client),
        })
    }
}

/// Attaches a socket filter that drops every packet to `listener`: new
/// connections' SYNs go unanswered (the client retries), while the
/// connections already made wait in the backlog to be accepted.
fn shed_new_connections(listener: &TcpListener) {
    use std::os::fd::AsRawFd as _;
    // asm-generic/socket.h (libc does not name it for Linux).
    const SO_ATTACH_FILTER: libc::c_int = 26;
    let mut drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    // SAFETY: `program` points at a valid one-instruction filter for the
    // duration of the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::addr_of!(program).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot filter a stopping listener");
    }
}

/// An accepted connection and what counts it.
struct Open {
    stream: TcpStream,
    peer: SocketAddr,
    _counted: Counted,
}

/// One open connection: counted while it lives, its permits given back
/// when it closes.
struct Counted {
    metrics: Option<Arc<Metrics>>,
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
}

impl Counted {
    fn new(
        metrics: Option<Arc<Metrics>>,
        permit: OwnedSemaphorePermit,
        client: ClientSlot,
    ) -> Counted {
        if let Some(metrics) = &metrics {
            metrics.connections.fetch_add(1, Ordering::Relaxed);
        }
        Counted {
            metrics,
            _permit: permit,
            _client: client,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a connection's watchdog reads: requests in flight, when the last
/// one ended, and when the client started sending the next head.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds after `start`, plus one, the first byte since then came
    /// (a request head being sent); 0 while none has.
    head_started: AtomicU64,
    /// Wakes the watchdog when a head starts, to arm the shorter deadline.
    wake: tokio::sync::Notify,
    /// The connection speaks HTTP/2, whose control frames are no head.
    h2: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            h2: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks the connection HTTP/2: no head clock, only the idle one.
    fn speaks_h2(&self) {
        self.h2.store(true, Ordering::Release);
        self.head_started.store(0, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves when the connection has been idle, or sending one request
    /// head, for longer than allowed; never while a request is in flight.
    async fn expired(&self, limits: ConnLimits) -> &'static str {
        loop {
            let head = self.head_started.load(Ordering::Acquire);
            let (since, limit, why) = if head > 0 {
                (
                    head - 1,
                    limits.header_timeout,
                    "request head not sent in time",
                )
            } else {
                (
                    self.idle_since.load(Ordering::Acquire),
                    limits.idle_timeout,
                    "idle for too long",
                )
            };
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let waited = Duration::from_millis(self.now_ms().saturating_sub(since));
            if !busy && waited >= limit {
                return why;
            }
            let wait = if busy {
                limits.header_timeout.min(limits.idle_timeout)
            } else {
                limit - waited
            };
            tokio::select! {
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// A connection's stream, noting when bytes come in.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Nothing was read yet: the first bytes tell HTTP/2 (by prior
    /// knowledge) from HTTP/1.
    first: bool,
}

/// How an HTTP/2 connection by prior knowledge begins (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if read.is_empty() {
            return polled;
        }
        if std::mem::take(&mut self.first) && read.starts_with(H2_PREFACE) {
            self.activity.speaks_h2();
        }
        let activity = &self.activity;
        if activity.in_flight.load(Ordering::Relaxed) == 0
            && activity.head_started.load(Ordering::Relaxed) == 0
            && !activity.h2.load(Ordering::Relaxed)
        {
            activity
                .head_started
                .store(activity.now_ms() + 1, Ordering::Release);
            activity.wake.notify_one();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A service that counts its requests in flight until their response
/// bodies end.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

/// One request in flight (public only as part of [`TrackedFuture`]);
/// when dropped (its response body done or
/// abandoned) the connection is idle again if it was the last.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .idle_since
                .store(activity.now_ms(), Ordering::Release);
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        self.activity.head_started.store(0, Ordering::Release);
        TrackedFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, its request counted in flight.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let in_flight = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
