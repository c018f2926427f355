//! Shared helpers for the end-to-end tests: a real host on ephemeral
//! ports in a temporary data directory, driven by the real `mesh` binary,
//! running real guest components. The host runs inside the test process
//! (`inproc`) unless the test needs a `mesh up` process of its own.
#![allow(dead_code)]

pub mod etcd;
pub mod inproc;
pub mod oci;
pub mod pebble;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use mesh_host::api::wire::{EnvCreated, EnvView, QuotaView, ServiceView};
use mesh_host::model::InstanceState;
use mesh_host::telemetry::LogLine;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The `mesh` binary under test.
pub fn mesh_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh")
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// An image built by scripts/images.sh (run on first use when the test
/// script has not run it).
pub fn image(name: &str) -> String {
    static BUILD: Once = Once::new();
    let dir = repo_root().join("target/test-images");
    BUILD.call_once(|| {
        let status = Command::new(repo_root().join("scripts/images.sh"))
            .arg(&dir)
            .status()
            .expect("running scripts/images.sh");
        assert!(status.success(), "building the test images failed");
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path.to_str().unwrap().to_string()
}

/// `web` in stack `boxes` (the busybox image, deployed already): its
/// httpd on `$PORT`, `instances` of it, published at www.localhost.
pub fn busybox_web_service(d: &Daemon, instances: u32) {
    let instances = instances.to_string();
    d.ok(&[
        "svc",
        "create",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--instances",
        &instances,
        "--",
        "busybox",
        "sh",
        "-c",
        "exec httpd -f -p $PORT -h /www",
    ]);
    d.ok(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--endpoint",
        "www",
    ]);
}

/// A guest example, built for wasm32-wasip2 (built on first use when the
/// test script has not built it already).
pub fn guest(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let path = repo_root()
        .join("guest-examples/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    BUILD.call_once(|| {
        if path.is_file() {
            return;
        }
        let status = Command::new("cargo")
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(repo_root().join("guest-examples/Cargo.toml"))
            .arg("--target-dir")
            .arg(repo_root().join("guest-examples/target"))
            .status()
            .expect("running cargo to build the guest examples");
        assert!(status.success(), "building guest examples failed");
    });
    assert!(
        path.is_file(),
        "guest example {} is missing",
        path.display()
    );
    path
}

/// The `app` example.
pub fn app_wasm() -> PathBuf {
    guest("app")
}

/// Copies a component to `dir/name.wasm` with a custom section added, so
/// it behaves the same but has a different digest (a "new version").
pub fn variant(src: &Path, dir: &Path, name: &str, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    let section_name = b"mesh-test";
    let mut payload = vec![section_name.len() as u8];
    payload.extend_from_slice(section_name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section id
    let mut len = payload.len();
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len != 0 {
            byte |= 0x80;
        }
        bytes.push(byte);
        if len == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&payload);
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A running daemon and its data directory.
pub struct Daemon {
    dir: tempfile::TempDir,
    /// The data directory: `dir` itself, or a small disk mounted in it.
    data: PathBuf,
    /// Whether `data` is a mount of ours, unmounted on drop.
    mounted: bool,
    /// Whether it runs as a `mesh up` process rather than in this one.
    process: bool,
    /// The `mesh up` process, when it runs as one.
    child: Option<Child>,
    /// The host, when it runs in this process.
    host: Option<inproc::InProcess>,
    extra: Vec<String>,
    /// Contents of daemon.json.
    pub info: Value,
    /// The containers' bridge subnet, kept across restarts.
    pub network: String,
}

/// A subnet of its own for each daemon a test binary starts (counted
/// from the binary's process id, so that test binaries run at once on
/// one machine seldom pick the same).
fn next_network() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id()) % 250 + 1;
    format!("10.214.{n}.1/24")
}

impl Daemon {
    /// Starts a host in this process, in a fresh data directory.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a host in this process with extra `mesh up` flags.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::fresh(extra, false)
    }

    /// Starts a `mesh up` process in a fresh data directory: for a test
    /// that kills, signals, limits or measures the daemon's process, or
    /// runs containers (whose shim is the daemon's own binary).
    pub fn start_process() -> Daemon {
        Daemon::start_process_with(&[])
    }

    /// Starts a `mesh up` process with extra flags.
    pub fn start_process_with(extra: &[&str]) -> Daemon {
        Daemon::fresh(extra, true)
    }

    fn fresh(extra: &[&str], process: bool) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon {
            data: dir.path().to_path_buf(),
            dir,
            mounted: false,
            process,
            child: None,
            host: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            info: Value::Null,
            network: next_network(),
        };
        daemon.boot();
        daemon
    }

    /// Starts a daemon whose data directory is a disk of `size` (a tmpfs
    /// this test mounts, as root), to fill up; its own log stays outside.
    pub fn start_on_small_disk(size: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&data)
            .status()
            .expect("running mount");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        let mut daemon = Daemon {
            data,
            dir,
            mounted: true,
            process: false,
            child: None,
            host: None,
            extra: Vec::new(),
            info: Value::Null,
            network: next_network(),
        };
        daemon.boot();
        daemon
    }

    /// The ingress address, `127.0.0.1:PORT`.
    pub fn http_addr(&self) -> String {
        self.info["http_url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string()
    }

    /// `GET path` on the ingress with a Host header.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        http_request(&self.http_addr(), "GET", host, path, &[], b"")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A scratch directory for test files (inside the temp dir).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process_only("pid");
        self.child.as_ref().expect("daemon running").id()
    }

    /// Panics, saying why, unless the daemon runs as a process.
    fn process_only(&self, what: &str) {
        assert!(
            self.process,
            "{what}: the host runs inside the test process; start it with Daemon::start_process"
        );
    }

    /// The flags of its `mesh up`.
    fn up_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        // The API on loopback unless the test asks for another address.
        if !self.extra.iter().any(|a| a == "--api") {
            args.extend(["--api".into(), "127.0.0.1:0".into()]);
        }
        // The ingress on a free port unless the test names one (an ACME
        // server must know it before the daemon starts).
        if !self.extra.iter().any(|a| a == "--http") {
            args.extend(["--http".into(), "127.0.0.1:0".into()]);
        }
        args.push("--data-dir".into());
        args.push(self.data.display().to_string());
        // Compiled code shared by the tests' daemons: each large
        // component (an interpreter) is compiled once per test run.
        args.push("--shared-cache".into());
        args.push(
            repo_root()
                .join("target/test-code-cache")
                .display()
                .to_string(),
        );
        // A bridge of its own for its containers, unless the test says
        // otherwise.
        if !self.extra.iter().any(|a| a == "--container-network") {
            args.extend(["--container-network".into(), self.network.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    fn boot(&mut self) {
        let _ = std::fs::remove_file(self.data.join("daemon.json"));
        if self.process {
            self.boot_process();
        } else {
            self.boot_in_process();
        }
    }

    /// Starts the host in this process.
    fn boot_in_process(&mut self) {
        match inproc::InProcess::start(&self.up_args(), &self.dir.path().join("daemon.log")) {
            Ok((host, info)) => {
                self.info = serde_json::to_value(info).unwrap();
                self.host = Some(host);
            }
            Err(e) => panic!("the host did not start: {e}\n{}", self.log()),
        }
    }

    /// Starts `mesh up` and waits for its `daemon.json`.
    fn boot_process(&mut self) {
        let daemon_file = self.data.join("daemon.json");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(mesh_bin())
            .arg("up")
            .args(self.up_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting mesh up");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(&daemon_file) {
                if let Ok(info) = serde_json::from_str::<Value>(&text) {
                    self.info = info;
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mesh up exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mesh up did not write daemon.json in 30 s:\n{}", self.log());
    }

    /// The daemon's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `kill -9` the daemon.
    pub fn kill9(&mut self) {
        self.process_only("kill -9");
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Stops the daemon in order (SIGTERM, or in this process its
    /// shutdown), when it runs.
    pub fn stop(&mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown();
        } else if self.child.is_some() {
            assert!(self.terminate().success(), "{}", self.log());
        }
    }

    /// Stops the daemon cleanly (when it runs) and starts it again on the
    /// same data directory.
    pub fn restart_cleanly(&mut self) {
        self.stop();
        self.boot();
    }

    /// Starts the daemon again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.boot();
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process_only("SIGTERM");
        let mut child = self.child.take().expect("daemon running");
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap()
    }

    /// Runs `mesh ARGS` against this daemon.
    pub fn mesh(&self, args: &[&str]) -> Output {
        self.mesh_cmd(args).output().expect("running mesh")
    }

    /// Runs `mesh ARGS` with `token`, given as `MESH_TOKEN` with the API
    /// URL, the way a tenant (or a stranger) reaches the daemon.
    pub fn mesh_as(&self, token: &str, args: &[&str]) -> Output {
        self.mesh_cmd(args)
            .env("MESH_API_URL", self.info["api_url"].as_str().unwrap())
            .env("MESH_TOKEN", token)
            .output()
            .expect("running mesh")
    }

    /// A `mesh ARGS` command set up for this daemon, to adjust and run.
    pub fn mesh_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mesh_bin());
        cmd.args(args)
            .env("MESH_DATA_DIR", &self.data)
            .env_remove("MESH_API_URL")
            .env_remove("MESH_TOKEN")
            .env_remove("MESH_STACK")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `mesh ARGS`, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mesh(args);
        assert!(
            out.status.success(),
            "mesh {args:?} failed ({}):\n{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `mesh ARGS` as the holder of `token`; panics with its error when
    /// it fails.
    pub fn ok_as(&self, token: &str, args: &[&str]) -> String {
        let out = self.mesh_as(token, args);
        assert!(
            out.status.success(),
            "mesh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates environment `name` (with `flags`, e.g. `--outbound deny`)
    /// and returns its token.
    pub fn new_env(&self, name: &str, flags: &[&str]) -> String {
        let mut args = vec!["env", "create", name, "--json"];
        args.extend_from_slice(flags);
        let created: EnvCreated = parse(&self.ok(&args));
        created.token
    }

    /// The API's address, `127.0.0.1:PORT`.
    pub fn api_addr(&self) -> String {
        self.info["api_url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string()
    }

    /// Environment `env`'s quotas and use, as `mesh env ls --json` shows
    /// them.
    pub fn quota_use(&self, env: &str) -> QuotaView {
        let list: Vec<EnvView> = parse(&self.ok(&["env", "ls", "--json"]));
        list.into_iter().find(|e| e.name == env).unwrap().quotas
    }

    /// `GET PATH` on the control API with `token`: the raw answer.
    pub fn api_get(&self, token: &str, path: &str) -> HttpResponse {
        let api = self.info["api_url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string();
        http_request(
            &api,
            "GET",
            &api,
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
    }

    /// `GET /metrics` with the operator's token: the Prometheus text.
    pub fn metrics(&self) -> String {
        let r = self.api_get(self.info["token"].as_str().unwrap(), "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        r.body
    }

    /// `mesh svc create -n NAME FLAGS... -- app.wasm ARGV...`, expecting
    /// success.
    pub fn create(&self, name: &str, flags: &[&str], argv: &[&str]) -> String {
        let app = app_wasm();
        let mut command = vec![app.to_str().unwrap()];
        command.extend_from_slice(argv);
        self.create_service(name, flags, &command)
    }

    /// `mesh svc create -n NAME FLAGS... -- COMMAND...` (the command names
    /// code the stack holds, or a file to upload), expecting success.
    pub fn create_service(&self, name: &str, flags: &[&str], command: &[&str]) -> String {
        self.ok(&create_args(name, flags, command))
    }

    /// The same as the holder of `token`.
    pub fn create_service_as(
        &self,
        token: &str,
        name: &str,
        flags: &[&str],
        command: &[&str],
    ) -> String {
        self.ok_as(token, &create_args(name, flags, command))
    }

    /// Runs `mesh ARGS`, expects failure with exactly one line on stderr;
    /// returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.mesh(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "mesh {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "mesh {args:?}: error should be one line, got:\n{stderr}"
        );
        assert!(stderr.starts_with("error: "), "mesh {args:?}: {stderr}");
        stderr.trim_end().to_string()
    }

    /// `mesh service ls --json`, read into the API's own view.
    pub fn services(&self) -> Vec<ServiceView> {
        parse(&self.ok(&["service", "ls", "--json"]))
    }

    /// `mesh service ls --json` as the holder of `token`.
    pub fn services_as(&self, token: &str) -> Vec<ServiceView> {
        parse(&self.ok_as(token, &["service", "ls", "--json"]))
    }

    /// One service from `service ls --json`.
    pub fn service(&self, name: &str) -> Option<ServiceView> {
        self.services().into_iter().find(|s| s.name == name)
    }

    /// Polls `service ls --json` until `check` holds for the named
    /// service, or panics after `timeout` with the last view.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&ServiceView) -> bool,
    ) -> ServiceView {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(service) = self.service(name) {
                if check(&service) {
                    return service;
                }
                last = Some(service);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("timed out after {timeout:?} waiting for {name}: {what}; last seen:\n{last:#?}\n--- daemon log ---\n{}", self.log());
    }

    /// Polls until the service has `n` instances, all running.
    pub fn wait_running(&self, name: &str, n: usize) -> ServiceView {
        self.wait_for(
            name,
            Duration::from_secs(20),
            &format!("{n} running instances"),
            |s| s.instances.len() == n && all_running(s),
        )
    }

    /// The service's log lines (text only).
    pub fn log_texts(&self, name: &str) -> Vec<String> {
        let lines: Vec<LogLine> = parse(&self.ok(&["svc", "logs", "-n", name, "--json"]));
        lines.into_iter().map(|l| l.text).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // An in-process host stops in order, its bridge and table removed.
        let host = self.host.take();
        let in_process = host.is_some();
        drop(host);
        if !in_process {
            // A `mesh up` killed (here or by the test) cannot remove its
            // containers' bridge and nftables table; the next daemon of its
            // data directory would, and there is none: the test does.
            if let Ok(net) = mesh_host::container::net::NetConfig::parse(&self.network) {
                mesh_host::container::net::remove(&net.tag());
            }
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.data).status();
        }
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection, made by hyper's client
/// with a Host header of our choosing, the body sent with its length.
pub fn http_request(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    send(
        addr,
        method,
        host,
        path,
        headers,
        Body::Sized(body.to_vec()),
    )
}

/// The same, with the body sent chunked (no length known up front), as
/// streaming clients do.
pub fn http_request_chunked(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
) -> HttpResponse {
    send(addr, method, host, path, &[], Body::Chunked(body.to_vec()))
}

enum Body {
    Sized(Vec<u8>),
    Chunked(Vec<u8>),
}

fn send(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> HttpResponse {
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use hyper::body::Frame;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body: http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error> = match body {
            Body::Sized(bytes) => Full::new(bytes::Bytes::from(bytes))
                .map_err(|never| match never {})
                .boxed(),
            Body::Chunked(bytes) => {
                let chunks: Vec<Result<Frame<bytes::Bytes>, std::io::Error>> = bytes
                    .chunks(1024)
                    .map(|c| Ok(Frame::data(bytes::Bytes::copy_from_slice(c))))
                    .collect();
                StreamBody::new(futures::stream::iter(chunks)).boxed()
            }
        };
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            sender.send_request(request.body(body).unwrap()),
        )
        .await
        .expect("no answer in 60 s")
        .unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.into_body().collect().await.map_or_else(
            |e| format!("<body failed: {e}>"),
            |b| String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        );
        HttpResponse {
            status,
            headers,
            body,
        }
    })
}

/// CPU time (user + system, in clock ticks) a process has used.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The arguments of `mesh svc create -n NAME FLAGS... -- COMMAND...`.
pub fn create_args<'a>(name: &'a str, flags: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["svc", "create", "-n", name];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    args
}

/// A `--json` answer read into the API's own type; panics with the text
/// when it does not fit.
pub fn parse<T: DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("unexpected answer ({e}):\n{text}"))
}

/// Whether every instance of the service is running.
pub fn all_running(service: &ServiceView) -> bool {
    service
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Running)
}

/// Polls `ok` until it holds, or panics after `timeout` saying `what`.
pub fn wait_until(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}

/// A tmux session running one command, read through capture-pane.
pub struct Tmux(String);

impl Tmux {
    /// Starts session `name` running `command` in a 120x40 terminal.
    pub fn start(name: &str, command: &str) -> Tmux {
        // Right after the last session is killed the tmux server is still
        // exiting, and a new session can fail to reach it: try again.
        let mut status = None;
        for _ in 0..5 {
            let tried = Command::new("tmux")
                .args([
                    "new-session",
                    "-d",
                    "-s",
                    name,
                    "-x",
                    "120",
                    "-y",
                    "40",
                    command,
                ])
                .status()
                .expect("tmux is installed (scripts/test.sh installs it)");
            status = Some(tried);
            if tried.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = status.unwrap();
        assert!(status.success());
        Tmux(name.to_string())
    }

    /// Types `keys` (tmux send-keys names) into it.
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (at most 15 s) until the screen shows `text`; the screen.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no `{text}` on screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}
