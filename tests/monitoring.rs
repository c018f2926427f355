//! Monitoring and debugging end to end: `service ls` states, logs with
//! `--tail`, `--since` and `-f`, interactive runs (piped and in a real
//! terminal under tmux), events, and `/metrics`.

use crate::support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mesh_host::api::wire::ServiceView;
use mesh_host::telemetry::{Event, LogLine};
use support::{app_wasm, guest, parse, wait_until, Daemon, Tmux};

#[test]
fn service_ls_tells_crashing_oom_and_healthy_instances_apart() {
    let d = Daemon::start();
    d.create("healthy", &[], &["queue"]);
    d.create("crashing", &[], &["exit", "3"]);
    d.create("hungry", &["--memory", "16Mi"], &["oom"]);
    d.ok(&["svc", "update", "healthy", "--env", "LEVEL=debug"]);
    d.wait_running("healthy", 1);
    let crashing = d.wait_for("crashing", Duration::from_secs(10), "restarts", |s| {
        s.instances[0].restarts >= 2
    });
    let i = &crashing.instances[0];
    assert_eq!(i.exit_code, Some(3));
    assert_eq!(i.message.as_deref(), Some("exited with code 3"));
    let hungry = d.wait_for("hungry", Duration::from_secs(10), "an OOM", |s| {
        s.instances[0].message.is_some()
    });
    assert_eq!(
        hungry.instances[0].message.as_deref(),
        Some("exceeded memory limit 16 MiB")
    );

    let table = d.ok(&["service", "ls"]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("app/{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .to_string()
    };
    assert!(row("healthy").contains("running"), "{table}");
    assert!(row("crashing").contains("exited with code 3"), "{table}");
    // Between runs the table says how long the back-off is and after how
    // many restarts (the instance spends almost all its time waiting).
    wait_until(Duration::from_secs(10), "a back-off message", || {
        let table = d.ok(&["service", "ls", "-n", "crashing"]);
        table.lines().any(|l| {
            l.contains("backoff")
                && l.contains("exited with code 3; back-off ")
                && l.contains("s after ")
                && l.ends_with(" restarts")
        })
    });
    assert!(
        row("hungry").contains("exceeded memory limit 16 MiB"),
        "{table}"
    );
    // No colour codes when stdout is not a terminal.
    assert!(!table.contains('\x1b'), "{table:?}");

    // Filters.
    let only: Vec<ServiceView> = parse(&d.ok(&["service", "ls", "-n", "hungry", "--json"]));
    assert_eq!(only.len(), 1);
    let err = d.fails(&["service", "ls", "-n", "nope"]);
    assert_eq!(
        err,
        "error: no service named nope (services: crashing, healthy, hungry)"
    );
    let err = d.fails(&["service", "ls", "--stack", "nope"]);
    assert_eq!(err, "error: no services in stack nope");

    // Events say what happened, with times.
    // Each with its time, or it would not read as an `Event`.
    let events: Vec<Event> = parse(&d.ok(&["events", "--json"]));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "stack.deployed",
        "service.created",
        "service.updated",
        "instance.started",
        "instance.exited",
        "instance.oom",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
}

#[test]
fn logs_tail_since_and_follow() {
    let d = Daemon::start();
    d.create("worker", &["--env", "HEARTBEAT_MS=100"], &["queue"]);
    d.wait_for(
        "worker",
        Duration::from_secs(10),
        "a few heartbeats",
        |_| d.log_texts("worker").len() >= 5,
    );
    let tail: Vec<LogLine> =
        parse(&d.ok(&["svc", "logs", "-n", "worker", "--tail", "2", "--json"]));
    assert_eq!(tail.len(), 2);
    let recent = d.ok(&["svc", "logs", "-n", "worker", "--since", "1h"]);
    assert!(recent.contains("queue: heartbeat 1"), "{recent}");
    let future = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    assert_eq!(
        d.ok(&["svc", "logs", "-n", "worker", "--since", &future]),
        ""
    );
    // Search, in any case, and a time range.
    let found: Vec<LogLine> = parse(&d.ok(&[
        "svc",
        "logs",
        "-n",
        "worker",
        "--grep",
        "HEARTBEAT 3",
        "--json",
    ]));
    assert!(
        !found.is_empty() && found.iter().all(|l| l.text.contains("heartbeat 3")),
        "{found:?}"
    );
    assert_eq!(
        d.ok(&["svc", "logs", "-n", "worker", "--until", "1h"]),
        "",
        "lines from before an hour ago"
    );
    let all: Vec<LogLine> = parse(&d.ok(&["svc", "logs", "-n", "worker", "--json"]));
    let cut = all[2].time.to_rfc3339();
    let before: Vec<LogLine> =
        parse(&d.ok(&["svc", "logs", "-n", "worker", "--until", &cut, "--json"]));
    assert!(
        !before.is_empty() && before.iter().all(|l| l.time < all[2].time),
        "{before:?}"
    );
    let err = d.fails(&["svc", "logs", "-n", "worker", "--grep", &"x".repeat(300)]);
    assert!(err.contains("at most 256"), "{err}");
    let err = d.fails(&["svc", "logs", "-n", "worker", "--instance", "worker.9"]);
    assert!(
        err.contains("no instance worker.9 of worker (its instances: worker.1)"),
        "{err}"
    );
    let err = d.fails(&["svc", "logs", "-n", "nope"]);
    assert!(err.contains("no service named nope"), "{err}");

    // A follower sees lines written after it attached, across a restart.
    let mut follower = d
        .mesh_cmd(&["svc", "logs", "-n", "worker", "-f", "--tail", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let attached = chrono::Utc::now();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    thread::sleep(Duration::from_millis(300));
    d.ok(&["svc", "update", "worker", "--env", "HEARTBEAT_MS=150"]);
    let mut seen = Vec::new();
    // After the update the instance restarts: heartbeat 1 again.
    wait_until(
        Duration::from_secs(10),
        "the follower sees the restarted instance",
        || {
            seen.extend(rx.try_iter());
            seen.iter().any(|l| l.ends_with("queue: heartbeat 1")) && seen.len() >= 4
        },
    );
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen.len() >= 4, "follower saw {seen:?}");
    assert!(
        seen.iter().any(|l| l.ends_with("queue: heartbeat 1")),
        "no line from the restarted instance: {seen:?}"
    );
    for line in &seen {
        let time: chrono::DateTime<chrono::Utc> =
            line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(
            time >= attached - chrono::TimeDelta::milliseconds(50),
            "{line}"
        );
    }
}

#[test]
fn logs_survive_a_restart_and_followers_end_cleanly() {
    let mut d = Daemon::start_process();
    d.create("worker", &["--env", "HEARTBEAT_MS=100"], &["queue"]);
    d.wait_for("worker", Duration::from_secs(10), "heartbeats", |_| {
        d.log_texts("worker").len() >= 3
    });
    d.restart();
    let logs = d.log_texts("worker");
    assert!(
        logs.iter().any(|l| l == "queue: heartbeat 2"),
        "logs lost over a restart: {logs:?}"
    );

    // A reader that goes away ends the follower quietly, like SIGPIPE.
    let mut follower = d
        .mesh_cmd(&["svc", "logs", "-n", "worker", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(follower.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("worker.1"), "{first}");
    // The pipe is closed now; the next heartbeat finds it so.
    let status = follower.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A follower does not keep the daemon from stopping, and says why it
    // ended.
    let follower = d
        .mesh_cmd(&["events", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    assert!(d.terminate().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "the daemon took {:?} to stop with a follower attached",
        stopping.elapsed()
    );
    let out = follower.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: the daemon stopped; nothing more to follow"
    );
}

#[test]
fn run_attaches_stdio_and_passes_the_exit_code() {
    let d = Daemon::start();
    d.create(
        "worker",
        &["--env", "GREETING=hello there", "--memory", "64Mi"],
        &["queue"],
    );
    let out = d.mesh(&["service", "run", "-n", "worker", "--", "app", "env"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("argv: app env\n"), "{text}");
    assert!(text.contains("env: GREETING=hello there\n"), "{text}");
    assert!(text.contains("env: MESH_SERVICE=worker\n"), "{text}");
    // Its output is in the service's logs too, and it is in the events.
    let logs: Vec<LogLine> = parse(&d.ok(&["svc", "logs", "-n", "worker", "--json"]));
    assert!(
        logs.iter()
            .any(|l| l.instance == "worker.run1" && l.text == "argv: app env"),
        "{logs:?}"
    );

    let out = d.mesh(&["service", "run", "-n", "worker", "--", "app", "exit", "7"]);
    assert_eq!(out.status.code(), Some(7));
    let events: Vec<Event> = parse(&d.ok(&["events", "--json"]));
    let of_run = |kind: &str| {
        events
            .iter()
            .find(|e| e.kind == kind && e.instance.as_deref() == Some("worker.run2"))
            .unwrap_or_else(|| panic!("no {kind} of worker.run2 in {events:?}"))
            .message
            .clone()
    };
    assert_eq!(
        of_run("instance.started"),
        "interactive run of `app exit 7`"
    );
    assert_eq!(of_run("instance.exited"), "exited with code 7");

    // stdin piped through the run reaches the guest and comes back.
    let mut cat = d
        .mesh_cmd(&["svc", "run", "-n", "worker", "--", "app", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let mut stdin = cat.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        thread::spawn(move || stdin.write_all(input.as_bytes()))
    };
    let out = cat.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), input);

    // `mesh run` runs a .wasm once without a service.
    let out = d.mesh(&["run", "--", app_wasm().to_str().unwrap(), "exit", "5"]);
    assert_eq!(out.status.code(), Some(5));

    // Bad input: one line, non-zero.
    let err = d.fails(&["svc", "run", "-n", "nope", "--", "app"]);
    assert!(err.contains("no service named nope"), "{err}");
    let err = d.fails(&["svc", "run", "-n", "worker", "--", "ap"]);
    assert!(err.contains("no component named 'ap'"), "{err}");
    let payments = guest("payments");
    d.create_service(
        "payments",
        &["--stack", "finance"],
        &[payments.to_str().unwrap()],
    );
    let err = d.fails(&[
        "svc", "run", "-n", "payments", "--stack", "finance", "--", "payments",
    ]);
    assert!(
        err.starts_with(
            "error: component 'payments' does not export `wasi:cli/run`, so it cannot run interactively (it exports wasi:http/incoming-handler"
        ),
        "{err}"
    );
}

#[test]
fn a_client_that_goes_away_stops_its_instance() {
    let d = Daemon::start();
    d.create("worker", &[], &["queue"]);
    d.wait_running("worker", 1);
    let mut run = d
        .mesh_cmd(&["svc", "run", "-n", "worker", "--", "app", "sleep", "60000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_for("worker", Duration::from_secs(10), "the run listed", |s| {
        s.instances.len() == 2
    });
    run.kill().unwrap();
    run.wait().unwrap();
    d.wait_for("worker", Duration::from_secs(5), "the run gone", |s| {
        s.instances.len() == 1
    });
}

#[test]
fn an_interactive_terminal_session_works_in_tmux() {
    let d = Daemon::start_process();
    d.create("worker", &["--env", "WHO=tmux"], &["queue"]);
    let mesh = support::mesh_bin();
    let dir = d.data_dir().display().to_string();
    let session = format!("mesh-repl-{}", std::process::id());
    let tmux = Tmux::start(
        &session,
        &format!(
            "MESH_DATA_DIR={dir} {mesh} service run -n worker -- app repl; echo EXIT=$?; \
             echo MODES $(stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo|isig)'); sleep 60"
        ),
    );
    // capture-pane drops the prompt's trailing space.
    tmux.wait_for("app repl: commands are echo, add, env, exit\n>");
    tmux.keys(&["add 2 3", "Enter"]);
    let screen = tmux.wait_for("5\n");
    // The guest echoed what was typed (the terminal is raw, so it must).
    assert!(screen.contains("> add 2 3"), "{screen}");
    tmux.keys(&["env WHO", "Enter"]);
    tmux.wait_for("tmux\n");
    tmux.keys(&["exit 4", "Enter"]);
    tmux.wait_for("EXIT=4");
    // The terminal was restored: line editing, echo and signals are on
    // again (raw mode turns all three off).
    let screen = tmux.wait_for("MODES ");
    assert!(screen.contains("MODES isig icanon echo"), "{screen}");
    drop(tmux);

    // Ctrl-C stops the remote instance.
    let session = format!("mesh-spin-{}", std::process::id());
    let tmux = Tmux::start(
        &session,
        &format!(
            "MESH_DATA_DIR={dir} {mesh} service run -n worker -- app spin; echo EXIT=$?; sleep 60"
        ),
    );
    tmux.wait_for("spin: looping forever");
    let asked = Instant::now();
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("EXIT=1");
    assert!(
        screen.contains("mesh: the instance ended: stopped"),
        "{screen}"
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let d = Daemon::start();
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.create("job", &["--schedule", "@yearly"], &["send-emails"]);
    d.ok(&["svc", "trigger", "-n", "job"]);
    // The trap first: afterwards a live instance (with memory) serves the rest.
    for path in ["/trap", "/", "/nope"] {
        d.get("www.localhost", path);
    }
    d.wait_for("job", Duration::from_secs(5), "a run", |s| {
        !s.runs.is_empty()
    });
    let api = d.info["api_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let scrape = || {
        // Every line is a comment or `name{labels} value` with a number.
        let mut series = std::collections::BTreeMap::new();
        for line in d.metrics().lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# ") {
                assert!(
                    rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                    "{line}"
                );
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = name_labels.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad name: {line}"
            );
            if name_labels.contains('{') {
                assert!(name_labels.ends_with('}'), "{line}");
            }
            series.insert(name_labels.to_string(), value);
        }
        series
    };
    let series = scrape();
    let web = "env=\"default\",stack=\"app\",service=\"web\"";
    for status in [200, 404, 500] {
        assert_eq!(
            series[&format!("mesh_requests_total{{{web},status=\"{status}\"}}")],
            1.0
        );
    }
    assert_eq!(
        series[&format!("mesh_request_duration_seconds_count{{{web}}}")],
        3.0
    );
    // web's one instance, running or backing off after the trap.
    assert!(series
        .keys()
        .any(|k| k.starts_with(&format!("mesh_instances{{{web},state="))));
    assert!(series[&format!("mesh_memory_bytes{{{web}}}")] > 0.0);
    let job = "env=\"default\",stack=\"app\",service=\"job\"";
    assert_eq!(
        series[&format!("mesh_cron_runs_total{{{job},status=\"succeeded\"}}")],
        1.0
    );
    assert!(series.contains_key("mesh_outgoing_calls_total{kind=\"in_process\"}"));
    // The trap retired one instance: one restart.
    assert_eq!(series[&format!("mesh_restarts_total{{{web}}}")], 1.0);

    // A deleted service's series go with it.
    d.ok(&["svc", "delete", "job"]);
    let series = scrape();
    assert!(
        !series.keys().any(|k| k.contains("service=\"job\"")),
        "{series:?}"
    );
    assert!(series.contains_key(&format!("mesh_requests_total{{{web},status=\"200\"}}")));

    // Without the token: 401.
    let r = support::http_request(&api, "GET", &api, "/metrics", &[], b"");
    assert_eq!(r.status, 401);
}
