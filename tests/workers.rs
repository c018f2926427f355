//! Worker services end to end: a real daemon, the real `mesh` binary, the
//! real `app.wasm` guest.

use crate::support;

use std::time::{Duration, Instant};

use mesh_host::model::ServiceType;
use support::{app_wasm, cpu_ticks, create_args, wait_until, Daemon};

#[test]
fn three_queue_workers_run_and_scale_down() {
    let d = Daemon::start();
    let out = d.create("worker", &["--instances", "3"], &["queue"]);
    assert!(out.contains("Created worker (worker)"), "{out}");
    assert!(out.contains(", 3 instances, "), "{out}");

    let service = d.wait_running("worker", 3);
    let ids: Vec<&str> = service.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["worker.1", "worker.2", "worker.3"]);
    // The Contract's keys.
    assert_eq!(service.service_type, ServiceType::Worker);
    assert_eq!(service.stack, "app");
    assert_eq!(service.command, ["app", "queue"]);
    assert_eq!(service.settings.instances_desired, 3);
    assert_eq!(service.settings.memory_limit_bytes, 128 * 1024 * 1024);
    assert!(service.endpoints.is_empty());
    assert_eq!(service.settings.schedule, None);
    assert_eq!(service.next_run, None);
    assert!(service.runs.is_empty());
    for i in &service.instances {
        assert_eq!(i.restarts, 0);
        assert_eq!(i.exit_code, None);
        assert!(i.started_at.is_some());
    }

    // Every instance really runs the guest: each one's heartbeat is logged.
    wait_until(
        Duration::from_secs(10),
        "a heartbeat from every instance",
        || {
            let logs = d.ok(&["svc", "logs", "-n", "worker"]);
            ["worker.1", "worker.2", "worker.3"].iter().all(|id| {
                logs.lines()
                    .any(|l| l.contains(id) && l.contains("queue: heartbeat"))
            })
        },
    );

    // A sanity bound: the target (within a second) is measured by
    // scripts/bench-converge.py, where a busy machine cannot fail a test.
    let asked = Instant::now();
    d.ok(&["svc", "update", "worker", "--instances", "1"]);
    d.wait_for("worker", Duration::from_secs(10), "one instance", |s| {
        s.instances.len() == 1
    });
    let took = asked.elapsed();
    eprintln!("scale 3 -> 1 converged in {took:?}");

    // Scaling up again brings fresh slots.
    d.ok(&["svc", "update", "-n", "worker", "--instances", "2"]);
    d.wait_running("worker", 2);
}

#[test]
fn a_failing_worker_records_its_exit_code_and_backs_off() {
    let d = Daemon::start();
    d.create("failing", &[], &["exit", "3"]);
    let service = d.wait_for("failing", Duration::from_secs(10), "two restarts", |s| {
        s.instances[0].restarts >= 2
    });
    let i = &service.instances[0];
    assert_eq!(i.exit_code, Some(3));
    assert_eq!(i.message.as_deref(), Some("exited with code 3"));

    // Back-off doubles from 100 ms: in the next 1.5 s there is room for a
    // few restarts, not the hundreds a restart loop without back-off makes
    // (a busy machine only makes fewer). They do go on growing.
    let before = i.restarts;
    let restarts = || d.service("failing").unwrap().instances[0].restarts;
    std::thread::sleep(Duration::from_millis(1500));
    let after = restarts();
    assert!(
        after <= before + 5,
        "restarts grew too fast for a back-off: {before} -> {after}"
    );
    wait_until(Duration::from_secs(10), "restarts grow", || {
        restarts() > before
    });

    // The platform says what it did, in the service's log.
    let logs = d.log_texts("failing");
    assert!(
        logs.iter().any(|l| l == "exit: leaving with code 3"),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[mesh] exited with code 3; restart 2 in 0.2s")),
        "{logs:?}"
    );
}

#[test]
fn out_of_memory_and_traps_are_reported_with_their_cause() {
    let d = Daemon::start();
    d.create("hungry", &["--memory", "32Mi"], &["oom"]);
    d.create_service("trapper", &[], &["app", "trap"]);
    let hungry = d.wait_for("hungry", Duration::from_secs(10), "an OOM message", |s| {
        s.instances[0].message.is_some()
    });
    assert_eq!(hungry.settings.memory_limit_bytes, 32 * 1024 * 1024);
    assert_eq!(
        hungry.instances[0].message.as_deref(),
        Some("exceeded memory limit 32 MiB")
    );
    assert_eq!(hungry.instances[0].exit_code, None);
    // The guest got close to the limit before it was refused.
    let logs = d.log_texts("hungry");
    assert!(
        logs.iter().any(|l| l.starts_with("oom: holding 16 MiB")),
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.starts_with("oom: holding 32 MiB")),
        "{logs:?}"
    );

    let trapper = d.wait_for("trapper", Duration::from_secs(10), "a trap message", |s| {
        s.instances[0].message.is_some()
    });
    let message = trapper.instances[0].message.clone().unwrap();
    assert!(message.starts_with("trap: "), "{message}");
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.ends_with("in app::trap"), "{message}");
}

#[test]
fn a_spinning_worker_is_deleted_and_stops_burning_cpu() {
    let d = Daemon::start_process();
    d.create("spinner", &[], &["spin"]);
    d.wait_running("spinner", 1);
    std::thread::sleep(Duration::from_millis(300));

    // A sanity bound: the target (within a second) is measured by
    // scripts/bench-converge.py.
    let asked = Instant::now();
    d.ok(&["svc", "delete", "spinner"]);
    wait_until(
        Duration::from_secs(10),
        "the spinner is no longer listed",
        || d.service("spinner").is_none(),
    );
    eprintln!("spinning worker gone in {:?}", asked.elapsed());

    // The daemon is idle again: over half a second it uses far less than
    // the full core a spinning guest would.
    std::thread::sleep(Duration::from_millis(200));
    let ticks_before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_millis(1000));
    let used = cpu_ticks(d.pid()) - ticks_before;
    assert!(
        used < 30,
        "daemon used {used} CPU ticks of 100 in a second after the delete"
    );
    // And still answers.
    assert!(d.services().is_empty());
}

#[test]
fn env_and_argv_reach_the_guest() {
    let d = Daemon::start();
    d.create(
        "printer",
        &["--env", "GREETING=hello world", "-e", "EMPTY="],
        &["env", "--flag", "x y"],
    );
    wait_until(Duration::from_secs(10), "the env output", || {
        d.log_texts("printer")
            .iter()
            .any(|l| l.starts_with("env: MESH_SERVICE"))
    });
    let logs = d.log_texts("printer");
    assert!(
        logs.contains(&"argv: app env --flag x y".to_string()),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"env: GREETING=hello world".to_string()),
        "{logs:?}"
    );
    assert!(logs.contains(&"env: EMPTY=".to_string()), "{logs:?}");
    assert!(
        logs.contains(&"env: MESH_STACK=app".to_string()),
        "{logs:?}"
    );
    // The host's own environment does not leak in.
    assert!(
        !logs.iter().any(|l| l.starts_with("env: PATH=")),
        "{logs:?}"
    );
    let service = d.service("printer").unwrap();
    assert_eq!(service.settings.env["GREETING"], "hello world");
}

#[test]
fn changing_the_command_restarts_instances_on_it() {
    let d = Daemon::start();
    d.create("worker", &["--instances", "2"], &["queue"]);
    d.wait_running("worker", 2);
    d.ok(&["svc", "update", "worker", "--command", "app sleep 600000"]);
    let service = d.wait_running("worker", 2);
    assert_eq!(service.command, ["app", "sleep", "600000"]);
    let logs = d.log_texts("worker");
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("sleep: sleeping"))
            .count(),
        2,
        "{logs:?}"
    );
    for i in &service.instances {
        assert_eq!(i.restarts, 0, "restarts reset on a new command: {i:?}");
    }
    // A command whose instances fail stops its rollout: the one instance
    // it moved goes back to the command before, and the update says so.
    let line = d.fails(&["svc", "update", "worker", "--command", "app exit 7"]);
    assert!(
        line.contains("new instances failed: exited with code 7; the previous instances are kept"),
        "{line}"
    );
    let service = d.wait_running("worker", 2);
    assert!(
        service.instances.iter().all(|i| i.exit_code.is_none()),
        "{service:#?}"
    );
}

#[test]
fn kill_9_and_restart_brings_every_instance_back() {
    let mut d = Daemon::start_process();
    d.create("worker", &["--instances", "3"], &["queue"]);
    d.create(
        "ledger",
        &["--stack", "finance", "--instances", "2"],
        &["queue"],
    );
    d.wait_running("worker", 3);
    let token = d.info["token"].clone();

    d.kill9();
    d.restart();
    assert_eq!(
        d.info["token"], token,
        "the operator's token survives restarts"
    );
    d.wait_running("worker", 3);
    d.wait_running("ledger", 2);
    let ledger = d.service("ledger").unwrap();
    assert_eq!(ledger.stack, "finance");
}

#[test]
fn no_acknowledged_create_is_lost_when_the_daemon_is_killed() {
    let mut d = Daemon::start_process();
    let app = app_wasm();
    d.ok(&["stack", "deploy", "app", app.to_str().unwrap()]);
    // Create services back to back from another thread and kill the daemon
    // while they stream in.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let dir = d.data_dir().to_path_buf();
        std::thread::spawn(move || {
            for n in 0..200 {
                let name = format!("w{n}");
                let out = std::process::Command::new(support::mesh_bin())
                    .args(create_args(&name, &["--instances", "0"], &["app", "queue"]))
                    .env("MESH_DATA_DIR", &dir)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    break;
                }
                acknowledged.lock().unwrap().push(name);
            }
        })
    };
    wait_until(Duration::from_secs(20), "15 creates acknowledged", || {
        acknowledged.lock().unwrap().len() >= 15
    });
    d.kill9();
    writer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 15,
        "only {} creates before the kill",
        acknowledged.len()
    );

    d.restart();
    let names: Vec<String> = d.services().into_iter().map(|s| s.name).collect();
    for name in &acknowledged {
        assert!(
            names.contains(name),
            "acknowledged service {name} was lost; have {names:?}"
        );
    }
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut d = Daemon::start_process();
    d.create("worker", &[], &["queue"]);
    d.wait_running("worker", 1);
    let status = d.terminate();
    assert!(status.success(), "daemon exit status {status}");
    assert!(
        !d.data_dir().join("daemon.json").exists(),
        "daemon.json removed on clean exit"
    );
    assert!(d.log().contains("mesh stopped"), "{}", d.log());
    let err = d.fails(&["service", "ls"]);
    assert!(err.contains("mesh up"), "{err}");
}

/// A service says what it is for: given at create, shown by `service ls
/// --json`, changed and removed by update. A description with a control
/// character, or too long, is one error line and changes nothing.
#[test]
fn a_description_is_kept_shown_and_checked() {
    let d = Daemon::start();
    d.create(
        "mailer",
        &["--description", "Sends the weekly newsletter"],
        &["queue"],
    );
    let shown = |d: &Daemon| d.service("mailer").unwrap().settings.description;
    assert_eq!(shown(&d).as_deref(), Some("Sends the weekly newsletter"));

    d.ok(&[
        "svc",
        "update",
        "mailer",
        "--description",
        "Sends every mail",
    ]);
    assert_eq!(shown(&d).as_deref(), Some("Sends every mail"));

    let err = d.fails(&["svc", "update", "mailer", "--description", "two\nlines"]);
    assert!(err.contains("--description"), "{err}");
    let long = "x".repeat(201);
    let err = d.fails(&["svc", "update", "mailer", "--description", &long]);
    assert!(err.contains("200 characters"), "{err}");
    assert_eq!(shown(&d).as_deref(), Some("Sends every mail"));

    d.ok(&["svc", "update", "mailer", "--description", ""]);
    assert_eq!(shown(&d), None);
}

/// `svc update` says what it changed, and a cron job's next run.
#[test]
fn an_update_says_what_it_changed() {
    let d = Daemon::start();
    d.create("mailer", &["-e", "OLD=1"], &["queue"]);
    let out = d.ok(&[
        "svc",
        "update",
        "mailer",
        "--instances",
        "2",
        "-e",
        "LOG_LEVEL=debug",
        "--unset-env",
        "OLD",
    ]);
    assert!(out.contains(", 2 instances, "), "{out}");
    assert!(
        out.contains("Changed: env set LOG_LEVEL; instances 2; env unset OLD"),
        "{out}"
    );
    let out = d.ok(&["svc", "update", "mailer", "--schedule", "@every 30m"]);
    assert!(out.contains("Changed: schedule @every 30m"), "{out}");
    assert!(out.contains("Schedule `@every 30m`: next run "), "{out}");
}

/// `svc show NAME` prints one service's whole configuration, and `svc ls`
/// takes a bare name as the other service commands do.
#[test]
fn show_and_ls_take_a_bare_name() {
    let d = Daemon::start();
    d.create(
        "mailer",
        &["--description", "Sends mail", "-e", "FROM=ops@example.com"],
        &["queue"],
    );
    d.create("other", &[], &["queue"]);
    let shown = d.ok(&["svc", "show", "mailer"]);
    assert!(
        shown.starts_with("mailer (worker wasm) in stack app"),
        "{shown}"
    );
    for line in [
        "Sends mail",
        "app queue",
        "FROM=ops@example.com",
        "app-mailer",
    ] {
        assert!(shown.contains(line), "{line} not in:\n{shown}");
    }
    let listed = d.ok(&["svc", "ls", "mailer"]);
    assert!(listed.contains("app/mailer"), "{listed}");
    assert!(!listed.contains("app/other"), "{listed}");
    // One row per service with --summary: running of wanted.
    d.wait_running("mailer", 1);
    d.wait_running("other", 1);
    let summary = d.ok(&["svc", "ls", "--summary"]);
    let rows: Vec<&str> = summary.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{summary}");
    assert!(
        rows[0].starts_with("app/mailer")
            && rows[0].contains(" 1/1 ")
            && rows[0].contains("running"),
        "{summary}"
    );
}
