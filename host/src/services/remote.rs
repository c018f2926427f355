//! Services whose instances all run on other hosts of a cluster: a
//! request for one (through this host's ingress, or an intra-DNS call
//! from an instance here) goes to a host that runs it, in one hop.

use std::sync::Arc;

use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use super::callee::{Callee, Refusal};
use super::code::BoxFuture;
use crate::model::ServiceKey;

/// How a request reaches another host.
pub trait Forward: Send + Sync + 'static {
    /// Sends a request for `key` to one of `nodes` (the hosts running it)
    /// and returns its answer. `call` says how the far host answers it:
    /// as an intra-DNS call (with `cyclic`) or as its ingress would.
    fn forward(
        &self,
        key: &ServiceKey,
        nodes: &[String],
        request: http::Request<WasiBody>,
        call: Call,
    ) -> BoxFuture<'static, Result<http::Response<HyperOutgoingBody>, Refusal>>;
}

/// How a forwarded request is to be answered.
#[derive(Clone, Debug)]
pub enum Call {
    /// As the ingress answers a client, over this scheme.
    Ingress(Scheme),
    /// As an intra-DNS call; `true` when the service is already up the
    /// request's chain.
    Dns(bool),
}

/// A service served by other hosts.
pub struct Remote {
    key: ServiceKey,
    /// The hosts running it, by name.
    nodes: Vec<String>,
    forward: Arc<dyn Forward>,
}

impl Remote {
    /// `key`, run on `nodes`, reached through `forward`.
    pub fn new(key: ServiceKey, nodes: Vec<String>, forward: Arc<dyn Forward>) -> Arc<Remote> {
        Arc::new(Remote {
            key,
            nodes,
            forward,
        })
    }

    /// Serves one request from this host's ingress.
    pub async fn handle(
        &self,
        request: http::Request<WasiBody>,
        scheme: Scheme,
    ) -> Result<http::Response<HyperOutgoingBody>, Refusal> {
        self.forward
            .forward(&self.key, &self.nodes, request, Call::Ingress(scheme))
            .await
    }

    /// Whether it is the same service on the same hosts.
    pub fn same(&self, nodes: &[String]) -> bool {
        self.nodes == nodes
    }
}

impl Callee for Remote {
    fn call(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        _scheme: Scheme,
        cyclic: bool,
    ) -> BoxFuture<'static, Result<http::Response<HyperOutgoingBody>, Refusal>> {
        self.forward
            .forward(&self.key, &self.nodes, request, Call::Dns(cyclic))
    }
}
