//! Containers end to end: OCI images (built offline by scripts/images.sh
//! from Debian's busybox and node) deployed to stacks and run by the real
//! daemon through youki's libcontainer, as workers, cron jobs, web
//! services and interactive runs, calling and called by wasm services by
//! name, killed for memory, stopped politely, and cleaned up after a
//! daemon killed with SIGKILL.

use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_host::api::wire::ServiceView;
use mesh_host::container::net::NetConfig;
use mesh_host::model::{InstanceState, Run, RunStatus};
use mesh_host::telemetry::LogLine;
use sha2::Digest as _;
use support::oci::crafted_image;
use support::{app_wasm, create_args, http_request, image, parse, wait_until, Daemon, Tmux};

/// The log lines of the service `name` (in whatever stack it is).
fn logs(d: &Daemon, name: &str) -> Vec<String> {
    let stack = d.service(name).expect("the service").stack;
    let text = d.ok(&["svc", "logs", "-n", name, "--stack", &stack, "--json"]);
    let lines: Vec<LogLine> = parse(&text);
    lines.into_iter().map(|l| l.text).collect()
}

/// Stack `boxes` with the busybox image and `web`, its httpd on `$PORT`,
/// published at www.localhost.
fn busybox_web(d: &Daemon) {
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    support::busybox_web_service(d, 1);
}

/// Processes whose command line contains `needle`.
fn processes(needle: &str) -> Vec<String> {
    let out = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .map(str::to_string)
        .collect()
}

#[test]
fn images_deploy_in_all_three_forms_and_bad_ones_are_refused_in_one_line() {
    let d = Daemon::start_process();
    // An OCI layout directory, its oci-archive tar, a docker save tar.
    let out = d.ok(&[
        "stack",
        "deploy",
        "a",
        &image("busybox-oci"),
        "--name",
        "busybox",
    ]);
    assert!(out.contains("Deployed a v1"), "{out}");
    let out = d.ok(&["stack", "deploy", "b", &image("busybox.tar")]);
    assert!(
        out.contains("Deployed b v1") && out.contains("busybox"),
        "{out}"
    );
    let out = d.ok(&["stack", "deploy", "c", &image("busybox-docker.tar")]);
    assert!(out.contains("busybox-docker"), "{out}");
    // Each runs.
    for (stack, image) in [("a", "busybox"), ("b", "busybox"), ("c", "busybox-docker")] {
        let name = format!("echo-{stack}");
        d.create_service(&name, &["--stack", stack], &[image, "echo", "hi"]);
        d.wait_for(&name, Duration::from_secs(20), "an exit", |s| {
            s.instances.iter().any(|i| i.exit_code == Some(0))
        });
    }
    // A second deploy of the same image is the same code.
    let out = d.ok(&["stack", "deploy", "b", &image("busybox.tar")]);
    assert!(out.contains("nothing changed"), "{out}");

    let scratch = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = scratch.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let host = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    };
    let cases: Vec<(String, &str)> = vec![
        (
            write("notimage.tar", &crafted_tar_without_index()),
            "is not a container image",
        ),
        (
            write("escape.tar", &crafted_image(&[("../escape", b"x")], host)),
            "would land outside the image's root filesystem",
        ),
        (
            write("arm.tar", &crafted_image(&[("x", b"x")], "riscv64")),
            "is built for linux/riscv64; this host runs linux/",
        ),
        (
            write("missing.tar", &layout_without_layer()),
            "which the upload does not hold",
        ),
        (
            write("corrupt.tar", &layout_with_flipped_layer()),
            "does not match its digest",
        ),
    ];
    for (path, expected) in &cases {
        let line = d.fails(&["stack", "deploy", "bad", path]);
        assert!(line.contains(expected), "{path}: {line}");
    }
    // Nothing half-made: no stack, no unpacked image, nothing incoming.
    assert!(!d.ok(&["stack", "ls"]).contains("bad"));
    let images: Vec<String> = std::fs::read_dir(d.data_dir().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(images.len(), 3, "only the three good uploads: {images:?}");
    assert!(!d.data_dir().join("escape").exists());
}

fn crafted_tar_without_index() -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(5);
    header.set_mode(0o644);
    out.append_data(&mut header, "hello.txt", &b"hello"[..])
        .unwrap();
    out.into_inner().unwrap()
}

/// The busybox layout with its layer blob removed, as a tar.
fn layout_without_layer() -> Vec<u8> {
    edited_layout(|path| {
        std::fs::remove_file(path).unwrap();
    })
}

/// The busybox layout with one byte of its layer changed, as a tar.
fn layout_with_flipped_layer() -> Vec<u8> {
    edited_layout(|path| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    })
}

fn edited_layout(edit: impl FnOnce(&std::path::Path)) -> Vec<u8> {
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .args(["-a", &format!("{}/.", image("busybox-oci"))])
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    // The largest blob is the layer.
    let blobs = copy.path().join("blobs/sha256");
    let layer: PathBuf = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    edit(&layer);
    let mut out = tar::Builder::new(Vec::new());
    out.append_dir_all(".", copy.path()).unwrap();
    out.into_inner().unwrap()
}

#[test]
fn a_busybox_worker_reports_its_exit_code_and_is_restarted() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    d.create_service(
        "quitter",
        &["--stack", "boxes"],
        &["busybox", "sh", "-c", "echo hi; sleep 1; exit 4"],
    );
    let s = d.wait_for("quitter", Duration::from_secs(30), "two restarts", |s| {
        s.instances
            .iter()
            .any(|i| i.restarts >= 2 && i.exit_code == Some(4))
    });
    assert_eq!(
        s.instances[0].message.as_deref(),
        Some("exited with code 4"),
        "{s:#?}"
    );
    assert_eq!(s.instances[0].kind, "container", "{s:#?}");
    assert_eq!(s.kind, "container", "{s:#?}");
    let lines = logs(&d, "quitter");
    assert!(
        lines.iter().filter(|l| *l == "hi").count() >= 2,
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("exited with code 4; restart 1")),
        "{lines:?}"
    );
    // An image file given as the command's first word is uploaded and
    // added to the stack under its name, as a .wasm file is.
    let tar = image("busybox-docker.tar");
    d.create_service("once", &["--stack", "more"], &[&tar, "echo", "from a file"]);
    d.wait_for("once", Duration::from_secs(20), "an exit", |s| {
        s.instances.iter().any(|i| i.exit_code == Some(0))
    });
    assert!(logs(&d, "once").iter().any(|l| l == "from a file"));
    assert!(d.ok(&["stack", "ls"]).contains("busybox-docker"));
    // A command not in the image: crashed, 127, the command named, not
    // restarted.
    d.create_service("typo", &["--stack", "boxes"], &["busybox", "nde"]);
    let s = d.wait_for("typo", Duration::from_secs(20), "crashed", |s| {
        s.instances
            .iter()
            .any(|i| i.state == InstanceState::Crashed)
    });
    let i = &s.instances[0];
    assert_eq!(i.exit_code, Some(127), "{s:#?}");
    assert_eq!(
        i.message.as_deref(),
        Some("exec: \"nde\": not found in image"),
        "{s:#?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let again = d.service("typo").unwrap();
    assert_eq!(again.instances[0].restarts, 0, "{again:#?}");
}

#[test]
fn the_seeds_node_cron_job_runs_in_a_node_image() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "mail", &image("node-image.tar")]);
    // `node` names no component: the stack's one image runs it.
    d.create_service(
        "emailsender",
        &[
            "--stack",
            "mail",
            "--schedule",
            "@every 1s",
            "-e",
            "EMAILS_DUE=2",
        ],
        &["node", "send-emails.js"],
    );
    wait_until(Duration::from_secs(30), "two successful runs", || {
        let out = d.ok(&[
            "svc",
            "runs",
            "-n",
            "emailsender",
            "--stack",
            "mail",
            "--json",
        ]);
        let runs: Vec<Run> = parse(&out);
        runs.iter()
            .filter(|r| r.status == RunStatus::Succeeded && r.exit_code == Some(0))
            .count()
            >= 2
    });
    let logs = logs(&d, "emailsender");
    assert!(logs.iter().any(|l| l == "sent email 2 of 2"), "{logs:?}");
    assert!(
        logs.iter().any(|l| l.starts_with("send-emails done at")),
        "{logs:?}"
    );
}

#[test]
fn a_web_container_serves_an_endpoint_and_a_path_and_calls_go_both_ways_by_name() {
    let d = Daemon::start_process();
    busybox_web(&d);
    d.ok(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--endpoint",
        "site",
        "--path",
        "/blog",
    ]);
    d.wait_running("web", 1);
    let http = d.http_addr();
    let r = http_request(&http, "GET", "www.localhost", "/index.html", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "hello from a busybox container\n");
    let r = http_request(&http, "GET", "site.localhost", "/blog/index.html", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("the blog"), "{r:?}");
    let r = http_request(&http, "GET", "www.localhost", "/nope", &[], b"");
    assert_eq!(r.status, 404, "{r:?}");

    // A wasm service calls the container service by name...
    let app = app_wasm();
    d.create_service(
        "api",
        &["--stack", "wasm"],
        &[app.to_str().unwrap(), "server"],
    );
    d.ok(&[
        "svc",
        "publish",
        "-n",
        "api",
        "--stack",
        "wasm",
        "--endpoint",
        "api",
    ]);
    d.wait_running("api", 1);
    let r = http_request(
        &http,
        "GET",
        "api.localhost",
        "/call?url=http%3A%2F%2Fboxes-web%2Findex.html",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("hello from a busybox container"), "{r:?}");

    // ...and a container calls the wasm service by name, through the
    // proxy and by its /etc/hosts name on port 80.
    let out = d.ok(&[
        "svc", "run", "-n", "web", "--stack", "boxes", "--", "/bin/sh", "-c",
        "wget -q -O - http://wasm-api/ && wget -Y off -q -O - http://wasm-api/ && grep wasm-api /etc/hosts",
    ]);
    assert_eq!(out.matches("service: wasm-api").count(), 2, "{out}");
    // A program the image lacks is said, with a shell it has, and the
    // command exits 127 as a shell would.
    let out = d.mesh(&[
        "svc",
        "run",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--",
        "/bin/bash",
    ]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exec: \"/bin/bash\": not found in image; try /bin/sh"),
        "{err}"
    );
    // On a wasm stack, the same command says how to run an image.
    let err = d.fails(&[
        "svc",
        "run",
        "-n",
        "api",
        "--stack",
        "wasm",
        "--",
        "/bin/bash",
    ]);
    assert!(err.contains("no component named '/bin/bash'"), "{err}");
    assert!(err.contains("mesh stack deploy"), "{err}");
    // It cannot reach the control API, nor the network past its policy.
    let api_port = d.info["api_url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let out = d.mesh(&[
        "svc",
        "run",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--",
        "/bin/sh",
        "-c",
        &format!(
            "timeout 3 wget -q -O - http://$(grep boxes-web /etc/hosts | cut -f1):{api_port}/v1/stacks"
        ),
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("boxes"),
        "{out:?}"
    );
}

#[test]
fn a_container_over_its_memory_limit_is_killed_and_reported() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    d.create_service(
        "hog",
        &["--stack", "boxes", "--memory", "32Mi"],
        &[
            "busybox",
            "sh",
            "-c",
            "echo hogging; exec tail -c 200000000 /dev/zero",
        ],
    );
    let s = d.wait_for("hog", Duration::from_secs(30), "an OOM kill", |s| {
        s.instances.iter().any(|i| {
            i.message
                .as_deref()
                .is_some_and(|m| m.starts_with("killed by SIGKILL: exceeded memory limit 32 MiB"))
        })
    });
    assert!(s.instances[0].restarts >= 1, "{s:#?}");
    assert_eq!(s.instances[0].exit_code, Some(137), "{s:#?}");
    assert!(logs(&d, "hog").iter().any(|l| l == "hogging"));
    let events = d.ok(&["events", "--json"]);
    assert!(events.contains("instance.oom"), "{events}");
}

#[test]
fn service_run_opens_a_shell_in_a_new_container() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    d.create_service(
        "web",
        &["--stack", "boxes", "-e", "WHO=box"],
        &["busybox", "sleep", "1000"],
    );
    d.wait_running("web", 1);
    let out = d.mesh(&[
        "service",
        "run",
        "-n",
        "web",
        "--stack",
        "boxes",
        "--",
        "/bin/sh",
        "-c",
        "echo $$; echo $WHO; hostname; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    // Its own PID namespace (the shell is 1), the service's env, a host
    // name of its own.
    assert_eq!(lines[0], "1", "{text}");
    assert_eq!(lines[1], "box", "{text}");
    assert!(lines[2].starts_with("web-run"), "{text}");
    // stdin reaches it; it shows among the service's instances while it runs.
    let mut child = d
        .mesh_cmd(&[
            "svc",
            "run",
            "-n",
            "web",
            "--stack",
            "boxes",
            "--",
            "/bin/sh",
            "-c",
            "read line; echo got $line",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_for("web", Duration::from_secs(20), "the run shown", |s| {
        s.instances.iter().any(|i| i.id.contains("run"))
    });
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got ping\n");
}

/// Creates worker `name` in stack `boxes` running busybox `sh -c script`
/// (with `settings` before the command), and waits until it is running
/// and has logged `ready`.
fn ready_shell(d: &Daemon, name: &str, settings: &[&str], script: &str) {
    let mut flags = vec!["--stack", "boxes"];
    flags.extend_from_slice(settings);
    d.create_service(name, &flags, &["busybox", "sh", "-c", script]);
    d.wait_running(name, 1);
    wait_until(Duration::from_secs(10), "ready", || {
        logs(d, name).iter().any(|l| l == "ready")
    });
}

#[test]
fn stopping_a_container_asks_first_then_kills_after_the_stop_timeout() {
    let mut d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    ready_shell(
        &d,
        "stubborn",
        &["--stop-timeout", "2s"],
        "trap 'echo got TERM' TERM; echo ready; while true; do sleep 1; done",
    );
    let marker = "trap 'echo got TERM'";
    assert_eq!(processes(marker).len(), 1, "{:?}", processes(marker));
    let asked = Instant::now();
    d.ok(&["svc", "delete", "-n", "stubborn", "--stack", "boxes"]);
    wait_until(Duration::from_secs(15), "the container gone", || {
        processes(marker).is_empty()
    });
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "killed before its stop timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");

    // A daemon shutting down asks its containers to stop too.
    ready_shell(
        &d,
        "polite",
        &[],
        "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.2; done",
    );
    assert!(d.terminate().success());
    let log = std::fs::read_to_string(d.data_dir().join("logs/default/boxes/polite.log")).unwrap();
    assert!(log.contains("got TERM"), "{log}");
}

#[test]
fn kill_9_of_the_daemon_leaves_no_container_and_a_restart_runs_each_once() {
    let mut d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    let marker = format!("sleep 1{}", std::process::id() % 1000 + 1000);
    let seconds = marker.trim_start_matches("sleep ").to_string();
    d.create_service(
        "sleepy",
        &["--stack", "boxes", "--instances", "3"],
        &["busybox", "sleep", &seconds],
    );
    d.wait_running("sleepy", 3);
    wait_until(Duration::from_secs(10), "3 container processes", || {
        processes(&marker).len() == 3
    });
    d.kill9();
    wait_until(Duration::from_secs(10), "no container left", || {
        processes(&marker).is_empty()
    });
    d.restart();
    d.wait_running("sleepy", 3);
    wait_until(Duration::from_secs(10), "exactly 3 again", || {
        processes(&marker).len() == 3
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(processes(&marker).len(), 3, "{:?}", processes(&marker));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    // The writable layers' tmpfs in the data directory, the roots'
    // overlays under /run/mesh/TAG.
    let data = d.data_dir().canonicalize().unwrap();
    let tag = hex::encode(sha2::Sha256::digest(data.to_string_lossy().as_bytes()));
    let run = format!("/run/mesh/{}/", &tag[..8]);
    let ours = mounts
        .lines()
        .filter(|l| l.contains(data.to_str().unwrap()) || l.contains(&run))
        .count();
    assert_eq!(ours, 6, "an overlay and a tmpfs per container:\n{mounts}");
}

#[test]
fn deploying_a_new_image_rolls_its_containers() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    d.create_service(
        "sleepers",
        &["--stack", "boxes", "--instances", "2"],
        &["busybox", "sleep", "1000"],
    );
    d.wait_running("sleepers", 2);
    // The same image as docker save wrote it: new bytes, a new version.
    let out = d.ok(&[
        "stack",
        "deploy",
        "boxes",
        &image("busybox-docker.tar"),
        "--name",
        "busybox",
    ]);
    assert!(out.contains("v2"), "{out}");
    d.wait_for("sleepers", Duration::from_secs(30), "both on v2", |s| {
        s.instances.len() == 2
            && s.instances
                .iter()
                .all(|i| i.version == 2 && i.state == InstanceState::Running)
    });
    // And back.
    d.ok(&["stack", "rollback", "boxes", "--to", "1"]);
    d.wait_for("sleepers", Duration::from_secs(30), "both on v3", |s| {
        s.instances.len() == 2
            && s.instances
                .iter()
                .all(|i| i.version == 3 && i.state == InstanceState::Running)
    });
}

#[test]
fn containers_are_confined_to_their_own_namespaces_and_the_proxy() {
    // The API on every address: a container still must not reach it.
    let d = Daemon::start_process_with(&["--api", "0.0.0.0:0"]);
    busybox_web(&d);
    d.wait_running("web", 1);
    // The web container's address, from its bundle's /etc/hosts.
    let web = web_address(&d);
    // A service of the host's own, on every address.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in host_service.incoming().flatten() {
            use std::io::{Read as _, Write as _};
            let mut stream = stream;
            // The request first: an answer before it is read can reach a
            // client still sending, which then gives up on the connection.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nHOST-SECRET");
        }
    });
    let r = http_request(&format!("127.0.0.1:{host_port}"), "GET", "x", "/", &[], b"");
    assert_eq!(r.body, "HOST-SECRET", "the host's service answers the host");
    let api_port = d.info["api_url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    // The data directory's path, as the host names it: never shown inside.
    let data = d.data_dir().canonicalize().unwrap();
    let data = data.to_str().unwrap();
    let script = format!(
        "grep -F '{data}' /proc/mounts /proc/self/mountinfo && echo LEAKED-PATH; \
         grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; \
         unshare -n true 2>/dev/null && echo UNSHARED; \
         mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED; \
         GW=${{HTTP_PROXY#http://}}; GW=${{GW%:*}}; \
         timeout 2 wget -Y off -q -O - http://{web}:8080/index.html && echo REACHED-DIRECT; \
         timeout 5 wget -q -O - http://{web}:8080/index.html && echo REACHED-PROXY; \
         timeout 3 wget -Y off -q -O - http://$GW:{host_port}/; \
         timeout 5 wget -Y off -O - http://$GW:{api_port}/v1/stacks; echo API=$?"
    );
    let out = d.mesh(&[
        "svc", "run", "-n", "web", "--stack", "boxes", "--", "/bin/sh", "-c", &script,
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("LEAKED-PATH"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    let cap_eff = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(cap_eff & (1 << 21), 0, "CAP_SYS_ADMIN is dropped: {text}");
    assert_eq!(cap_eff & (1 << 13), 0, "CAP_NET_RAW is dropped: {text}");
    assert!(
        !text.contains("UNSHARED") && !text.contains("MOUNTED"),
        "{text}"
    );
    // Another container's address is not reachable, directly or through
    // the proxy (a private address, outside the default policy)...
    assert!(!text.contains("REACHED"), "{text}");
    assert!(!text.contains("hello from a busybox"), "{text}");
    // ...though it is the right address: the host reaches it.
    let r = http_request(&format!("{web}:8080"), "GET", "x", "/index.html", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    // The host's other services are out of reach.
    assert!(!text.contains("HOST-SECRET"), "{text}");
    // The control API is out of reach even on a shared address (the
    // bridge's filter drops it; behind that, the API refuses containers).
    assert!(text.contains("API=") && !text.contains("API=0"), "{text}");
    assert!(!text.contains("\"boxes\""), "{text}");
}

/// The address of the running container whose host name is `web.1`.
fn web_address(d: &Daemon) -> String {
    let bundles = d.data_dir().join("containers/bundles");
    for entry in std::fs::read_dir(&bundles).unwrap() {
        // It is written into the container's own layer.
        let hosts = std::fs::read_to_string(entry.unwrap().path().join("rw/upper/etc/hosts"))
            .unwrap_or_default();
        if let Some(line) = hosts.lines().find(|l| l.ends_with("\tweb.1")) {
            return line.split('\t').next().unwrap().to_string();
        }
    }
    panic!("no bundle for web.1 in {}", bundles.display());
}

#[test]
fn a_daemon_that_cannot_run_containers_says_so_and_runs_wasm() {
    // Not root: no namespaces or cgroups of its own to make.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(support::mesh_bin())
        .args([
            "up",
            "--api",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "daemon.json", || {
        data.join("daemon.json").is_file()
    });
    let mesh = |args: &[&str]| {
        Command::new(support::mesh_bin())
            .args(args)
            .env("MESH_DATA_DIR", &data)
            .env_remove("MESH_API_URL")
            .env_remove("MESH_TOKEN")
            .output()
            .unwrap()
    };
    let out = mesh(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("containers cannot run on this host: the daemon is not running as root"),
        "{stderr}"
    );
    // Wasm services are unaffected.
    let app = app_wasm();
    let out = mesh(&create_args(
        "w",
        &[],
        &[app.to_str().unwrap(), "send-emails"],
    ));
    assert!(out.status.success(), "{out:?}");
    wait_until(Duration::from_secs(20), "a successful wasm run", || {
        let out = mesh(&["svc", "ls", "--json"]);
        let list: Vec<ServiceView> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.iter()
            .flat_map(|s| &s.instances)
            .any(|i| i.exit_code == Some(0))
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn service_run_gives_a_container_shell_a_real_terminal() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    d.create_service("web", &["--stack", "boxes"], &["busybox", "sleep", "1000"]);
    d.wait_running("web", 1);
    let session = format!("mesh-container-{}", std::process::id());
    let tmux = Tmux::start(
        &session,
        &format!(
            "MESH_DATA_DIR={} {} service run -n web --stack boxes -- /bin/sh; echo EXIT=$?; sleep 60",
            d.data_dir().display(),
            support::mesh_bin()
        ),
    );
    // capture-pane drops the prompt's trailing space.
    tmux.wait_for(" #");
    // A terminal of its own, the caller's size.
    tmux.keys(&["stty size; tty", "Enter"]);
    let screen = tmux.wait_for("/dev/pts/");
    assert!(screen.contains("40 120"), "{screen}");
    // Shown among the service's instances while it runs.
    d.wait_for("web", Duration::from_secs(10), "the run shown", |s| {
        s.instances.iter().any(|i| i.id.contains("run"))
    });
    // Ctrl-C stops what runs in the shell, not the shell.
    tmux.keys(&["sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-here", "Enter"]);
    tmux.wait_for("still-here\n");
    assert!(asked.elapsed() < Duration::from_secs(5));
    tmux.keys(&["exit 3", "Enter"]);
    tmux.wait_for("EXIT=3");
}

#[test]
fn an_image_over_the_upload_limit_is_refused_in_one_line() {
    let d = Daemon::start_process_with(&["--max-image", "1Mi"]);
    let line = d.fails(&["stack", "deploy", "mail", &image("node-image.tar")]);
    assert!(
        line.contains("larger than the daemon's image upload limit of 1 MiB"),
        "{line}"
    );
    assert!(!d.ok(&["stack", "ls"]).contains("mail"));
    let left: Vec<_> = std::fs::read_dir(d.data_dir().join("images"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Whether the network device `name` exists.
fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Whether nftables has the `inet` table `name`.
fn table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// A daemon that stops cleanly removes its containers' bridge and its
/// nftables table (each such table hooks every packet's input path); one
/// killed leaves them, and the next daemon of its data directory takes
/// them over and removes them when it stops. An in-process host does the
/// same.
#[test]
fn a_stopped_daemon_leaves_no_bridge_or_table() {
    for in_process in [false, true] {
        let mut d = if in_process {
            Daemon::start()
        } else {
            Daemon::start_process()
        };
        let net = NetConfig::parse(&d.network).unwrap();
        let (bridge, table) = (net.bridge(), format!("mesh_{}", net.tag()));
        assert!(link_exists(&bridge), "{bridge} missing while running");
        assert!(table_exists(&table), "{table} missing while running");
        if !in_process {
            d.kill9();
            assert!(link_exists(&bridge), "a killed daemon cannot clean up");
            d.restart_cleanly();
            assert!(table_exists(&table));
        }
        d.stop();
        assert!(!link_exists(&bridge), "{bridge} left after a clean stop");
        assert!(!table_exists(&table), "{table} left after a clean stop");
    }
}
