//! Wasm components as the services layer's [`Code`]: each instance is a
//! wasmtime store, made by the runtime.

use std::sync::Arc;

use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::WasiBody;

use super::code::{BoxFuture, Code, CodeSource, Fetch, Handler};
use super::container::{Callers, ContainerCode};
use crate::container::Containers;
use crate::model::Digest;
use tokio::io::AsyncWriteExt as _;
use wasmtime_wasi::cli::StdoutStream as _;

use crate::runtime::cgi::serve_cgi;
use crate::runtime::CallLimits;
use crate::runtime::{
    run_command, Engine, HttpInstance, Interrupt, Launch, Loaded, Outcome, Respond,
};

/// Components loaded through the engine, and images unpacked for the
/// container runtime.
pub struct WasmSource {
    engine: Arc<Engine>,
    containers: Option<(Arc<Containers>, Arc<Callers>)>,
    /// Where code this host lacks comes from (in a cluster).
    fetch: std::sync::OnceLock<Arc<dyn Fetch>>,
}

impl WasmSource {
    /// Components from `engine`'s code cache, and images from
    /// `containers` (whose calls out the proxy tells apart by `callers`).
    pub fn new(
        engine: Arc<Engine>,
        containers: Option<(Arc<Containers>, Arc<Callers>)>,
    ) -> Arc<WasmSource> {
        Arc::new(WasmSource {
            engine,
            containers,
            fetch: std::sync::OnceLock::new(),
        })
    }

    /// Fetches code this host lacks through `fetch` from now on.
    pub fn fetch_with(&self, fetch: Arc<dyn Fetch>) {
        let _ = self.fetch.set(fetch);
    }

    fn image(&self, digest: &Digest) -> Option<Arc<dyn Code>> {
        let (containers, callers) = self.containers.as_ref()?;
        ContainerCode::find(containers, callers, digest)
    }

    fn wrap(&self, loaded: Arc<Loaded>) -> Arc<dyn Code> {
        Arc::new(WasmCode {
            engine: self.engine.clone(),
            loaded,
        })
    }
}

impl CodeSource for WasmSource {
    fn loaded(&self, digest: &Digest) -> Option<Arc<dyn Code>> {
        self.engine
            .loaded(digest)
            .map(|loaded| self.wrap(loaded))
            .or_else(|| self.image(digest))
    }

    fn is_image(&self, digest: &Digest) -> bool {
        self.containers
            .as_ref()
            .is_some_and(|(c, _)| c.image_dir(digest.hex()).is_dir())
    }

    fn load(&self, digest: &Digest) -> BoxFuture<'static, Result<Arc<dyn Code>, String>> {
        if let Some(code) = self.loaded(digest) {
            return Box::pin(async move { Ok(code) });
        }
        let engine = self.engine.clone();
        let digest = digest.clone();
        let fetch = self.fetch.get().cloned();
        let containers = self.containers.clone();
        Box::pin(async move {
            if let Some(fetch) = fetch.filter(|_| !engine.content().has_code(&digest)) {
                let image = fetched(
                    &engine,
                    containers.as_ref().map(|(c, _)| c),
                    &*fetch,
                    &digest,
                )
                .await?;
                if image {
                    let (containers, callers) = containers.as_ref().expect("an image was taken");
                    return ContainerCode::find(containers, callers, &digest)
                        .ok_or_else(|| format!("image {} is not unpacked", digest.short()));
                }
            }
            // Reading or compiling code blocks: keep it off the async threads.
            let loaded = {
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || engine.load(&digest))
                    .await
                    .map_err(|e| format!("the loader task failed: {e}"))?
                    .map_err(|e| format!("{e:#}"))?
            };
            Ok(Arc::new(WasmCode { engine, loaded }) as Arc<dyn Code>)
        })
    }
}

/// Fetches code this host lacks from another host and stores it: a
/// component is checked and compiled, an image unpacked (where containers
/// run). Whether it was an image.
async fn fetched(
    engine: &Arc<Engine>,
    containers: Option<&Arc<Containers>>,
    fetch: &dyn Fetch,
    digest: &Digest,
) -> Result<bool, String> {
    let incoming = engine.content().incoming();
    fetch
        .fetch_into(digest, incoming.path().to_path_buf())
        .await?;
    let (engine, containers, digest) = (engine.clone(), containers.cloned(), digest.clone());
    tokio::task::spawn_blocking(move || {
        let path = incoming.path();
        let name = format!("code {}", digest.short());
        let mut head = [0u8; 4];
        std::io::Read::read_exact(
            &mut std::fs::File::open(path).map_err(|e| e.to_string())?,
            &mut head,
        )
        .map_err(|e| format!("reading the code fetched: {e}"))?;
        if &head == b"\0asm" {
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            engine
                .accept_as(&name, digest, &bytes)
                .map_err(|e| format!("{e:#}"))?;
            return Ok(false);
        }
        // Anything else is an image (it was accepted as one where it was
        // uploaded; the unpacking checks it again).
        let containers = containers.ok_or_else(|| {
            format!("{name} is a container image, and containers cannot run on this host")
        })?;
        if let Some(why) = containers.unsupported() {
            return Err(format!("{name} is a container image: {why}"));
        }
        engine
            .content()
            .accept_image(digest, path, |dir| {
                let room = crate::container::image::Room::platform();
                crate::container::image::unpack(&name, path, dir, room)
                    .map(|(_, unpacked)| unpacked.bytes)
                    .map_err(anyhow::Error::from)
            })
            .map_err(|e| format!("{e:#}"))?;
        Ok(true)
    })
    .await
    .map_err(|e| format!("the loader task failed: {e}"))?
}

/// One loaded component.
struct WasmCode {
    engine: Arc<Engine>,
    loaded: Arc<Loaded>,
}

impl Code for WasmCode {
    fn digest(&self) -> &Digest {
        &self.loaded.digest
    }

    fn runs_command(&self) -> bool {
        self.loaded.runs_command()
    }

    fn serves_http(&self) -> bool {
        self.loaded.serves_http()
    }

    fn exports(&self) -> Vec<String> {
        self.loaded.exports.clone()
    }

    fn fresh_each_request(&self) -> Option<&'static str> {
        self.loaded
            .module
            .is_some()
            .then_some("a wasip1 module answers each request as a CGI program of its own")
    }

    fn run(
        &self,
        launch: Launch,
        interrupt: Interrupt,
        running: Box<dyn FnOnce() + Send>,
    ) -> BoxFuture<'static, Outcome> {
        let (engine, loaded) = (self.engine.clone(), self.loaded.clone());
        Box::pin(async move { run_command(&engine, &loaded, launch, interrupt, running).await })
    }

    fn start_handler(
        &self,
        launch: Launch,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
        let (engine, loaded) = (self.engine.clone(), self.loaded.clone());
        if loaded.module.is_some() {
            // A module serves each request from a fresh store of its own.
            let handler = CgiHandler {
                engine,
                loaded,
                launch,
            };
            return Box::pin(async move { Ok(Box::new(handler) as Box<dyn Handler>) });
        }
        Box::pin(async move {
            let instance = HttpInstance::start(&engine, &loaded, launch).await?;
            Ok(Box::new(WasmHandler(instance)) as Box<dyn Handler>)
        })
    }
}

/// A wasip1 module serving HTTP as a CGI program: every request runs it
/// in a fresh store made from `launch`.
struct CgiHandler {
    engine: Arc<Engine>,
    loaded: Arc<Loaded>,
    launch: Launch,
}

impl Handler for CgiHandler {
    fn fresh_each_request(&self) -> bool {
        true
    }

    fn serve(
        self: Box<Self>,
        request: http::Request<WasiBody>,
        _scheme: Scheme,
        _chain: Vec<String>,
        respond: Respond,
        limits: CallLimits,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
        Box::pin(async move {
            let launch = self.launch.again();
            match serve_cgi(&self.engine, &self.loaded, launch, request, limits).await {
                Ok(response) => {
                    let _ = respond.send(Ok(response));
                }
                Err(outcome) => {
                    // The request's run failed, not the service: it gets
                    // 500 and a line in the log; the next request runs as
                    // usual, with no back-off a client could cause.
                    let note = format!("[mesh] CGI request failed: {}\n", outcome.message);
                    let mut log = Box::into_pin(self.launch.stderr.async_stream());
                    let _ = log.write_all(note.as_bytes()).await;
                    let _ = log.flush().await;
                    let _ = respond.send(Err(ErrorCode::InternalError(Some(outcome.message))));
                }
            }
            Ok(self as Box<dyn Handler>)
        })
    }
}

/// A store serving `wasi:http/incoming-handler`.
struct WasmHandler(HttpInstance);

impl Handler for WasmHandler {
    fn serve(
        self: Box<Self>,
        request: http::Request<WasiBody>,
        scheme: Scheme,
        chain: Vec<String>,
        respond: Respond,
        limits: CallLimits,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
        Box::pin(async move {
            let instance = self
                .0
                .serve(request, scheme, chain, respond, limits)
                .await?;
            Ok(Box::new(WasmHandler(instance)) as Box<dyn Handler>)
        })
    }

    fn called_out(&self) -> bool {
        self.0.called_out()
    }
}
