//! The control API client: finds the daemon, sends requests with the
//! token, turns error answers into one-line errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use mesh_host::api::wire::ErrorBody;
use mesh_host::DaemonInfo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one API call may take (uploads compile code, so be generous).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A connection to one daemon.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    /// Finds the daemon: `MESH_API_URL` + `MESH_TOKEN` when both are set,
    /// else `DIR/daemon.json` of the data directory.
    pub fn discover(data_dir: Option<&Path>) -> anyhow::Result<Client> {
        if let (Ok(url), Ok(token)) = (std::env::var("MESH_API_URL"), std::env::var("MESH_TOKEN")) {
            return Ok(Client::new(url, token));
        }
        let dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(mesh_host::config::DEFAULT_DATA_DIR));
        let file = dir.join(mesh_host::DAEMON_FILE);
        let text = std::fs::read_to_string(&file).map_err(|_| {
            anyhow!(
                "no mesh daemon found: {} does not exist; start one with `mesh up` (or set --data-dir, or MESH_API_URL and MESH_TOKEN)",
                file.display()
            )
        })?;
        let info: DaemonInfo =
            serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))?;
        Ok(Client::new(info.api_url, info.token))
    }

    fn new(base: String, token: String) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// The daemon's API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call();
        self.finish(response)
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .delete(self.url(path))
            .header("Authorization", self.auth())
            .call();
        self.finish(response)
    }

    /// `POST path` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .send_json(body);
        self.finish(response)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self
            .agent
            .patch(self.url(path))
            .header("Authorization", self.auth())
            .send_json(body);
        self.finish(response)
    }

    /// `PUT path` with raw bytes.
    pub fn put_bytes<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> anyhow::Result<T> {
        let response = self
            .agent
            .put(self.url(path))
            .header("Authorization", self.auth())
            .header("Content-Type", "application/wasm")
            .send(bytes);
        self.finish(response)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("the daemon answered {status}: {}", text.trim()));
            anyhow::bail!(message);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("the daemon sent an answer this mesh cannot read ({status})"))
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Io(io) => anyhow!(
                "cannot reach the mesh daemon at {}: {io} (is `mesh up` running?)",
                self.base
            ),
            other => anyhow!("talking to the mesh daemon at {}: {other}", self.base),
        }
    }
}
