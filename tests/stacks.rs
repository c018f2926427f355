//! Stacks end to end: deploys make versions only when code changed, only
//! services whose component changed restart, rollback goes back.

use crate::support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use mesh_host::api::wire::{DeployResult, StackView, VersionView};
use mesh_host::model::InstanceState;
use support::{app_wasm, parse, variant, Daemon};

fn versions(d: &Daemon, stack: &str) -> Vec<VersionView> {
    parse(&d.ok(&["stack", "versions", stack, "--json"]))
}

fn started_at(d: &Daemon, name: &str) -> Vec<DateTime<Utc>> {
    d.service(name)
        .unwrap()
        .instances
        .iter()
        .map(|i| i.started_at.unwrap())
        .collect()
}

#[test]
fn deploys_version_only_changed_code_and_restart_only_its_services() {
    let d = Daemon::start();
    let scratch = d.scratch();
    let bundle = scratch.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::copy(app_wasm(), bundle.join("app.wasm")).unwrap();
    variant(&app_wasm(), &bundle, "other", "v1");

    let out = d.ok(&["stack", "deploy", "app", bundle.to_str().unwrap()]);
    assert!(out.contains("Deployed app v1"), "{out}");
    d.create_service("uses-app", &[], &["app", "queue"]);
    d.create_service("uses-other", &[], &["other", "queue"]);
    d.wait_running("uses-app", 1);
    d.wait_running("uses-other", 1);
    let app_started = started_at(&d, "uses-app");
    let other_started = started_at(&d, "uses-other");

    // The same code again: no new version.
    let out = d.ok(&["stack", "deploy", "app", bundle.to_str().unwrap()]);
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(versions(&d, "app").len(), 1);

    // Only `other` changes: v2, and only uses-other restarts.
    variant(&app_wasm(), &bundle, "other", "v2");
    let text = d.ok(&["stack", "deploy", "app", bundle.to_str().unwrap(), "--json"]);
    let result: DeployResult = parse(&text);
    assert_eq!(result.version.number, 2);
    assert_eq!(result.restarting, ["uses-other"]);
    d.wait_for(
        "uses-other",
        Duration::from_secs(10),
        "restarted on v2",
        |s| {
            let i = &s.instances[0];
            i.version == 2 && i.state == InstanceState::Running
        },
    );
    assert_ne!(started_at(&d, "uses-other"), other_started);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        started_at(&d, "uses-app"),
        app_started,
        "uses-app must not restart"
    );
    assert_eq!(d.service("uses-app").unwrap().instances[0].version, 2);

    let listed = versions(&d, "app");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].number, 2);
    assert!(listed[0].current);
    assert!(!listed[1].current);
    let human = d.ok(&["stack", "versions", "app"]);
    assert!(human.contains("v2 (current)"), "{human}");

    // Rollback makes v3 with v1's bundle.
    let out = d.ok(&["stack", "rollback", "app"]);
    assert!(out.contains("rollback to v1"), "{out}");
    let listed = versions(&d, "app");
    assert_eq!(listed[0].number, 3);
    assert_eq!(listed[0].components, listed[2].components);
    d.wait_for(
        "uses-other",
        Duration::from_secs(10),
        "restarted on v3",
        |s| s.instances[0].version == 3 && s.instances[0].state == InstanceState::Running,
    );
    // And forward again to an explicit version.
    d.ok(&["stack", "rollback", "app", "--to", "2"]);
    assert_eq!(versions(&d, "app")[0].components, listed[1].components);
}

#[test]
fn a_new_component_joins_the_bundle_and_the_others_stay() {
    let d = Daemon::start();
    let scratch = d.scratch();
    d.create("first", &[], &["queue"]);
    let other = variant(&app_wasm(), &scratch, "other", "x");
    d.create_service("second", &[], &[other.to_str().unwrap(), "queue"]);
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    let app = &stacks[0];
    assert_eq!(app.version, 2);
    let names: Vec<&str> = app.components.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["app", "other"]);
    d.wait_running("first", 1);
    d.wait_running("second", 1);

    // A one-file deploy of unchanged code changes nothing.
    let out = d.ok(&["stack", "deploy", "app", app_wasm().to_str().unwrap()]);
    assert!(out.contains("nothing changed"), "{out}");

    // A whole-bundle deploy that would take a service's component away is
    // refused, and changes nothing.
    let only_app = scratch.join("only-app");
    std::fs::create_dir_all(&only_app).unwrap();
    std::fs::copy(app_wasm(), only_app.join("app.wasm")).unwrap();
    let err = d.fails(&["stack", "deploy", "app", only_app.to_str().unwrap()]);
    assert_eq!(
        err,
        "error: service second runs component 'other', which this change would remove from stack app; delete or update the service first"
    );
    let stacks: Vec<StackView> = parse(&d.ok(&["stack", "ls", "--json"]));
    assert_eq!(stacks[0].version, 2);
}
