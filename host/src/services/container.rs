//! Container images as the services layer's [`Code`]: each instance is a
//! container made by the container layer, and slots, pools, cron jobs and
//! interactive runs run it as they run a wasm component. Its output goes
//! to the same logs, its end becomes the same [`Outcome`], and a web
//! container (listening on `$PORT`) is served through a [`Handler`] that
//! forwards each request to it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use std::pin::Pin;

use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::task::AbortOnDropHandle;
use wasmtime_wasi::cli::{StdinStream as _, StdoutStream as _};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::WasiBody;

use super::code::{BoxFuture, Code, Handler};
use crate::container::instance::StartError;
use crate::container::{ContainerLaunch, Containers, Exit, Running};
use crate::model::{format_memory, Digest};
use crate::runtime::{CallLimits, Dispatch, Ending, Interrupt, Launch, Outcome, Respond};
use parking_lot::Mutex;

/// The port a web container listens on (`$PORT`): each container has a
/// network namespace of its own, so all use the same.
pub const WEB_PORT: u16 = 8080;
/// Bytes a container may write to its own layer unless its service asks
/// for scratch space.
pub const DEFAULT_WRITABLE_BYTES: u64 = 64 << 20;
/// Longest a web container has to start listening on `$PORT`.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// The port of the daemon's HTTP proxy on the bridge (`HTTP_PROXY`).
pub use crate::container::net::PROXY_PORT;

/// One container's registration with the proxy, and who it is.
type Registered = (u64, Arc<dyn Dispatch>);

/// The containers calling out through the daemon's proxy: each one's
/// bridge address, to who it is (its instance's [`Dispatch`]), so the
/// proxy applies its environment's names and policy and no other's.
#[derive(Default)]
pub struct Callers {
    /// Address to (registration, who).
    map: Mutex<HashMap<Ipv4Addr, Registered>>,
    next: std::sync::atomic::AtomicU64,
}

impl Callers {
    /// A new, empty map.
    pub fn new() -> Arc<Callers> {
        Arc::new(Callers::default())
    }

    fn register(
        self: &Arc<Self>,
        address: Ipv4Addr,
        dispatch: Option<Arc<dyn Dispatch>>,
    ) -> CallerGuard {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(dispatch) = dispatch {
            self.map.lock().insert(address, (token, dispatch));
        }
        CallerGuard {
            callers: self.clone(),
            address,
            token,
        }
    }

    /// Who the container at `address` is, if it is one of ours.
    pub fn dispatch_for(&self, address: IpAddr) -> Option<Arc<dyn Dispatch>> {
        match address {
            IpAddr::V4(v4) => self.map.lock().get(&v4).map(|(_, d)| d.clone()),
            IpAddr::V6(_) => None,
        }
    }
}

/// Keeps a container's address mapped to who it is while it runs.
struct CallerGuard {
    callers: Arc<Callers>,
    address: Ipv4Addr,
    token: u64,
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        // The address may belong to a newer container by now.
        let mut map = self.callers.map.lock();
        if map
            .get(&self.address)
            .is_some_and(|(t, _)| *t == self.token)
        {
            map.remove(&self.address);
        }
    }
}

/// An image, unpacked on this host.
pub struct ContainerCode {
    digest: Digest,
    dir: PathBuf,
    containers: Arc<Containers>,
    callers: Arc<Callers>,
}

impl ContainerCode {
    /// The image of `digest`, when it is unpacked here.
    pub fn find(
        containers: &Arc<Containers>,
        callers: &Arc<Callers>,
        digest: &Digest,
    ) -> Option<Arc<dyn Code>> {
        let dir = containers.image_dir(digest.hex());
        dir.is_dir().then(|| {
            Arc::new(ContainerCode {
                digest: digest.clone(),
                dir,
                containers: containers.clone(),
                callers: callers.clone(),
            }) as Arc<dyn Code>
        })
    }
}

/// How a container's end reads in `service ls`.
pub fn outcome_of(exit: &Exit, memory_bytes: u64) -> Outcome {
    if let Some(why) = &exit.failed {
        return Outcome {
            exit_code: None,
            message: why.clone(),
            ending: Ending::Failed,
        };
    }
    let name = |signal: i32| {
        nix::sys::signal::Signal::try_from(signal)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {signal}"))
    };
    if exit.oom && exit.signal == 0 {
        // Something in it was killed for memory; its init lived on.
        return Outcome {
            exit_code: Some(exit.code),
            message: format!(
                "exited with code {} (a process in it was killed for exceeding memory limit {})",
                exit.code,
                format_memory(memory_bytes)
            ),
            ending: Ending::Exited,
        };
    }
    if exit.oom {
        return Outcome {
            exit_code: Some(exit.code),
            message: format!(
                "killed by {}: exceeded memory limit {}",
                name(exit.signal),
                format_memory(memory_bytes)
            ),
            ending: Ending::OutOfMemory,
        };
    }
    if exit.signal != 0 {
        return Outcome {
            exit_code: Some(exit.code),
            message: format!("killed by {}", name(exit.signal)),
            ending: Ending::Exited,
        };
    }
    Outcome::exited(exit.code)
}

fn start_failed(e: StartError) -> Outcome {
    match e {
        StartError::NotFound(message) => Outcome {
            exit_code: Some(127),
            message,
            ending: Ending::Unrunnable,
        },
        StartError::Failed(message) => Outcome::failed(message),
    }
}

/// [`Containers::prepare`] on a blocking thread: it reads the image and,
/// the first time an environment runs it, copies it for the environment's
/// ids. Dropped while it runs, what it made is undone when it ends.
async fn prepare(
    containers: &Arc<Containers>,
    dir: &std::path::Path,
    settings: ContainerLaunch,
) -> Result<crate::container::instance::Prepared, StartError> {
    let (containers, dir) = (containers.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || containers.prepare(&dir, settings))
        .await
        .unwrap_or_else(|e| {
            Err(StartError::Failed(format!(
                "preparing the container failed: {e}"
            )))
        })
}

fn container_launch(launch: &Launch, web: bool, gateway: Option<Ipv4Addr>) -> ContainerLaunch {
    let mut env = launch.env.clone();
    if web {
        env.retain(|(k, _)| k != "PORT");
        env.push(("PORT".into(), WEB_PORT.to_string()));
    }
    if let Some(gateway) = gateway {
        // Services by name, and the network within the policy, through
        // the daemon's proxy; nothing else is reachable.
        let proxy = format!("http://{gateway}:{PROXY_PORT}");
        for key in ["HTTP_PROXY", "http_proxy"] {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), proxy.clone()));
        }
        env.retain(|(k, _)| k != "NO_PROXY" && k != "no_proxy");
        env.push(("NO_PROXY".into(), "localhost,127.0.0.1".into()));
        env.push(("no_proxy".into(), "localhost,127.0.0.1".into()));
    }
    let names = launch
        .dispatch
        .as_ref()
        .map(|d| d.names())
        .unwrap_or_default();
    let hostname = env
        .iter()
        .find_map(|(k, v)| (k == "MESH_INSTANCE").then(|| v.clone()))
        .unwrap_or_else(|| "container".into());
    ContainerLaunch {
        command: launch.args.clone(),
        env,
        memory_bytes: launch.memory_bytes,
        writable_bytes: launch.scratch_bytes.unwrap_or(DEFAULT_WRITABLE_BYTES),
        tty: launch.stdin.as_ref().is_some_and(|s| {
            use wasmtime_wasi::cli::IsTerminal as _;
            s.is_terminal()
        }),
        stdin: launch.stdin.is_some(),
        hostname,
        names,
        stop_grace: launch.stop_grace,
        tenant: launch.tenant.to_string(),
    }
}

impl Code for ContainerCode {
    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn runs_command(&self) -> bool {
        true
    }

    fn serves_http(&self) -> bool {
        true
    }

    fn exports(&self) -> Vec<String> {
        vec!["a container image".into()]
    }

    fn kind(&self) -> &'static str {
        "container"
    }

    fn run(
        &self,
        launch: Launch,
        interrupt: Interrupt,
        running: Box<dyn FnOnce() + Send>,
    ) -> BoxFuture<'static, Outcome> {
        let (containers, dir) = (self.containers.clone(), self.dir.clone());
        let callers = self.callers.clone();
        Box::pin(async move {
            let memory = launch.memory_bytes;
            let settings = container_launch(&launch, false, containers.gateway());
            // Known to the proxy before anything in it runs.
            let prepared = match prepare(&containers, &dir, settings).await {
                Ok(p) => p,
                Err(e) => return start_failed(e),
            };
            let _caller = callers.register(prepared.address(), launch.dispatch.clone());
            let mut container = match prepared.start().await {
                Ok(c) => c,
                Err(e) => return start_failed(e),
            };
            running();
            let attached = attach(&mut container, &launch);
            let exit = tokio::select! {
                exit = container.wait() => exit,
                () = interrupt.triggered() => container.stop().await,
            };
            // What it wrote last reaches the log before its end is told.
            container.drain_output().await;
            drop(attached);
            outcome_of(&exit, memory)
        })
    }

    fn start_handler(
        &self,
        launch: Launch,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
        let (containers, dir) = (self.containers.clone(), self.dir.clone());
        let callers = self.callers.clone();
        Box::pin(async move {
            let memory = launch.memory_bytes;
            let settings = container_launch(&launch, true, containers.gateway());
            let prepared = prepare(&containers, &dir, settings)
                .await
                .map_err(start_failed)?;
            let caller = callers.register(prepared.address(), launch.dispatch.clone());
            let mut container = prepared.start().await.map_err(start_failed)?;
            let attached = attach(&mut container, &launch);
            let address = SocketAddr::from((container.address, WEB_PORT));
            let listening = tokio::time::timeout(LISTEN_WAIT, async {
                loop {
                    if tokio::net::TcpStream::connect(address).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            tokio::select! {
                ready = listening => {
                    if ready.is_err() {
                        container.stop().await;
                        return Err(Outcome::failed(format!(
                            "the container did not listen on $PORT ({WEB_PORT}) within {}s",
                            LISTEN_WAIT.as_secs()
                        )));
                    }
                }
                exit = container.wait() => {
                    container.drain_output().await;
                    return Err(outcome_of(&exit, memory));
                }
            }
            Ok(Box::new(ContainerHandler {
                container,
                address,
                memory,
                sender: None,
                _caller: caller,
                _attached: attached,
            }) as Box<dyn Handler>)
        })
    }
}

/// The tasks feeding a container its input (stdin, a terminal's size):
/// owned here, so none outlives the run (or the handler) it belongs to.
/// The output's tasks are the container's own ([`Running::keep_output`]),
/// so what it writes while being stopped still reaches the log.
struct Attached {
    input: Vec<AbortOnDropHandle<()>>,
}

fn owned(task: impl std::future::Future<Output = ()> + Send + 'static) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(task))
}

/// How often a container's memory and CPU use is read from its cgroup.
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// Tells the container's service what it uses, every [`USAGE_EVERY`],
/// until dropped (its memory is then given back).
async fn watch_usage(
    read: impl Fn() -> Option<crate::container::Usage> + Send + Sync + 'static,
    dispatch: Arc<dyn crate::runtime::Dispatch>,
) {
    /// The memory last reported, taken back when the watch ends.
    struct Reported {
        memory: i64,
        dispatch: Arc<dyn crate::runtime::Dispatch>,
    }
    impl Drop for Reported {
        fn drop(&mut self) {
            self.dispatch.memory_changed(-self.memory);
        }
    }
    let cpu = dispatch.cpu_counter();
    let mut reported = Reported {
        memory: 0,
        dispatch,
    };
    let read = Arc::new(read);
    let mut cpu_seen = 0u64;
    loop {
        let reader = read.clone();
        if let Ok(Some(usage)) = tokio::task::spawn_blocking(move || reader()).await {
            let memory = i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX);
            reported.dispatch.memory_changed(memory - reported.memory);
            reported.memory = memory;
            if let Some(cpu) = &cpu {
                cpu.fetch_add(
                    usage.cpu_nanos.saturating_sub(cpu_seen),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            cpu_seen = cpu_seen.max(usage.cpu_nanos);
        }
        tokio::time::sleep(USAGE_EVERY).await;
    }
}

/// Copies the container's output to the launch's streams, and the
/// launch's stdin (or terminal) to it.
fn attach(container: &mut Running, launch: &Launch) -> Attached {
    let mut attached = Attached { input: Vec::new() };
    if let Some(dispatch) = &launch.dispatch {
        attached.input.push(owned(watch_usage(
            container.usage_reader(),
            dispatch.clone(),
        )));
    }
    let mut output = Vec::new();
    for (pipe, to) in [
        (
            container
                .stdout
                .take()
                .map(|p| Box::pin(p) as Pin<Box<dyn AsyncRead + Send>>),
            &launch.stdout,
        ),
        (
            container
                .stderr
                .take()
                .map(|p| Box::pin(p) as Pin<Box<dyn AsyncRead + Send>>),
            &launch.stderr,
        ),
    ] {
        if let Some(mut pipe) = pipe {
            let mut sink = Box::into_pin(to.async_stream());
            output.push(owned(async move {
                let _ = tokio::io::copy(&mut pipe, &mut sink).await;
                let _ = sink.flush().await;
            }));
        }
    }
    let Some(stdin) = &launch.stdin else {
        container.keep_output(output);
        return attached;
    };
    if let Some(mut input) = container.stdin.take() {
        let mut source = Box::into_pin(stdin.async_stream());
        attached.input.push(owned(async move {
            let _ = tokio::io::copy(&mut source, &mut input).await;
            let _ = input.shutdown().await;
        }));
    }
    if let Some(terminal) = container.terminal.take() {
        output.extend(attach_terminal(terminal, launch, stdin, &mut attached));
    }
    container.keep_output(output);
    attached
}

/// Joins a container's terminal to an interactive run: its output to
/// stdout, stdin and window sizes to it.
fn attach_terminal(
    terminal: OwnedFd,
    launch: &Launch,
    stdin: &crate::runtime::RunStdin,
    attached: &mut Attached,
) -> Option<AbortOnDropHandle<()>> {
    let file = std::fs::File::from(terminal);
    let (Ok(writer_file), Ok(resize_fd)) = (file.try_clone(), file.try_clone()) else {
        return None;
    };
    let mut reader = tokio::fs::File::from_std(file);
    let mut writer = tokio::fs::File::from_std(writer_file);
    let mut sink = Box::into_pin(launch.stdout.async_stream());
    let mut source = Box::into_pin(stdin.async_stream());
    // Read a chunk at a time (not `copy`, which waits to fill a buffer):
    // a terminal's output is shown as it comes.
    let output = owned(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            if sink.write_all(&buf[..n]).await.is_err() {
                break;
            }
            let _ = sink.flush().await;
        }
    });
    attached.input.push(owned(async move {
        let _ = tokio::io::copy(&mut source, &mut writer).await;
    }));
    if let Some(mut window) = stdin.window() {
        attached.input.push(owned(async move {
            loop {
                let (rows, cols) = *window.borrow_and_update();
                set_window(&resize_fd, rows, cols);
                if window.changed().await.is_err() {
                    return;
                }
            }
        }));
    }
    Some(output)
}

fn set_window(file: &std::fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd as _;
    if rows == 0 || cols == 0 {
        return;
    }
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    unsafe {
        libc::ioctl(file.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}

/// A web container: each request is forwarded to it over its bridge
/// address, one at a time as for any instance.
struct ContainerHandler {
    container: Running,
    address: SocketAddr,
    memory: u64,
    /// The kept-alive connection to the container, once made.
    sender: Option<SendRequest<WasiBody>>,
    _caller: CallerGuard,
    _attached: Attached,
}

impl Handler for ContainerHandler {
    fn serve(
        mut self: Box<Self>,
        request: http::Request<WasiBody>,
        _scheme: Scheme,
        _chain: Vec<String>,
        respond: Respond,
        limits: CallLimits,
    ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
        Box::pin(async move {
            let this = &mut *self;
            let forward = forward(&mut this.sender, this.address, request);
            let answered = tokio::select! {
                answered = tokio::time::timeout(limits.wall, forward) => answered,
                exit = this.container.wait() => {
                    let _ = respond.send(Err(ErrorCode::InternalError(Some("the container ended".into()))));
                    return Err(outcome_of(&exit, this.memory));
                }
            };
            match answered {
                Ok(Ok(response)) => {
                    let _ = respond.send(Ok(response));
                    Ok(self as Box<dyn Handler>)
                }
                Ok(Err(e)) => {
                    let _ = respond.send(Err(e));
                    Ok(self as Box<dyn Handler>)
                }
                Err(_) => {
                    let _ = respond.send(Err(ErrorCode::ConnectionReadTimeout));
                    Ok(self as Box<dyn Handler>)
                }
            }
        })
    }
}

/// Sends one request to a container over the kept-alive connection in
/// `sender` (made, or made again, when there is none or it closed) and
/// gives back its response, whose body streams from the container.
async fn forward(
    sender: &mut Option<SendRequest<WasiBody>>,
    address: SocketAddr,
    mut request: http::Request<WasiBody>,
) -> Result<http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>, ErrorCode> {
    let open = match sender {
        // Ready once the last response's body has been read.
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !open {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|_| ErrorCode::ConnectionRefused)?;
        let (new, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?;
        // Drives the connection; it ends when the sender is dropped (with
        // the handler) and the last response has been read.
        tokio::spawn(connection);
        *sender = Some(new);
    }
    let sender = sender.as_mut().ok_or(ErrorCode::ConnectionRefused)?;
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ErrorCode::InternalError(Some(format!("the container's answer: {e}"))))?;
    Ok(response.map(|body| {
        body.map_err(wasmtime_wasi_http::Error::Hyper)
            .boxed_unsync()
    }))
}
