//! A real OCI registry for a test: Debian's docker-registry on loopback,
//! over TLS with a CA the script makes, with basic (htpasswd) or bearer
//! token auth (scripts/registry.sh); code pushed to it by tools that are
//! not mesh (skopeo for images, the oras Python SDK for components:
//! scripts/registry-push.sh). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::repo_root;

/// How the registry checks who pulls.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    /// htpasswd users alice and bob.
    Basic,
    /// Bearer tokens from tests/registry/token_issuer.py.
    Token,
}

/// A running registry.
pub struct Registry {
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl Registry {
    /// Starts one with `auth`.
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mode = match auth {
            Auth::Basic => "basic",
            Auth::Token => "token",
        };
        let out = Command::new(repo_root().join("scripts/registry.sh"))
            .args(["start", dir.path().to_str().unwrap(), mode])
            .output()
            .expect("running scripts/registry.sh");
        assert!(
            out.status.success(),
            "scripts/registry.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let address = std::fs::read_to_string(dir.path().join("address"))
            .unwrap()
            .trim()
            .to_string();
        Registry { dir, address }
    }

    /// The CA its certificate chains to (`mesh up --registry-ca`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A user's password (`alice` or `bob`).
    pub fn password(&self, user: &str) -> String {
        let file = match user {
            "alice" => "password",
            _ => "password.bob",
        };
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `ADDRESS/REPO`.
    pub fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.address)
    }

    /// Pushes a container image (an oci-archive or docker-archive tar, or
    /// an OCI layout directory) as `repo` (`name:tag`) with skopeo;
    /// returns its manifest digest.
    pub fn push_image(&self, file: &Path, repo: &str) -> String {
        self.push("image", file, repo)
    }

    /// Pushes an OCI image layout directory whose `latest` is an image
    /// index, with every image it lists (`skopeo copy --all`).
    pub fn push_index(&self, layout: &Path, repo: &str) {
        let password = self.password("alice");
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--dest-cert-dir",
                self.dir.path().join("certs.d").to_str().unwrap(),
                "--dest-creds",
                &format!("alice:{password}"),
                &format!("oci:{}:latest", layout.display()),
                &format!("docker://{}/{repo}", self.address),
            ])
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy --all failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes a WebAssembly component as a CNCF wasm artifact with oras;
    /// returns its manifest digest.
    pub fn push_wasm(&self, file: &Path, repo: &str) -> String {
        self.push("wasm", file, repo)
    }

    fn push(&self, kind: &str, file: &Path, repo: &str) -> String {
        let out = Command::new(repo_root().join("scripts/registry-push.sh"))
            .args([
                self.dir.path().to_str().unwrap(),
                kind,
                file.to_str().unwrap(),
                repo,
            ])
            .output()
            .expect("running scripts/registry-push.sh");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pushing {} as {repo} failed: {said}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        said.lines()
            .find_map(|l| l.strip_prefix("digest="))
            .unwrap_or_else(|| panic!("no digest in: {said}"))
            .trim()
            .to_string()
    }

    /// The registry's log: every request it served.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many blobs of `repo` it served (GET, 200).
    pub fn blob_gets(&self, repo: &str) -> usize {
        let wanted = format!("\"GET /v2/{repo}/blobs/sha256:");
        self.log()
            .lines()
            .filter(|l| l.contains(&wanted) && l.contains("\" 200 "))
            .count()
    }

    /// How many requests it served, of any kind.
    pub fn requests(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2") || l.contains("\"HEAD /v2"))
            .count()
    }

    /// The file the registry keeps the largest blob of an image in (its
    /// layer), found from the manifest `repo` (`name:tag`) points to: to
    /// tamper with.
    pub fn blob_file(&self, repo: &str) -> PathBuf {
        let (name, tag) = repo.split_once(':').unwrap();
        let v2 = self.dir.path().join("data/docker/registry/v2");
        let link = v2.join(format!(
            "repositories/{name}/_manifests/tags/{tag}/current/link"
        ));
        let manifest_digest = std::fs::read_to_string(&link).unwrap();
        let data = |digest: &str| {
            let hex = digest.trim().trim_start_matches("sha256:").to_string();
            v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data(&manifest_digest)).unwrap()).unwrap();
        let largest = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|l| l["size"].as_u64().unwrap_or(0))
            .unwrap();
        data(largest["digest"].as_str().unwrap())
    }

    /// The token issuer's log (token mode): who got which token.
    pub fn issuer_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("issuer.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/registry.sh"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}
