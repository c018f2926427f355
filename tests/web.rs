//! Web services end to end: the real ingress, driven by a real HTTP client
//! (and curl over HTTPS and HTTP/2), in front of real `app.wasm` and
//! `blog.wasm` instances.

use crate::support;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use mesh_host::api::wire::ServiceView;
use mesh_host::model::ServiceType;
use support::{all_running, guest, http_request, http_request_chunked, parse, wait_until, Daemon};

/// `web` (app server) published on `www`, with `n` instances.
fn web_service(d: &Daemon, n: &str, extra: &[&str]) {
    let mut flags = vec!["--instances", n];
    flags.extend_from_slice(extra);
    d.create("web", &flags, &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
}

#[test]
fn hosts_and_path_prefixes_route_to_the_right_service() {
    let d = Daemon::start();
    web_service(&d, "1", &[]);
    d.create_service(
        "web",
        &["--stack", "myblog"],
        &[guest("blog").to_str().unwrap()],
    );
    // Unpublished, a handler-only component still runs its instances: they
    // take requests by intra-DNS name (myblog-web) until it is published.
    let mut blog = None;
    wait_until(Duration::from_secs(10), "myblog/web running", || {
        let listed: Vec<ServiceView> =
            parse(&d.ok(&["service", "ls", "--stack", "myblog", "--json"]));
        let service = listed.into_iter().next().unwrap();
        let running = service.instances.len() == 1 && all_running(&service);
        blog = Some(service);
        running
    });
    assert_eq!(blog.unwrap().service_type, ServiceType::Worker);
    // The seed's spelling.
    d.ok(&[
        "service",
        "publish",
        "--stack",
        "myblog",
        "--n",
        "web",
        "--endpoint",
        "www",
        "--path",
        "/blog",
    ]);

    let home = d.get("www.localhost", "/");
    assert_eq!(home.status, 200, "{home:?}");
    assert_eq!(home.body, "hello from app\nservice: app-web\n");
    // The port in Host is ignored, and case too.
    let home = d.get("WWW.localhost:8080", "/");
    assert_eq!(home.status, 200, "{home:?}");

    let blog = d.get("www.localhost", "/blog");
    assert_eq!(blog.status, 200, "{blog:?}");
    assert!(blog.body.contains("/blog/hello-world"), "{}", blog.body);
    // The guest sees the original path, below the prefix too.
    let post = d.get("www.localhost", "/blog/hello-world");
    assert_eq!(post.status, 200, "{post:?}");
    assert!(post.body.contains("<h1>"), "{}", post.body);
    // Segment boundaries: /blogger is not under /blog.
    let other = d.get("www.localhost", "/blogger");
    assert_eq!(other.status, 404);
    assert_eq!(other.body, "not found: /blogger\n", "app answered it");

    let missing = d.get("api.localhost", "/x");
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        "mesh: no endpoint for host api.localhost and path /x\n"
    );

    // The guest sees forwarding headers and not hop-by-hop ones.
    let echo = http_request(
        &d.http_addr(),
        "POST",
        "www.localhost",
        "/echo?x=1",
        &[
            ("Connection", "close, X-Drop-Me"),
            ("X-Drop-Me", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("X-Forwarded-For", "10.1.2.3"),
        ],
        b"payload",
    );
    assert_eq!(echo.status, 200, "{echo:?}");
    assert!(echo.body.contains("path: /echo?x=1\n"), "{}", echo.body);
    assert!(echo.body.contains("body: payload"), "{}", echo.body);
    assert!(
        echo.body
            .contains("header: x-forwarded-for: 10.1.2.3, 127.0.0.1\n"),
        "{}",
        echo.body
    );
    assert!(echo.body.contains("header: x-forwarded-proto: http\n"));
    assert!(echo
        .body
        .contains("header: x-forwarded-host: www.localhost\n"));
    assert!(!echo.body.contains("x-drop-me"), "{}", echo.body);
    assert!(!echo.body.contains("keep-alive"), "{}", echo.body);

    let listed = d.service("web").unwrap();
    assert_eq!(listed.service_type, ServiceType::Web);
    let port = d.http_addr().rsplit(':').next().unwrap().to_string();
    assert_eq!(listed.endpoints, [format!("http://www.localhost:{port}")]);
    let table = d.ok(&["service", "ls"]);
    assert!(
        table.contains(&format!("http://www.localhost:{port}/blog")),
        "{table}"
    );
}

/// The URL `svc publish` prints is one that answers: the ingress's port is
/// in it (it is not 80 here), and curl, which resolves `.localhost` names
/// itself, opens it as printed. `service ls --json` shows the same URL.
#[test]
fn the_url_publish_prints_opens_as_printed() {
    let d = Daemon::start();
    d.create("web", &[], &["server"]);
    let said = d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    let url = said
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {said:?}"))
        .trim_end_matches(',')
        .to_string();
    let port = d.http_addr().rsplit(':').next().unwrap().to_string();
    assert_eq!(url, format!("http://www.localhost:{port}"), "{said}");
    assert_eq!(
        d.service("web").unwrap().endpoints,
        std::slice::from_ref(&url)
    );
    wait_until(Duration::from_secs(10), "curl opens the URL", || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout) == "200"
    });
}

#[test]
fn publish_and_unpublish_flip_the_type() {
    let d = Daemon::start_process();
    d.create("worker", &[], &["server"]);
    assert_eq!(
        d.service("worker").unwrap().service_type,
        ServiceType::Worker
    );
    let out = d.ok(&[
        "svc",
        "publish",
        "-n",
        "worker",
        "--endpoint",
        "https://top.widemesh.dev",
    ]);
    assert!(out.contains("now a web service"), "{out}");
    assert_eq!(d.service("worker").unwrap().service_type, ServiceType::Web);
    assert_eq!(d.get("top.widemesh.dev", "/").status, 200);

    let out = d.ok(&[
        "svc",
        "unpublish",
        "-n",
        "worker",
        "--endpoint",
        "https://top.widemesh.dev",
    ]);
    assert!(out.contains("is a worker again"), "{out}");
    let worker = d.service("worker").unwrap();
    assert_eq!(worker.service_type, ServiceType::Worker);
    assert!(worker.endpoints.is_empty());
    assert_eq!(d.get("top.widemesh.dev", "/").status, 404);
    // As a worker, `app server` runs its main and waits.
    d.wait_running("worker", 1);

    // Endpoints survive a restart.
    d.ok(&["svc", "publish", "-n", "worker", "--endpoint", "www"]);
    let mut d = d;
    d.restart();
    wait_until(Duration::from_secs(10), "served after the restart", || {
        d.get("www.localhost", "/").status == 200
    });
}

#[test]
fn instances_bound_concurrency_and_overflow_gets_503() {
    let d = Daemon::start_with(&["--queue-per-instance", "1"]);
    web_service(&d, "1", &[]);
    // Instances are reused: the in-memory counter goes up.
    let first = d.get("www.localhost", "/count").body;
    let second = d.get("www.localhost", "/count").body;
    let n = |s: &str| {
        s.trim()
            .trim_start_matches("count: ")
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(n(&second), n(&first) + 1, "{first} then {second}");

    // One instance, one waiting place: of three slow requests at once, one
    // runs, one waits for it, one is refused.
    let addr = d.http_addr();
    let started = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 100 }));
            thread::spawn(move || {
                let r = http_request(&addr, "GET", "www.localhost", "/sleep?ms=700", &[], b"");
                (r, started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let ok: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
    let refused: Vec<_> = results.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!(ok.len(), 2, "{results:?}");
    assert_eq!(refused.len(), 1, "{results:?}");
    assert_eq!(refused[0].0.header("retry-after"), Some("1"));
    assert!(refused[0].0.body.contains("is busy"), "{:?}", refused[0]);
    // The queued one waited for the first: served one after the other.
    let slowest = ok.iter().map(|(_, t)| *t).max().unwrap();
    assert!(slowest >= Duration::from_millis(1400), "{results:?}");
}

#[test]
fn a_trap_fails_one_request_and_restarts_one_instance() {
    let d = Daemon::start();
    web_service(&d, "2", &[]);
    d.wait_running("web", 2);
    let addr = d.http_addr();
    let slow = {
        let addr = addr.clone();
        thread::spawn(move || {
            http_request(&addr, "GET", "www.localhost", "/sleep?ms=400", &[], b"")
        })
    };
    thread::sleep(Duration::from_millis(100));
    let trapped = d.get("www.localhost", "/trap");
    assert_eq!(trapped.status, 500, "{trapped:?}");
    assert!(trapped.body.contains("unreachable"), "{}", trapped.body);
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "the other request was hurt: {slow:?}");
    assert_eq!(slow.body, "slept 400 ms\n");

    let service = d.service("web").unwrap();
    let restarts: u32 = service.instances.iter().map(|i| i.restarts).sum();
    assert_eq!(restarts, 1, "{service:#?}");
    let failed = service.instances.iter().find(|i| i.restarts == 1).unwrap();
    assert!(
        failed
            .message
            .as_deref()
            .unwrap()
            .starts_with("trap: wasm `unreachable`"),
        "{failed:?}"
    );
    // The retired slot comes back after its back-off, and serves again.
    d.wait_running("web", 2);
    for _ in 0..4 {
        assert_eq!(d.get("www.localhost", "/").status, 200);
    }
    let logs = d.log_texts("web");
    assert!(
        logs.iter()
            .any(|l| l.contains("the request got 500; restart 1")),
        "{logs:?}"
    );
}

#[test]
fn fresh_per_request_never_reuses_an_instance() {
    let d = Daemon::start();
    web_service(&d, "1", &["--fresh-per-request"]);
    for _ in 0..3 {
        let r = d.get("www.localhost", "/count");
        assert_eq!(r.body, "count: 1\n", "{r:?}");
    }
    d.ok(&["svc", "update", "web", "--fresh-per-request", "false"]);
    wait_until(Duration::from_secs(5), "an instance is reused", || {
        d.get("www.localhost", "/count");
        d.get("www.localhost", "/count").body != "count: 1\n"
    });
}

#[test]
fn https_and_http2_are_served_for_real() {
    let d = Daemon::start_with(&["--https", "127.0.0.1:0"]);
    web_service(&d, "1", &[]);
    let https = d.info["https_url"].as_str().unwrap().to_string();
    let port = https.rsplit(':').next().unwrap();
    let ca = d.data_dir().join("tls/ca.pem");
    assert_eq!(d.info["ca_file"], ca.to_str().unwrap());
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .expect("curl is installed");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // An endpoint published as https:// is sent to HTTPS from plain HTTP.
    d.ok(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--endpoint",
        "https://secure.example.dev",
    ]);
    let r = http_request(
        &d.http_addr(),
        "GET",
        "secure.example.dev",
        "/a?b=1",
        &[],
        b"",
    );
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://secure.example.dev:{port}/a?b=1").as_str())
    );
    let secure = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("secure.example.dev:{port}:127.0.0.1"),
        &format!("https://secure.example.dev:{port}/"),
    ]);
    assert_eq!(secure, "hello from app\nservice: app-web\n");
    let resolve = format!("www.localhost:{port}:127.0.0.1");
    let url = format!("https://www.localhost:{port}/echo");
    // Verified against the local CA: a real certificate for the host.
    let body = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    assert!(
        body.contains("header: x-forwarded-proto: https\n"),
        "{body}"
    );
    let version = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ]);
    assert_eq!(version, "2", "ALPN did not pick h2");
    // Without trusting the CA, verification fails.
    let untrusted = Command::new("curl")
        .args(["-sS", "--resolve", &resolve, &url])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    // HTTP/2 in clear, by prior knowledge.
    let h2c = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: www.localhost",
        &format!("http://{}/", d.http_addr()),
    ]);
    assert_eq!(h2c, "hello from app\nservice: app-web\n");
}

#[test]
fn oversized_requests_are_refused_and_the_daemon_is_unharmed() {
    let d = Daemon::start_with(&["--max-body-size", "1Ki", "--max-header-size", "2Ki"]);
    web_service(&d, "1", &[]);
    let addr = d.http_addr();
    let big_body = vec![b'x'; 4096];
    let r = http_request(&addr, "POST", "www.localhost", "/echo", &[], &big_body);
    assert_eq!(r.status, 413, "{r:?}");
    // The same body sent chunked (no length up front) is refused too,
    // before the guest sees it.
    let r = http_request_chunked(&addr, "POST", "www.localhost", "/echo", &big_body);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("limit of 1024 bytes"), "{r:?}");
    // A chunked body within the limit reaches the guest whole.
    let small = vec![b'z'; 1000];
    let r = http_request_chunked(&addr, "POST", "www.localhost", "/echo", &small);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(&"z".repeat(1000)), "{r:?}");
    // Heads over a limit below hyper's own 8 KiB floor: still 431.
    let r = http_request(
        &addr,
        "GET",
        "www.localhost",
        "/",
        &[("X-Big", &"y".repeat(4000))],
        b"",
    );
    assert_eq!(r.status, 431, "{r:?}");
    let big_header = "y".repeat(16 * 1024);
    let r = http_request(
        &addr,
        "GET",
        "www.localhost",
        "/",
        &[("X-Big", &big_header)],
        b"",
    );
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(d.get("www.localhost", "/").status, 200);
}

#[test]
fn bad_endpoints_are_refused_with_one_line_and_change_nothing() {
    let d = Daemon::start();
    web_service(&d, "1", &[]);
    d.create("other", &[], &["server"]);
    d.create_service("job", &["--schedule", "@yearly"], &["app", "send-emails"]);
    let before = d.ok(&["service", "ls", "--json"]);
    let without_instances = |text: &str| {
        let mut services: Vec<ServiceView> = parse(text);
        for s in &mut services {
            s.instances.clear();
            s.next_run = None;
        }
        serde_json::to_string(&services).unwrap()
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["-n", "other", "--endpoint", "ftp://x.dev"],
            "scheme must be http or https",
        ),
        (
            &["-n", "other", "--endpoint", "https://"],
            "not a valid host name",
        ),
        (
            &["-n", "other", "--endpoint", "bad_label"],
            "not a valid host name",
        ),
        (
            &["-n", "other", "--endpoint", "www", "--path", "blog"],
            "must start with `/`",
        ),
        (
            &["-n", "nope", "--endpoint", "www"],
            "no service named nope",
        ),
        (
            &["-n", "other", "--endpoint", "www"],
            "is taken by service web in stack app",
        ),
        (
            &["-n", "web", "--endpoint", "www"],
            "already published at http://www.localhost",
        ),
        (&["-n", "job", "--endpoint", "jobs"], "is a cron job"),
        (
            &["-n", "other", "--endpoint", "http://x.dev:0"],
            "is not a port",
        ),
        (
            &["-n", "other", "--endpoint", "http://a.dev/%zz"],
            "invalid path",
        ),
        (
            &["-n", "other", "--endpoint", "http://x.dev/p|q"],
            "invalid path",
        ),
        (
            &["-n", "other", "--endpoint", "https://*.wild.dev"],
            "not a valid host name",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["svc", "publish"];
        args.extend_from_slice(flags);
        let err = d.fails(&args);
        assert!(
            err.contains(expected),
            "mesh {args:?}: expected `{expected}` in: {err}"
        );
    }
    let err = d.fails(&["svc", "unpublish", "-n", "other", "--endpoint", "www"]);
    assert!(
        err.contains("other is not published at http://www.localhost:")
            && err.ends_with("(its endpoints: none)"),
        "{err}"
    );
    let err = d.fails(&["svc", "update", "web", "--schedule", "@daily"]);
    assert!(err.contains("unpublish its endpoints"), "{err}");
    assert_eq!(
        without_instances(&d.ok(&["service", "ls", "--json"])),
        without_instances(&before)
    );
    assert_eq!(d.get("www.localhost", "/").status, 200);
}

/// Deleting a published service takes its URLs offline: without a
/// terminal to ask on, `svc delete` refuses in one line unless given
/// `--yes`, and changes nothing.
#[test]
fn deleting_a_published_service_needs_yes() {
    let d = Daemon::start();
    web_service(&d, "1", &[]);
    let err = d.fails(&["svc", "delete", "web"]);
    assert!(
        err.contains("web is published at http://www.localhost:"),
        "{err}"
    );
    assert!(err.contains("add --yes"), "{err}");
    assert!(d.service("web").is_some());
    d.ok(&["svc", "delete", "web", "--yes"]);
    assert!(d.service("web").is_none());
    // An unpublished one goes without a question.
    d.create("worker", &[], &["queue"]);
    d.ok(&["svc", "delete", "worker"]);
}
