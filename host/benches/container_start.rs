//! How long one instance takes from start to exit, for a container and a
//! wasm component, next to `runc run` of the same image, in one run on
//! one machine (median of 20 each, p90 in brackets):
//! - **mesh container**: `Containers::start` of busybox `true` (the
//!   daemon's path: bundle with overlay and tmpfs, veth on the bridge,
//!   shim, libcontainer create and start) until its exit is reported and
//!   its bundle and link are gone;
//! - **runc run**: Debian's runc running `true` in a bundle over the same
//!   unpacked root (read-only, no network setup): the baseline;
//! - **mesh wasm**: `run_command` of `app exit 0` from a cached component.
//!
//! Needs root, the test images (scripts/images.sh) and runc (the test
//! script installs both). This binary is also the containers' shim, as
//! the daemon's binary is.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_host::container::{image, ContainerLaunch, Containers};
use mesh_host::content::Content;
use mesh_host::runtime::{run_command, Engine, EngineConfig, Interrupt, Launch, Output};
use mesh_host::DaemonConfig;
use support::{app_wasm, percentile};

const RUNS: usize = 20;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn main() -> anyhow::Result<()> {
    // Started again as a container's shim: do that and nothing else.
    mesh_host::container::shim::run_if_shim();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let busybox = repo().join("target/test-images/busybox.tar");
    anyhow::ensure!(
        busybox.is_file(),
        "{} is missing: run scripts/images.sh",
        busybox.display()
    );
    let dir = tempfile::tempdir()?;
    let containers = Containers::open(
        dir.path(),
        dir.path().join("images"),
        std::env::current_exe()?,
        "10.215.0.1/24",
        64,
        (8192, 4096),
    )?;
    if let Some(why) = containers.unsupported() {
        anyhow::bail!("{why}");
    }
    let image_dir = containers.image_dir("bench");
    image::unpack("busybox.tar", &busybox, &image_dir, image::Room::platform())?;

    // mesh container: start to exit, cleaned up.
    let mut container = Vec::with_capacity(RUNS);
    for i in 0..=RUNS {
        let t0 = Instant::now();
        let mut running = containers
            .start(
                &image_dir,
                ContainerLaunch {
                    command: vec!["true".into()],
                    env: Vec::new(),
                    memory_bytes: 64 << 20,
                    writable_bytes: 16 << 20,
                    tty: false,
                    stdin: false,
                    hostname: "bench".into(),
                    names: Vec::new(),
                    stop_grace: Duration::from_secs(1),
                    tenant: "bench".into(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let exit = running.wait().await;
        anyhow::ensure!(exit.code == 0 && exit.failed.is_none(), "{exit:?}");
        if i > 0 {
            // The first run warms the page cache; it is not counted.
            container.push(t0.elapsed());
        }
    }

    // runc run of the same root, as its baseline.
    let bundle = dir.path().join("runc-bundle");
    std::fs::create_dir_all(&bundle)?;
    let status = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status()?;
    anyhow::ensure!(status.success(), "runc spec failed");
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["true"]);
    config["root"]["path"] = image_dir
        .join(image::ROOTFS_DIR)
        .display()
        .to_string()
        .into();
    config["root"]["readonly"] = true.into();
    std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
    let mut runc = Vec::with_capacity(RUNS);
    for i in 0..=RUNS {
        let t0 = Instant::now();
        let out = std::process::Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("mesh-bench-{}-{i}", std::process::id()))
            .stdin(std::process::Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "runc run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i > 0 {
            runc.push(t0.elapsed());
        }
    }

    // mesh wasm: a worker run from the compiled cache.
    let config = DaemonConfig {
        data_dir: dir.path().join("wasm"),
        ..DaemonConfig::default()
    };
    std::fs::create_dir_all(&config.data_dir)?;
    let content = Arc::new(Content::open(&config.data_dir)?);
    let engine = Arc::new(Engine::new(&EngineConfig::from(&config), content)?);
    let info = engine.accept("app.wasm", &std::fs::read(app_wasm())?)?;
    let code = engine.load(&info.digest)?;
    let mut wasm = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let launch = Launch {
            args: vec!["app".into(), "exit".into(), "0".into()],
            env: Vec::new(),
            memory_bytes: 64 << 20,
            stdout: Output::new(|| Box::new(tokio::io::sink())),
            stderr: Output::new(|| Box::new(tokio::io::sink())),
            dispatch: None,
            stdin: None,
            tenant: "default".into(),
            seat: mesh_host::runtime::Seat::Service,
            files: None,
            scratch_bytes: None,
            stop_grace: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let outcome = run_command(&engine, &code, launch, Interrupt::default(), || {}).await;
        wasm.push(t0.elapsed());
        anyhow::ensure!(outcome.succeeded(), "{outcome:?}");
    }

    let (c, r, w) = (
        percentile(&container, 50),
        percentile(&runc, 50),
        percentile(&wasm, 50),
    );
    println!("instance start to exit, median of {RUNS} (p90 in brackets)");
    println!(
        "  mesh container (busybox true):   {c:>10.2?}  [{:.2?}]",
        percentile(&container, 90)
    );
    println!(
        "  runc run (same root, baseline):  {r:>10.2?}  [{:.2?}]",
        percentile(&runc, 90)
    );
    println!(
        "  mesh wasm worker (app exit 0):   {w:>10.2?}  [{:.2?}]",
        percentile(&wasm, 90)
    );
    println!(
        "  ratio mesh container / runc run: {:>10.2}x",
        c.as_secs_f64() / r.as_secs_f64()
    );
    println!(
        "  ratio mesh container / wasm:     {:>10.1}x",
        c.as_secs_f64() / w.as_secs_f64()
    );
    // Its cgroups go with it.
    containers.stopped(Duration::from_secs(5)).await;
    Ok(())
}
