//! Let's Encrypt's ACME test server for a test: Debian's pebble and its
//! challenge test server on loopback (scripts/pebble.sh), validating names
//! against the ports the test gives (mesh's ingress), whose DNS answers
//! every name with 127.0.0.1. Stopped when dropped.

use std::path::PathBuf;
use std::process::Command;

use super::repo_root;

/// A running pebble.
pub struct Pebble {
    dir: tempfile::TempDir,
    /// Its directory URL (`mesh up --acme-directory`).
    pub directory: String,
}

impl Pebble {
    /// Starts one sending HTTP-01 validations to `http_port` and
    /// TLS-ALPN-01 ones to `tls_port` on 127.0.0.1; its certificates last
    /// `validity_secs` (pebble's default, years, when 0); `blocked` names
    /// are refused.
    pub fn start(http_port: u16, tls_port: u16, validity_secs: u64, blocked: &[&str]) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repo_root().join("scripts/pebble.sh"))
            .arg("start")
            .arg(dir.path())
            .args([
                http_port.to_string(),
                tls_port.to_string(),
                validity_secs.to_string(),
            ])
            .args(blocked)
            .output()
            .expect("running scripts/pebble.sh");
        assert!(
            out.status.success(),
            "scripts/pebble.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let directory = std::fs::read_to_string(dir.path().join("directory"))
            .unwrap()
            .trim()
            .to_string();
        Pebble { dir, directory }
    }

    /// The CA of pebble's own API (`mesh up --acme-ca`).
    pub fn api_ca(&self) -> String {
        self.dir.path().join("ca.crt").display().to_string()
    }

    /// The root its certificates chain to (what a browser would trust).
    pub fn root(&self) -> PathBuf {
        let out = Command::new(repo_root().join("scripts/pebble.sh"))
            .arg("root")
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.dir.path().join("root.pem")
    }

    /// New orders pebble took so far.
    pub fn orders(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("pebble.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/pebble.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
