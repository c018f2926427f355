//! Safe to share, second round, the container doors: a hostile tenant's
//! images (whiteouts of the root, huge configs, bombs of zeros or of
//! files, data past a layer's end), uploads that trickle, forks without
//! end, and a static program inside a container trying to make
//! namespaces and io_uring. Real daemon, real CLI, real containers on
//! mesh's own bridge; everything else on loopback.

use crate::support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::oci::{crafted_image, host_arch, layer_tar, layout};
use support::{create_args, image, wait_until, Daemon};

/// `mesh ARGS` as the holder of `token`: (success, stdout, stderr).
fn as_tenant(d: &Daemon, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = d.mesh_as(token, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Environment t2 (made with `flags`) with the busybox image deployed as
/// stack `boxes` by its tenant; returns t2's token.
fn tenant_with_busybox(d: &Daemon, flags: &[&str]) -> String {
    let token = d.new_env("t2", flags);
    let (ok, _, err) = as_tenant(
        d,
        &token,
        &["stack", "deploy", "boxes", &image("busybox.tar")],
    );
    assert!(ok, "{err}");
    token
}

/// Writes `bytes` to `dir/name` and gives the path.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_with(|gz| gz.write_all(bytes).unwrap())
}

/// What `write` writes, gzip-compressed as it streams.
fn gzip_with(write: impl FnOnce(&mut flate2::write::GzEncoder<Vec<u8>>)) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    write(&mut encoder);
    encoder.finish().unwrap()
}

#[test]
fn hostile_images_are_refused_in_one_line_and_leave_nothing() {
    let d = Daemon::start_process();
    let token = d.new_env("t2", &[]);
    let dir = tempfile::tempdir().unwrap();
    let arch = host_arch();
    // 100,000 Env entries in the config.
    let env: Vec<String> = (0..100_000).map(|i| format!("V{i}=x")).collect();
    let many_env = layout(
        layer_tar(&[("x", b"x")]),
        false,
        serde_json::json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/x"], "Env": env}}),
    );
    // 1 GiB of zeros in one file, about a MiB compressed.
    let zeros = gzip_with(|gz| {
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(1 << 30);
        header.set_cksum();
        tar.append_data(&mut header, "zeros", std::io::repeat(0).take(1 << 30))
            .unwrap();
        tar.finish().unwrap();
    });
    let bomb = layout(
        zeros,
        true,
        serde_json::json!({"architecture": arch, "os": "linux"}),
    );
    // 100,000 empty files: 4 KiB each against the quota, 400 MiB.
    let names: Vec<String> = (0..100_000).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    let files = layout(
        gzip(&layer_tar(&entries)),
        true,
        serde_json::json!({"architecture": arch, "os": "linux"}),
    );
    // 512 MiB of zeros after the tar's end.
    let trailing = gzip_with(|gz| {
        gz.write_all(&layer_tar(&[("x", b"x")])).unwrap();
        std::io::copy(&mut std::io::repeat(0).take(512 << 20), gz).unwrap();
    });
    let past_end = layout(
        trailing,
        true,
        serde_json::json!({"architecture": arch, "os": "linux"}),
    );
    let cases = [
        (
            write(
                dir.path(),
                "root.tar",
                &crafted_image(&[(".wh..", b"")], arch),
            ),
            "is a whiteout of no file",
        ),
        (
            write(dir.path(), "env.tar", &many_env),
            "its config sets 100000 Env entries; at most 1000 are allowed",
        ),
        (
            write(dir.path(), "bomb.tar", &bomb),
            "unpacks to more than what is left of environment t2's code quota",
        ),
        (
            write(dir.path(), "files.tar", &files),
            "unpacks to more than what is left of environment t2's code quota",
        ),
        (
            write(dir.path(), "past.tar", &past_end),
            "what follows the end of its tar unpacks to more than",
        ),
    ];
    let images = d.data_dir().join("images");
    let before = count_files(&images);
    for (path, expected) in &cases {
        let started = Instant::now();
        let (ok, _, err) = as_tenant(&d, &token, &["stack", "deploy", "evil", path]);
        assert!(!ok, "{path} was accepted");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{path}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{path} took long"
        );
    }
    // Nothing was kept, and nothing counts against the quota.
    assert_eq!(count_files(&images), before);
    assert_eq!(d.quota_use("t2").code_bytes, 0);
    let (ok, out, _) = as_tenant(&d, &token, &["stack", "ls", "--json"]);
    assert!(ok);
    assert!(!out.contains("evil"), "{out}");
}

/// Files and folders under `dir`, recursively (0 when it is missing).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            1 + if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn an_image_counts_what_it_unpacks_to_against_the_code_quota() {
    let d = Daemon::start_process();
    tenant_with_busybox(&d, &[]);
    let upload = std::fs::metadata(image("busybox.tar")).unwrap().len();
    let counted = d.quota_use("t2").code_bytes;
    // The upload, its unpacked files, and 4 KiB for each entry (busybox
    // has hundreds of applet links).
    assert!(
        counted > upload + 400 * 4096,
        "{counted} for an upload of {upload}"
    );
}

/// Sends a `PUT /v1/code?kind=image` head announcing `size` bytes and
/// `first` of them; the rest is up to the caller.
fn start_upload(api: &str, token: &str, size: usize, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(api).unwrap();
    write!(
        stream,
        "PUT /v1/code?kind=image&name=slow HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\nContent-Length: {size}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(first).unwrap();
    stream
}

#[test]
fn slow_image_uploads_hold_only_their_own_environments_places_and_are_cut_off() {
    let d = Daemon::start_process();
    let t2 = d.new_env("t2", &[]);
    let t3 = d.new_env("t3", &[]);
    let api = d.info["api_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    // Two uploads by t2 that trickle (2 KiB a second).
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| start_upload(&api, &t2, 10 << 20, &[0u8; 2048]))
        .collect();
    let trickle = std::thread::spawn({
        let mut streams: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_secs(1));
                for s in &mut streams {
                    if s.write_all(&[0u8; 2048]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // A third of t2's waits for them; t3 and the operator do not.
    let (ok, _, err) = as_tenant(&d, &t2, &["stack", "deploy", "more", &image("busybox.tar")]);
    assert!(!ok);
    assert!(
        err.contains("environment t2 has 2 image uploads going already"),
        "{err}"
    );
    let (ok, _, err) = as_tenant(
        &d,
        &t3,
        &["stack", "deploy", "boxes", &image("busybox.tar")],
    );
    assert!(ok, "{err}");
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    // The trickles are cut off with one clear line (408) within seconds.
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("slower than 64 KiB/s"), "{answer}");
    }
    trickle.join().unwrap();
    // Their places are t2's again.
    let (ok, _, err) = as_tenant(&d, &t2, &["stack", "deploy", "more", &image("busybox.tar")]);
    assert!(ok, "{err}");
}

/// The static probe (tests/support/nsprobe.c), built with gcc.
fn nsprobe(dir: &Path) -> PathBuf {
    let source = support::repo_root().join("tests/support/nsprobe.c");
    let out = dir.join("nsprobe");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "gcc could not build the probe");
    out
}

#[test]
fn a_program_in_a_container_cannot_make_namespaces_or_use_io_uring() {
    let d = Daemon::start_process();
    let dir = tempfile::tempdir().unwrap();
    let probe = std::fs::read(nsprobe(dir.path())).unwrap();
    let path = write(
        dir.path(),
        "probe.tar",
        &crafted_image(&[("x", &probe)], host_arch()),
    );
    d.ok(&["stack", "deploy", "probe", &path]);
    d.create_service("p", &["--stack", "probe", "--instances", "0"], &["probe"]);
    let out = d.mesh(&["service", "run", "-n", "p", "--stack", "probe", "--", "/x"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run's container was the only one: its cgroups went with it.
    wait_until(Duration::from_secs(10), "the cgroups to go", || {
        !daemon_cgroup(&d).exists()
    });
    for (what, verdict) in [
        ("newuser", "EPERM"),
        ("newnet", "EPERM"),
        ("newuser_newnet", "EPERM"),
        ("newns", "EPERM"),
        ("newpid", "EPERM"),
        // clone3's flags cannot be read by a filter: it is refused as
        // unknown, so C libraries use clone, whose flags can.
        ("clone3", "ENOSYS"),
        ("io_uring", "EPERM"),
        ("unshare", "EPERM"),
        ("packet", "EPERM"),
        ("raw", "EPERM"),
        // What programs need still works.
        ("fork", "ok"),
        ("libc_fork", "ok"),
        ("thread", "ok"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{what}={verdict}")),
            "{what} should be {verdict}:\n{text}"
        );
    }
}

/// The pids cgroup of daemon `d`'s containers (as `mesh up` tags it).
fn daemon_cgroup(d: &Daemon) -> PathBuf {
    use sha2::Digest as _;
    let data = d.data_dir().canonicalize().unwrap();
    let tag = hex::encode(sha2::Sha256::digest(data.to_string_lossy().as_bytes()));
    PathBuf::from("/sys/fs/cgroup/pids/mesh").join(&tag[..8])
}

#[test]
fn an_environments_forks_are_bounded_and_the_host_keeps_its_own() {
    let mut d = Daemon::start_process();
    let token = tenant_with_busybox(&d, &["--max-tasks", "64"]);
    // The forking subshell dies at the bound; what it made lives on.
    let forks = "(i=0; while [ $i -lt 300 ]; do sleep 60 & i=$((i+1)); done); exec sleep 60";
    let (ok, _, err) = as_tenant(
        &d,
        &token,
        &create_args(
            "forks",
            &["--stack", "boxes"],
            &["busybox", "sh", "-c", forks],
        ),
    );
    assert!(ok, "{err}");
    let group = daemon_cgroup(&d).join("env-t2");
    wait_until(
        Duration::from_secs(30),
        "the forks to hit the bound",
        || d.quota_use("t2").tasks >= 60,
    );
    std::thread::sleep(Duration::from_secs(1));
    let used = d.quota_use("t2");
    assert_eq!(used.max_tasks, 64, "{used:?}");
    assert!(used.tasks <= 64, "{used:?}");
    assert_eq!(
        std::fs::read_to_string(group.join("pids.max"))
            .unwrap()
            .trim(),
        "64"
    );
    // The whole daemon's containers are bounded below the host's capacity.
    let total: u64 = std::fs::read_to_string(daemon_cgroup(&d).join("pids.max"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(total < pid_max, "{total} of {pid_max}");
    // The operator raises the quota: in effect at once.
    d.ok(&["env", "update", "t2", "--max-tasks", "128"]);
    assert_eq!(
        std::fs::read_to_string(group.join("pids.max"))
            .unwrap()
            .trim(),
        "128"
    );
    // A daemon killed while its containers run leaves no cgroup behind:
    // the containers' shims take them with the containers.
    let top = daemon_cgroup(&d);
    d.kill9();
    wait_until(Duration::from_secs(20), "the cgroups to go", || {
        ["pids", "memory", "cpu,cpuacct", "devices", "freezer"]
            .iter()
            .all(|controller| {
                !Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(top.strip_prefix("/sys/fs/cgroup/pids").unwrap())
                    .exists()
            })
    });
}

#[test]
fn a_worker_container_that_never_listens_answers_callers_and_is_not_restarted_in_a_loop() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    // A worker that never listens on $PORT.
    d.create_service("deaf", &["--stack", "boxes"], &["busybox", "sleep", "1000"]);
    let app = support::app_wasm();
    d.create_service("web", &[], &[app.to_str().unwrap(), "server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.wait_running("web", 1);
    // The first call waits for it to listen, then fails with a clear 502.
    let r = d.get("www.localhost", "/call?url=http%3A%2F%2Fboxes-deaf%2F");
    assert!(r.body.contains("status: 502"), "{r:?}");
    assert!(r.body.contains("did not listen"), "{r:?}");
    // The next ones are answered at once (503), saying why.
    let started = Instant::now();
    let r = d.get("www.localhost", "/call?url=http%3A%2F%2Fboxes-deaf%2F");
    assert!(r.body.contains("status: 503"), "{r:?}");
    assert!(r.body.contains("cannot take calls now"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // And no container is started for it while nobody calls.
    let restarts = |d: &Daemon| {
        d.service("deaf")
            .unwrap()
            .instances
            .iter()
            .map(|i| u64::from(i.restarts))
            .sum::<u64>()
    };
    let before = restarts(&d);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(restarts(&d), before);
}

#[test]
fn the_proxy_refuses_names_under_localhost_with_a_status_and_a_reason() {
    let d = Daemon::start_process();
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    d.create_service(
        "sh",
        &["--stack", "boxes", "--instances", "0"],
        &["busybox", "sh"],
    );
    let script = "GW=${HTTP_PROXY#http://}; GW=${GW%:*}; \
        { printf 'GET http://www.localhost/ HTTP/1.1\\r\\nHost: www.localhost\\r\\nConnection: close\\r\\n\\r\\n'; sleep 3; } \
        | timeout 5 nc $GW 3128";
    let out = d.mesh(&[
        "svc", "run", "-n", "sh", "--stack", "boxes", "--", "/bin/sh", "-c", script,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}{err}");
    assert!(
        text.contains("names under .localhost are loopback"),
        "{text}"
    );
}

/// The host pid of the process whose command line is exactly `argv`.
fn pid_of(argv: &[&str]) -> Option<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
}

/// `(inside, outside, count)` of a process's first uid mapping.
fn uid_map(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let fields: Vec<u64> = text
        .split_whitespace()
        .take(3)
        .map(|f| f.parse().unwrap())
        .collect();
    (fields[0], fields[1], fields[2])
}

#[test]
fn a_containers_root_is_an_unprivileged_user_of_its_environments_own_range_on_the_host() {
    use std::os::unix::fs::MetadataExt as _;
    let d = Daemon::start_process();
    let token = tenant_with_busybox(&d, &[]);
    d.ok(&["stack", "deploy", "boxes", &image("busybox.tar")]);
    let script = |marker: &str| {
        format!("id -u > /made-by-root; ls -ln /bin/busybox /etc/hosts; exec sleep {marker}")
    };
    let (ok, _, err) = as_tenant(
        &d,
        &token,
        &create_args(
            "root",
            &["--stack", "boxes"],
            &["busybox", "sh", "-c", &script("4243")],
        ),
    );
    assert!(ok, "{err}");
    d.create_service(
        "root",
        &["--stack", "boxes"],
        &["busybox", "sh", "-c", &script("4244")],
    );
    let mut pids = None;
    wait_until(Duration::from_secs(30), "both containers running", || {
        pids = pid_of(&["sleep", "4243"]).zip(pid_of(&["sleep", "4244"]));
        pids.is_some()
    });
    let (tenant, operator) = pids.unwrap();
    // Root inside; an unprivileged id of its own environment's range outside.
    let (inside, t2_base, size) = uid_map(tenant);
    assert_eq!((inside, size), (0, 65_536));
    assert!(t2_base >= 1 << 24, "{t2_base}");
    let (_, default_base, _) = uid_map(operator);
    assert!(default_base >= 1 << 24);
    assert!(
        t2_base.abs_diff(default_base) >= 65_536,
        "ranges overlap: {t2_base} and {default_base}"
    );
    let status = std::fs::read_to_string(format!("/proc/{tenant}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains(&t2_base.to_string()), "{uid_line}");
    // A file it writes in its own layer is owned by that id on the host,
    // and the image's files are root's as seen inside.
    let made = d
        .data_dir()
        .join("containers/bundles")
        .read_dir()
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("rw/upper/made-by-root"))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.trim() == "0"))
        .expect("the file root made in its layer");
    let owner = std::fs::metadata(&made).unwrap();
    assert!(
        u64::from(owner.uid()) == t2_base || u64::from(owner.uid()) == default_base,
        "owned by {} on the host",
        owner.uid()
    );
    let logs = d.ok_as(&token, &["svc", "logs", "-n", "root", "--stack", "boxes"]);
    assert!(
        logs.contains(" 0        0 ") && logs.contains("/bin/busybox"),
        "{logs}"
    );
}

#[test]
fn an_image_upload_past_the_code_quota_is_refused_as_it_streams() {
    let d = Daemon::start_process();
    let token = d.new_env("t2", &["--max-code", "512k"]);
    let (ok, _, err) = as_tenant(
        &d,
        &token,
        &["stack", "deploy", "boxes", &image("busybox.tar")],
    );
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is larger than the 512 KiB it has left"),
        "{err}"
    );
    assert_eq!(count_files(&d.data_dir().join("images")), 0);
}

#[test]
fn a_daemon_sweeps_what_a_daemon_killed_mid_start_left_in_the_run_directory() {
    // As a daemon killed between mounting a root and starting its shim
    // leaves it: a root mounted under its run directory, its owner file
    // locked by nobody.
    let run = Path::new("/run/mesh/deadbeef");
    let root = run.join("deadbeef-1-1/rootfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(run.join(".owner"), "").unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "mesh-test", root.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success());
    let _d = Daemon::start_process();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains("/run/mesh/deadbeef"), "{mounts}");
    assert!(!run.exists(), "{} was left", run.display());
}
