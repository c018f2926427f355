//! The daemon as a value: a host built, spawned and shut down inside the
//! test process (`mesh_host::daemon`'s `Host` and `Running`) leaves
//! nothing behind: its data directory's lock, its ports, its instances.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, Daemon};

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| match entry.file_type().unwrap().is_dir() {
            true => bytes_under(&entry.path()),
            false => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// `mesh up` on `data_dir`: how it exited and what it said.
fn second_host(data_dir: &Path) -> (bool, String) {
    let mut child = Command::new(support::mesh_bin())
        .args(["up", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--container-network", "none", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    support::wait_until(Duration::from_secs(30), "the second mesh up exits", || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    });
    let out = child.wait_with_output().unwrap();
    (
        exited.unwrap().success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_host_shut_down_in_process_leaves_its_directory_ports_and_instances() {
    let mut d = Daemon::start();
    d.create("beat", &["--env", "HEARTBEAT_MS=10"], &["queue"]);
    d.wait_running("beat", 1);
    // While it runs, no other host opens its data directory.
    let (ok, said) = second_host(d.data_dir());
    assert!(
        !ok && said.contains("another mesh daemon is already using"),
        "{said}"
    );

    let (api, http) = (d.api_addr(), d.http_addr());
    d.stop();
    assert!(!d.data_dir().join("daemon.json").exists());
    for addr in [&api, &http] {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still listens");
    }
    // Its heartbeat wrote a line every 10 ms: nothing writes now.
    let written = bytes_under(d.data_dir());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bytes_under(d.data_dir()), written, "something still writes");

    // The lock is let go: a host opens the directory again, and runs
    // what was desired.
    d.restart_cleanly();
    d.wait_running("beat", 1);
}
