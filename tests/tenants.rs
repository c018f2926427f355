//! Safe sharing: a tenant's token, a hostile guest and an anonymous client
//! each try what the tenants issue found, against the real daemon. Every
//! attack here is refused, and the platform stays up for everyone else.
//! All traffic goes to loopback.

use crate::support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use mesh_host::api::wire::{EnvView, ErrorBody, TokenRotated};
use support::{app_wasm, cpu_ticks, create_args, parse, variant, wait_until, Daemon};

/// `mesh ARGS` as a tenant: (success, stdout, stderr).
fn as_tenant(d: &Daemon, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = d.mesh_as(token, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn app() -> String {
    app_wasm().to_str().unwrap().to_string()
}

/// Environment t2 with a web service `web` (`app server`), as its tenant
/// made it; returns t2's token.
fn tenant_with_web(d: &Daemon) -> String {
    let token = d.new_env("t2", &[]);
    let (ok, _, err) = as_tenant(d, &token, &create_args("web", &[], &[&app(), "server"]));
    assert!(ok, "{err}");
    token
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_tenant_publishes_only_in_its_own_name_space_and_domains() {
    let d = Daemon::start();
    let token = tenant_with_web(&d);
    for host in [
        "http://www.localhost",
        "http://localhost",
        "http://127.0.0.1",
        "http://api.t3.localhost",
        "http://t2.localhost",
        "http://shop.example",
    ] {
        let (ok, _, err) = as_tenant(
            &d,
            &token,
            &["svc", "publish", "-n", "web", "--endpoint", host],
        );
        assert!(!ok, "t2 took {host}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    let (ok, _, err) = as_tenant(
        &d,
        &token,
        &["svc", "publish", "-n", "web", "--endpoint", "api"],
    );
    assert!(ok, "{err}");
    assert_eq!(d.get("api.t2.localhost", "/").status, 200);
    // The operator's environment cannot take the tenant's labels either.
    d.create("web", &[], &["server"]);
    let err = d.fails(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--endpoint",
        "http://api.t2.localhost",
    ]);
    assert!(
        err.contains("not in environment default's name space"),
        "{err}"
    );
    // A domain the operator assigns is the tenant's alone.
    d.ok(&["env", "update", "t2", "--domain", "shop.example"]);
    let (ok, _, err) = as_tenant(
        &d,
        &token,
        &[
            "svc",
            "publish",
            "-n",
            "web",
            "--endpoint",
            "http://shop.example",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(d.get("shop.example", "/").status, 200);
    let err = d.fails(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--endpoint",
        "http://www.shop.example",
    ]);
    assert!(
        err.contains("not in environment default's name space"),
        "{err}"
    );
    let err = d.fails(&["env", "update", "default", "--domain", "127.0.0.1"]);
    assert!(err.contains("invalid domain"), "{err}");
}

#[test]
fn quotas_bound_each_environment_and_env_ls_shows_the_use() {
    let d = Daemon::start();
    let token = d.new_env(
        "t2",
        &[
            "--max-instances",
            "3",
            "--max-memory",
            "256Mi",
            "--max-services",
            "2",
        ],
    );
    let app = app();
    let create = |name: &str, flags: &[&str]| {
        as_tenant(&d, &token, &create_args(name, flags, &[&app, "server"]))
    };
    let (ok, _, err) = create("big", &["--instances", "1000", "--memory", "4Gi"]);
    assert!(!ok);
    assert_eq!(
        err,
        "error: environment t2 is over its instance quota (--max-instances 3): it uses 0 and this change needs 1000"
    );
    let (ok, _, err) = create("web", &["--instances", "2", "--memory", "64Mi"]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_tenant(&d, &token, &["svc", "update", "web", "--instances", "4"]);
    assert!(!ok);
    assert!(
        err.contains("instance quota (--max-instances 3): it uses 2 and this change needs 4"),
        "{err}"
    );
    let (ok, _, err) = create("fat", &["--memory", "200Mi"]);
    assert!(!ok);
    assert!(
        err.contains("memory quota (--max-memory 256 MiB): it uses 128 MiB"),
        "{err}"
    );
    let (ok, _, err) = create("second", &["--memory", "64Mi"]);
    assert!(ok, "{err}");
    let (ok, _, err) = create("third", &["--memory", "1Mi", "--instances", "0"]);
    assert!(!ok);
    assert!(err.contains("service quota (--max-services 2)"), "{err}");
    // Refused changes changed nothing; the tenant sees its use.
    let (_, listed, _) = as_tenant(&d, &token, &["env", "ls", "--json"]);
    let listed: Vec<EnvView> = parse(&listed);
    let quotas = &listed[0].quotas;
    assert_eq!(quotas.instances, 3);
    assert_eq!(quotas.max_instances, 3);
    assert_eq!(quotas.services, 2);
    assert_eq!(quotas.memory_bytes, 192 << 20);
    // Only the operator moves a quota.
    let (ok, _, err) = as_tenant(
        &d,
        &token,
        &["env", "update", "t2", "--max-instances", "100"],
    );
    assert!(!ok);
    assert!(err.contains("only the operator"), "{err}");
    d.ok(&[
        "env",
        "update",
        "t2",
        "--max-instances",
        "10",
        "--max-memory",
        "1Gi",
    ]);
    let (ok, _, err) = as_tenant(&d, &token, &["svc", "update", "web", "--instances", "4"]);
    assert!(ok, "{err}");
    let table = d.ok(&["env", "ls"]);
    assert!(table.contains("5/10"), "{table}");
}

#[test]
fn guests_reach_neither_loopback_nor_the_daemon_and_tenants_cannot_lift_that() {
    let d = Daemon::start();
    let token = tenant_with_web(&d);
    as_tenant(
        &d,
        &token,
        &["svc", "publish", "-n", "web", "--endpoint", "www"],
    );
    let api = d.api_addr();
    let api_port = api.rsplit(':').next().unwrap().to_string();
    // A local server the guest must not reach.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = local.local_addr().unwrap().port().to_string();
    let call = |url: &str| {
        let encoded = url.replace(':', "%3A").replace('/', "%2F");
        d.get("www.t2.localhost", &format!("/call?url={encoded}"))
    };
    for (url, why) in [
        (
            format!("http://127.0.0.1:{port}/v1/services"),
            "127.0.0.1 is a loopback address",
        ),
        (
            format!("http://localhost:{port}/v1/services"),
            "names under .localhost are loopback",
        ),
        (
            format!("http://127.1:{port}/v1/services"),
            "is a loopback address",
        ),
        (
            format!("http://0.0.0.0:{port}/v1/services"),
            "0.0.0.0 is an unspecified address",
        ),
    ] {
        let got = call(&url);
        assert_eq!(got.status, 502, "{url}: {got:?}");
        assert!(got.body.contains(why), "{url}: {}", got.body);
    }
    // The tenant cannot open it up...
    for args in [
        &["env", "set", "outbound", "allow"][..],
        &["env", "update", "t2", "--reach", "127.0.0.0/8"][..],
    ] {
        let (ok, _, err) = as_tenant(&d, &token, args);
        assert!(!ok);
        assert!(err.contains("only the operator"), "{err}");
    }
    // ...and even where the operator opens loopback, the daemon's own
    // listeners stay out of reach.
    d.ok(&["env", "update", "t2", "--reach", "127.0.0.0/8"]);
    let got = call(&format!("http://127.0.0.1:{api_port}/v1/services"));
    assert_eq!(got.status, 502, "{got:?}");
    assert!(
        got.body.contains("one of the platform's own listeners"),
        "{}",
        got.body
    );
    let http_port = d.http_addr().rsplit(':').next().unwrap().to_string();
    let got = call(&format!("http://127.0.0.1:{http_port}/"));
    assert!(
        got.body.contains("one of the platform's own listeners"),
        "{}",
        got.body
    );
}

/// Opens `n` connections to `addr` that send nothing (or, with `slow`,
/// the start of a request head and nothing more).
fn open_idle(addr: &str, n: usize, slow: bool) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            if slow {
                s.write_all(b"GET / HTTP/1.1\r\nHost: www.localhost\r\nX-Slow: ")
                    .unwrap();
            }
            s
        })
        .collect()
}

/// Whether the daemon closed every one of `conns`.
fn all_closed(conns: &mut [TcpStream]) -> bool {
    conns.iter_mut().all(|s| {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 512];
        matches!(s.read(&mut buf), Ok(0) | Err(_)) && {
            // A reset or EOF, not a timeout.
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        }
    })
}

#[test]
fn idle_and_slowloris_connections_are_closed_on_the_ingress_and_the_api() {
    let d = Daemon::start_with(&["--header-timeout", "1s", "--idle-timeout", "2s"]);
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    let api = d.api_addr();
    let mut slow = open_idle(&d.http_addr(), 100, true);
    let mut idle = open_idle(&d.http_addr(), 100, false);
    let mut api_idle = open_idle(&api, 50, false);
    let mut api_slow = open_idle(&api, 50, true);
    // A trickle of bytes does not keep a head alive past its deadline.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        for s in &mut slow {
            let _ = s.write_all(b"x");
        }
    }
    assert!(all_closed(&mut slow), "slowloris connections still open");
    assert!(all_closed(&mut api_slow), "slow API connections still open");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(all_closed(&mut idle), "idle connections still open");
    assert!(all_closed(&mut api_idle), "idle API connections still open");
    let metrics = d.metrics();
    assert!(
        metrics.contains("mesh_ingress_connections 1\n")
            || metrics.contains("mesh_ingress_connections 0\n"),
        "{metrics}"
    );
    assert_eq!(d.get("www.localhost", "/").status, 200);
}

#[test]
fn one_client_cannot_take_every_connection_or_spin_the_daemon_out_of_file_handles() {
    let d = Daemon::start_process_with(&["--max-connections-per-client", "50"]);
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    // Past its 50, a client's new connections are closed at once.
    let mut held = open_idle(&d.http_addr(), 60, false);
    std::thread::sleep(Duration::from_millis(300));
    let closed = held.chunks_mut(1).map(all_closed).filter(|c| *c).count();
    assert_eq!(closed, 10, "connections past the per-client cap");
    drop(held);

    // Out of file handles: the listener pauses instead of spinning, and
    // says so once per interval, not once per failed accept.
    let d = Daemon::start_process_with(&["--max-connections-per-client", "5000"]);
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &d.pid().to_string(), "--nofile=200:200"])
        .status()
        .unwrap();
    assert!(limited.success());
    let window = Instant::now();
    let before = cpu_ticks(d.pid());
    let held = open_idle(&d.http_addr(), 300, false);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(d.pid()) - before;
    let secs = window.elapsed().as_secs();
    let failures = d.log().matches("accept failed").count() as u64;
    assert!(
        failures >= 1 && failures <= 2 + secs / 10,
        "{failures} accept-failure lines in {secs} s"
    );
    assert!(
        used < 50 * (secs + 1),
        "the daemon used {used} ticks of CPU in {secs} s while out of handles"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.get("www.localhost", "/").status, 200);
}

#[test]
fn malformed_requests_get_clear_answers_in_json() {
    let d = Daemon::start();
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    let mut s = TcpStream::connect(d.http_addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: www.localhost\r\nHost: evil.localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // The control API answers every error as JSON, even the extractors'.
    let api = d.api_addr();
    let token = d.info["token"].as_str().unwrap().to_string();
    let auth = format!("Bearer {token}");
    let post = |body: &[u8], content_type: &str| {
        support::http_request(
            &api,
            "POST",
            "localhost",
            "/v1/services",
            &[("authorization", &auth), ("content-type", content_type)],
            body,
        )
    };
    for (got, status) in [
        (post(b"{}", "text/plain"), 415),
        (post(b"{not json", "application/json"), 400),
        (post(b"{\"name\": 5}", "application/json"), 422),
        (post(&vec![b' '; 2 << 20], "application/json"), 413),
    ] {
        assert_eq!(got.status, status, "{got:?}");
        let body: ErrorBody = parse(&got.body);
        assert!(!body.error.is_empty(), "{}", got.body);
    }
    // Too many or too large env vars are refused in one line.
    let vars: Vec<String> = (0..200).map(|i| format!("K{i}=v")).collect();
    let flags: Vec<&str> = vars.iter().flat_map(|v| ["--env", v.as_str()]).collect();
    let err = d.fails(&create_args("envy", &flags, &[&app(), "env"]));
    assert!(err.contains("too many environment variables: 200"), "{err}");
    let big = format!("BIG={}", "x".repeat(100_000));
    let err = d.fails(&create_args("envy", &["--env", &big], &[&app(), "env"]));
    assert!(err.contains("is 100000 bytes long"), "{err}");
    let err = d.fails(&create_args(
        "cron",
        &["--schedule", "@every 99999999999h"],
        &[&app(), "send-emails"],
    ));
    assert!(err.contains("too long"), "{err}");
    assert_eq!(d.services().len(), 1, "a refused create made a service");
}

#[test]
fn a_spinning_request_is_stopped_by_its_cpu_limit() {
    let d = Daemon::start();
    d.create("web", &["--cpu-limit", "300ms"], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    let started = Instant::now();
    let got = d.get("www.localhost", "/spin");
    assert!(got.status >= 500, "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let logs = d.log_texts("web");
    let events = d.ok(&["events", "--json"]);
    assert!(
        events.contains("used more than 300ms of CPU time")
            || logs
                .iter()
                .any(|l| l.contains("used more than 300ms of CPU time")),
        "{events}\n{logs:?}"
    );
    // A short spin within the limit answers.
    assert_eq!(d.get("www.localhost", "/spin?ms=50").status, 200);
    let err = d.fails(&["svc", "update", "web", "--cpu-limit", "2h"]);
    assert!(err.contains("invalid --cpu-limit"), "{err}");
}

#[test]
fn secrets_are_kept_hashed_and_private_and_tokens_rotate() {
    let d = Daemon::start();
    let operator = d.info["token"].as_str().unwrap().to_string();
    let state = std::fs::read(d.data_dir().join("state.db")).unwrap();
    let wal = std::fs::read(d.data_dir().join("state.db-wal")).unwrap_or_default();
    for bytes in [&state, &wal] {
        assert!(
            !bytes
                .windows(operator.len())
                .any(|w| w == operator.as_bytes()),
            "the operator token is in the store in clear"
        );
    }
    for file in ["state.db", "operator.token", "daemon.json"] {
        let mode = std::fs::metadata(d.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
    }
    let old = d.new_env("t2", &[]);
    assert!(as_tenant(&d, &old, &["svc", "ls"]).0);
    let (ok, out, err) = as_tenant(&d, &old, &["env", "token", "rotate", "--json"]);
    assert!(ok, "{err}");
    let rotated: TokenRotated = parse(&out);
    let new = rotated.token.as_str();
    let (ok, _, err) = as_tenant(&d, &old, &["svc", "ls"]);
    assert!(!ok);
    assert!(err.contains("invalid API token"), "{err}");
    assert!(as_tenant(&d, new, &["svc", "ls"]).0);
    // A tenant cannot rotate another's token.
    d.new_env("t3", &[]);
    let (ok, _, err) = as_tenant(&d, new, &["env", "token", "rotate", "t3"]);
    assert!(!ok);
    assert!(err.contains("no environment named t3"), "{err}");
}

#[test]
fn request_bodies_stream_to_the_guest_instead_of_filling_the_daemon() {
    let d = Daemon::start_process();
    d.create("web", &["--instances", "4"], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.wait_running("web", 4);
    let addr = d.http_addr();
    let pid = d.pid();
    let before = rss(pid);
    let body = vec![b'x'; 15 << 20];
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Twenty 15 MB chunked uploads at once: what is not being read waits
    // in the client, not in the daemon.
    let uploads: Vec<_> = (0..20)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                support::http_request_chunked(&addr, "POST", "www.localhost", "/drain", &body)
            })
        })
        .collect();
    for upload in uploads {
        let got = upload.join().unwrap();
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.body, format!("read {} bytes\n", 15 << 20));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, peak +{} MiB while 300 MiB streamed through",
        before >> 20,
        grew >> 20
    );
    assert!(grew < 120 << 20, "the daemon grew by {} MiB", grew >> 20);
    // Past the limit, a streamed body still gets 413.
    let big = vec![b'x'; 17 << 20];
    let got = support::http_request_chunked(&addr, "POST", "www.localhost", "/drain", &big);
    assert_eq!(got.status, 413, "{got:?}");
}

#[test]
fn a_full_disk_is_reported_once_per_interval_and_deletes_still_work() {
    let d = Daemon::start_on_small_disk("40m");
    let app = app();
    d.create_service("noisy", &[], &[&app, "flood"]);
    d.create_service("keep", &[], &[&app, "count"]);
    // Fill what is left of the disk.
    let filler = d.data_dir().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    drop(file);
    std::thread::sleep(Duration::from_secs(3));
    let failures = d.log().matches("cannot write log lines").count();
    assert!(failures <= 2, "{failures} log-write failure lines in 3 s");
    // A change that needs space fails in one line and changes nothing...
    let err = d.fails(&create_args("more", &[], &[&app, "count"]));
    assert!(err.contains("disk is full"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(d.service("more").is_none());
    // ...but taking the noisy guest down works.
    d.ok(&["svc", "delete", "noisy"]);
    assert!(d.service("noisy").is_none());
    // With space again, changes go through.
    std::fs::remove_file(&filler).unwrap();
    d.create_service("more", &[], &[&app, "count"]);
    assert!(d.service("keep").is_some());
}

#[test]
fn code_counts_against_its_environments_quota() {
    let d = Daemon::start();
    let token = d.new_env("t2", &["--max-code", "200k"]);
    let app_path = app();
    let create = create_args("web", &[], &[&app_path, "server"]);
    let (ok, _, err) = as_tenant(&d, &token, &create);
    assert!(!ok);
    assert!(err.contains("code quota (--max-code 200 KiB)"), "{err}");
    let (_, listed, _) = as_tenant(&d, &token, &["svc", "ls", "--json"]);
    assert_eq!(listed.trim(), "[]");
    // Room for three and a half copies of app.wasm, whatever its size.
    let size = std::fs::metadata(app_wasm()).unwrap().len();
    let room = (size * 7 / 2).to_string();
    d.ok(&["env", "update", "t2", "--max-code", &room]);
    let (ok, _, err) = as_tenant(&d, &token, &create);
    assert!(ok, "{err}");
    let (_, listed, _) = as_tenant(&d, &token, &["env", "ls", "--json"]);
    let listed: Vec<EnvView> = parse(&listed);
    let used = listed[0].quotas.code_bytes;
    assert_eq!(used, std::fs::metadata(app_wasm()).unwrap().len());
    // Uploads not deployed count too: two more copies fit, a
    // third does not, so uploading cannot fill the disk.
    let dir = d.scratch();
    let copies: Vec<String> = (1..=3)
        .map(|i| {
            let path = variant(&app_wasm(), &dir, &format!("copy{i}"), &i.to_string());
            path.to_str().unwrap().to_string()
        })
        .collect();
    for copy in &copies[..2] {
        let (ok, _, err) = as_tenant(&d, &token, &["run", "--", copy, "env"]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = as_tenant(&d, &token, &["run", "--", &copies[2], "env"]);
    assert!(!ok);
    assert!(
        err.contains("code quota (--max-code ")
            && err.contains("its stacks and recent uploads take"),
        "{err}"
    );
    // Code already kept uploads again freely.
    let (ok, _, err) = as_tenant(&d, &token, &["run", "--", &app(), "env"]);
    assert!(ok, "{err}");
}

#[test]
fn a_tenant_cannot_start_interactive_runs_without_bound() {
    let d = Daemon::start();
    let token = d.new_env("t2", &[]);
    let app = app();
    let api = d.info["api_url"].as_str().unwrap().to_string();
    // Eight runs, each started only once the one before is running.
    let mut running = Vec::new();
    for _ in 0..8 {
        let mut child = d
            .mesh_cmd(&["run", "--", &app, "sleep", "60000"])
            .env("MESH_API_URL", &api)
            .env("MESH_TOKEN", &token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
        if !first.starts_with("sleep: sleeping") {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("run {} did not start: {first:?} {err}", running.len() + 1);
        }
        running.push(child);
    }
    let (ok, _, refused) = as_tenant(&d, &token, &["run", "--", &app, "env"]);
    assert!(!ok);
    assert!(
        refused.contains("already has 8 interactive runs going"),
        "{refused}"
    );
    // The operator's runs have seats of their own.
    let out = d.ok(&["run", "-e", "SEAT=operator", "--", &app, "env"]);
    assert!(out.contains("SEAT=operator"), "{out}");
    for child in &mut running {
        let _ = child.kill();
        let _ = child.wait();
    }
    wait_until(Duration::from_secs(10), "the runs are given back", || {
        as_tenant(&d, &token, &["run", "--", &app, "env"]).0
    });
}
