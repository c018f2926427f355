//! The dashboard in a real browser. This test starts the real daemon,
//! gives two tenants services through the real `mesh` binary, sends the
//! web service some requests, then runs tests/dashboard/dashboard.mjs:
//! Debian's chromium, headless, driven by Playwright, signing in, watching
//! a crash live, scaling, restarting, publishing, following logs, rolling
//! back, and saving screenshots under target/dashboard/. Afterwards the
//! changes made in the page are checked again here through the CLI.
//!
//! scripts/test.sh installs chromium and the pinned playwright-core.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_host::model::{InstanceState, RunTrigger};
use support::{app_wasm, repo_root, variant, Daemon};

/// Where the browser script and its pinned packages live.
fn script_dir() -> PathBuf {
    repo_root().join("tests/dashboard")
}

/// The browser the script drives.
const CHROMIUM: &str = "/usr/bin/chromium";

/// playwright-core, installed from the lock file by scripts/test.sh.
fn playwright_is_installed(dir: &Path) {
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is missing: run `(cd tests/dashboard && npm ci --ignore-scripts)` (scripts/test.sh does)"
    );
}

#[test]
fn the_dashboard_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium"
    );
    let dir = script_dir();
    playwright_is_installed(&dir);

    // With an HTTPS listener, so a custom domain has a certificate to show.
    let d = Daemon::start_with(&["--https", "127.0.0.1:0"]);
    let acme = d.new_env("acme", &["--max-services", "40"]);
    let globex = d.new_env("globex", &[]);

    // acme's stack `app`: v1, then v2 with a new build of the same code,
    // so the page has a version to roll back to.
    let bundle = d.scratch().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::copy(app_wasm(), bundle.join("app.wasm")).unwrap();
    let bundle_arg = bundle.to_str().unwrap();
    d.ok_as(&acme, &["stack", "deploy", "app", bundle_arg]);
    d.create_service_as(&acme, "web", &[], &["app", "server"]);
    d.ok_as(&acme, &["svc", "publish", "-n", "web", "--endpoint", "www"]);
    d.create_service_as(
        &acme,
        "ticker",
        &["--schedule", "@every 1s"],
        &["app", "count"],
    );
    d.create_service_as(
        &acme,
        "echo",
        &["--env", "NOTE=<script>alert(\"mesh\")</script>"],
        &["app", "env"],
    );
    variant(&app_wasm(), &bundle, "app", "v2");
    d.ok_as(&acme, &["stack", "deploy", "app", bundle_arg]);
    // A build the page deploys as v4 (after its rollback makes v3).
    let upload = d.scratch().join("upload");
    std::fs::create_dir_all(&upload).unwrap();
    let upload_wasm = variant(&app_wasm(), &upload, "app", "v4");
    // A custom domain for acme, whose certificate the page shows.
    d.ok(&["env", "update", "acme", "--domain", "shop.example.com"]);
    // globex's service, which acme must never see.
    d.create_service_as(
        &globex,
        "hidden",
        &[],
        &[&app_wasm().to_string_lossy(), "sleep", "600000"],
    );

    // Requests for the charts.
    let web = d
        .services_as(&acme)
        .into_iter()
        .find(|s| s.name == "web")
        .unwrap();
    let url = web.endpoints[0].clone();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    support::wait_until(Duration::from_secs(20), "web running", || {
        d.services_as(&acme).iter().any(|s| {
            s.name == "web"
                && s.instances
                    .iter()
                    .any(|i| i.state == InstanceState::Running)
        })
    });
    for _ in 0..30 {
        assert_eq!(d.get(host, "/").status, 200);
    }

    let shots = repo_root().join("target/dashboard");
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("MESH_API_URL", d.info["api_url"].as_str().unwrap())
        .env("MESH_BIN", support::mesh_bin())
        .env("ACME_TOKEN", &acme)
        .env("GLOBEX_TOKEN", &globex)
        .env("OPERATOR_TOKEN", d.info["token"].as_str().unwrap())
        .env("SHOTS_DIR", &shots)
        .env("UPLOAD_WASM", &upload_wasm)
        .env("CHROMIUM", CHROMIUM)
        .env_remove("MESH_TOKEN")
        .output()
        .expect("running node");
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}");
    assert!(
        out.status.success(),
        "the browser checks failed:\n{said}\n{}\n--- daemon log (tail) ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&d.log(), 40)
    );
    assert!(said.contains("dashboard: all checks passed"), "{said}");

    // What the page changed, seen through the CLI.
    let services = d.services_as(&acme);
    let web = services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.settings.instances_desired, 2, "scaled from the page");
    assert!(web.restarted_at.is_some(), "restarted from the page");
    assert_eq!(web.endpoints.len(), 1);
    let ticker = services.iter().find(|s| s.name == "ticker").unwrap();
    assert!(
        ticker.runs.iter().any(|r| r.trigger == RunTrigger::Manual),
        "triggered from the page"
    );
    for shot in [
        "overview.png",
        "service-web.png",
        "service-cron.png",
        "overview-phone.png",
    ] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "screenshot {shot} is {size} bytes");
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
