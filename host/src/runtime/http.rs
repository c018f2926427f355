//! Instances that serve `wasi:http/incoming-handler`: one store with the
//! handler instantiated, serving one request at a time and kept for the
//! next unless it failed.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpView as _};

use super::engine::{Engine, Loaded};
use super::instance::{new_store, Launch};
use super::outcome::{Interrupt, Outcome};
use super::state::HostState;

/// The error a request gets when the guest's handler returns without
/// setting a response.
pub const NO_RESPONSE: &str = "the handler returned without setting a response";

/// A guest's answer to one request: the response, or the error it (or the
/// host on its behalf) gave instead.
pub type Answered = Result<http::Response<HyperOutgoingBody>, ErrorCode>;

/// Where an answer goes once the guest sets it; it may come before the
/// guest has finished writing the body.
pub type Respond = oneshot::Sender<Answered>;

/// An empty request body, for requests the platform makes itself.
pub fn empty_body() -> WasiBody {
    use http_body_util::BodyExt as _;
    http_body_util::Empty::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// What one request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU time; none when `None`.
    pub cpu: Option<Duration>,
}

/// A live instance ready for a request.
pub struct HttpInstance {
    store: Store<HostState>,
    proxy: Proxy,
    interrupt: Interrupt,
}

impl HttpInstance {
    /// A new store with the code's handler instantiated in it.
    pub async fn start(
        engine: &Engine,
        code: &Loaded,
        launch: Launch,
    ) -> Result<HttpInstance, Outcome> {
        let Some(pre) = &code.proxy else {
            return Err(Outcome::failed(
                "the component does not serve HTTP".to_string(),
            ));
        };
        let interrupt = Interrupt::default();
        let mut store = new_store(engine, launch, interrupt.clone())?;
        match pre.instantiate_async(&mut store).await {
            Ok(proxy) => Ok(HttpInstance {
                store,
                proxy,
                interrupt,
            }),
            Err(e) => Err(store.data().outcome_of(&e, &interrupt)),
        }
    }

    /// Whether the guest called out (sent a request, opened a connection)
    /// while serving its last request.
    pub fn called_out(&self) -> bool {
        self.store.data().called_out()
    }

    /// Serves one request, stopped after `limit` of wall-clock time or
    /// `cpu_limit` of CPU time. `chain` lists the
    /// services the request passed through, for the calls the guest makes
    /// while serving it. Gives the instance back for another request, or
    /// says how it failed (a guest that returns without answering counts
    /// as failed, and the request gets that as an error).
    pub async fn serve(
        self,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        chain: Vec<String>,
        respond: Respond,
        limits: CallLimits,
    ) -> Result<HttpInstance, Outcome> {
        let CallLimits {
            wall: limit,
            cpu: cpu_limit,
        } = limits;
        let HttpInstance {
            mut store,
            proxy,
            interrupt,
        } = self;
        let respond = Arc::new(Mutex::new(Some(respond)));
        let sender = respond.clone();
        store.data_mut().set_chain(chain);
        store.data_mut().cpu().begin(cpu_limit);
        let call = async {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(scheme, request)?;
            let out = http.new_response_outparam_from_callback(move |value| {
                if let Some(tx) = sender.lock().take() {
                    let _ = tx.send(value);
                }
            })?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        };
        let timed = tokio::time::timeout(limit, call).await;
        store.data_mut().cpu().end();
        let failure = match timed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(store.data().outcome_of(&e, &interrupt)),
            Err(_) => Some(Outcome::failed(format!(
                "request took longer than {} and was stopped",
                crate::model::format_duration(limit)
            ))),
        };
        if let Some(tx) = respond.lock().take() {
            // The guest returned (or failed) without answering.
            let why = failure
                .as_ref()
                .map_or_else(|| NO_RESPONSE.to_string(), |f| f.message.clone());
            let _ = tx.send(Err(ErrorCode::InternalError(Some(why))));
        }
        match failure {
            None => Ok(HttpInstance {
                store,
                proxy,
                interrupt,
            }),
            Some(outcome) => Err(outcome),
        }
    }
}

/// A guest's error code in words.
pub fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}
