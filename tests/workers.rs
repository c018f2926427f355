//! Worker services end to end: a real daemon, the real `mesh` binary, the
//! real `app.wasm` guest.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{app_wasm, cpu_ticks, Daemon};

fn instances(service: &Value) -> &Vec<Value> {
    service["instances"].as_array().unwrap()
}

#[test]
fn three_queue_workers_run_and_scale_down_within_a_second() {
    let d = Daemon::start();
    let app = app_wasm();
    let out = d.ok(&[
        "svc",
        "create",
        "-n",
        "worker",
        "--instances",
        "3",
        "--",
        app.to_str().unwrap(),
        "queue",
    ]);
    assert!(out.contains("Created worker worker"), "{out}");

    let service = d.wait_running("worker", 3);
    let ids: Vec<&str> = instances(&service)
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["worker.1", "worker.2", "worker.3"]);
    // The Contract's keys.
    assert_eq!(service["type"], "worker");
    assert_eq!(service["stack"], "app");
    assert_eq!(service["command"], serde_json::json!(["app", "queue"]));
    assert_eq!(service["instances_desired"], 3);
    assert_eq!(service["memory_limit_bytes"], 128 * 1024 * 1024);
    assert_eq!(service["endpoints"], serde_json::json!([]));
    assert_eq!(service["schedule"], Value::Null);
    assert_eq!(service["next_run"], Value::Null);
    assert_eq!(service["runs"], serde_json::json!([]));
    for i in instances(&service) {
        assert_eq!(i["restarts"], 0);
        assert_eq!(i["exit_code"], Value::Null);
        assert!(i["started_at"].is_string());
    }

    // Every instance really runs the guest: each one's heartbeat is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = d.ok(&["svc", "logs", "-n", "worker"]);
        if ["worker.1", "worker.2", "worker.3"].iter().all(|id| {
            logs.lines()
                .any(|l| l.contains(id) && l.contains("queue: heartbeat"))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat from every instance:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let asked = Instant::now();
    d.ok(&["svc", "update", "worker", "--instances", "1"]);
    d.wait_for("worker", Duration::from_secs(1), "one instance", |s| {
        instances(s).len() == 1
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
        instances(s)[0]["restarts"].as_u64().unwrap() >= 2
    });
    let i = &instances(&service)[0];
    assert_eq!(i["exit_code"], 3);
    assert_eq!(i["message"], "exited with code 3");

    // Back-off doubles from 100 ms: in the next 1.5 s there is room for a
    // few restarts, not the hundreds a restart loop without back-off makes.
    let before = i["restarts"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let after = instances(&d.service("failing").unwrap())[0]["restarts"]
        .as_u64()
        .unwrap();
    assert!(after > before, "restarts did not grow: {before} -> {after}");
    assert!(
        after <= before + 5,
        "restarts grew too fast for a back-off: {before} -> {after}"
    );

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
    let app = app_wasm();
    d.ok(&[
        "svc",
        "create",
        "-n",
        "hungry",
        "--memory",
        "32Mi",
        "--",
        app.to_str().unwrap(),
        "oom",
    ]);
    d.ok(&["svc", "create", "-n", "trapper", "--", "app", "trap"]);
    let hungry = d.wait_for("hungry", Duration::from_secs(10), "an OOM message", |s| {
        instances(s)[0]["message"].is_string()
    });
    assert_eq!(hungry["memory_limit_bytes"], 32 * 1024 * 1024);
    assert_eq!(
        instances(&hungry)[0]["message"],
        "exceeded memory limit 32 MiB"
    );
    assert_eq!(instances(&hungry)[0]["exit_code"], Value::Null);
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
        instances(s)[0]["message"].is_string()
    });
    let message = instances(&trapper)[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with("trap: "), "{message}");
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.ends_with("in app::trap"), "{message}");
}

#[test]
fn a_spinning_worker_is_deleted_within_a_second_and_stops_burning_cpu() {
    let d = Daemon::start_process();
    d.create("spinner", &[], &["spin"]);
    d.wait_running("spinner", 1);
    std::thread::sleep(Duration::from_millis(300));

    let asked = Instant::now();
    d.ok(&["svc", "delete", "spinner"]);
    let deadline = asked + Duration::from_secs(1);
    while d.service("spinner").is_some() {
        assert!(
            Instant::now() < deadline,
            "spinner still listed a second after delete"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = d.log_texts("printer");
        if logs.iter().any(|l| l.starts_with("env: MESH_SERVICE")) {
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
            break;
        }
        assert!(Instant::now() < deadline, "no env output: {logs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let service = d.service("printer").unwrap();
    assert_eq!(service["env"]["GREETING"], "hello world");
}

#[test]
fn changing_the_command_restarts_instances_on_it() {
    let d = Daemon::start();
    d.create("worker", &["--instances", "2"], &["queue"]);
    d.wait_running("worker", 2);
    d.ok(&["svc", "update", "worker", "--command", "app exit 7"]);
    let service = d.wait_for(
        "worker",
        Duration::from_secs(10),
        "both instances on the new command",
        |s| instances(s).iter().all(|i| i["exit_code"] == 7),
    );
    assert_eq!(service["command"], serde_json::json!(["app", "exit", "7"]));
    d.ok(&["svc", "update", "worker", "--command", "app queue"]);
    let service = d.wait_running("worker", 2);
    for i in instances(&service) {
        assert_eq!(i["restarts"], 0, "restarts reset on a new command: {i}");
    }
}

#[test]
fn kill_9_and_restart_brings_every_instance_back() {
    let mut d = Daemon::start_process();
    let app = app_wasm();
    d.ok(&[
        "svc",
        "create",
        "-n",
        "worker",
        "--instances",
        "3",
        "--",
        app.to_str().unwrap(),
        "queue",
    ]);
    d.ok(&[
        "svc",
        "create",
        "--stack",
        "finance",
        "-n",
        "ledger",
        "--instances",
        "2",
        "--",
        app.to_str().unwrap(),
        "queue",
    ]);
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
    assert_eq!(ledger["stack"], "finance");
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
                    .args([
                        "svc",
                        "create",
                        "-n",
                        &name,
                        "--instances",
                        "0",
                        "--",
                        "app",
                        "queue",
                    ])
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 15 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    writer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 15,
        "only {} creates before the kill",
        acknowledged.len()
    );

    d.restart();
    let names: Vec<String> = d
        .services()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
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
