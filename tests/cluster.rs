//! mesh on etcd: the state store's etcd backend against a real 3-member
//! etcd cluster on loopback, and the real daemon keeping its state there
//! while members die.

use crate::support;

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_host::api::wire::{EnvView, NodeView};
use mesh_host::model::{InstanceState, NodeState, RunStatus};
use mesh_host::store::{Compare, EtcdKv, Kv, KvError, Txn};
use support::etcd::Etcd;
use support::{mesh_bin, parse, wait_until, Daemon};

/// Waits until the subscription has seen `revision`.
fn wait_seen(rx: &mut tokio::sync::watch::Receiver<u64>, revision: u64) {
    wait_until(
        Duration::from_secs(15),
        &format!("the subscription sees revision {revision}"),
        || *rx.borrow_and_update() >= revision,
    );
}

#[test]
fn the_etcd_store_swaps_reads_at_one_revision_follows_and_outlives_its_leader() {
    let mut etcd = Etcd::start(3);
    let kv = EtcdKv::connect(etcd.endpoints(), &["/quiet/"]).unwrap();
    let start = kv.revision().unwrap();

    // Writes and reads, with etcd's revisions.
    let first = kv.txn(Txn::new().put("/a/1", b"one".to_vec())).unwrap();
    assert!(first > start);
    let got = kv.get("/a/1").unwrap().unwrap();
    assert_eq!((got.mod_rev, got.value.as_slice()), (first, &b"one"[..]));
    assert_eq!(kv.get("/a/missing").unwrap(), None);

    // Compare-and-swap: a stale writer is refused and told which key.
    let second = kv
        .txn(
            Txn::new()
                .when(Compare::ModRev("/a/1".into(), first))
                .put("/a/1", b"two".to_vec())
                .put("/b/1", b"x".to_vec()),
        )
        .unwrap();
    let stale = kv.txn(
        Txn::new()
            .when(Compare::ModRev("/a/1".into(), first))
            .put("/a/1", b"three".to_vec()),
    );
    assert!(
        matches!(&stale, Err(KvError::Conflict(k)) if k == "/a/1"),
        "{stale:?}"
    );
    let taken = kv.txn(
        Txn::new()
            .when(Compare::Absent("/b/0".into()))
            .when(Compare::Absent("/b/1".into()))
            .put("/b/1", b"y".to_vec()),
    );
    assert!(
        matches!(&taken, Err(KvError::Conflict(k)) if k == "/b/1"),
        "{taken:?}"
    );
    assert_eq!(kv.get("/a/1").unwrap().unwrap().value, b"two");
    // A key written twice in one transaction: the last write counts.
    kv.txn(
        Txn::new()
            .put("/a/2", b"first".to_vec())
            .delete("/a/2")
            .put("/a/2", b"last".to_vec()),
    )
    .unwrap();
    assert_eq!(kv.get("/a/2").unwrap().unwrap().value, b"last");

    // Several prefixes at one revision, in key order.
    let (ranges, at) = kv.ranges(&["/a/", "/b/"]).unwrap();
    let keys: Vec<Vec<&str>> = ranges
        .iter()
        .map(|r| r.iter().map(|kv| kv.key.as_str()).collect())
        .collect();
    assert_eq!(keys, [vec!["/a/1", "/a/2"], vec!["/b/1"]]);
    assert_eq!(at, kv.revision().unwrap());

    // The change feed replays history, deletes included.
    kv.txn(Txn::new().delete("/b/1")).unwrap();
    let changes = kv.changes_since(first).unwrap();
    let seen: Vec<(&str, bool)> = changes
        .iter()
        .map(|c| (c.key.as_str(), c.value.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/a/1", true),
            ("/b/1", true),
            ("/a/2", true),
            ("/b/1", false)
        ]
    );
    assert_eq!(changes[0].rev, second);

    // A subscription follows commits.
    let mut rx = kv.subscribe();
    let third = kv.txn(Txn::new().put("/a/3", b"3".to_vec())).unwrap();
    wait_seen(&mut rx, third);
    // ... but not writes only to quiet keys (hosts' heartbeats).
    kv.txn(Txn::new().put("/quiet/beat", b"1".to_vec()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!rx.has_changed().unwrap(), "a quiet write woke subscribers");

    // History compacted away is reported as such; the subscription
    // carries on.
    let now = kv.revision().unwrap();
    etcd.etcdctl(&[0, 1, 2], &["compact", &now.to_string()]);
    let compacted = kv.changes_since(first);
    assert!(
        matches!(compacted, Err(KvError::Compacted(r)) if r == first),
        "{compacted:?}"
    );

    // The leader dies: writes go on after the election, the subscription
    // resumes from another member, and nothing written is lost.
    let leader = etcd.leader();
    etcd.kill9(leader);
    let began = Instant::now();
    let after = kv.txn(Txn::new().put("/a/4", b"4".to_vec())).unwrap();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(10), "a write took {took:?}");
    wait_seen(&mut rx, after);
    for key in ["/a/1", "/a/2", "/a/3", "/a/4"] {
        assert!(kv.get(key).unwrap().is_some(), "{key} lost");
    }
    // It comes back and catches up.
    etcd.restart(leader);
    let back = etcd.etcdctl(&[leader], &["get", "/a/4", "--print-value-only"]);
    assert_eq!(back.trim(), "4");
}

#[test]
fn a_daemon_keeps_its_state_in_etcd_across_restarts_and_a_dead_leader() {
    let mut etcd = Etcd::start(3);
    let url = etcd.url();
    let mut d = Daemon::start_process_with(&["--store", &url]);
    d.create("ticker", &["--instances", "2"], &["queue"]);
    d.wait_running("ticker", 2);
    // The service is in etcd, not in a file of the daemon.
    let stored = etcd.etcdctl(&[0], &["get", "--prefix", "/services/", "--keys-only"]);
    assert!(stored.contains("/services/default/app/ticker"), "{stored}");
    assert!(!d.data_dir().join("state.db").exists());

    // The etcd leader dies: the API still writes.
    let leader = etcd.leader();
    etcd.kill9(leader);
    d.create("second", &[], &["queue"]);
    d.wait_running("second", 1);
    d.ok(&["svc", "update", "-n", "ticker", "--instances", "3"]);
    d.wait_running("ticker", 3);

    // A restarted daemon finds it all there.
    d.restart();
    d.wait_running("ticker", 3);
    d.wait_running("second", 1);
    etcd.restart(leader);
}

#[test]
fn mesh_up_says_plainly_when_the_store_is_wrong_or_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let up = |store: &str| {
        let began = Instant::now();
        let out = Command::new(mesh_bin())
            .args(["up", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", store])
            .output()
            .unwrap();
        (out, began.elapsed())
    };
    let (out, _) = up("postgres://x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a store"), "{err}");

    // Nothing answers there: it gives up after the call deadline. The
    // port stays this test's (a listener that hangs up at once), so no
    // other test's server can take it meanwhile.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let (out, took) = up(&format!("etcd://127.0.0.1:{port}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no etcd member answered"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// A host for each name on the etcd cluster at `url`, each a `mesh up`
/// process (the tests kill them).
fn start_hosts(url: &str, names: &[&str]) -> Vec<Daemon> {
    names
        .iter()
        .map(|name| Daemon::start_process_with(&["--store", url, "--node", name]))
        .collect()
}

/// `mesh node ls --json` through this daemon, by name.
fn nodes(d: &Daemon) -> Vec<NodeView> {
    parse(&d.ok(&["node", "ls", "--json"]))
}

/// The state of host `name` as `d` lists it; `None` when not listed.
fn state_of(d: &Daemon, name: &str) -> Option<NodeState> {
    nodes(d)
        .into_iter()
        .find(|n| n.name == name)
        .map(|n| n.state)
}

#[test]
fn hosts_join_share_one_operator_token_and_see_each_other_come_and_go() {
    let etcd = Etcd::start(3);
    let url = etcd.url();
    let hosts: Vec<Daemon> = start_hosts(&url, &["host-a", "host-b", "host-c"]);
    let (a, b) = (&hosts[0], &hosts[1]);
    // One operator's token: each host's daemon.json works on every host.
    for h in &hosts {
        assert_eq!(h.info["token"], a.info["token"]);
    }
    // A host just started may still be joining on a busy machine.
    wait_until(Duration::from_secs(15), "the three hosts ready", || {
        nodes(b)
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .count()
            == 3
    });
    let listed = nodes(b);
    let names: Vec<&str> = listed.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["host-a", "host-b", "host-c"]);
    for (n, h) in listed.iter().zip(&hosts) {
        assert_eq!(n.state, NodeState::Ready);
        assert_eq!(
            format!("http://{}", n.address),
            h.info["api_url"].as_str().unwrap()
        );
        assert_eq!(n.capacity_instances, 1000);
        assert!(n.runs.iter().any(|r| r == "wasm"));
    }
    let table = a.ok(&["node", "ls"]);
    assert!(table.starts_with("NODE"), "{table}");

    // Drained through one host, seen through another; resumed.
    let out = hosts[2].ok(&["node", "drain", "host-b"]);
    assert!(out.contains("Draining host-b"), "{out}");
    assert_eq!(state_of(a, "host-b"), Some(NodeState::Draining));
    let err = a.fails(&["node", "drain", "host-z"]);
    assert!(err.contains("no host named host-z is up"), "{err}");
    a.ok(&["node", "resume", "host-b"]);
    assert_eq!(state_of(b, "host-b"), Some(NodeState::Ready));

    // A second host cannot take a live host's name.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(mesh_bin())
        .args(["up", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--store", &url, "--node", "host-a"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a host named `host-a` is already up"), "{err}");
    // Listening on every address, a host must say where it is reached.
    let out = Command::new(mesh_bin())
        .args(["up", "--api", "0.0.0.0:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--store", &url, "--node", "host-z"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--advertise HOST:PORT"), "{err}");

    // A host killed is down once its lease runs out; back when it returns.
    let mut hosts = hosts;
    hosts[2].kill9();
    let killed = Instant::now();
    wait_until(Duration::from_secs(15), "host-c down", || {
        state_of(&hosts[0], "host-c") == Some(NodeState::Down)
    });
    assert!(killed.elapsed() >= Duration::from_secs(3), "down too soon");
    hosts[2].restart();
    // host-a's view follows the store's watch, which a busy machine may
    // hold back a moment.
    wait_until(Duration::from_secs(10), "host-c ready again", || {
        state_of(&hosts[0], "host-c") == Some(NodeState::Ready)
    });
    // A host stopped cleanly leaves at once: its lease is revoked before
    // it exits, so it is down as soon as it has.
    assert!(hosts[1].terminate().success());
    assert_eq!(state_of(&hosts[0], "host-b"), Some(NodeState::Down));
}

#[test]
fn hosts_started_at_once_on_a_fresh_cluster_all_come_up_and_agree() {
    // Each try on a fresh cluster, so that the three hosts bootstrap it
    // together: the operator's token, the default environment, their
    // records. One conflicting with another must read again and go on.
    let names = ["host-a", "host-b", "host-c"];
    for _ in 0..4 {
        let etcd = Etcd::start(3);
        let url = etcd.url();
        let together = std::sync::Barrier::new(names.len());
        let hosts: Vec<Daemon> = std::thread::scope(|s| {
            let starting: Vec<_> = names
                .iter()
                .map(|name| {
                    let (url, together) = (&url, &together);
                    s.spawn(move || {
                        together.wait();
                        Daemon::start_with(&["--store", url, "--node", name])
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for h in &hosts {
            assert_eq!(h.info["token"], hosts[0].info["token"]);
            support::wait_until(Duration::from_secs(15), "the three hosts ready", || {
                names
                    .iter()
                    .all(|name| state_of(h, name) == Some(NodeState::Ready))
            });
            let envs: Vec<EnvView> = parse(&h.ok(&["env", "ls", "--json"]));
            let envs: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(envs, ["default"]);
        }
    }
}

#[test]
fn a_lone_daemon_is_its_own_host() {
    let d = Daemon::start_with(&["--node", "solo"]);
    let listed = nodes(&d);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].state),
        ("solo", NodeState::Ready)
    );
    d.create("w", &[], &["queue"]);
    let service = d.wait_running("w", 1);
    assert_eq!(service.instances[0].node, "solo");
    let err = d.fails(&["node", "drain", "solo"]);
    assert!(err.contains("needs a cluster"), "{err}");
}

#[test]
fn a_host_fetches_code_it_lacks_from_another_and_checks_it() {
    let etcd = Etcd::start(1);
    let url = etcd.url();
    let a = Daemon::start_with(&["--store", &url, "--node", "host-a"]);
    let b = Daemon::start_with(&["--store", &url, "--node", "host-b"]);
    a.create("w", &["--instances", "2"], &["queue"]);
    // host-b never saw the upload: it runs the service with code it
    // fetched from host-a.
    wait_until(Duration::from_secs(20), "host-b runs w", || {
        b.service("w").is_some_and(|s| {
            s.instances
                .iter()
                .any(|i| i.node == "host-b" && i.state == InstanceState::Running)
        })
    });
    assert!(
        b.log().contains("fetched code from another host"),
        "{}",
        b.log()
    );
    let stored: Vec<_> = std::fs::read_dir(b.data_dir().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!stored.is_empty());

    // Code is served to the operator's token only.
    let api = a.info["api_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://");
    let name = stored[0].file_name().into_string().unwrap();
    let path = format!("/v1/code/sha256:{name}");
    let token = format!("Bearer {}", a.info["token"].as_str().unwrap());
    let got = support::http_request(api, "GET", "x", &path, &[("authorization", &token)], b"");
    assert_eq!(got.status, 200);
    let tenant = a.ok(&["env", "create", "other"]);
    let tenant_token = tenant
        .split_whitespace()
        .find(|w| w.starts_with("mesh_"))
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {tenant_token}");
    let refused = support::http_request(api, "GET", "x", &path, &[("authorization", &bearer)], b"");
    assert_eq!(refused.status, 403);
    let missing = format!("/v1/code/sha256:{}", "0".repeat(64));
    let none = support::http_request(api, "GET", "x", &missing, &[("authorization", &token)], b"");
    assert_eq!(none.status, 404);
}

/// How many running instances of `name` each host runs, as `host` shows.
fn spread(host: &Daemon, name: &str) -> std::collections::BTreeMap<String, usize> {
    let mut by_node = std::collections::BTreeMap::new();
    if let Some(service) = host.service(name) {
        for i in service.instances {
            if i.state == InstanceState::Running {
                *by_node.entry(i.node).or_default() += 1;
            }
        }
    }
    by_node
}

#[test]
fn instances_spread_over_the_hosts_and_come_back_when_one_dies() {
    let etcd = Etcd::start(3);
    let url = etcd.url();
    let mut hosts: Vec<Daemon> = start_hosts(&url, &["host-a", "host-b", "host-c"]);
    hosts[0].create("w", &["--instances", "6"], &["queue"]);
    let even = [("host-a", 2), ("host-b", 2), ("host-c", 2)]
        .map(|(n, c)| (n.to_string(), c))
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    wait_until(Duration::from_secs(20), "6 instances spread 2/2/2", || {
        spread(&hosts[1], "w") == even
    });
    // Every host shows all six, each with its node; ids are unique.
    let service = hosts[2].service("w").unwrap();
    let mut ids: Vec<&str> = service.instances.iter().map(|i| i.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids, ["w.1", "w.2", "w.3", "w.4", "w.5", "w.6"]);
    let table = hosts[2].ok(&["service", "ls"]);
    assert!(
        table.contains("NODE") && table.contains("host-b"),
        "{table}"
    );

    // host-c dies: its two come back on the others within 10 s.
    hosts[2].kill9();
    let died = Instant::now();
    wait_until(Duration::from_secs(15), "6 running on a and b", || {
        let now = spread(&hosts[0], "w");
        now.values().sum::<usize>() == 6 && !now.contains_key("host-c")
    });
    let took = died.elapsed();
    eprintln!("re-placed in {took:?}");
    assert!(took < Duration::from_secs(10), "re-placed after {took:?}");
    assert_eq!(
        spread(&hosts[0], "w").values().collect::<Vec<_>>(),
        [&3, &3]
    );

    // It returns: it runs nothing it no longer owns.
    hosts[2].restart();
    std::thread::sleep(Duration::from_secs(2));
    let after = spread(&hosts[0], "w");
    assert_eq!(after.values().sum::<usize>(), 6, "{after:?}");
    assert!(!after.contains_key("host-c"), "{after:?}");

    // Drained, a host's instances move to the others.
    hosts[0].ok(&["node", "drain", "host-b"]);
    wait_until(Duration::from_secs(15), "host-b empty", || {
        let now = spread(&hosts[0], "w");
        now.values().sum::<usize>() == 6 && !now.contains_key("host-b")
    });
}

#[test]
fn any_hosts_ingress_and_any_instances_calls_reach_a_service_on_another_host() {
    let etcd = Etcd::start(1);
    let url = etcd.url();
    let hosts: Vec<Daemon> = start_hosts(&url, &["host-a", "host-b", "host-c"]);
    let app = support::app_wasm();
    let app = app.to_str().unwrap();
    let a = &hosts[0];
    // One instance of `web`, on one host; `front` on every host.
    a.create_service("web", &[], &[app, "server"]);
    a.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    a.create_service("front", &["--instances", "3"], &[app, "server"]);
    a.ok(&["svc", "publish", "-n", "front", "--endpoint", "front"]);
    wait_until(Duration::from_secs(20), "web 1, front 3 running", || {
        spread(a, "web").values().sum::<usize>() == 1
            && spread(a, "front").values().sum::<usize>() == 3
    });
    let web_host = spread(a, "web").into_keys().next().unwrap();
    for h in &hosts {
        // Every ingress serves the endpoint, whichever host runs it.
        let got = h.get("www.localhost", "/");
        assert_eq!(got.status, 200, "{}: {}", h.info["http_url"], got.body);
        // And an instance on every host reaches it by name: from two of
        // them the call crosses hosts.
        let called = h.get("front.localhost", "/call?url=http%3A%2F%2Fapp-web%2F");
        assert_eq!(called.status, 200, "{}", called.body);
        assert!(called.body.starts_with("status: 200"), "{}", called.body);
    }
    // A path and query arrive whole through a host that does not run it.
    let names = ["host-a", "host-b", "host-c"];
    let other = names.iter().position(|n| *n != web_host).unwrap();
    let echoed = hosts[other].get("www.localhost", "/echo?x=1");
    assert_eq!(echoed.status, 200);
    assert!(echoed.body.contains("/echo?x=1"), "{}", echoed.body);
}

#[test]
fn a_cron_job_fires_once_a_second_across_the_cluster_while_its_host_dies() {
    let etcd = Etcd::start(1);
    let url = etcd.url();
    let names = ["host-a", "host-b", "host-c"];
    let mut hosts: Vec<Daemon> = start_hosts(&url, &names);
    let app = support::app_wasm();
    hosts[0].create_service(
        "tick",
        &["--schedule", "@every 1s"],
        &[app.to_str().unwrap(), "count"],
    );
    wait_until(Duration::from_secs(20), "tick ran", || {
        hosts[0].service("tick").is_some_and(|s| !s.runs.is_empty())
    });
    std::thread::sleep(Duration::from_secs(4));
    // Kill the host that fires it (the leader placed it there).
    let placed = etcd.etcdctl(
        &[0],
        &["get", "/placements/default/app/tick", "--print-value-only"],
    );
    let placed: serde_json::Value = serde_json::from_str(placed.trim()).unwrap();
    let victim = names
        .iter()
        .position(|n| placed["numbers"]["1"] == *n)
        .unwrap();
    hosts[victim].kill9();
    let killed_at = chrono::Utc::now().timestamp();
    std::thread::sleep(Duration::from_secs(24));
    // While it is down, the runs it ran are listed all the same (shared
    // through the store), and the host that took the job over numbered
    // its own runs on from them.
    let while_down = hosts[(victim + 1) % 3].service("tick").unwrap().runs;
    let before = while_down
        .iter()
        .filter(|r| r.scheduled_at.timestamp() < killed_at - 1)
        .count();
    assert!(
        before >= 3,
        "the dead host's runs are not listed: {while_down:#?}"
    );
    let mut numbers: Vec<u64> = while_down.iter().map(|r| r.number).collect();
    numbers.sort_unstable();
    let listed = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), listed, "run numbers repeat: {while_down:#?}");
    // Back, so a run in flight when it died is listed too.
    hosts[victim].restart();
    std::thread::sleep(Duration::from_secs(1));
    let runs = hosts[(victim + 1) % 3].service("tick").unwrap().runs;
    let mut fired: Vec<chrono::DateTime<chrono::Utc>> = runs
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .map(|r| r.scheduled_at)
        .collect();
    fired.sort();
    let count = fired.len();
    fired.dedup();
    assert_eq!(fired.len(), count, "a second fired twice: {runs:#?}");
    // Every second from the first to the last fired exactly once.
    let seconds: Vec<i64> = fired.iter().map(|t| t.timestamp()).collect();
    let span = seconds.last().unwrap() - seconds.first().unwrap() + 1;
    // Only a run going on the host as it was killed may be lost with it
    // (claimed, so not fired again, and its record not yet on disk).
    let missing: Vec<i64> = (seconds[0]..=*seconds.last().unwrap())
        .filter(|t| !seconds.contains(t))
        .collect();
    assert!(
        missing.len() <= 1 && missing.iter().all(|t| (t - killed_at).abs() <= 2),
        "missed seconds {missing:?} (killed at {killed_at}): {seconds:?}"
    );
    assert!(span >= 28, "only {span} seconds fired: {seconds:?}");
}

/// What a load loop saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    /// Requests that reached a host and got no 200 (status or error).
    failed: Vec<String>,
    /// Connections refused (the host was down): a client moves on.
    refused: u64,
}

/// GETs `/` with `Host: host` round the ingress addresses in `addrs` (read
/// afresh each time) until `stop`, at most for two minutes.
fn load(
    addrs: Arc<Mutex<Vec<String>>>,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let began = Instant::now();
        let mut turn = 0;
        while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(120) {
            let list = addrs.lock().unwrap().clone();
            let addr = &list[turn % list.len()];
            turn += 1;
            let Ok(mut stream) = std::net::TcpStream::connect_timeout(
                &addr.parse().unwrap(),
                Duration::from_millis(500),
            ) else {
                seen.refused += 1;
                continue;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let sent = stream.write_all(request.as_bytes());
            let read = sent.and_then(|()| stream.read_to_string(&mut answer));
            match read {
                Ok(_) if answer.starts_with("HTTP/1.1 200") => seen.ok += 1,
                Ok(_) => seen.failed.push(format!(
                    "{addr}: {}",
                    answer.lines().next().unwrap_or("(nothing)")
                )),
                Err(e) => seen.failed.push(format!("{addr}: {e}")),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

fn ingress(d: &Daemon) -> String {
    d.http_addr()
}

/// `web` (app server) with `n` instances published on `www`, through the
/// first host, once all run.
fn web_on(hosts: &[Daemon], n: usize) {
    let app = support::app_wasm();
    let instances = n.to_string();
    hosts[0].create_service(
        "web",
        &["--instances", &instances],
        &[app.to_str().unwrap(), "server"],
    );
    hosts[0].ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    wait_until(Duration::from_secs(20), "web running", || {
        spread(&hosts[1], "web").values().sum::<usize>() == n
    });
}

#[test]
fn requests_and_writes_go_on_while_a_host_and_the_etcd_leader_die() {
    let mut etcd = Etcd::start(3);
    let url = etcd.url();
    let mut hosts: Vec<Daemon> = start_hosts(&url, &["host-a", "host-b", "host-c"]);
    let app = support::app_wasm();
    let app = app.to_str().unwrap();
    web_on(&hosts, 6);
    // Load through the two ingresses that stay.
    let addrs = Arc::new(Mutex::new(vec![ingress(&hosts[1]), ingress(&hosts[2])]));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(addrs, "www.localhost", stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    hosts[0].kill9();
    wait_until(Duration::from_secs(12), "6 running on b and c", || {
        let now = spread(&hosts[1], "web");
        now.values().sum::<usize>() == 6 && !now.contains_key("host-a")
    });
    // The etcd leader dies: after the election writes go on, and the
    // hosts keep their leases (their instances keep running).
    let leader = etcd.leader();
    etcd.kill9(leader);
    hosts[1].create_service("after", &[], &[app, "queue"]);
    hosts[2].wait_running("after", 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spread(&hosts[2], "web").values().sum::<usize>(), 6);
    stop.store(true, Ordering::Relaxed);
    let seen = loader.join().unwrap();
    eprintln!("while a host and the etcd leader died: {seen:?}");
    assert!(seen.failed.is_empty(), "{:?}", seen.failed);
    assert!(seen.ok > 100, "{seen:?}");
}

#[test]
fn a_rolling_restart_of_every_host_fails_no_request() {
    let etcd = Etcd::start(1);
    let url = etcd.url();
    let names = ["host-a", "host-b", "host-c"];
    let mut hosts: Vec<Daemon> = start_hosts(&url, &names);
    web_on(&hosts, 3);
    let addrs = Arc::new(Mutex::new(hosts.iter().map(ingress).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(addrs.clone(), "www.localhost", stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        let other = (i + 1) % 3;
        // Out of the rotation while it restarts, as a load balancer takes
        // it out: its old port may be another test's by the time it is
        // back on a new one.
        addrs.lock().unwrap()[i] = ingress(&hosts[other]);
        hosts[i].restart_cleanly();
        addrs.lock().unwrap()[i] = ingress(&hosts[i]);
        wait_until(Duration::from_secs(15), "3 running, the host back", || {
            spread(&hosts[other], "web").values().sum::<usize>() == 3
                && state_of(&hosts[other], names[i]) == Some(NodeState::Ready)
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = loader.join().unwrap();
    eprintln!("rolling restart: {seen:?}");
    assert!(seen.failed.is_empty(), "{:?}", seen.failed);
    assert!(seen.ok > 100, "{seen:?}");
}

#[test]
fn a_host_fetches_a_stacks_files_it_lacks_for_the_instances_placed_on_it() {
    let etcd = Etcd::start(1);
    let url = etcd.url();
    let hosts = start_hosts(&url, &["host-a", "host-b"]);
    let site = hosts[0].scratch().join("site");
    std::fs::create_dir_all(site.join("files")).unwrap();
    std::fs::write(site.join("files/hello.txt"), "hello from files\n").unwrap();
    std::fs::copy(support::guest("classic"), site.join("classic.wasm")).unwrap();
    hosts[0].ok(&["stack", "deploy", "site", site.to_str().unwrap()]);
    hosts[0].create_service(
        "reader",
        &["--stack", "site", "--instances", "2"],
        &["classic", "read", "/hello.txt"],
    );
    // host-b got neither the code nor the files from the deploy: its
    // instance reads the file all the same.
    wait_until(Duration::from_secs(20), "host-b's instance read it", || {
        hosts[1]
            .ok(&["svc", "logs", "-n", "reader", "--stack", "site"])
            .contains("hello from files")
    });
    assert!(
        hosts[1]
            .data_dir()
            .join("files")
            .read_dir()
            .unwrap()
            .count()
            > 0
    );
}

/// The running instances of `name` on each host, as `host` shows them.
fn running_on(host: &Daemon, name: &str) -> Vec<(String, String)> {
    host.service(name).map_or(Vec::new(), |s| {
        s.instances
            .into_iter()
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| (i.id, i.node))
            .collect()
    })
}

#[test]
fn code_is_placed_where_it_is_held_and_images_only_where_containers_run() {
    let etcd = Etcd::start(1);
    let url = etcd.url();
    let a = Daemon::start_process_with(&["--store", &url, "--node", "host-a"]);
    let b = Daemon::start_process_with(&["--store", &url, "--node", "host-b"]);
    let c = Daemon::start_process_with(&[
        "--store",
        &url,
        "--node",
        "host-c",
        "--container-network",
        "none",
    ]);
    let runs = |name: &str| -> Vec<String> {
        nodes(&a).into_iter().find(|n| n.name == name).unwrap().runs
    };
    assert_eq!(runs("host-a"), ["wasm", "container"]);
    assert_eq!(runs("host-c"), ["wasm"]);

    // Code deployed through host-c is held there alone: a lone instance
    // goes there, though every host is as empty and host-c sorts last.
    let app = support::app_wasm();
    c.ok(&["stack", "deploy", "solo", app.to_str().unwrap()]);
    wait_until(Duration::from_secs(5), "host-c lists its code", || {
        nodes(&a).iter().any(|n| n.name == "host-c" && n.code == 1)
    });
    c.create_service("one", &["--stack", "solo"], &["app", "queue"]);
    wait_until(Duration::from_secs(20), "one running", || {
        !running_on(&a, "one").is_empty()
    });
    assert_eq!(running_on(&a, "one")[0].1, "host-c");

    // An image deployed through host-a runs on host-a and host-b only;
    // host-b fetches it from host-a.
    let err = c.fails(&["stack", "deploy", "boxes", &support::image("busybox.tar")]);
    assert!(err.contains("containers cannot run on this host"), "{err}");
    a.ok(&["stack", "deploy", "boxes", &support::image("busybox.tar")]);
    c.create_service(
        "sleepers",
        &["--stack", "boxes", "--instances", "4"],
        &["busybox", "sleep", "1000"],
    );
    wait_until(Duration::from_secs(30), "4 sleepers on a and b", || {
        spread(&c, "sleepers") == [("host-a".to_string(), 2), ("host-b".to_string(), 2)].into()
    });
    assert!(
        b.log().contains("fetched code from another host"),
        "{}",
        b.log()
    );
    let unpacked = b.data_dir().join("images").read_dir().unwrap().flatten();
    assert!(
        unpacked
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .any(|n| n.len() == 64),
        "host-b has no unpacked image"
    );
    let kinds: Vec<String> = c
        .service("sleepers")
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.kind)
        .collect();
    assert_eq!(kinds, ["container"; 4]);

    // A busybox web container answers through host-c's ingress, which
    // runs none of it.
    support::busybox_web_service(&c, 2);
    wait_until(Duration::from_secs(30), "web running", || {
        running_on(&c, "web").len() == 2
    });
    assert!(running_on(&c, "web").iter().all(|(_, n)| n != "host-c"));
    let r = support::http_request(
        &c.http_addr(),
        "GET",
        "www.localhost",
        "/index.html",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.trim(), "hello from a busybox container");

    // host-b dies: its sleepers go to host-a, never to host-c.
    let mut b = b;
    b.kill9();
    wait_until(Duration::from_secs(15), "4 sleepers on a", || {
        spread(&c, "sleepers") == [("host-a".to_string(), 4)].into()
    });
}
