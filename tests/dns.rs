//! Intra-DNS end to end: services call each other as
//! `http://<stack>-<service>/` in-process, environments never see each
//! other, outbound policies are enforced, loops are cut, and a worker uses
//! a real Redis server as its queue.

use crate::support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mesh_host::api::wire::{EnvCreated, EnvView};
use mesh_host::model::{InstanceState, ServiceType};
use serde_json::Value;
use support::{app_wasm, create_args, guest, http_request, parse, wait_until, Daemon};

/// `finance/payments` with `n` instances, and `app/web` published on www.
fn payments_and_web(d: &Daemon, n: &str, extra_env: &[&str]) {
    let payments = guest("payments");
    let mut flags = vec!["--stack", "finance", "--instances", n];
    flags.extend_from_slice(extra_env);
    d.create_service("payments", &flags, &[payments.to_str().unwrap()]);
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
}

fn receipt(d: &Daemon, host: &str, amount: u32) -> Value {
    let r = d.get(host, &format!("/pay?amount={amount}"));
    assert_eq!(r.status, 201, "{r:?}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[test]
fn services_call_each_other_by_name_in_process_spread_over_instances() {
    let d = Daemon::start();
    payments_and_web(&d, "3", &[]);
    // A service that only serves HTTP runs its instances as request servers.
    let payments = d.wait_running("payments", 3);
    assert_eq!(payments.service_type, ServiceType::Worker);
    assert_eq!(payments.dns_name, "finance-payments");

    // With the network closed, only an in-process call can reach it (and
    // `finance-payments` resolves nowhere outside mesh anyway).
    d.ok(&["env", "set", "outbound", "deny"]);
    let mut seen = std::collections::BTreeSet::new();
    for amount in 1..=6 {
        let receipt = receipt(&d, "www.localhost", amount);
        assert_eq!(receipt["amount"], amount);
        assert_eq!(receipt["service"], "finance-payments");
        assert_eq!(receipt["caller"], "app-web", "{receipt}");
        seen.insert(receipt["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["payments.1", "payments.2", "payments.3"],
        "calls were not spread over the instances"
    );
    // The daemon counted six calls handed over in-process and none that
    // went to the network.
    let metrics = d.metrics();
    assert!(
        metrics.contains("mesh_outgoing_calls_total{kind=\"in_process\"} 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mesh_outgoing_calls_total{kind=\"network\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn the_same_names_in_two_environments_are_two_services() {
    let d = Daemon::start();
    payments_and_web(&d, "1", &["--env", "GREETING=from-default"]);
    let created: EnvCreated = parse(&d.ok(&["env", "create", "other", "--json"]));
    let token = created.token;
    assert_eq!(created.env.alias, "other.localhost");
    let as_other = |args: &[&str]| {
        let out = d.mesh_as(&token, args);
        assert!(
            out.status.success(),
            "mesh {args:?} as other: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The other environment sees nothing of the default one.
    assert_eq!(as_other(&["service", "ls", "--json"]).trim(), "[]");
    let payments = guest("payments");
    as_other(&create_args(
        "payments",
        &["--stack", "finance", "--env", "GREETING=from-other"],
        &[payments.to_str().unwrap()],
    ));
    as_other(&create_args(
        "web",
        &[],
        &[app_wasm().to_str().unwrap(), "server"],
    ));
    as_other(&["svc", "publish", "-n", "web", "--endpoint", "www"]);

    // Same stack-service names, different answers: each stays in its
    // environment.
    assert_eq!(receipt(&d, "www.localhost", 5)["greeting"], "from-default");
    assert_eq!(
        receipt(&d, "www.other.localhost", 5)["greeting"],
        "from-other"
    );
    // A tenant cannot reach the other's logs or make environments.
    let out = d.mesh_as(
        &token,
        &["svc", "logs", "-n", "payments", "--stack", "finance"],
    );
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(!logs.contains("from-default"), "{logs}");
    let out = d.mesh_as(&token, &["env", "create", "third"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only the operator"));
    // Nor take a path under a host the other environment serves.
    let out = d.mesh_as(
        &token,
        &[
            "svc",
            "publish",
            "-n",
            "web",
            "--endpoint",
            "http://www.localhost",
            "--path",
            "/admin",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: `www.localhost` is not in environment other's name space (*.other.localhost); use a label like `www`"
    );
    let listed = as_other(&["service", "ls", "--json"]);
    assert!(!listed.contains("/admin"), "{listed}");
}

/// A one-route HTTP server on a free port that counts its connections.
fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\noutside",
            );
        }
    });
    (port, count)
}

#[test]
fn outbound_policies_are_enforced_and_logged() {
    let d = Daemon::start();
    payments_and_web(&d, "1", &[]);
    let (port, connections) = counting_server();
    let url = format!("/call?url=http%3A%2F%2F127.0.0.1%3A{port}%2F");

    // Under the default policy the host's loopback is out of reach...
    let closed = d.get("www.localhost", &url);
    assert_eq!(closed.status, 502, "{closed:?}");
    assert!(
        closed.body.contains("127.0.0.1 is a loopback address"),
        "{}",
        closed.body
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a refused call connected"
    );
    // ...until the operator opens it for the environment.
    d.ok(&["env", "update", "default", "--reach", "127.0.0.1/32"]);
    let open = d.get("www.localhost", &url);
    assert_eq!(open.status, 200, "{open:?}");
    assert!(open.body.starts_with("status: 200"), "{}", open.body);
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    d.ok(&["env", "set", "outbound", "deny"]);
    let denied = d.get("www.localhost", &url);
    assert_eq!(denied.status, 502, "{denied:?}");
    assert!(
        denied.body.contains(&format!(
            "outbound request to 127.0.0.1:{port} denied by this environment's outbound policy (deny)"
        )),
        "{}",
        denied.body
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "a denied call connected"
    );
    let logs = d.log_texts("web");
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[mesh] outbound request to 127.0.0.1")),
        "{logs:?}"
    );

    d.ok(&[
        "env",
        "set",
        "outbound",
        &format!("example.com,127.0.0.1:{port}"),
    ]);
    let listed_host = d.get("www.localhost", &url);
    assert_eq!(listed_host.status, 200, "{listed_host:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let listed: Vec<EnvView> = parse(&d.ok(&["env", "ls", "--json"]));
    assert_eq!(
        listed[0].outbound,
        format!("allow only example.com,127.0.0.1:{port}")
    );
    // A policy is in effect as soon as the command returns.
    for round in 0..10 {
        let (policy, status) = if round % 2 == 0 {
            ("deny", 502)
        } else {
            ("allow", 200)
        };
        d.ok(&["env", "set", "outbound", policy]);
        let got = d.get("www.localhost", &url);
        assert_eq!(got.status, status, "round {round}, {policy}: {got:?}");
    }
    let err = d.fails(&["env", "set", "outbound", "not a host!"]);
    assert!(err.contains("invalid outbound policy"), "{err}");
}

#[test]
fn loops_are_cut_and_empty_services_answer_at_once() {
    let d = Daemon::start();
    payments_and_web(&d, "0", &[]);
    // web calls itself by name: the chain is cut at the hop limit, without
    // waiting on its own single instance.
    let started = Instant::now();
    let looped = d.get("www.localhost", "/loop?depth=0");
    assert_eq!(looped.status, 508, "{looped:?}");
    assert!(
        looped.body.contains("call chain longer than 10 services"),
        "{}",
        looped.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A service with no instances answers 503, not a hang (how quickly is
    // measured by scripts/bench-converge.py).
    let started = Instant::now();
    let r = d.get("www.localhost", "/pay?amount=1");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("has 0 instances"), "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Outside callers cannot claim to be a service.
    let echo = http_request(
        &d.http_addr(),
        "GET",
        "www.localhost",
        "/echo",
        &[
            ("X-Mesh-Caller", "finance-payments"),
            ("X-Mesh-Chain", "a,b"),
        ],
        b"",
    );
    assert!(!echo.body.contains("x-mesh-"), "{}", echo.body);
}

/// A real redis-server on a free port, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        wait_until(Duration::from_secs(10), "redis-server listens", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Redis { child, port }
    }

    /// Sends one inline command and returns the raw reply.
    fn command(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(format!("{line}\r\nQUIT\r\n").as_bytes())
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_queue_worker_consumes_jobs_from_a_real_redis() {
    let redis = Redis::start();
    let d = Daemon::start();
    // An allow-list naming the address opens it to raw TCP (the socket's
    // bind to an ephemeral local port is not a destination).
    d.ok(&[
        "env",
        "set",
        "outbound",
        &format!("127.0.0.1:{}", redis.port),
    ]);
    d.create(
        "worker",
        &[
            "--instances",
            "2",
            "--env",
            &format!("REDIS_URL=redis://127.0.0.1:{}", redis.port),
        ],
        &["queue"],
    );
    d.wait_running("worker", 2);
    let reply = redis.command("RPUSH jobs a b c d e f");
    assert!(reply.starts_with(":6"), "{reply}");
    let mut results = Vec::new();
    wait_until(Duration::from_secs(15), "six results in redis", || {
        results = redis
            .command("LRANGE results 0 -1")
            .lines()
            .filter(|l| l.starts_with("done:"))
            .map(str::to_string)
            .collect();
        results.len() == 6
    });
    let mut jobs: Vec<&str> = results
        .iter()
        .map(|r| r.split(':').nth(1).unwrap())
        .collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["a", "b", "c", "d", "e", "f"]);
    assert!(results
        .iter()
        .all(|r| r.ends_with(":worker.1") || r.ends_with(":worker.2")));
    // A job's line reaches the log soon after its result reaches Redis
    // (the log is written off the worker's path).
    wait_until(Duration::from_secs(10), "a job's line in the log", || {
        d.log_texts("worker")
            .iter()
            .any(|l| l == "queue: job a" || l == "queue: job b")
    });

    // The same worker under a policy that does not list Redis cannot reach it.
    d.ok(&["env", "set", "outbound", "example.com:443"]);
    d.ok(&["svc", "update", "worker", "--env", "ROLL=1"]);
    wait_until(Duration::from_secs(10), "the worker is denied", || {
        d.log_texts("worker")
            .iter()
            .any(|l| l.contains("denied by this environment's outbound policy"))
    });
}

#[test]
fn a_worker_called_by_name_shows_its_request_instances() {
    let d = Daemon::start();
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    // `app queue` also exports the handler: it takes calls by name.
    d.create("worker", &[], &["queue"]);
    d.wait_running("worker", 1);
    let ok = d.get("www.localhost", "/call?url=http%3A%2F%2Fapp-worker%2F");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("service: app-worker"), "{}", ok.body);
    let trapped = d.get("www.localhost", "/call?url=http%3A%2F%2Fapp-worker%2Ftrap");
    assert!(trapped.body.starts_with("status: 500"), "{trapped:?}");
    // The call was served by a request instance beside the `run` one, and
    // its trap counts as a restart there, with the message.
    let worker = d.wait_for("worker", Duration::from_secs(5), "a restart", |s| {
        s.instances
            .iter()
            .any(|i| i.id == "worker.req1" && i.restarts == 1)
    });
    let instances = &worker.instances;
    let run = instances.iter().find(|i| i.id == "worker.1").unwrap();
    assert_eq!(run.state, InstanceState::Running);
    assert_eq!(run.restarts, 0);
    let req = instances.iter().find(|i| i.id == "worker.req1").unwrap();
    assert!(
        req.message.as_deref().unwrap().starts_with("trap: "),
        "{req:?}"
    );
}

/// A caller of a service that is gone gets why from the platform: with
/// the network closed, `/pay` (a POST with a body) to the deleted
/// `finance-payments` answers the refusal, naming the missing service,
/// not a closed request stream.
#[test]
fn a_caller_of_a_deleted_service_is_told_why() {
    let d = Daemon::start();
    payments_and_web(&d, "1", &[]);
    d.ok(&["env", "set", "outbound", "deny"]);
    receipt(&d, "www.localhost", 1);
    // Who calls it is named before it goes, and without --yes nothing goes.
    let shown = d.ok(&["svc", "show", "payments", "--stack", "finance"]);
    assert!(
        shown.contains("called by") && shown.contains("app/web ("),
        "{shown}"
    );
    let err = d.fails(&["svc", "delete", "payments", "--stack", "finance"]);
    assert!(
        err.contains("payments is called by name by app/web (last ") && err.contains("add --yes"),
        "{err}"
    );
    assert!(d
        .services()
        .iter()
        .any(|s| s.stack == "finance" && s.name == "payments"));
    d.ok(&["svc", "delete", "payments", "--stack", "finance", "--yes"]);
    let mut last = None;
    wait_until(Duration::from_secs(10), "the call refused", || {
        let r = d.get("www.localhost", "/pay?amount=2");
        let refused = r.status == 502;
        last = Some(r);
        refused
    });
    let r = last.unwrap();
    assert!(
        r.body.contains("outbound request to finance-payments:80 denied by this environment's outbound policy (deny)"),
        "{r:?}"
    );
    assert!(
        r.body
            .contains("no service in this environment is named finance-payments"),
        "{r:?}"
    );
    assert!(!r.body.contains("stream closed"), "{r:?}");
}
