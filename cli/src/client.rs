//! The control API client: finds the daemon, sends requests with the
//! token, turns error answers into one-line errors.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
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
        let info = wait_for_daemon(&dir, &file)?;
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
        self.send_json("POST", path, body)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send_json("PATCH", path, body)
    }

    /// `PUT path` with a JSON body.
    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send_json("PUT", path, body)
    }

    /// `METHOD path` with a JSON body.
    fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let url = self.url(path);
        let request = match method {
            "POST" => self.agent.post(url),
            "PATCH" => self.agent.patch(url),
            _ => self.agent.put(url),
        };
        let response = request.header("Authorization", self.auth()).send_json(body);
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

    /// `GET path` as a stream of lines, with no time limit (`logs -f`).
    pub fn get_lines(
        &self,
        path: &str,
    ) -> anyhow::Result<impl Iterator<Item = std::io::Result<String>>> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let response = agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.into_body().read_to_string().unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("the daemon answered {status}: {}", text.trim()));
            bail!(message);
        }
        use std::io::BufRead as _;
        Ok(std::io::BufReader::new(response.into_body().into_reader()).lines())
    }

    /// Opens an upgraded connection (`Upgrade: mesh-run`) to `POST path`
    /// and returns it after the daemon's `101`, or the daemon's error.
    pub fn upgrade(&self, path: &str) -> anyhow::Result<TcpStream> {
        let authority = self.base.strip_prefix("http://").ok_or_else(|| {
            anyhow!(
                "interactive runs need an http:// API URL, not {}",
                self.base
            )
        })?;
        let mut stream = TcpStream::connect(authority).map_err(|e| {
            anyhow!(
                "cannot reach the mesh daemon at {}: {e} (is `mesh up` running?)",
                self.base
            )
        })?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\nConnection: Upgrade\r\nUpgrade: {}\r\nContent-Length: 0\r\n\r\n",
            self.auth(),
            mesh_host::services::session::PROTOCOL
        )?;
        // Read the answer's head byte by byte: frames follow right after it.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                bail!("the daemon closed the connection");
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 101 {
            return Ok(stream);
        }
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body)?;
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("the daemon answered {status}: {}", text.trim()));
        bail!(message)
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

/// How long a command waits for a daemon's data directory to appear: a
/// `mesh up &` on the line before may not have made it yet.
const APPEAR_WAIT: Duration = Duration::from_secs(1);

/// How long a command waits for a daemon that is starting (it holds its
/// data directory's lock) to say where it listens.
const START_WAIT: Duration = Duration::from_secs(60);

/// Reads `daemon.json`, waiting while a daemon is starting, so that
/// `mesh up &` followed by a command works as a script runs it.
fn wait_for_daemon(dir: &Path, file: &Path) -> anyhow::Result<DaemonInfo> {
    let began = std::time::Instant::now();
    loop {
        let read = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| serde_json::from_str::<DaemonInfo>(&text).ok());
        if let Some(info) = read {
            return Ok(info);
        }
        let waited = began.elapsed();
        let starting = starting(dir) && waited < START_WAIT;
        if !starting && waited >= APPEAR_WAIT {
            return Err(anyhow!(
                "no mesh daemon found: {} does not exist; start one with `mesh up` (or set --data-dir, or MESH_API_URL and MESH_TOKEN)",
                file.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a daemon holds `dir`'s lock: it is starting (or running).
fn starting(dir: &Path) -> bool {
    std::fs::File::open(dir.join("lock")).is_ok_and(|lock| {
        matches!(
            lock.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    })
}
