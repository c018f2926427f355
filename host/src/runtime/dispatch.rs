//! The hook every outgoing `wasi:http` request and raw socket of an
//! instance passes through. The runtime does not decide where a request
//! goes: the layer above, which knows services, names and policies,
//! implements [`Dispatch`] and answers for each instance. An instance
//! without one behaves as under a bare wasmtime host (the network open).
//!
//! Like Spin's outbound-HTTP interceptor, this keeps the outgoing-HTTP
//! layer from importing the server that answers by name.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::connect;

/// Most services one request may pass through.
pub const MAX_HOPS: usize = 10;

/// A future answering an outgoing request in-process.
pub type Answer = Pin<Box<dyn Future<Output = http::Response<WasiBody>> + Send>>;

/// A socket check's future, as `wasi:sockets` wants it.
pub type SocketVerdict = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

/// Where one outgoing request goes.
pub enum Outgoing {
    /// Answered in-process (a service reached by name).
    Answered(Answer),
    /// Sent to the real network, as given back; each address the host
    /// resolves to is put to [`Dispatch::address`] before it is dialled.
    Network(Box<http::Request<WasiBody>>),
    /// Refused; the guest's request fails with this message.
    Denied(String),
}

/// What the layer above decides for one instance's outside world.
pub trait Dispatch: Send + Sync + 'static {
    /// Where an outgoing `wasi:http` request goes. `chain` lists the
    /// services the request this instance is serving passed through.
    fn outgoing(&self, request: http::Request<WasiBody>, chain: &[String]) -> Outgoing;

    /// Whether a raw TCP or UDP socket may use `addr` as `usage` says
    /// (bind to it, connect or send to it).
    fn socket(&self, addr: SocketAddr, usage: SocketAddrUse) -> SocketVerdict;

    /// Whether an outgoing `wasi:http` request for `host` may connect to
    /// `addr`, one of the addresses the name resolved to; `Err` says why
    /// not.
    fn address(&self, host: &str, addr: SocketAddr) -> Result<(), String>;

    /// The instance's linear memory grew (or, negative, was freed) by
    /// `bytes`.
    fn memory_changed(&self, bytes: i64);

    /// Where the instance's CPU time is added up, in nanoseconds (its
    /// service's counter), if anywhere.
    fn cpu_counter(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        None
    }

    /// The intra-DNS names the instance can call (for a container's
    /// `/etc/hosts`).
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Sends a request where `dispatch` says it goes, as a guest's outgoing
/// request is sent: to a service in-process, to the network within the
/// policy (each address checked), or refused.
pub async fn send_outgoing(
    dispatch: Arc<dyn Dispatch>,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, wasmtime_wasi_http::Error> {
    match dispatch.outgoing(request, &[]) {
        Outgoing::Answered(answer) => Ok(answer.await),
        Outgoing::Network(request) => {
            let check: connect::AddressCheck =
                Arc::new(move |host, addr| dispatch.address(host, addr));
            let (response, driver) = connect::send(*request, None, Some(check)).await?;
            tokio::spawn(Box::into_pin(driver));
            Ok(response)
        }
        Outgoing::Denied(message) => Err(wasmtime_wasi_http::Error::InternalError(Some(message))),
    }
}

/// The `wasi:http` hooks of one store.
pub struct Hooks {
    dispatch: Option<Arc<dyn Dispatch>>,
    /// The services the request this instance now serves passed through.
    pub(crate) chain: Vec<String>,
    /// Whether the guest sent a request or opened a connection since the
    /// request it now serves began: such a request is not safe to send
    /// again, its side effects may have happened.
    pub(crate) called_out: CalledOut,
}

/// Whether a guest called out, shared by the store's hooks and its socket
/// check: an HTTP request since the request it serves began, or a socket
/// connection or datagram ever (a socket opened for one request can be
/// written to in the next, with no check to see it).
#[derive(Clone, Default)]
pub(crate) struct CalledOut {
    request: Arc<AtomicBool>,
    sockets: Arc<AtomicBool>,
}

impl CalledOut {
    /// A new request begins.
    pub(crate) fn reset(&self) {
        self.request.store(false, Ordering::Release);
    }

    /// Whether the guest called out since the request began, or ever
    /// used a socket.
    pub(crate) fn any(&self) -> bool {
        self.request.load(Ordering::Acquire) || self.sockets.load(Ordering::Acquire)
    }
}

impl Hooks {
    pub(crate) fn new(dispatch: Option<Arc<dyn Dispatch>>, called_out: CalledOut) -> Hooks {
        Hooks {
            dispatch,
            chain: Vec::new(),
            called_out,
        }
    }

    /// A `wasi:sockets` address check asking the dispatcher; a connection
    /// or datagram asked for counts as calling out, allowed or not.
    pub(crate) fn socket_check(
        dispatch: Arc<dyn Dispatch>,
        called_out: CalledOut,
    ) -> impl Fn(SocketAddr, SocketAddrUse) -> SocketVerdict + Send + Sync + 'static {
        move |addr, usage| {
            if !matches!(usage, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind) {
                called_out.sockets.store(true, Ordering::Release);
            }
            dispatch.socket(addr, usage)
        }
    }
}

type SendResult = connect::Sent;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        self.called_out.request.store(true, Ordering::Release);
        let Some(dispatch) = &self.dispatch else {
            return Box::new(connect::send(request, options, None));
        };
        match dispatch.outgoing(request, &self.chain) {
            Outgoing::Answered(answer) => Box::new(async move {
                let response = answer.await;
                Ok((response, done()))
            }),
            Outgoing::Network(request) => {
                let dispatch = dispatch.clone();
                let check: connect::AddressCheck =
                    Arc::new(move |host, addr| dispatch.address(host, addr));
                Box::new(connect::send(*request, options, Some(check)))
            }
            Outgoing::Denied(message) => {
                Box::new(
                    async move { Err(wasmtime_wasi_http::Error::InternalError(Some(message))) },
                )
            }
        }
    }
}

fn done() -> Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> {
    Box::new(async { Ok(()) })
}
