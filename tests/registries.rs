//! Code deployed straight from a real OCI registry (Debian's
//! docker-registry on loopback, over TLS, with basic or token auth), pushed
//! there by skopeo and oras: pinned by digest, logins sealed and kept per
//! environment, failures in one line that change nothing.

use std::io::Write as _;
use std::process::Stdio;

use crate::support::registry::{Auth, Registry};
use crate::support::{self, app_wasm, parse, variant, Daemon};
use mesh_host::api::wire::{RegistryLoginView, ServiceView, StackView, VersionView};

/// A daemon that trusts `registry`'s CA.
/// A daemon that trusts `registry`'s CA and lets tenants pull from it
/// (it is on loopback).
fn daemon_for(registry: &Registry) -> Daemon {
    Daemon::start_with(&[
        "--registry-ca",
        registry.ca().to_str().unwrap(),
        "--private-registry",
        &registry.address,
    ])
}

/// `mesh registry login ADDR --username USER --password-stdin` as the
/// holder of `token` (the operator's when `None`), the password on stdin.
fn login(
    d: &Daemon,
    token: Option<&str>,
    registry: &Registry,
    user: &str,
    password: &str,
) -> std::process::Output {
    let mut cmd = d.mesh_cmd(&[
        "registry",
        "login",
        &registry.address,
        "--username",
        user,
        "--password-stdin",
    ]);
    if let Some(token) = token {
        cmd.env("MESH_TOKEN", token)
            .env("MESH_API_URL", d.info["api_url"].as_str().unwrap());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

fn versions(d: &Daemon, stack: &str) -> Vec<VersionView> {
    parse(&d.ok(&["stack", "versions", stack, "--json"]))
}

#[test]
fn a_component_from_a_registry_serves_and_stays_pinned_to_its_digest() {
    let registry = Registry::start(Auth::Basic);
    let v1 = registry.push_wasm(&app_wasm(), "team/app:v1");
    let d = daemon_for(&registry);
    let reference = registry.reference("team/app:v1");

    // Anonymous: the registry wants a login, and nothing is made.
    let err = d.fails(&["stack", "deploy", "app", &reference]);
    assert!(
        err.contains(&reference)
            && err.contains("wants a login")
            && err.contains("mesh registry login"),
        "{err}"
    );
    // A wrong password is refused as such.
    let out = login(&d, None, &registry, "alice", "not-the-password");
    assert!(out.status.success(), "{out:?}");
    let err = d.fails(&["stack", "deploy", "app", &reference]);
    assert!(err.contains("refused this environment's login"), "{err}");
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    assert!(
        stacks.iter().all(|s| s.name != "app"),
        "a failed pull made a stack"
    );

    let password = registry.password("alice");
    let out = login(&d, None, &registry, "alice", &password);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Logged in to") && !said.contains(&password),
        "{said}"
    );
    let logins: Vec<RegistryLoginView> = parse(&d.ok(&["registry", "ls", "--json"]));
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].username, "alice");
    let listed = d.ok(&["registry", "ls"]);
    assert!(!listed.contains(&password), "{listed}");
    // Nothing in the state store reads back as the password.
    let mut store = std::fs::read(d.data_dir().join("state.db")).unwrap();
    if let Ok(wal) = std::fs::read(d.data_dir().join("state.db-wal")) {
        store.extend(wal);
    }
    assert!(
        !store
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password is in the state store"
    );

    let out = d.ok(&["stack", "deploy", "app", &reference]);
    assert!(
        out.contains(&format!("Pulled {reference} ({v1}) as component app")),
        "{out}"
    );
    d.create_service("web", &[], &["app", "server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    support::wait_until(std::time::Duration::from_secs(20), "web answers", || {
        d.get("www.localhost", "/").status == 200
    });
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    let app = stacks.iter().find(|s| s.name == "app").unwrap();
    assert_eq!(app.sources["app"].reference, reference);
    assert_eq!(app.sources["app"].digest, v1);
    let web: Vec<ServiceView> = parse(&d.ok(&["svc", "ls", "web", "--json"]));
    assert_eq!(web[0].source.as_ref().unwrap().digest, v1);
    // The component's digest is its layer's: the same as uploading it.
    assert_eq!(
        app.components["app"].as_str(),
        support::oci::sha256(&std::fs::read(app_wasm()).unwrap())
    );

    // The same reference again: resolved again, the same digest, no new version.
    let out = d.ok(&["stack", "deploy", "app", &reference]);
    assert!(
        out.contains(&format!("app is already at {v1} (v1); nothing changed")),
        "{out}"
    );
    assert_eq!(versions(&d, "app").len(), 1);

    // The tag moves to a new build: a deploy makes v2 with the new digest.
    let build2 = variant(&app_wasm(), &d.scratch(), "app", "v2");
    let v2 = registry.push_wasm(&build2, "team/app:v1");
    assert_ne!(v1, v2);
    let out = d.ok(&["stack", "deploy", "app", &reference]);
    assert!(
        out.contains(&format!("({v2})")) && out.contains("Deployed app v2"),
        "{out}"
    );
    let list = versions(&d, "app");
    assert_eq!(list[0].sources["app"].digest, v2);
    assert!(list[0].reason.contains(&reference), "{}", list[0].reason);

    // The old digest has no tag now; a rollback uses the digest the
    // version kept and asks the registry nothing.
    let asked = registry.requests();
    d.ok(&["stack", "rollback", "app", "--to", "1"]);
    let list = versions(&d, "app");
    assert_eq!(list[0].number, 3);
    assert_eq!(list[0].sources["app"].digest, v1);
    assert_eq!(registry.requests(), asked, "a rollback asked the registry");
    support::wait_until(std::time::Duration::from_secs(20), "web on v3", || {
        d.service("web")
            .is_some_and(|s| s.instances.iter().all(|i| i.version == 3))
    });
    assert_eq!(d.get("www.localhost", "/").status, 200);

    // Logging out makes pulls anonymous again.
    d.ok(&["registry", "logout", &registry.address]);
    let err = d.fails(&["stack", "deploy", "app", &reference]);
    assert!(err.contains("wants a login"), "{err}");
    let err = d.fails(&["registry", "logout", &registry.address]);
    assert!(err.contains("no login for registry"), "{err}");
}

#[test]
fn a_failed_pull_says_why_in_one_line_and_changes_nothing() {
    let registry = Registry::start(Auth::Basic);
    registry.push_wasm(&app_wasm(), "team/app:v1");
    let d = daemon_for(&registry);
    let out = login(&d, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");
    d.ok(&["stack", "deploy", "app", &registry.reference("team/app:v1")]);
    d.create_service("worker", &[], &["app", "queue"]);
    let before = versions(&d, "app");

    let err = d.fails(&[
        "stack",
        "deploy",
        "app",
        &registry.reference("team/app:nope"),
    ]);
    assert!(
        err.contains("team/app:nope") && err.contains("not found"),
        "{err}"
    );
    let err = d.fails(&[
        "stack",
        "deploy",
        "app",
        &registry.reference("team/missing:v1"),
    ]);
    assert!(err.contains("not found"), "{err}");
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let err = d.fails(&[
        "stack",
        "deploy",
        "app",
        &format!("{}@{digest}", registry.reference("team/app")),
    ]);
    assert!(err.contains("not found"), "{err}");
    // Nothing listens there: the pull tries a few times, then says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = d.fails(&[
        "stack",
        "deploy",
        "app",
        &format!("127.0.0.1:{port}/team/app:v1"),
    ]);
    assert!(
        err.contains("cannot reach 127.0.0.1:") && err.contains("3 tries"),
        "{err}"
    );
    // A registry whose certificate chains to no CA the daemon trusts.
    let stranger = Daemon::start();
    let err = stranger.fails(&["stack", "deploy", "app", &registry.reference("team/app:v1")]);
    assert!(
        err.contains("cannot reach") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    // A plain-HTTP registry (allowed by --insecure-registry) that fails
    // with 503: tried a bounded number of times, then said.
    let failing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let failing_at = failing.local_addr().unwrap().to_string();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    std::thread::spawn(move || {
        for stream in failing.incoming() {
            let Ok(mut stream) = stream else { break };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut head);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy",
            );
        }
    });
    let plain = Daemon::start_with(&["--insecure-registry", &failing_at]);
    let err = plain.fails(&[
        "stack",
        "deploy",
        "app",
        &format!("{failing_at}/team/app:v1"),
    ]);
    assert!(err.contains("answered 503 3 times"), "{err}");
    let tries = asked.load(std::sync::atomic::Ordering::SeqCst);
    // Each try may probe /v2/ before asking for the manifest.
    assert!(
        (3..=7).contains(&tries),
        "{tries} requests to a failing registry"
    );
    // Without the flag, the same registry is spoken to over HTTPS only.
    let strict = Daemon::start();
    let err = strict.fails(&[
        "stack",
        "deploy",
        "app",
        &format!("{failing_at}/team/app:v1"),
    ]);
    assert!(err.contains("cannot reach"), "{err}");
    // A tenant's pull never reaches a loopback or private address the
    // operator did not name with --private-registry.
    let tenant = strict.new_env("t1", &[]);
    let out = strict.mesh_as(
        &tenant,
        &["stack", "deploy", "app", &registry.reference("team/app:v1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("is at a loopback address")
            && err.contains("--private-registry"),
        "{err}"
    );

    assert_eq!(
        versions(&d, "app"),
        before,
        "a failed pull changed the stack"
    );
    assert!(d.service("worker").is_some_and(|s| s.version == 1));
}

#[test]
fn one_environments_login_never_serves_another_with_token_auth() {
    let registry = Registry::start(Auth::Token);
    let digest = registry.push_wasm(&app_wasm(), "team/app:v1");
    let d = daemon_for(&registry);
    let acme = d.new_env("acme", &[]);
    let globex = d.new_env("globex", &[]);
    let reference = registry.reference("team/app:v1");

    let out = login(
        &d,
        Some(&acme),
        &registry,
        "alice",
        &registry.password("alice"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = d.ok_as(&acme, &["stack", "deploy", "app", &reference]);
    assert!(out.contains(&format!("({digest})")), "{out}");
    assert!(
        registry.issuer_log().contains("user=alice"),
        "{}",
        registry.issuer_log()
    );

    // globex has no login: the registry's token issuer gives it nothing,
    // and acme's login (or a token it earned) is never used for it.
    let out = d.mesh_as(&globex, &["stack", "deploy", "app", &reference]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wants a login"),
        "{err}"
    );
    let logins: Vec<RegistryLoginView> = parse(&d.ok_as(&globex, &["registry", "ls", "--json"]));
    assert!(logins.is_empty(), "globex sees acme's login");
    // A wrong password for bob: refused by the token issuer.
    let out = login(&d, Some(&globex), &registry, "bob", "wrong");
    assert!(out.status.success());
    let out = d.mesh_as(&globex, &["stack", "deploy", "app", &reference]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused this environment's login"), "{err}");
    let out = login(
        &d,
        Some(&globex),
        &registry,
        "bob",
        &registry.password("bob"),
    );
    assert!(out.status.success());
    d.ok_as(&globex, &["stack", "deploy", "app", &reference]);
    assert!(
        registry.issuer_log().contains("user=bob"),
        "{}",
        registry.issuer_log()
    );
}

#[test]
fn images_from_a_registry_run_and_share_their_blobs() {
    let registry = Registry::start(Auth::Basic);
    let oci = registry.push_image(
        &std::path::PathBuf::from(support::image("busybox.tar")),
        "base/busybox:1",
    );
    let docker = registry.push_image(
        &std::path::PathBuf::from(support::image("busybox-docker.tar")),
        "docker/busybox:1",
    );
    let node = registry.push_image(
        &std::path::PathBuf::from(support::image("node-image.tar")),
        "team/node:20",
    );
    let d = Daemon::start_process_with(&["--registry-ca", registry.ca().to_str().unwrap()]);
    let out = login(&d, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");

    // An OCI image: a worker, and a web service published on its $PORT.
    let out = d.ok(&[
        "stack",
        "deploy",
        "boxes",
        &registry.reference("base/busybox:1"),
    ]);
    assert!(
        out.contains(&format!("({oci}) as component busybox")),
        "{out}"
    );
    let fetched = registry.blob_gets("base/busybox");
    assert!(fetched >= 2, "config and layer: {fetched}");
    support::busybox_web_service(&d, 1);
    support::wait_until(std::time::Duration::from_secs(30), "httpd answers", || {
        d.get("www.localhost", "/").status == 200
    });
    let web: Vec<ServiceView> = parse(&d.ok(&["svc", "ls", "web", "--stack", "boxes", "--json"]));
    assert_eq!(web[0].source.as_ref().unwrap().digest, oci);

    // The same image under another name: every blob is here already, and
    // the image is byte for byte the same code.
    let out = d.ok(&[
        "stack",
        "deploy",
        "more",
        &registry.reference("base/busybox:1"),
        "--name",
        "box",
    ]);
    assert!(out.contains("0 blobs fetched, 2 already here"), "{out}");
    assert_eq!(
        registry.blob_gets("base/busybox"),
        fetched,
        "a cached blob was fetched again"
    );
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    let code =
        |s: &str, c: &str| stacks.iter().find(|x| x.name == s).unwrap().components[c].clone();
    assert_eq!(code("boxes", "busybox"), code("more", "box"));

    // An image built on the same base: only its own blobs are fetched.
    let derived = derived_image(&d.scratch());
    registry.push_image(&derived, "team/derived:1");
    let out = d.ok(&[
        "stack",
        "deploy",
        "derived",
        &registry.reference("team/derived:1"),
        "--name",
        "box",
    ]);
    assert!(out.contains("2 blobs fetched, 1 already here"), "{out}");
    assert_eq!(
        registry.blob_gets("team/derived"),
        2,
        "the base layer was fetched again"
    );

    // A Docker v2 schema 2 image (skopeo keeps docker-archive's format).
    let out = d.ok(&[
        "stack",
        "deploy",
        "dock",
        &registry.reference("docker/busybox:1"),
    ]);
    assert!(out.contains(&format!("({docker})")), "{out}");
    d.create_service(
        "hi",
        &["--stack", "dock"],
        &[
            "busybox",
            "sh",
            "-c",
            "echo hi from the registry; sleep 600",
        ],
    );
    support::wait_until(std::time::Duration::from_secs(30), "its line", || {
        d.ok(&["svc", "logs", "-n", "hi", "--stack", "dock"])
            .contains("hi from the registry")
    });

    // The seed's node cron job, from the registry (`node` names no
    // component, so the stack's one image runs it).
    d.ok(&[
        "stack",
        "deploy",
        "mail",
        &registry.reference("team/node:20"),
        "--name",
        "node-image",
    ]);
    d.create_service(
        "emailsender",
        &[
            "--stack",
            "mail",
            "--schedule",
            "@every 1s",
            "-e",
            "EMAILS_DUE=1",
        ],
        &["node", "send-emails.js"],
    );
    support::wait_until(
        std::time::Duration::from_secs(30),
        "a run sends its email",
        || {
            d.ok(&["svc", "logs", "-n", "emailsender", "--stack", "mail"])
                .contains("sent email 1 of 1")
        },
    );
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    assert_eq!(
        stacks.iter().find(|s| s.name == "mail").unwrap().sources["node-image"].digest,
        node
    );
}

#[test]
fn services_name_registry_references_and_call_each_other_by_name() {
    let registry = Registry::start(Auth::Basic);
    let js = support::repo_root().join("guest-examples/target/other/jshello.wasm");
    assert!(
        js.is_file(),
        "scripts/toolchains.sh builds {}",
        js.display()
    );
    let js_digest = registry.push_wasm(&js, "team/jshello:1");
    registry.push_wasm(&app_wasm(), "team/gateway:1");
    let d = daemon_for(&registry);
    let out = login(&d, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");

    // `svc create -- REF ARGV`: the reference names the code; the
    // repository's last part names the component.
    d.create_service("js", &[], &[&registry.reference("team/jshello:1")]);
    d.create_service(
        "gateway",
        &[],
        &[&registry.reference("team/gateway:1"), "server"],
    );
    d.ok(&["svc", "publish", "-n", "gateway", "--endpoint", "gw"]);
    d.wait_running("gateway", 1);
    let services: Vec<ServiceView> = parse(&d.ok(&["svc", "ls", "--json"]));
    let js_view = services.iter().find(|s| s.name == "js").unwrap();
    assert_eq!(js_view.command, ["jshello"]);
    assert_eq!(js_view.source.as_ref().unwrap().digest, js_digest);
    // The Rust gateway calls the JavaScript service by name.
    support::wait_until(
        std::time::Duration::from_secs(20),
        "the call by name",
        || {
            d.get("gw.localhost", "/call?url=http%3A%2F%2Fapp-js%2F")
                .body
                == "status: 200\nhello from js\n"
        },
    );
    let list = versions(&d, "app");
    assert!(
        list.iter().any(|v| v
            .reason
            .starts_with(&format!("pull {}", registry.reference("team/jshello:1")))),
        "{list:?}"
    );
    // A bad reference in a command is one line, and nothing is made.
    let err = d.fails(&[
        "svc",
        "create",
        "-n",
        "nope",
        "--",
        &registry.reference("team/none:1"),
    ]);
    assert!(err.contains("not found"), "{err}");
    assert!(d.service("nope").is_none());
}

#[test]
fn cluster_hosts_pull_what_is_placed_on_them_by_digest_and_fall_back_to_a_peer() {
    let registry = Registry::start(Auth::Basic);
    let digest = registry.push_wasm(&app_wasm(), "team/app:v1");
    let etcd = crate::support::etcd::Etcd::start(1);
    let url = etcd.url();
    // Every host is given the same sealing key, so each opens the login.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("sealing.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    // Kept here: the registry's own copy goes when it stops.
    let ca = keys.path().join("ca.crt");
    std::fs::copy(registry.ca(), &ca).unwrap();
    let host = |name: &str| {
        Daemon::start_with(&[
            "--store",
            &url,
            "--node",
            name,
            "--sealing-key",
            key.to_str().unwrap(),
            "--registry-ca",
            ca.to_str().unwrap(),
        ])
    };
    let a = host("host-a");
    let b = host("host-b");
    let c = host("host-c");
    let out = login(&a, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");
    a.ok(&["stack", "deploy", "app", &registry.reference("team/app:v1")]);
    a.create_service("w", &["--instances", "3"], &["app", "queue"]);
    support::wait_until(
        std::time::Duration::from_secs(30),
        "w runs on every host",
        || {
            let on: std::collections::BTreeSet<String> = a
                .service("w")
                .map(|s| {
                    s.instances
                        .iter()
                        .filter(|i| i.state == mesh_host::model::InstanceState::Running)
                        .map(|i| i.node.clone())
                        .collect()
                })
                .unwrap_or_default();
            on.len() == 3
        },
    );
    // host-b and host-c pulled by the digest the version pinned; the tag
    // was resolved once, by the deploy.
    for h in [&b, &c] {
        assert!(
            h.log().contains("pulled code from its registry"),
            "{}",
            h.log()
        );
    }
    let log = registry.log();
    let by_tag = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/team/app/manifests/v1 ") && l.contains("\" 200 "))
        .count();
    let by_digest = log
        .lines()
        .filter(|l| {
            l.contains(&format!("\"GET /v2/team/app/manifests/{digest} ")) && l.contains("\" 200 ")
        })
        .count();
    assert_eq!(by_tag, 1, "the tag was resolved more than once:\n{log}");
    assert!(by_digest >= 2, "the hosts did not pull by digest:\n{log}");

    // The registry goes away; a host that joins later gets the code from
    // a peer that holds it.
    drop(registry);
    let d = host("host-d");
    a.ok(&["svc", "update", "w", "--instances", "4"]);
    support::wait_until(std::time::Duration::from_secs(40), "host-d runs w", || {
        d.service("w").is_some_and(|s| {
            s.instances
                .iter()
                .any(|i| i.node == "host-d" && i.state == mesh_host::model::InstanceState::Running)
        })
    });
    let log = d.log();
    assert!(
        log.contains("pulling from the registry failed, asking the other hosts"),
        "{log}"
    );
    assert!(log.contains("fetched code from another host"), "{log}");
}

#[test]
fn images_another_platform_tampered_blobs_and_limits_are_refused_in_one_line() {
    let registry = Registry::start(Auth::Basic);
    let scratch = tempfile::tempdir().unwrap();
    // An image for another architecture.
    let other = if support::oci::host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let foreign = scratch.path().join("foreign.tar");
    std::fs::write(
        &foreign,
        support::oci::crafted_image(&[("x", b"#!/bin/sh\n")], other),
    )
    .unwrap();
    registry.push_image(&foreign, "team/foreign:1");
    registry.push_image(
        &std::path::PathBuf::from(support::image("busybox.tar")),
        "team/busybox:1",
    );
    let d = Daemon::start_process_with(&[
        "--registry-ca",
        registry.ca().to_str().unwrap(),
        "--max-image",
        "1Mi",
    ]);
    let out = login(&d, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");

    let err = d.fails(&[
        "stack",
        "deploy",
        "b",
        &registry.reference("team/foreign:1"),
    ]);
    assert!(
        err.contains("team/foreign:1") && err.contains(&format!("linux/{other}")),
        "{err}"
    );
    // Over the daemon's image limit: refused before any layer is fetched.
    let err = d.fails(&[
        "stack",
        "deploy",
        "b",
        &registry.reference("team/busybox:1"),
    ]);
    assert!(err.contains("over the image limit"), "{err}");
    assert_eq!(registry.blob_gets("team/busybox"), 0);

    // Over an environment's code quota.
    let big = Daemon::start_process_with(&[
        "--registry-ca",
        registry.ca().to_str().unwrap(),
        "--private-registry",
        &registry.address,
    ]);
    let tenant = big.new_env("small", &["--max-code", "1Mi"]);
    let out = login(
        &big,
        Some(&tenant),
        &registry,
        "alice",
        &registry.password("alice"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = big.mesh_as(
        &tenant,
        &[
            "stack",
            "deploy",
            "b",
            &registry.reference("team/busybox:1"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("code quota"), "{err}");

    // Refused before any blob was fetched.
    assert_eq!(registry.blob_gets("team/busybox"), 0);

    // A registry that sends bytes other than its digest says: caught, and
    // nothing is kept.
    let data = registry.blob_file("team/busybox:1");
    std::fs::write(&data, b"not the layer").unwrap();
    let out = login(&big, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");
    let err = big.fails(&[
        "stack",
        "deploy",
        "c",
        &registry.reference("team/busybox:1"),
    ]);
    assert!(err.contains("does not match its digest"), "{err}");
    let stacks: Vec<StackView> = parse(&big.ok(&["stack", "ls", "--json"]));
    assert!(
        stacks.iter().all(|s| s.name != "b" && s.name != "c"),
        "a failed pull made a stack"
    );
}

/// The busybox image with one more layer on top (a file in /www), as an
/// OCI layout directory made with umoci.
fn derived_image(scratch: &std::path::Path) -> std::path::PathBuf {
    let layout = scratch.join("derived");
    let status = std::process::Command::new("cp")
        .args([
            "-r",
            &support::image("busybox-oci"),
            layout.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let bundle = scratch.join("derived-bundle");
    let image = format!("{}:latest", layout.display());
    let umoci = |args: &[&str]| {
        let out = std::process::Command::new("umoci")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &image,
        bundle.to_str().unwrap(),
    ]);
    std::fs::write(bundle.join("rootfs/www/extra.html"), "one more layer\n").unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    layout
}

#[test]
fn an_image_index_resolves_to_this_hosts_platform() {
    let registry = Registry::start(Auth::Basic);
    let scratch = tempfile::tempdir().unwrap();
    let host = support::oci::host_arch();
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    // busybox for this host and a made-up image for another, in one index.
    let multi = multi_arch_layout(scratch.path(), "multi", &[host, other]);
    registry.push_index(&multi, "team/multi:1");
    let foreign = multi_arch_layout(scratch.path(), "foreign", &[other]);
    registry.push_index(&foreign, "team/foreign:1");
    let d = Daemon::start_process_with(&["--registry-ca", registry.ca().to_str().unwrap()]);
    let out = login(&d, None, &registry, "alice", &registry.password("alice"));
    assert!(out.status.success(), "{out:?}");

    d.ok(&[
        "stack",
        "deploy",
        "m",
        &registry.reference("team/multi:1"),
        "--name",
        "busybox",
    ]);
    d.create_service(
        "hi",
        &["--stack", "m"],
        &["busybox", "sh", "-c", "echo on this host; sleep 600"],
    );
    support::wait_until(std::time::Duration::from_secs(30), "its line", || {
        d.ok(&["svc", "logs", "-n", "hi", "--stack", "m"])
            .contains("on this host")
    });
    // The version pins the platform's manifest, not the index.
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    let pinned = &stacks.iter().find(|s| s.name == "m").unwrap().sources["busybox"].digest;
    let busybox_manifest = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(
            std::path::Path::new(&support::image("busybox-oci")).join("index.json"),
        )
        .unwrap(),
    )
    .unwrap()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pinned, &busybox_manifest);

    let err = d.fails(&[
        "stack",
        "deploy",
        "f",
        &registry.reference("team/foreign:1"),
    ]);
    assert!(
        err.contains(&format!(
            "its index has no image for this host's platform linux/{host} (it has: linux/{other})"
        )),
        "{err}"
    );
}

/// An OCI layout directory in `dir/name` whose `latest` is an image index
/// of one image per architecture in `arches`: busybox for this host's, a
/// made-up one for any other.
fn multi_arch_layout(dir: &std::path::Path, name: &str, arches: &[&str]) -> std::path::PathBuf {
    use support::oci::{blob, sha256};
    let layout = dir.join(name);
    let busybox = std::path::PathBuf::from(support::image("busybox-oci"));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::copy(busybox.join("oci-layout"), layout.join("oci-layout")).unwrap();
    let mut entries = Vec::new();
    for arch in arches {
        let (digest, size) = if *arch == support::oci::host_arch() {
            for blob_file in std::fs::read_dir(busybox.join("blobs/sha256"))
                .unwrap()
                .flatten()
            {
                std::fs::copy(
                    blob_file.path(),
                    layout.join("blobs/sha256").join(blob_file.file_name()),
                )
                .unwrap();
            }
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(busybox.join("index.json")).unwrap())
                    .unwrap();
            let m = &index["manifests"][0];
            (
                m["digest"].as_str().unwrap().to_string(),
                m["size"].as_u64().unwrap(),
            )
        } else {
            // The crafted image's blobs, taken out of its layout tar.
            let tar = support::oci::crafted_image(&[("x", b"#!/bin/sh\n")], arch);
            let mut archive = tar::Archive::new(&tar[..]);
            let mut manifest = None;
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().to_string();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                if path == "index.json" {
                    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    let m = &index["manifests"][0];
                    manifest = Some((
                        m["digest"].as_str().unwrap().to_string(),
                        m["size"].as_u64().unwrap(),
                    ));
                } else if path.starts_with("blobs/") {
                    std::fs::write(layout.join(&path), &bytes).unwrap();
                }
            }
            manifest.unwrap()
        };
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    })
    .to_string();
    let index_digest = sha256(index.as_bytes());
    std::fs::write(layout.join(blob(&index_digest)), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    layout
}
