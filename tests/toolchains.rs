//! Code from other toolchains, end to end: wasip1 core modules as workers,
//! cron jobs, interactive runs and CGI web services; components built by
//! componentize-js and componentize-py, which scripts/toolchains.sh
//! builds with pinned versions of those tools.

use crate::support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mesh_host::api::wire::{EnvCreated, VersionView};
use mesh_host::model::{InstanceState, RunStatus};
use support::{create_args, http_request, parse, repo_root, Daemon};

/// The `classic` example, built for wasm32-wasip1 by scripts/setup.sh.
fn classic() -> String {
    let path = repo_root().join("guest-examples/target/wasm32-wasip1/release/classic.wasm");
    assert!(
        path.is_file(),
        "{} is missing: scripts/setup.sh builds it",
        path.display()
    );
    path.to_str().unwrap().to_string()
}

#[test]
fn core_modules_run_as_workers_with_args_env_exit_codes_and_memory_limits() {
    let d = Daemon::start();
    let module = classic();
    d.create_service("greeter", &["-e", "GREETING=hi there"], &[&module, "hello"]);
    // It runs, exits 0, and is restarted like any worker that exits.
    d.wait_for("greeter", Duration::from_secs(20), "a restart", |s| {
        s.instances.iter().any(|i| i.restarts >= 1)
    });
    let logs = d.log_texts("greeter");
    assert!(logs.iter().any(|l| l == "hello from wasip1"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "args: classic hello"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "GREETING=hi there"), "{logs:?}");

    // proc_exit(N) gives N.
    d.create_service("quitter", &[], &["classic", "exit", "7"]);
    let service = d.wait_for("quitter", Duration::from_secs(20), "exit code 7", |s| {
        s.instances.iter().any(|i| i.exit_code == Some(7))
    });
    assert!(
        service.instances[0]
            .message
            .as_deref()
            .unwrap()
            .contains("exited with code 7"),
        "{service:#?}"
    );

    // The memory limit holds for a module's memory too.
    d.create_service("hungry", &["--memory", "16Mi"], &["classic", "alloc", "64"]);
    let service = d.wait_for("hungry", Duration::from_secs(20), "out of memory", |s| {
        s.instances.iter().any(|i| {
            i.message
                .as_deref()
                .is_some_and(|m| m.contains("exceeded memory limit 16 MiB"))
        })
    });
    assert!(service.instances[0].exit_code.is_none(), "{service:#?}");

    // A trap is reported as one.
    d.create_service("trapper", &[], &["classic", "trap"]);
    d.wait_for("trapper", Duration::from_secs(20), "a trap", |s| {
        s.instances
            .iter()
            .any(|i| i.message.as_deref().is_some_and(|m| m.starts_with("trap:")))
    });
}

#[test]
fn core_modules_run_as_cron_jobs_and_interactive_runs() {
    let d = Daemon::start();
    let module = classic();
    d.create_service(
        "nightly",
        &["--schedule", "@every 1s"],
        &[&module, "exit", "3"],
    );
    let job = d.wait_for("nightly", Duration::from_secs(20), "two runs", |s| {
        s.runs.len() >= 2
    });
    let ended: Vec<_> = job
        .runs
        .iter()
        .filter(|r| r.status != RunStatus::Running)
        .collect();
    assert!(!ended.is_empty(), "{job:#?}");
    assert!(ended.iter().all(|r| r.exit_code == Some(3)), "{job:#?}");

    // `mesh run` runs a module once, with its exit code, stdout and stdin.
    let out = d.mesh(&["run", "--", &module, "exit", "5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exiting with 5\n");
    let mut cat = d
        .mesh_cmd(&["run", "--", &module, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = cat.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
}

#[test]
fn a_published_core_module_serves_requests_as_cgi() {
    let d = Daemon::start();
    let module = classic();
    d.create_service("cgi", &["--instances", "2"], &[&module]);
    d.ok(&["svc", "publish", "-n", "cgi", "--endpoint", "www"]);
    d.wait_running("cgi", 2);
    let addr = d.http_addr();
    let r = http_request(
        &addr,
        "GET",
        "www.localhost",
        "/hello/there?x=1&y=2",
        &[("user-agent", "tester/1")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-served-by"), Some("classic"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.body,
        "method=GET\npath=/hello/there\nquery=x=1&y=2\nagent=tester/1\nbody=\n"
    );
    let r = http_request(&addr, "POST", "www.localhost", "/form", &[], b"a=1&b=2");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("method=POST\n"), "{}", r.body);
    assert!(r.body.ends_with("body=a=1&b=2\n"), "{}", r.body);
    let r = d.get("www.localhost", "/missing");
    assert_eq!((r.status, r.body.as_str()), (404, "no such page\n"));
    // A response head is bounded as a request head is (64 KiB): one of
    // 100,000 bytes is not passed on.
    let r = d.get("www.localhost", "/big-head?1000");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-big").map(str::len), Some(1000));
    let r = d.get("www.localhost", "/big-head?100000");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("response head of 100"), "{}", r.body);
    assert!(r.header("x-big").is_none());
    // A request whose run fails gets 500 and a line in the log; it is the
    // request's failure, not the service's: no restart, no back-off a
    // client could cause.
    for _ in 0..5 {
        let r = d.get("www.localhost", "/trap");
        assert_eq!(r.status, 500, "{r:?}");
        assert!(r.body.contains("trap"), "{}", r.body);
    }
    let service = d.service("cgi").unwrap();
    assert_eq!(service.serving, "fresh per request", "{service:#?}");
    assert_eq!(
        service.fresh_because.as_deref(),
        Some("a wasip1 module answers each request as a CGI program of its own")
    );
    assert!(
        service
            .instances
            .iter()
            .all(|i| i.restarts == 0 && i.state == InstanceState::Running),
        "{service:#?}"
    );
    assert!(
        d.log_texts("cgi")
            .iter()
            .any(|l| l.starts_with("[mesh] CGI request failed: trap")),
        "{:?}",
        d.log_texts("cgi")
    );
    // Every request is its own run: many in a row all answer.
    for i in 0..30 {
        let r = d.get("www.localhost", &format!("/n{i}"));
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert!(r.body.contains(&format!("path=/n{i}\n")), "{}", r.body);
    }
}

/// A core module built by hand: `bytes` after the header.
fn module_file(dir: &std::path::Path, name: &str, sections: &[u8]) -> PathBuf {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(sections);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn core_modules_that_cannot_run_are_refused_in_one_line() {
    let d = Daemon::start();
    let dir = d.scratch();
    // Imports `env::foo`: a type section with `() -> ()`, then the import.
    let imports_env = module_file(
        &dir,
        "imports-env.wasm",
        &[
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types
            0x02, 0x0b, 0x01, 0x03, b'e', b'n', b'v', 0x03, b'f', b'o', b'o', 0x00, 0x00,
        ],
    );
    let err = d.fails(&create_args("x", &[], &[imports_env.to_str().unwrap()]));
    assert!(err.contains("imports `env::foo`"), "{err}");
    assert!(err.contains("wasi_snapshot_preview1"), "{err}");
    let no_start = module_file(&dir, "library.wasm", &[]);
    let err = d.fails(&create_args("x", &[], &[no_start.to_str().unwrap()]));
    assert!(err.contains("without a `_start` function"), "{err}");
    let err = d.fails(&["run", "--", no_start.to_str().unwrap()]);
    assert!(err.contains("without a `_start` function"), "{err}");
    // Nothing was made.
    assert!(d.services().is_empty());
    let stacks = d.ok(&["stack", "ls", "--json"]);
    assert!(!stacks.contains("imports-env"), "{stacks}");
}

/// The `classic` example built as a component (wasm32-wasip2).
fn classic_component() -> String {
    support::guest("classic").to_str().unwrap().to_string()
}

/// A stack directory: `classic.wasm` (the component, or the module when
/// `module`) and a `files/` folder with `hello.txt` saying `hello`.
fn site(d: &Daemon, name: &str, hello: &str, module: bool) -> PathBuf {
    let dir = d.scratch().join(name);
    std::fs::create_dir_all(dir.join("files/static")).unwrap();
    std::fs::create_dir_all(dir.join("files/config")).unwrap();
    let code = if module {
        classic()
    } else {
        classic_component()
    };
    std::fs::copy(code, dir.join("classic.wasm")).unwrap();
    std::fs::write(dir.join("files/hello.txt"), hello).unwrap();
    std::fs::write(dir.join("files/static/site.css"), "h1 { color: teal }\n").unwrap();
    std::fs::write(dir.join("files/config/app.toml"), "debug = false\n").unwrap();
    dir
}

/// Runs `mesh svc run -n NAME -- ARGV` in `stack`; (exit code, stdout).
fn run_in(d: &Daemon, stack: &str, name: &str, argv: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["svc", "run", "-n", name, "--stack", stack, "--"];
    args.extend_from_slice(argv);
    let out = d.mesh(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_stacks_files_are_versioned_and_seen_read_only_at_the_root() {
    let d = Daemon::start();
    let v1 = site(&d, "v1", "hello one\n", false);
    let out = d.ok(&["stack", "deploy", "site", v1.to_str().unwrap()]);
    assert!(out.contains("classic, files/"), "{out}");
    d.create_service(
        "reader",
        &["--stack", "site", "--instances", "0"],
        &["classic", "read", "/hello.txt"],
    );
    assert_eq!(
        run_in(&d, "site", "reader", &["classic", "read", "/hello.txt"]),
        (Some(0), "hello one\n".to_string())
    );
    // Relative names resolve from `/`, as under `wasmtime run --dir`.
    assert_eq!(
        run_in(
            &d,
            "site",
            "reader",
            &["classic", "read", "config/app.toml"]
        ),
        (Some(0), "debug = false\n".to_string())
    );
    assert_eq!(
        run_in(&d, "site", "reader", &["classic", "ls", "/"]),
        (Some(0), "config hello.txt static\n".to_string())
    );
    // Nothing else of the host is there, and nothing can be written.
    for path in [
        "/etc/passwd",
        "../../../../etc/passwd",
        "/static/../../etc/hostname",
    ] {
        let (code, out) = run_in(&d, "site", "reader", &["classic", "read", path]);
        // A component's exit(4) reaches the host as a plain failure, 1,
        // as under `wasmtime run`.
        assert_eq!(code, Some(1), "{path}: {out}");
        assert!(out.starts_with("cannot read"), "{path}: {out}");
    }
    let (code, out) = run_in(
        &d,
        "site",
        "reader",
        &["classic", "write", "/hello.txt", "1"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("wrote 0 MiB to /hello.txt, then:"), "{out}");
    assert!(
        std::fs::read_to_string(v1.join("files/hello.txt")).unwrap() == "hello one\n",
        "the deployed folder is untouched"
    );

    // A new version brings new files; a rollback brings the old ones back.
    let v2 = site(&d, "v2", "hello two\n", false);
    d.ok(&["stack", "deploy", "site", v2.to_str().unwrap()]);
    assert_eq!(
        run_in(&d, "site", "reader", &["classic", "read", "/hello.txt"]).1,
        "hello two\n"
    );
    d.ok(&["stack", "rollback", "site"]);
    assert_eq!(
        run_in(&d, "site", "reader", &["classic", "read", "/hello.txt"]).1,
        "hello one\n"
    );

    // A core module sees them too, and serves them over CGI.
    let p1 = site(&d, "p1", "hello module\n", true);
    d.ok(&["stack", "deploy", "classic-site", p1.to_str().unwrap()]);
    d.create_service("web", &["--stack", "classic-site"], &["classic"]);
    d.ok(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--stack",
        "classic-site",
        "--endpoint",
        "www",
    ]);
    d.wait_running("web", 1);
    let r = d.get("www.localhost", "/static/site.css");
    assert_eq!((r.status, r.body.as_str()), (200, "h1 { color: teal }\n"));
    let r = d.get("www.localhost", "/static/../../../etc/passwd");
    assert_ne!(r.status, 200, "{r:?}");

    // `mesh run --files` gives a one-off run a folder of its own.
    let out = d.mesh(&[
        "run",
        "--files",
        p1.join("files").to_str().unwrap(),
        "--",
        &classic(),
        "read",
        "/hello.txt",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello module\n");
}

#[test]
fn a_tenant_cannot_use_another_tenants_files_by_digest() {
    let d = Daemon::start();
    let dir = site(&d, "secret", "the operator's secret\n", false);
    d.ok(&["stack", "deploy", "site", dir.to_str().unwrap()]);
    let versions: Vec<VersionView> = parse(&d.ok(&["stack", "versions", "site", "--json"]));
    let files = versions[0].components["files/"].to_string();
    let code = versions[0].components["classic"].to_string();
    let created: EnvCreated = parse(&d.ok(&["env", "create", "t2", "--json"]));
    let token = created.token;
    let api = d.info["api_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let auth = format!("Bearer {token}");
    // Naming the operator's digests gets what naming nothing gets.
    let body =
        format!(r#"{{"components":{{"files/":"{files}","classic":"{code}"}},"replace":true}}"#);
    let r = http_request(
        &api,
        "POST",
        &api,
        "/v1/stacks/mine/deploy",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("no code with digest"), "{}", r.body);
    let path = format!("/v1/run?digest={code}&files={files}");
    let r = http_request(
        &api,
        "POST",
        &api,
        &path,
        &[
            ("Authorization", &auth),
            ("Connection", "Upgrade"),
            ("Upgrade", "mesh-run"),
        ],
        b"",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("no code with digest"), "{}", r.body);
}

#[test]
fn files_that_leave_their_folder_or_are_too_large_are_refused() {
    let d = Daemon::start();
    let dir = site(&d, "bad", "hi\n", false);
    std::fs::write(d.scratch().join("secret"), "no").unwrap();
    std::os::unix::fs::symlink("../../secret", dir.join("files/leak")).unwrap();
    let err = d.fails(&["stack", "deploy", "bad", dir.to_str().unwrap()]);
    assert!(
        err.contains("leak is a symlink pointing out of the folder"),
        "{err}"
    );
    std::fs::remove_file(dir.join("files/leak")).unwrap();
    let big = std::fs::File::create(dir.join("files/huge.bin")).unwrap();
    big.set_len(65 << 20).unwrap();
    let err = d.fails(&["stack", "deploy", "bad", dir.to_str().unwrap()]);
    assert!(err.contains("holds more than 64 MiB"), "{err}");
    // Nothing was made.
    let stacks = d.ok(&["stack", "ls", "--json"]);
    assert!(!stacks.contains("\"bad\""), "{stacks}");
}

#[test]
fn scratch_space_is_private_capped_and_wiped() {
    let d = Daemon::start();
    let component = classic_component();
    // Within the cap: written; past it: the guest gets an error, and the
    // daemon goes on.
    let out = d.mesh(&[
        "run",
        "--scratch",
        "4Mi",
        "--",
        &component,
        "write",
        "/tmp/small",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = d.mesh(&[
        "run",
        "--scratch",
        "4Mi",
        "--",
        &component,
        "write",
        "/tmp/big",
        "16",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("wrote 3 MiB to /tmp/big, then:")
            || text.starts_with("wrote 4 MiB to /tmp/big, then:"),
        "{text}"
    );
    // Each run starts with an empty scratch directory.
    let out = d.mesh(&["run", "--scratch", "4Mi", "--", &component, "ls", "/tmp"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\n");
    // Without --scratch there is nowhere to write.
    let out = d.mesh(&["run", "--", &classic(), "write", "/tmp/x", "1"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a module keeps its exit code: {out:?}"
    );

    // A service's instances each get one, and a module's too.
    d.create_service(
        "writer",
        &["--scratch", "8Mi"],
        &[&classic(), "write", "/tmp/data", "2"],
    );
    d.wait_for("writer", Duration::from_secs(20), "a clean exit", |s| {
        s.instances.iter().any(|i| i.restarts >= 1)
    });
    let logs = d.log_texts("writer");
    assert!(
        logs.iter().any(|l| l == "wrote 2 MiB to /tmp/data"),
        "{logs:?}"
    );
    let service = d.service("writer").unwrap();
    assert_eq!(service.settings.scratch_bytes, Some(8 << 20));
    // Scratch directories go with their instances.
    d.ok(&["svc", "delete", "-n", "writer"]);
    let scratch = d.data_dir().join("scratch");
    support::wait_until(Duration::from_secs(10), "scratch mounts are gone", || {
        std::fs::read_dir(&scratch).unwrap().count() == 0
    });
    let err = d.fails(&create_args("x", &["--scratch", "2Gi"], &["classic"]));
    assert!(err.contains("invalid --scratch"), "{err}");
}

/// A component built by scripts/toolchains.sh from another language.
fn other(name: &str) -> String {
    let path = repo_root().join("guest-examples/target/other").join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/toolchains.sh builds it (scripts/test.sh runs it)",
        path.display()
    );
    path.to_str().unwrap().to_string()
}

#[test]
fn a_javascript_component_serves_every_request_with_default_settings() {
    let d = Daemon::start();
    let js = other("jshello.wasm");
    d.create_service("js", &["--instances", "2"], &[&js]);
    d.ok(&["svc", "publish", "-n", "js", "--endpoint", "www"]);
    d.wait_running("js", 2);
    // componentize-js answers only the first request of an instance; mesh
    // sees that on the first reused instance, serves the request again on
    // a fresh one, and no client sees a failure.
    for i in 0..50 {
        let r = d.get("www.localhost", "/");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "hello from js\n"),
            "request {i}"
        );
    }
    let service = d.service("js").unwrap();
    assert_eq!(service.serving, "fresh per request", "{service:#?}");
    assert_eq!(
        service.fresh_because.as_deref(),
        Some("jshello returned without a response on a reused instance")
    );
    assert!(
        service.instances.iter().all(|i| i.restarts == 0),
        "nothing failed: {service:#?}"
    );
    // Every request has an instance of its own from now on.
    assert_eq!(d.get("www.localhost", "/count").body, "count 1\n");
    assert_eq!(d.get("www.localhost", "/count").body, "count 1\n");
    let table = d.ok(&["svc", "ls"]);
    assert!(
        table.contains(
            "fresh per request: jshello returned without a response on a reused instance"
        ),
        "{table}"
    );
    let events = d.ok(&["events", "--json"]);
    assert!(events.contains("service.fresh_per_request"), "{events}");

    // Called by name from another service (a Rust one).
    d.create_service(
        "gateway",
        &[],
        &[&support::app_wasm().to_string_lossy(), "server"],
    );
    d.ok(&["svc", "publish", "-n", "gateway", "--endpoint", "gw"]);
    d.wait_running("gateway", 1);
    for _ in 0..5 {
        let r = d.get("gw.localhost", "/call?url=http%3A%2F%2Fapp-js%2F");
        assert_eq!(r.body, "status: 200\nhello from js\n", "{r:?}");
    }

    // Reuse can still be forced; then the component's own failure shows.
    d.ok(&["svc", "update", "-n", "js", "--reuse-instances", "true"]);
    let service = d.wait_for("js", Duration::from_secs(20), "reuse forced", |s| {
        s.settings.always_reuse && s.serving == "reused"
    });
    assert!(service.fresh_because.is_none(), "{service:#?}");
    let statuses: Vec<u16> = (0..6).map(|_| d.get("www.localhost", "/").status).collect();
    assert!(statuses.contains(&500), "{statuses:?}");
    // And fresh per request can be asked for outright.
    d.ok(&["svc", "update", "-n", "js", "--fresh-per-request", "true"]);
    let service = d.wait_for("js", Duration::from_secs(20), "fresh by setting", |s| {
        s.settings.fresh_per_request
    });
    assert_eq!(
        service.fresh_because.as_deref(),
        Some("--fresh-per-request is set")
    );
    for _ in 0..10 {
        assert_eq!(d.get("www.localhost", "/").status, 200);
    }
    let err = d.fails(&[
        "svc",
        "update",
        "-n",
        "js",
        "--fresh-per-request",
        "true",
        "--reuse-instances",
        "true",
    ]);
    assert!(err.contains("contradict"), "{err}");
}

#[test]
fn a_javascript_component_with_its_own_handler_is_reused() {
    let d = Daemon::start();
    let js = other("jshandler.wasm");
    d.create_service("js", &[], &[&js]);
    d.ok(&["svc", "publish", "-n", "js", "--endpoint", "www"]);
    d.wait_running("js", 1);
    let bodies: Vec<String> = (0..30)
        .map(|_| d.get("www.localhost", "/count").body)
        .collect();
    assert_eq!(
        bodies.last().unwrap(),
        "count 30
",
        "{bodies:?}"
    );
    let service = d.service("js").unwrap();
    assert_eq!(service.serving, "reused", "{service:#?}");
    assert!(service.fresh_because.is_none());
}

#[test]
fn a_request_with_a_body_is_not_sent_twice() {
    let d = Daemon::start();
    let js = other("jshello.wasm");
    d.create_service("js", &[], &[&js]);
    d.ok(&["svc", "publish", "-n", "js", "--endpoint", "www"]);
    d.wait_running("js", 1);
    assert_eq!(d.get("www.localhost", "/").status, 200);
    // The instance was reused for a POST whose body it read: the request
    // cannot be replayed, so it gets a clear 502, and the service is
    // fresh per request from then on.
    let r = http_request(
        &d.http_addr(),
        "POST",
        "www.localhost",
        "/",
        &[],
        b"payload",
    );
    assert!(
        r.status == 502 || r.status == 405,
        "a reused instance answers or fails clearly: {r:?}"
    );
    if r.status == 502 {
        assert!(r.body.contains("not sent again"), "{}", r.body);
    }
    d.wait_for("js", Duration::from_secs(10), "fresh", |s| {
        s.serving == "fresh per request"
    });
    assert_eq!(d.get("www.localhost", "/").status, 200);
}

#[test]
fn a_python_component_is_reused_and_a_python_command_runs() {
    let d = Daemon::start();
    let py = other("pyhello.wasm");
    d.create_service("py", &[], &[&py]);
    d.ok(&["svc", "publish", "-n", "py", "--endpoint", "www"]);
    d.wait_for("py", Duration::from_secs(60), "running", |s| {
        s.instances
            .iter()
            .all(|i| i.state == InstanceState::Running)
    });
    let bodies: Vec<String> = (0..20)
        .map(|_| {
            let r = d.get("www.localhost", "/count");
            assert_eq!(r.status, 200, "{r:?}");
            r.body
        })
        .collect();
    // One instance served them all, counting.
    assert_eq!(bodies.last().unwrap(), "count 20\n", "{bodies:?}");
    assert_eq!(d.get("www.localhost", "/").body, "hello from python\n");
    let service = d.service("py").unwrap();
    assert_eq!(service.serving, "reused", "{service:#?}");

    let cli = other("pycli.wasm");
    let out = d.mesh(&["run", "--", &cli, "one", "two"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello from python"), "{text}");
    let out = d.mesh(&["run", "--", &cli, "fail"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
}
