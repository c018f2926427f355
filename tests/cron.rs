//! Cron jobs end to end: schedules fire fresh instances of the real
//! `app.wasm`, runs are recorded, slow runs are not piled up, and bad
//! schedules are refused.

use crate::support;

use std::time::{Duration, Instant};

use chrono::Utc;
use mesh_host::api::wire::ServiceView;
use mesh_host::model::{Run, RunStatus, RunTrigger, ServiceType};
use support::{app_wasm, create_args, Daemon};

/// The runs that have ended (a run is listed from the moment it starts).
fn ended(service: &ServiceView) -> Vec<&Run> {
    service
        .runs
        .iter()
        .filter(|r| r.status != RunStatus::Running)
        .collect()
}

/// Run numbers as listed: newest first means strictly decreasing.
fn assert_newest_first(service: &ServiceView) {
    let numbers: Vec<u64> = service.runs.iter().map(|r| r.number).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] > w[1]),
        "runs not newest first: {numbers:?}"
    );
}

fn create(d: &Daemon, name: &str, schedule: &str, argv: &[&str]) {
    d.create(name, &["--schedule", schedule], argv);
}

#[test]
fn an_every_second_job_fires_fresh_instances() {
    let d = Daemon::start();
    let created = Instant::now();
    create(&d, "ticker", "@every 1s", &["count"]);
    let job = d.service("ticker").unwrap();
    assert_eq!(job.service_type, ServiceType::Cron);
    assert_eq!(job.settings.schedule.as_deref(), Some("@every 1s"));
    let next = job.next_run.unwrap();
    let until_next = next - Utc::now();
    assert!(
        until_next <= chrono::TimeDelta::milliseconds(1000),
        "next run {next} is more than a second away"
    );

    std::thread::sleep(Duration::from_millis(3500).saturating_sub(created.elapsed()));
    let job = d.service("ticker").unwrap();
    let done: Vec<&Run> = job
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    assert!(done.len() >= 2, "fewer than 2 runs in 3.5 s: {job:#?}");
    // The Contract's keys, newest first (`duration_ms` and `started_at`
    // are there and of their types, or the list would not read as `Run`s).
    for run in &done {
        assert_eq!(run.exit_code, Some(0));
        assert_eq!(run.trigger, RunTrigger::Schedule);
    }
    assert!(done[0].started_at > done[1].started_at);
    // Firings land on whole seconds (aligned to the epoch), a little late:
    // how little is measured by the benchmarks (`cargo bench --bench
    // cron_fire`, scripts/bench-cron-load.py); here only that it is late
    // by seconds at most, however busy the machine.
    for run in &done {
        let scheduled = run.scheduled_at;
        assert_eq!(scheduled.timestamp_subsec_millis(), 0, "{run:?}");
        let late = run.started_at - scheduled;
        assert!(
            late < chrono::TimeDelta::seconds(5),
            "run started {late} after its time: {run:?}"
        );
    }

    // Each run is a fresh instance: its in-memory counter is always 1.
    let logs = d.ok(&["svc", "logs", "-n", "ticker"]);
    let counts: Vec<&str> = logs.lines().filter(|l| l.contains("count: ")).collect();
    assert!(counts.len() >= 2, "{logs}");
    assert!(counts.iter().all(|l| l.ends_with("count: 1")), "{logs}");
    let first = done.last().unwrap().instance.as_deref().unwrap();
    assert!(
        logs.lines()
            .any(|l| l.contains(first) && l.ends_with("count: 1")),
        "no output from {first}:\n{logs}"
    );

    // The table shows cron jobs with their schedule and runs.
    let table = d.ok(&["service", "ls"]);
    assert!(table.contains("NEXT RUN"), "{table}");
    assert!(table.contains("@every 1s"), "{table}");
    let runs_table = d.ok(&["svc", "runs", "-n", "ticker"]);
    assert!(runs_table.contains("succeeded"), "{runs_table}");
}

#[test]
fn failures_timeouts_and_slow_runs_are_recorded() {
    let d = Daemon::start();
    create(&d, "failing", "@every 1s", &["exit", "3"]);
    create(&d, "slow", "@every 1s", &["sleep", "2500"]);
    d.create(
        "spinner",
        &["--schedule", "@every 1s", "--timeout", "300ms"],
        &["spin"],
    );

    // The slow job never has two runs at once while we watch it.
    let deadline = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < deadline {
        let slow = d.service("slow").unwrap();
        assert!(slow.instances.len() <= 1, "slow job piled up: {slow:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let failing = d.service("failing").unwrap();
    let last = ended(&failing)[0];
    assert_eq!(last.status, RunStatus::Failed, "{failing:#?}");
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(last.message.as_deref(), Some("exited with code 3"));

    let slow = d.service("slow").unwrap();
    // Skipped firings are numbered between runs that were still going;
    // the list stays in number order all the same.
    assert_newest_first(&slow);
    let statuses: Vec<RunStatus> = slow.runs.iter().map(|r| r.status).collect();
    assert!(statuses.contains(&RunStatus::Skipped), "{slow:#?}");
    assert!(statuses.contains(&RunStatus::Succeeded), "{slow:#?}");
    let skipped = slow
        .runs
        .iter()
        .find(|r| r.status == RunStatus::Skipped)
        .unwrap();
    assert_eq!(skipped.instance, None);
    assert!(
        skipped
            .message
            .as_deref()
            .unwrap()
            .contains("is still going"),
        "{skipped:?}"
    );

    let spinner = d.wait_for("spinner", Duration::from_secs(5), "a timed-out run", |s| {
        s.runs.iter().any(|r| r.status == RunStatus::TimedOut)
    });
    let timed_out = spinner
        .runs
        .iter()
        .find(|r| r.status == RunStatus::TimedOut)
        .unwrap();
    assert_eq!(timed_out.message.as_deref(), Some("timed out after 300ms"));
    // Stopped, not left to spin: how soon after its 300 ms is measured by
    // scripts/bench-converge.py.
    assert!(timed_out.duration_ms < 5000, "{timed_out:?}");
}

#[test]
fn schedule_changes_take_effect_and_jobs_run_by_hand() {
    let d = Daemon::start();
    create(&d, "mailer", "@yearly", &["send-emails"]);
    let job = d.service("mailer").unwrap();
    let next = job.next_run.unwrap();
    assert_eq!(next.format("%m-%d %H:%M:%S").to_string(), "01-01 00:00:00");
    assert!(job.runs.is_empty());

    // By hand: a run now, recorded as manual.
    let out = d.ok(&["svc", "trigger", "-n", "mailer"]);
    assert!(out.contains("Started run 1 of mailer (mailer.r1)"), "{out}");
    let job = d.wait_for("mailer", Duration::from_secs(5), "the manual run", |s| {
        ended(s).len() == 1
    });
    assert_eq!(job.runs.len(), 1);
    assert_eq!(job.runs[0].trigger, RunTrigger::Manual);
    assert_eq!(job.runs[0].status, RunStatus::Succeeded);
    let logs = d.log_texts("mailer");
    assert!(
        logs.contains(&"send-emails: sent 3 emails".to_string()),
        "{logs:?}"
    );

    // A new schedule applies at once.
    d.ok(&["svc", "update", "mailer", "--schedule", "@every 1s"]);
    d.wait_for("mailer", Duration::from_secs(3), "scheduled runs", |s| {
        s.runs.iter().any(|r| r.trigger == RunTrigger::Schedule)
    });
    d.ok(&[
        "svc",
        "update",
        "mailer",
        "--schedule",
        "5 4 * * *",
        "--timezone",
        "Asia/Tokyo",
    ]);
    let job = d.service("mailer").unwrap();
    assert_eq!(job.settings.timezone.as_deref(), Some("Asia/Tokyo"));
    // 04:05 in Tokyo is 19:05 UTC.
    let next = job.next_run.unwrap();
    assert_eq!(next.format("%H:%M").to_string(), "19:05", "{job:#?}");

    // `--schedule none` makes it a worker again.
    d.ok(&["svc", "update", "mailer", "--schedule", "none"]);
    let job = d.service("mailer").unwrap();
    assert_eq!(job.service_type, ServiceType::Worker);
    assert_eq!(job.next_run, None);
    let err = d.fails(&["svc", "trigger", "-n", "mailer"]);
    assert!(err.contains("is a worker, not a cron job"), "{err}");
}

#[test]
fn runs_survive_a_restart_and_missed_firings_are_not_replayed() {
    let mut d = Daemon::start_process();
    create(&d, "ticker", "@every 1s", &["send-emails"]);
    let before = d.wait_for("ticker", Duration::from_secs(5), "two runs", |s| {
        s.runs.len() >= 2
    });
    let numbers_before = before.runs.len();
    d.kill9();
    let down_at = Utc::now();
    std::thread::sleep(Duration::from_millis(2500));
    d.restart();
    let up_at = Utc::now();

    let after = d.wait_for(
        "ticker",
        Duration::from_secs(5),
        "a run after the restart",
        |s| s.runs.len() > numbers_before,
    );
    // Nothing was scheduled for the time the daemon was down.
    for run in &after.runs {
        let at = run.scheduled_at;
        assert!(
            !(at > down_at && at < up_at - chrono::TimeDelta::milliseconds(100)),
            "a missed firing was replayed: {run:?}"
        );
    }
    // Run numbers carry on from before the restart.
    let numbers: Vec<u64> = after.runs.iter().map(|r| r.number).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(
        numbers, sorted,
        "run numbers repeat or go back: {numbers:?}"
    );
}

#[test]
fn bad_schedules_are_refused_with_one_line_and_create_nothing() {
    let d = Daemon::start();
    d.ok(&["stack", "deploy", "app", app_wasm().to_str().unwrap()]);
    d.create_service("worker", &["--instances", "0"], &["app", "queue"]);
    let before = d.ok(&["service", "ls", "--json"]);
    let cases: &[(&[&str], &str)] = &[
        (&["--schedule", "61 * * * *"], "minute `61`"),
        (&["--schedule", "* * *"], "expected 5 fields"),
        (&["--schedule", "@every 0s"], "at least 1s"),
        (
            &["--schedule", "@every banana"],
            "`banana` is not a duration",
        ),
        (
            &["--schedule", "@fortnightly"],
            "unknown macro @fortnightly",
        ),
        (&["--schedule", "0 0 30 2 *"], "never fires"),
        (&["--schedule", "0 25 * * *"], "hour `25`"),
        (&["--schedule", "0 0 * foo *"], "month"),
        (
            &["--schedule", "@daily", "--timezone", "Mars/Olympus"],
            "unknown time zone `Mars/Olympus`",
        ),
        (
            &["--schedule", "@daily", "--timeout", "banana"],
            "invalid --timeout `banana`",
        ),
        (&["--timezone", "Europe/Berlin"], "has no schedule"),
    ];
    for (flags, expected) in cases {
        let args = create_args("job", flags, &["app", "send-emails"]);
        let err = d.fails(&args);
        assert!(
            err.contains(expected),
            "mesh {args:?}: expected `{expected}` in: {err}"
        );
    }
    // Updates are checked the same way.
    let err = d.fails(&["svc", "update", "worker", "--schedule", "* * * * * *"]);
    assert!(err.contains("expected 5 fields"), "{err}");
    assert_eq!(d.ok(&["service", "ls", "--json"]), before);
}
