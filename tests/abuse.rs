//! Safe to share, second round: what a hostile tenant tried against the
//! newer doors (interactive runs, the API's streams, replays, request
//! targets, names under `.localhost`), each run against the real daemon
//! with the real CLI, a tenant's token and an anonymous client. All
//! traffic goes to loopback.

use crate::support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{app_wasm, create_args, http_request, wait_until, Daemon};

fn app() -> String {
    app_wasm().to_str().unwrap().to_string()
}

/// `mesh ARGS` as the holder of `token`: (success, stderr's one line).
fn try_as(d: &Daemon, token: &str, args: &[&str]) -> (bool, String) {
    let out = d.mesh_as(token, args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.success(), err)
}

/// `mesh ARGS` as the holder of `token`, left running.
fn spawn_as(d: &Daemon, token: &str, args: &[&str]) -> Child {
    d.mesh_cmd(args)
        .env("MESH_API_URL", d.info["api_url"].as_str().unwrap())
        .env("MESH_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn interactive_runs_count_against_the_memory_and_instance_quotas() {
    let d = Daemon::start();
    let token = d.new_env("t2", &["--max-memory", "256Mi", "--max-instances", "3"]);
    // Over the quota on its own: refused, as `svc create` would be.
    let (ok, err) = try_as(
        &d,
        &token,
        &["run", "--memory", "1Gi", "--", &app(), "exit", "0"],
    );
    assert!(!ok);
    assert!(err.contains("memory quota (--max-memory 256 MiB)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Two runs of 128 MiB fill the memory quota while they live.
    let mut runs: Vec<Child> = (0..2)
        .map(|_| {
            spawn_as(
                &d,
                &token,
                &["run", "--memory", "128Mi", "--", &app(), "sleep", "60000"],
            )
        })
        .collect();
    wait_until(Duration::from_secs(20), "both runs counted", || {
        let used = d.quota_use("t2");
        used.memory_bytes == 256 << 20 && used.instances == 2
    });
    let (ok, err) = try_as(
        &d,
        &token,
        &["run", "--memory", "64Mi", "--", &app(), "exit", "0"],
    );
    assert!(!ok);
    assert!(err.contains("memory quota"), "{err}");
    assert!(err.contains("interactive run"), "{err}");
    // A service cannot be made in the room the runs hold.
    let (ok, err) = try_as(
        &d,
        &token,
        &create_args("w", &["--memory", "64Mi"], &[&app(), "sleep", "1"]),
    );
    assert!(!ok);
    assert!(err.contains("memory quota"), "{err}");
    assert!(d.service("w").is_none());
    // Nor in the instances they hold (3 allowed, 2 taken by the runs).
    let (ok, err) = try_as(
        &d,
        &token,
        &create_args("w", &["--instances", "2"], &[&app(), "sleep", "1"]),
    );
    assert!(!ok);
    assert!(err.contains("instance quota (--max-instances 3)"), "{err}");

    // When the runs end, their room comes back.
    for run in &mut runs {
        run.kill().unwrap();
        run.wait().unwrap();
    }
    wait_until(Duration::from_secs(20), "the runs' room given back", || {
        let used = d.quota_use("t2");
        used.memory_bytes == 0 && used.instances == 0
    });
    let (ok, err) = try_as(
        &d,
        &token,
        &["run", "--memory", "200Mi", "--", &app(), "exit", "0"],
    );
    assert!(ok, "{err}");
}

#[test]
fn a_service_run_counts_its_services_memory() {
    let d = Daemon::start();
    let token = d.new_env("t2", &["--max-memory", "256Mi"]);
    d.create_service_as(
        &token,
        "w",
        &["--memory", "200Mi"],
        &[&app(), "sleep", "60000"],
    );
    // The service holds 200 MiB; a run of it would need 200 more.
    let (ok, err) = try_as(
        &d,
        &token,
        &["service", "run", "-n", "w", "--", "app", "exit", "0"],
    );
    assert!(!ok);
    assert!(err.contains("memory quota"), "{err}");
}

/// Sends `GET PATH` with `token` on a new connection and returns the
/// status and the connection, left open (the body may go on).
fn open_get(addr: &str, token: &str, path: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(n, 1, "the API closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, stream)
}

#[test]
fn a_tenants_follow_streams_are_bounded_and_the_api_stays_for_everyone() {
    let d = Daemon::start();
    let t2 = d.new_env("t2", &[]);
    let t3 = d.new_env("t3", &[]);
    let api = d.api_addr();
    let mut held = Vec::new();
    for _ in 0..16 {
        let (status, stream) = open_get(&api, &t2, "/v1/events?follow=true");
        assert_eq!(status, 200);
        held.push(stream);
    }
    // The seventeenth, events or logs, is refused with one clear line.
    let r = d.api_get(&t2, "/v1/events?follow=true");
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body.contains("16 follow streams"), "{}", r.body);
    let (ok, err) = try_as(&d, &t2, &["events", "-f"]);
    assert!(!ok);
    assert!(err.contains("follow streams"), "{err}");
    // Everyone else is answered at once: the operator, another tenant,
    // the dashboard.
    let started = Instant::now();
    d.ok(&["env", "ls"]);
    assert_eq!(d.api_get(&t3, "/v1/whoami").status, 200);
    let (status, _t3_stream) = open_get(&api, &t3, "/v1/events?follow=true");
    assert_eq!(status, 200);
    assert_eq!(d.api_get("", "/ui/").status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A stream closed is a stream given back.
    drop(held.pop());
    wait_until(Duration::from_secs(10), "a stream given back", || {
        let r = d.api_get(&t2, "/v1/events?tail=0");
        r.status == 200 && {
            let (status, stream) = open_get(&api, &t2, "/v1/events?follow=true");
            held.push(stream);
            status == 200
        }
    });
}

#[test]
fn one_client_address_cannot_take_every_api_connection() {
    let d = Daemon::start();
    let api: std::net::SocketAddr = d.api_addr().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 600 connections from another loopback address: the API keeps 250
    // of them (a quarter of its 1,000) and closes the rest at once.
    let crowd = runtime.block_on(async {
        let mut crowd = Vec::new();
        for _ in 0..600 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(stream) = socket.connect(api).await {
                crowd.push(stream);
            }
        }
        crowd
    });
    let open = runtime.block_on(async {
        use tokio::io::AsyncReadExt as _;
        let mut open = 0;
        for mut stream in crowd {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte));
            // Still open: the read waits. Closed by the daemon: it ends.
            if read.await.is_err() {
                open += 1;
            }
        }
        open
    });
    assert!((200..=250).contains(&open), "{open} kept open");
    // The operator, from its own address, is answered.
    d.ok(&["env", "ls"]);
}

#[test]
fn a_request_that_called_out_or_is_not_idempotent_is_not_sent_twice() {
    let d = Daemon::start();
    // The callee counts the requests its one reused instance serves.
    d.create("counter", &[], &["server"]);
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.wait_running("counter", 1);
    d.wait_running("web", 1);
    let addr = d.http_addr();
    // The first request proves nothing; the instance is then reused.
    assert_eq!(d.get("www.localhost", "/").status, 200);
    // Reused, it calls the counter and returns without answering.
    let r = http_request(
        &addr,
        "GET",
        "www.localhost",
        "/call-then-drop?url=http%3A%2F%2Fapp-counter%2Fcount",
        &[],
        b"",
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("after calling out"), "{}", r.body);
    // The callee saw that one call, and now this one: not a replayed third.
    let r = d.get(
        "www.localhost",
        "/call?url=http%3A%2F%2Fapp-counter%2Fcount",
    );
    assert_eq!(r.body, "status: 200\ncount: 2\n", "{r:?}");

    // A POST without a body that fails so on a reused instance is never
    // sent again, even when it called nothing.
    d.create("post", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "post", "--endpoint", "post"]);
    d.wait_running("post", 1);
    assert_eq!(d.get("post.localhost", "/").status, 200);
    let r = http_request(&addr, "POST", "post.localhost", "/call-then-drop", &[], b"");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("not an idempotent method"), "{}", r.body);
}

#[test]
fn an_absolute_target_is_routed_and_forwarded_as_one_authority() {
    let d = Daemon::start();
    let t1 = d.new_env("t1", &[]);
    let t2 = d.new_env("t2", &[]);
    for (token, label) in [(&t1, "www"), (&t2, "w2")] {
        d.create_service_as(token, "web", &[], &[&app(), "server"]);
        d.ok_as(token, &["svc", "publish", "-n", "web", "--endpoint", label]);
    }
    wait_until(Duration::from_secs(20), "both answer", || {
        d.get("www.t1.localhost", "/").status == 200 && d.get("w2.t2.localhost", "/").status == 200
    });
    // The target names t2's endpoint, Host t1's: t2's guest answers, and
    // sees only its own name.
    let mut stream = TcpStream::connect(d.http_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET http://w2.t2.localhost/echo HTTP/1.1\r\nHost: www.t1.localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("t1.localhost"), "{answer}");
    assert!(answer.contains("w2.t2.localhost"), "{answer}");
}

#[test]
fn names_under_localhost_are_refused_without_asking_dns() {
    let d = Daemon::start();
    let token = d.new_env("t2", &["--outbound", "allow"]);
    d.create_service_as(&token, "web", &[], &[&app(), "server"]);
    d.ok_as(
        &token,
        &["svc", "publish", "-n", "web", "--endpoint", "www"],
    );
    // The operator's environment has a service of its own, published.
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    wait_until(Duration::from_secs(20), "t2's web answers", || {
        d.get("www.t2.localhost", "/").status == 200
    });
    for url in [
        "http://www.localhost/",
        "http://www.localhost./",
        "http://app-web.default.localhost/",
        "http://localhost/",
    ] {
        let path = format!("/call?url={}", url.replace(':', "%3A").replace('/', "%2F"));
        let r = d.get("www.t2.localhost", &path);
        assert_eq!(r.status, 502, "{url}: {r:?}");
        assert!(
            r.body.contains("names under .localhost are loopback"),
            "{url}: {}",
            r.body
        );
    }
    // Its own service names still work.
    let r = d.get("www.t2.localhost", "/call?url=http%3A%2F%2Fapp-web%2F");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("status: 200"), "{}", r.body);
}

/// A files archive (`kind=files`) holding one file of `size` bytes of
/// `fill`, as the CLI uploads a stack's `files/` folder.
fn files_archive(size: usize, fill: u8) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_mode(0o644);
    header.set_size(size as u64);
    header.set_cksum();
    tar.append_data(&mut header, "big.bin", &vec![fill; size][..])
        .unwrap();
    tar.into_inner().unwrap()
}

#[test]
fn uploads_made_at_once_cannot_all_slip_under_the_code_quota() {
    let d = Daemon::start();
    let token = d.new_env("t2", &["--max-code", "100Mi"]);
    let api = d.api_addr();
    // Ten different archives of 40 MiB each, sent at once: at most two
    // fit the quota together, however they interleave.
    let uploads: Vec<std::thread::JoinHandle<u16>> = (0..10u8)
        .map(|i| {
            let (api, token) = (api.clone(), token.clone());
            std::thread::spawn(move || {
                let body = files_archive(40 << 20, i);
                let auth = format!("Bearer {token}");
                http_request(
                    &api,
                    "PUT",
                    &api,
                    "/v1/code?kind=files&name=files",
                    &[("Authorization", &auth)],
                    &body,
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = uploads.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!((1..=2).contains(&accepted), "{statuses:?}");
    // The others were refused for the quota (403) or for the places an
    // environment has (429), never anything else.
    assert!(
        statuses.iter().all(|s| [200, 403, 429].contains(s)),
        "{statuses:?}"
    );
}
