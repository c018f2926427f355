//! What a service reached by name is to its callers: something that
//! answers a request or refuses it. The pool implements it; the directory
//! holds names to it, so neither imports the other.

use std::sync::Arc;

use http::StatusCode;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use super::code::BoxFuture;

/// A service that takes requests.
pub trait Callee: Send + Sync + 'static {
    /// Serves one request. A `cyclic` call (the callee is already up the
    /// request's chain) must not wait on an instance held up the chain.
    fn call(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        cyclic: bool,
    ) -> BoxFuture<'static, Result<http::Response<HyperOutgoingBody>, Refusal>>;
}

/// Why a request got no instance: answered with `status` and a short body.
#[derive(Debug)]
pub struct Refusal {
    /// 503 (busy, starting, failing) or 500 (the instance failed).
    pub status: StatusCode,
    /// One line for the body.
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A 503 with `Retry-After`.
    pub fn unavailable(message: String, retry_after: u64) -> Refusal {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            retry_after: Some(retry_after),
        }
    }

    /// A 502: the instance failed in a way the request could not be sent
    /// again after.
    pub fn bad_gateway(message: String) -> Refusal {
        Refusal {
            status: StatusCode::BAD_GATEWAY,
            message,
            retry_after: None,
        }
    }

    /// A 500: the instance failed.
    pub fn failed(message: String) -> Refusal {
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
            retry_after: None,
        }
    }
}
