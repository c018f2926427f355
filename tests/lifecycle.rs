//! Lifecycles: whatever starts a task stops it. A deleted service leaves
//! nothing running or writing; a request dropped while it waits gives its
//! place in the queue back (over HTTP/2 resets, and when the calling
//! instance is stopped mid-wait); ingress connections are bounded and
//! drained on shutdown; code no kept version names is removed; a restart
//! rolls every instance while a web service keeps serving.

use crate::support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mesh_host::api::wire::{ServiceView, StatsView, VersionView, WhoAmI};
use mesh_host::model::InstanceState;
use mesh_host::telemetry::Event;
use support::{app_wasm, parse, variant, wait_until, Daemon};

/// `mesh_requests_waiting` of one service, from `/metrics`.
fn waiting(d: &Daemon, service: &str) -> Option<u64> {
    let needle =
        format!("mesh_requests_waiting{{env=\"default\",stack=\"app\",service=\"{service}\"}} ");
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).and_then(|n| n.trim().parse().ok()))
}

/// A web service `name` of `app` with `instances`, on `name.localhost`.
fn web(d: &Daemon, name: &str, instances: &str) {
    d.create(name, &["--instances", instances], &["server"]);
    let host = format!("{name}.localhost");
    d.ok(&["svc", "publish", "-n", name, "--endpoint", name]);
    wait_until(Duration::from_secs(20), "the web service answers", || {
        d.get(&host, "/").status == 200
    });
}

/// Holds `name`'s only instance busy for `ms` on a thread.
fn hold(d: &Daemon, name: &str, ms: u64) -> std::thread::JoinHandle<u16> {
    let addr = d.http_addr();
    let host = format!("{name}.localhost");
    let path = format!("/sleep?ms={ms}");
    std::thread::spawn(move || support::http_request(&addr, "GET", &host, &path, &[], b"").status)
}

/// With `name`'s one instance busy again, the whole queue (4 places) is
/// free: four more requests wait and are served rather than refused at
/// once; and it serves every request after.
fn assert_whole_queue(d: &Daemon, name: &str) {
    let busy = hold(d, name, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let queued: Vec<_> = (0..4).map(|_| hold(d, name, 1)).collect();
    for request in queued {
        assert_eq!(request.join().unwrap(), 200);
    }
    assert_eq!(busy.join().unwrap(), 200);
    for _ in 0..5 {
        assert_eq!(d.get(&format!("{name}.localhost"), "/").status, 200);
    }
}

fn events_of(d: &Daemon, service: &str) -> Vec<Event> {
    let events: Vec<Event> = parse(&d.ok(&["events", "--json"]));
    let service = format!("app/{service}");
    events
        .into_iter()
        .filter(|e| e.service.as_ref() == Some(&service))
        .collect()
}

#[test]
fn a_deleted_web_service_leaves_nothing_behind() {
    let d = Daemon::start();
    // 1 MiB is less than the component's own initial memory: every
    // instance fails as it starts, and is retried with back-off.
    d.create("hungry", &["--memory", "1Mi"], &["server"]);
    d.ok(&["svc", "publish", "-n", "hungry", "--endpoint", "hungry"]);
    wait_until(
        Duration::from_secs(20),
        "a failed start is reported",
        || {
            events_of(&d, "hungry")
                .iter()
                .any(|e| e.kind == "instance.oom" || e.kind == "instance.failed")
        },
    );
    d.ok(&["svc", "delete", "hungry", "--yes"]);
    let after_delete = events_of(&d, "hungry").len();
    let log = d.data_dir().join("logs/default/app/hungry.log");
    // Back-offs of 0.1 to 1.6 s would have retried several times by now.
    std::thread::sleep(Duration::from_secs(4));
    let late: Vec<Event> = events_of(&d, "hungry").split_off(after_delete);
    assert!(late.is_empty(), "events after the delete: {late:?}");
    assert!(!log.exists(), "the deleted service's log file is back");
    assert!(!d.metrics().contains("service=\"hungry\""));
}

#[test]
fn http2_requests_reset_while_waiting_give_their_places_back() {
    let d = Daemon::start_with(&["--queue-per-instance", "4"]);
    web(&d, "slow", "1");
    let busy = hold(&d, "slow", 3000);
    std::thread::sleep(Duration::from_millis(300));

    // One HTTP/2 connection, the whole queue's worth of requests on it,
    // then the connection is dropped with all of them waiting.
    let addr = d.http_addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (requests, conn) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let mut requests = Vec::new();
        for _ in 0..4 {
            let request = hyper::Request::get("http://slow.localhost/")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            sender.ready().await.unwrap();
            requests.push(tokio::spawn(sender.send_request(request)));
        }
        (requests, conn)
    });
    wait_until(Duration::from_secs(5), "the requests queue", || {
        waiting(&d, "slow") == Some(4)
    });
    for request in requests {
        request.abort();
    }
    conn.abort();
    drop(runtime);
    wait_until(
        Duration::from_secs(10),
        "the reset requests leave the queue",
        || waiting(&d, "slow") == Some(0),
    );
    assert_eq!(busy.join().unwrap(), 200);
    assert_whole_queue(&d, "slow");
}

#[test]
fn callers_stopped_while_waiting_by_name_give_their_places_back() {
    let d = Daemon::start_with(&["--queue-per-instance", "4"]);
    web(&d, "slow", "1");
    web(&d, "gateway", "3");
    let busy = hold(&d, "slow", 4000);
    std::thread::sleep(Duration::from_millis(300));
    // Three gateway instances call `slow` by name and wait in its queue.
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let addr = d.http_addr();
            std::thread::spawn(move || {
                support::http_request(
                    &addr,
                    "GET",
                    "gateway.localhost",
                    "/call?url=http%3A%2F%2Fapp-slow%2F",
                    &[],
                    b"",
                )
                .status
            })
        })
        .collect();
    wait_until(Duration::from_secs(5), "the callers wait", || {
        waiting(&d, "slow") == Some(3)
    });
    // Deleting the gateway stops its instances mid-call.
    d.ok(&["svc", "delete", "gateway", "--yes"]);
    wait_until(
        Duration::from_secs(10),
        "the stopped callers leave the queue",
        || waiting(&d, "slow") == Some(0),
    );
    for caller in callers {
        assert_ne!(
            caller.join().unwrap(),
            200,
            "a deleted service's request went on"
        );
    }
    assert_eq!(busy.join().unwrap(), 200);
    assert_whole_queue(&d, "slow");
}

#[test]
fn ingress_connections_are_bounded_counted_and_drained() {
    let mut d = Daemon::start_process_with(&["--max-connections", "2"]);
    web(&d, "web", "2");
    let addr = d.http_addr();
    // Two idle keep-alive connections take the two places.
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    wait_until(
        Duration::from_secs(10),
        "two connections are counted",
        || d.metrics().contains("mesh_ingress_connections 2"),
    );
    // A third is not served while they stay open...
    let mut third = TcpStream::connect(&addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    assert!(
        third.read_to_end(&mut answer).is_err() && answer.is_empty(),
        "served past the limit"
    );
    // ...and is once one closes.
    drop(idle);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_until(
        Duration::from_secs(10),
        "closed connections are uncounted",
        || d.metrics().contains("mesh_ingress_connections 0"),
    );

    // A request in flight at shutdown is finished, within the grace period.
    let slow = hold(&d, "web", 1500);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(slow.join().unwrap(), 200);
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn code_no_kept_version_names_is_removed() {
    let d = Daemon::start();
    let scratch = d.scratch();
    d.create("worker", &[], &["queue"]);
    for i in 0..30 {
        let code = variant(&app_wasm(), &scratch, "app", &format!("v{i}"));
        d.ok(&["stack", "deploy", "app", code.to_str().unwrap()]);
    }
    let count = |dir: &std::path::Path, suffix: &str| {
        walk(dir)
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .count()
    };
    // 31 versions were made (the create's and 30 deploys); 20 are kept,
    // each with its own code.
    wait_until(Duration::from_secs(10), "old code is removed", || {
        count(&d.data_dir().join("blobs"), "") == 20
            && count(&d.data_dir().join("cache"), ".cwasm") <= 20
    });
    let versions: Vec<VersionView> = parse(&d.ok(&["stack", "versions", "app", "--json"]));
    assert_eq!(versions.len(), 20);
    // What is kept still runs: roll back to the oldest kept version.
    let oldest = versions.iter().map(|v| v.number).min().unwrap();
    d.ok(&["stack", "rollback", "app", "--to", &oldest.to_string()]);
    d.wait_running("worker", 1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn started_ats(d: &Daemon, name: &str) -> Vec<Option<DateTime<Utc>>> {
    d.service(name)
        .unwrap()
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .map(|i| i.started_at)
        .collect()
}

#[test]
fn a_restart_rolls_every_instance_and_a_web_service_keeps_serving() {
    let d = Daemon::start();
    d.create("sleeper", &["--instances", "2"], &["sleep", "600000"]);
    d.wait_running("sleeper", 2);
    let before = started_ats(&d, "sleeper");
    let out = d.ok(&["svc", "restart", "-n", "sleeper"]);
    assert!(out.contains("Restarting 2 instances of sleeper"), "{out}");
    wait_until(Duration::from_secs(20), "both sleepers restarted", || {
        let now = started_ats(&d, "sleeper");
        now.len() == 2 && now.iter().all(|t| !before.contains(t))
    });
    let kinds: Vec<String> = events_of(&d, "sleeper")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "service.restarted"), "{kinds:?}");
    let listed: Vec<ServiceView> = parse(&d.ok(&["svc", "ls", "-n", "sleeper", "--json"]));
    assert!(listed[0].restarted_at.is_some(), "{listed:?}");

    // A web service restarted under requests answers every one of them.
    web(&d, "site", "1");
    let before = started_ats(&d, "site");
    d.ok(&["svc", "restart", "-n", "site"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    while Instant::now() < deadline {
        assert_eq!(d.get("site.localhost", "/").status, 200);
        served += 1;
    }
    wait_until(
        Duration::from_secs(10),
        "the site's instance restarted",
        || {
            let now = started_ats(&d, "site");
            now.len() == 1 && now != before
        },
    );

    // Its requests show in the stats the dashboard draws, to its own
    // environment only.
    let token = d.info["token"].as_str().unwrap();
    let r = d.api_get(token, "/v1/services/app/site/stats");
    assert_eq!(r.status, 200, "{}", r.body);
    let stats: StatsView = parse(&r.body);
    assert_eq!(stats.step_seconds, 10);
    let points = &stats.points;
    assert_eq!(points.len(), 60);
    let requests: u64 = points.iter().map(|p| p.requests).sum();
    let errors: u64 = points.iter().map(|p| p.errors).sum();
    assert!(
        requests > served,
        "{requests} counted, {served} sent after 1+ before"
    );
    assert_eq!(errors, 0);
    assert!(points.iter().any(|p| p.p95_ms.is_some_and(|ms| ms > 0.0)));
    let other = &d.new_env("other", &[]);
    let r = d.api_get(other, "/v1/services/app/site/stats");
    assert_eq!(r.status, 404, "{}", r.body);
    let who: WhoAmI = parse(&d.api_get(other, "/v1/whoami").body);
    assert_eq!((who.env.as_str(), who.operator), ("other", false));

    // The service page's events: that service's only, in the asker's own
    // environment, the last N of them.
    let r = d.api_get(token, "/v1/events?service=app/site&tail=3");
    assert_eq!(r.status, 200, "{}", r.body);
    let events: Vec<Event> = parse(&r.body);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.service.as_deref() == Some("app/site")),
        "{events:?}"
    );
    let all: Vec<Event> = parse(&d.api_get(token, "/v1/events?service=app/site").body);
    assert!(all.iter().any(|e| e.kind == "service.restarted"), "{all:?}");
    let theirs: Vec<Event> = parse(&d.api_get(other, "/v1/events?service=app/site").body);
    assert!(theirs.is_empty(), "{theirs:?}");

    // A cron job has nothing to restart, an unknown service is named; a
    // refused restart changes nothing.
    d.create("tick", &["--schedule", "@hourly"], &["count"]);
    let err = d.fails(&["svc", "restart", "-n", "tick"]);
    assert!(
        err.contains("cron job") && err.contains("mesh svc trigger"),
        "{err}"
    );
    let err = d.fails(&["svc", "restart", "-n", "nope"]);
    assert!(err.contains("nope"), "{err}");
    assert!(d.service("tick").unwrap().restarted_at.is_none());
    // Nor does a service scaled to nothing.
    d.ok(&["svc", "update", "sleeper", "--instances", "0"]);
    let before = d.service("sleeper").unwrap().restarted_at;
    let err = d.fails(&["svc", "restart", "-n", "sleeper"]);
    assert!(
        err.contains("no instances") && err.contains("--instances N"),
        "{err}"
    );
    assert_eq!(d.service("sleeper").unwrap().restarted_at, before);
}
