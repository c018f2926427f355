//! Health checks and releases that protect themselves: a new instance
//! takes requests only once it answers its health path, a live one that
//! keeps failing it is replaced, and a deploy, restart or update rolls one
//! instance at a time and rolls back by itself when the new version does
//! not come up, all while `wrk` drives the endpoint and sees no failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use mesh_host::model::{InstanceState, RolloutState};
use mesh_host::telemetry::Event;

use crate::support::{self, parse, wait_until, Daemon};

/// What wrk saw.
#[derive(Debug)]
struct Load {
    requests: u64,
    /// "Non-2xx or 3xx responses", 0 when wrk printed none.
    non_2xx: u64,
    /// wrk's "Socket errors" line, when it printed one.
    socket_errors: Option<String>,
    output: String,
}

impl Load {
    /// Asserts wrk saw no failure and a fair number of answers.
    fn assert_clean(&self, what: &str) {
        assert_eq!(self.non_2xx, 0, "{what}: non-2xx answers:\n{}", self.output);
        assert!(
            self.socket_errors.is_none(),
            "{what}: socket errors:\n{}",
            self.output
        );
        assert!(
            self.requests > 100,
            "{what}: too few requests:\n{}",
            self.output
        );
    }
}

/// Runs wrk against `www.localhost` on the daemon's ingress for `secs`
/// seconds on its own thread (1 thread, 8 connections: bounded).
fn wrk(d: &Daemon, path: &str, secs: u32) -> JoinHandle<Load> {
    let url = format!("http://{}{path}", d.http_addr());
    let duration = format!("{secs}s");
    std::thread::spawn(move || {
        let out = Command::new("wrk")
            .args(["-t1", "-c8", "-d", &duration, "--timeout", "5s"])
            .args(["-H", "Host: www.localhost", &url])
            .output()
            .expect("running wrk");
        let output = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "wrk failed: {output}");
        let number_after = |label: &str| {
            output.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(label)
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            })
        };
        let requests = output
            .lines()
            .find_map(|l| {
                l.trim()
                    .split_once(" requests in ")
                    .and_then(|(n, _)| n.parse().ok())
            })
            .unwrap_or(0);
        Load {
            requests,
            non_2xx: number_after("Non-2xx or 3xx responses:").unwrap_or(0),
            socket_errors: output
                .lines()
                .find(|l| l.contains("Socket errors"))
                .map(str::to_string),
            output,
        }
    })
}

/// A stack directory holding app.wasm (as `variant` tags it) and, when
/// `health` is given, a `files/health` the app's `/healthz` answers with.
fn bundle(root: &Path, name: &str, tag: &str, health: Option<u16>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    support::variant(&support::app_wasm(), &dir, "app", tag);
    if let Some(status) = health {
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/health"), status.to_string()).unwrap();
    }
    dir
}

/// `web` in stack `app`, `instances` of it, checked on /healthz every
/// 100ms (2 failures make it unhealthy), published at www.localhost.
fn checked_web(d: &Daemon, instances: u32, rollout_timeout: &str) {
    let dir = bundle(&d.scratch(), "v1", "v1", None);
    d.ok(&["stack", "deploy", "app", dir.to_str().unwrap()]);
    let n = instances.to_string();
    d.create_service(
        "web",
        &[
            "--instances",
            &n,
            "--health",
            "/healthz",
            "--health-interval",
            "100ms",
            "--health-timeout",
            "100ms",
            "--health-failures",
            "2",
            "--rollout-timeout",
            rollout_timeout,
        ],
        &["app", "server"],
    );
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.wait_running("web", instances as usize);
}

fn events(d: &Daemon) -> Vec<Event> {
    parse(&d.ok(&["events", "--json"]))
}

#[test]
fn an_instance_that_fails_its_health_check_is_replaced() {
    let d = Daemon::start();
    checked_web(&d, 2, "10s");
    // One instance turns sick: its checks fail, it is taken out of
    // rotation and replaced by a fresh (healthy) one.
    assert_eq!(d.get("www.localhost", "/sick").status, 200);
    let replaced = d.wait_for(
        "web",
        Duration::from_secs(10),
        "one instance replaced",
        |s| {
            s.instances.iter().any(|i| i.restarts == 1)
                && s.instances
                    .iter()
                    .all(|i| i.state == InstanceState::Running)
        },
    );
    assert_eq!(replaced.instances.len(), 2, "{replaced:#?}");
    let unhealthy: Vec<Event> = events(&d)
        .into_iter()
        .filter(|e| e.kind == "instance.unhealthy")
        .collect();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:#?}");
    assert!(
        unhealthy[0]
            .message
            .contains("failed health check: 500 from /healthz"),
        "{unhealthy:#?}"
    );
    // Every instance now answers healthy.
    for _ in 0..10 {
        let answer = d.get("www.localhost", "/healthz");
        assert_eq!(answer.status, 200, "{answer:?}");
    }
}

#[test]
fn a_new_instance_gets_requests_only_once_it_answers_its_health_path() {
    let d = Daemon::start();
    checked_web(&d, 1, "2s");
    // New settings whose instances answer /healthz with 503: the new
    // instance never takes a request, the old one serves throughout, and
    // the update fails in one line saying why and what was kept.
    let load = wrk(&d, "/", 5);
    std::thread::sleep(Duration::from_millis(500));
    let line = d.fails(&["svc", "update", "-n", "web", "--env", "HEALTH_STATUS=503"]);
    assert!(
        line.contains("web: the rollout stopped: 1 of 1 new instances did not come up in 2s: failed health check: 503 from /healthz")
            && line.contains("the previous instances are kept"),
        "{line}"
    );
    load.join().unwrap().assert_clean("a refused update");
    let web = d.service("web").unwrap();
    let rollout = web.rollout.expect("a rollout");
    assert_eq!(rollout.state, RolloutState::Failed);
    assert_eq!(web.instances.len(), 1, "{:#?}", web.instances);
    assert_eq!(d.get("www.localhost", "/healthz").status, 200);
    // The same settings are not tried again until they change.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.service("web").unwrap().rollout.unwrap().started_at,
        rollout.started_at
    );
    // A fix rolls out.
    d.ok(&["svc", "update", "-n", "web", "--env", "HEALTH_STATUS=204"]);
    let web = d.service("web").unwrap();
    assert_eq!(web.rollout.unwrap().state, RolloutState::Done);
    assert_eq!(d.get("www.localhost", "/healthz").status, 204);
}

#[test]
fn a_bad_deploy_rolls_back_by_itself_and_a_good_one_rolls_out_under_load() {
    let d = Daemon::start();
    checked_web(&d, 3, "3s");
    let root = d.scratch();

    // v2's instances answer /healthz with 500.
    let bad = bundle(&root, "v2", "v2", Some(500));
    let load = wrk(&d, "/", 8);
    std::thread::sleep(Duration::from_millis(500));
    let line = d.fails(&["stack", "deploy", "app", bad.to_str().unwrap()]);
    assert!(
        line.contains("web: the rollout to v2 stopped: ")
            && line.contains("failed health check: 500 from /healthz")
            && line.contains("v1 is kept (rolled back as v3)"),
        "{line}"
    );
    load.join()
        .unwrap()
        .assert_clean("a deploy that rolled back");
    let versions = d.ok(&["stack", "versions", "app"]);
    assert!(
        versions.contains("rollback to v1: web's rollout of v2 failed"),
        "{versions}"
    );
    let web = d.wait_running("web", 3);
    assert!(web.instances.iter().all(|i| i.version == 3), "{web:#?}");
    let failed: Vec<Event> = events(&d)
        .into_iter()
        .filter(|e| e.kind == "rollout.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0].message.contains("v1 is kept"), "{failed:#?}");

    // A good v4 rolls out under the same load with no failed request.
    let good = bundle(&root, "v4", "v4", Some(200));
    let load = wrk(&d, "/", 4);
    std::thread::sleep(Duration::from_millis(500));
    let out = d.ok(&["stack", "deploy", "app", good.to_str().unwrap()]);
    assert!(out.contains("Deployed app v4"), "{out}");
    // It returned once the rollout was done.
    let web = d.service("web").unwrap();
    assert_eq!(
        web.rollout.as_ref().unwrap().state,
        RolloutState::Done,
        "{web:#?}"
    );
    assert_eq!(web.instances.len(), 3, "{web:#?}");
    assert!(web.instances.iter().all(|i| i.version == 4), "{web:#?}");
    load.join().unwrap().assert_clean("a good deploy");

    // A restart rolls too, with no failed request.
    let load = wrk(&d, "/", 3);
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["svc", "restart", "-n", "web"]);
    load.join().unwrap().assert_clean("a restart");
    let web = d.service("web").unwrap();
    assert!(
        web.instances
            .iter()
            .all(|i| i.restarts == 0 && i.version == 4),
        "{web:#?}"
    );
}

#[test]
fn a_deploy_with_no_wait_returns_at_once_and_rolls_on() {
    let d = Daemon::start();
    checked_web(&d, 2, "3s");
    let bad = bundle(&d.scratch(), "v2", "v2", Some(500));
    let out = d.ok(&["stack", "deploy", "app", bad.to_str().unwrap(), "--no-wait"]);
    assert!(out.contains("Deployed app v2"), "{out}");
    // The rollback happens all the same.
    wait_until(Duration::from_secs(15), "v3 rolls back v2", || {
        d.ok(&["stack", "versions", "app"])
            .contains("rollback to v1: web's rollout of v2 failed")
    });
}

#[test]
fn health_settings_are_checked_in_one_line() {
    let d = Daemon::start();
    d.create("web", &[], &["server"]);
    let cases: [(&[&str], &str); 5] = [
        (
            &["--health", "healthz"],
            "invalid --health `healthz`: use a path starting with /",
        ),
        (
            &["--health-interval", "5s"],
            "need a health check, and web has none",
        ),
        (
            &[
                "--health",
                "/h",
                "--health-interval",
                "1s",
                "--health-timeout",
                "2s",
            ],
            "is longer than --health-interval",
        ),
        (
            &["--health", "/h", "--health-failures", "0"],
            "invalid --health-failures 0",
        ),
        (
            &["--rollout-timeout", "10ms"],
            "invalid --rollout-timeout `10ms`",
        ),
    ];
    for (flags, wanted) in cases {
        let mut args = vec!["svc", "update", "-n", "web"];
        args.extend_from_slice(flags);
        let line = d.fails(&args);
        assert!(line.contains(wanted), "{flags:?}: {line}");
    }
    assert!(d.service("web").unwrap().settings.health.is_none());
    // A valid one is kept and shown.
    d.ok(&[
        "svc",
        "update",
        "-n",
        "web",
        "--health",
        "/healthz",
        "--health-failures",
        "4",
    ]);
    let health = d.service("web").unwrap().settings.health.unwrap();
    assert_eq!(
        (health.path.as_str(), health.failures),
        ("/healthz", Some(4))
    );
}

#[test]
fn a_container_web_service_is_checked_over_http_on_its_port() {
    // Containers are started through the mesh binary itself.
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &support::image("busybox.tar")]);
    support::busybox_web_service(&d, 1);
    d.wait_running("web", 1);
    // busybox httpd answers 404 for a file it lacks: a new instance
    // checked on that path never takes requests, and the old one serves.
    let line = d.fails(&[
        "svc",
        "update",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--health",
        "/missing",
        "--health-interval",
        "200ms",
        "--rollout-timeout",
        "3s",
    ]);
    assert!(
        line.contains("failed health check: 404 from /missing"),
        "{line}"
    );
    assert_eq!(d.get("www.localhost", "/").status, 200);
    // A path it serves passes.
    d.ok(&[
        "svc", "update", "-n", "web", "--stack", "boxes", "--health", "/",
    ]);
    let web = d.wait_running("web", 1);
    assert_eq!(web.rollout.unwrap().state, RolloutState::Done);
}

#[test]
fn a_deploy_that_makes_a_worker_crash_rolls_back_the_same_way() {
    let d = Daemon::start();
    let root = d.scratch();
    let v1 = bundle(&root, "v1", "v1", None);
    d.ok(&["stack", "deploy", "app", v1.to_str().unwrap()]);
    d.create_service(
        "worker",
        &["--instances", "2", "--rollout-timeout", "5s"],
        &["app", "queue"],
    );
    d.wait_running("worker", 2);
    // v2's files make the worker exit with code 3 at start.
    let bad = root.join("v2");
    std::fs::create_dir_all(bad.join("files")).unwrap();
    support::variant(&support::app_wasm(), &bad, "app", "v2");
    std::fs::write(bad.join("files/crash"), "a broken release").unwrap();
    let line = d.fails(&["stack", "deploy", "app", bad.to_str().unwrap()]);
    assert!(
        line.contains("worker: the rollout to v2 stopped: ")
            && line.contains("of 2 new instances failed: exited with code 3")
            && line.contains("v1 is kept (rolled back as v3)"),
        "{line}"
    );
    // Both instances run again, on v1's code (as v3), and the one the
    // rollout moved came back.
    let worker = d.wait_for("worker", Duration::from_secs(10), "2 running on v3", |s| {
        s.instances.len() == 2
            && s.instances
                .iter()
                .all(|i| i.state == InstanceState::Running && i.version == 3)
    });
    assert_eq!(worker.rollout.unwrap().state, RolloutState::Failed);
    let logs = d.log_texts("worker");
    assert!(
        logs.iter()
            .any(|l| l.contains("queue: cannot start: a broken release")),
        "{logs:?}"
    );
}

#[test]
fn a_change_that_also_scales_a_worker_down_rolls_the_instances_that_stay() {
    let d = Daemon::start();
    d.create("worker", &["--instances", "3"], &["queue"]);
    d.wait_running("worker", 3);
    std::thread::sleep(Duration::from_millis(300));
    // New settings and fewer instances at once: the two that stay roll,
    // the third goes, and the update succeeds.
    d.ok(&[
        "svc",
        "update",
        "worker",
        "--instances",
        "2",
        "--env",
        "COLOR=blue",
    ]);
    let worker = d.wait_running("worker", 2);
    assert_eq!(worker.rollout.unwrap().state, RolloutState::Done);
    let env = d.ok(&["svc", "show", "worker"]);
    assert!(env.contains("COLOR=blue"), "{env}");
}

#[test]
fn code_that_cannot_serve_rolls_back_at_once_not_after_the_timeout() {
    let d = Daemon::start();
    // The default rollout timeout (60 s) applies.
    let dir = bundle(&d.scratch(), "v1", "v1", None);
    d.ok(&["stack", "deploy", "app", dir.to_str().unwrap()]);
    d.create_service("web", &["--instances", "2"], &["app", "server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.wait_running("web", 2);
    // v2's `app` is a command-only component: it has no HTTP handler.
    let v2 = d.scratch().join("v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(support::guest("idle"), v2.join("app.wasm")).unwrap();
    let started = std::time::Instant::now();
    let line = d.fails(&[
        "stack",
        "deploy",
        "app",
        v2.join("app.wasm").to_str().unwrap(),
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // It stopped because the code cannot run, not because time ran out.
    assert!(!line.contains("did not come up in"), "{line}");
    assert!(
        line.contains("web: the rollout to v2 stopped: ")
            && line.contains("does not export `wasi:http/incoming-handler`")
            && line.contains("v1 is kept (rolled back as v3)"),
        "{line}"
    );
    assert_eq!(d.get("www.localhost", "/").status, 200);
}
