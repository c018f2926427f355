//! The instance boundary: what the services layer needs of the code an
//! instance runs, whatever kind of instance it is. A wasm component
//! (`wasm.rs`) is one kind; an OCI container (`container.rs`) is a second
//! implementation of the same two traits, and slots, pools, cron jobs and
//! interactive runs run it unchanged.
//!
//! An instance either runs a command to its end ([`Code::run`]) or serves
//! requests one at a time ([`Code::start_handler`], then
//! [`Handler::serve`] again and again until it fails).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::WasiBody;

use crate::model::Digest;
use crate::runtime::CallLimits;
use crate::runtime::{Interrupt, Launch, Outcome, Respond};

/// A boxed future that can move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Code that instances are made from.
pub trait Code: Send + Sync + 'static {
    /// Its content digest.
    fn digest(&self) -> &Digest;
    /// Whether it can run as a command (`wasi:cli/run`).
    fn runs_command(&self) -> bool;
    /// Whether it can serve HTTP requests.
    fn serves_http(&self) -> bool;
    /// What it exports, for messages.
    fn exports(&self) -> Vec<String>;
    /// What kind of instance it makes: `wasm` or `container`.
    fn kind(&self) -> &'static str {
        "wasm"
    }
    /// Why each request it serves runs in an instance of its own, when
    /// that is how this kind of code serves (a CGI module).
    fn fresh_each_request(&self) -> Option<&'static str> {
        None
    }
    /// Runs the command to its end in a new instance; `running` is called
    /// once the instance exists. Dropping the future stops the instance.
    fn run(
        &self,
        launch: Launch,
        interrupt: Interrupt,
        running: Box<dyn FnOnce() + Send>,
    ) -> BoxFuture<'static, Outcome>;
    /// A new instance ready to serve requests.
    fn start_handler(
        &self,
        launch: Launch,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>>;
}

/// A live instance that serves one request at a time.
pub trait Handler: Send + 'static {
    /// Serves one request (answering through `respond`, maybe before its
    /// body is all written), stopped past its limits; gives the instance
    /// back for the next request, or says how it failed.
    fn serve(
        self: Box<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        chain: Vec<String>,
        respond: Respond,
        limits: CallLimits,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>>;

    /// Whether every request runs in a new instance anyway (a CGI
    /// module), so nothing about reuse is to be learned from it.
    fn fresh_each_request(&self) -> bool {
        false
    }

    /// Whether serving its last request, the instance called out (sent a
    /// request or opened a connection), so that request's side effects
    /// may have happened and it must not be sent again.
    fn called_out(&self) -> bool {
        true
    }
}

/// Gets code this host does not hold from where it is kept: the other
/// hosts of a cluster.
pub trait Fetch: Send + Sync + 'static {
    /// Writes the code to the file `into` (a component, an image, a
    /// stack's files: as it was uploaded), checked against its digest;
    /// its size in bytes.
    fn fetch_into(
        &self,
        digest: &Digest,
        into: std::path::PathBuf,
    ) -> BoxFuture<'static, Result<u64, String>>;
}

/// Where code comes from, by digest.
pub trait CodeSource: Send + Sync + 'static {
    /// Code already in memory: cheap, for async paths.
    fn loaded(&self, digest: &Digest) -> Option<Arc<dyn Code>>;
    /// Loads code (reading and maybe compiling it off the async threads).
    fn load(&self, digest: &Digest) -> BoxFuture<'static, Result<Arc<dyn Code>, String>>;
    /// Whether the digest is a container image (cheap).
    fn is_image(&self, _digest: &Digest) -> bool {
        false
    }
}
