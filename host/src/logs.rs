//! Instance output: every line a guest writes to stdout or stderr, stamped
//! with the time and the instance id, appended to its service's log file
//! (JSON lines under `DATA/logs/`) and broadcast to live followers.
//!
//! Each service's log is bounded: past the configured size the file is
//! rotated once (`.1`), so the oldest lines are dropped first.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;

use crate::model::ServiceKey;

/// Longest line kept whole; longer output is split at this size.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines a slow live follower may fall behind before it misses some.
const FOLLOW_BUFFER: usize = 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// One line of output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was written.
    pub time: DateTime<Utc>,
    /// Instance id, e.g. `worker.2`.
    pub instance: String,
    /// stdout or stderr.
    pub stream: Stream,
    /// The text, without its newline.
    pub text: String,
}

/// Every service's log, opened on first use.
pub struct Logs {
    dir: PathBuf,
    max_bytes: u64,
    open: Mutex<HashMap<ServiceKey, Arc<ServiceLog>>>,
}

impl Logs {
    /// Logs under `DATA/logs`, each bounded to about `max_bytes`.
    pub fn new(data_dir: &Path, max_bytes: u64) -> Logs {
        Logs {
            dir: data_dir.join("logs"),
            max_bytes,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The log of one service.
    pub fn service(&self, key: &ServiceKey) -> Arc<ServiceLog> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.entry(key.clone())
            .or_insert_with(|| {
                let path = self
                    .dir
                    .join(&key.env)
                    .join(&key.stack)
                    .join(format!("{}.log", key.name));
                Arc::new(ServiceLog::new(path, self.max_bytes))
            })
            .clone()
    }

    /// Forgets a deleted service's log, files included.
    pub fn remove(&self, key: &ServiceKey) {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let log = removed.unwrap_or_else(|| self.service_uncached(key));
        log.delete_files();
    }

    fn service_uncached(&self, key: &ServiceKey) -> Arc<ServiceLog> {
        let path = self
            .dir
            .join(&key.env)
            .join(&key.stack)
            .join(format!("{}.log", key.name));
        Arc::new(ServiceLog::new(path, self.max_bytes))
    }
}

/// One service's log file and its live followers.
pub struct ServiceLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<File>>,
    live: broadcast::Sender<LogLine>,
}

impl ServiceLog {
    fn new(path: PathBuf, max_bytes: u64) -> ServiceLog {
        let (live, _) = broadcast::channel(FOLLOW_BUFFER);
        ServiceLog {
            path,
            max_bytes,
            file: Mutex::new(None),
            live,
        }
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// Appends a line and hands it to live followers.
    pub fn write(&self, line: LogLine) {
        if let Err(e) = self.append(&line) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write log line");
        }
        // No follower is not an error.
        let _ = self.live.send(line);
    }

    fn append(&self, line: &LogLine) -> std::io::Result<()> {
        let mut json = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = guard.as_mut().expect("opened just above");
        if file.metadata()?.len() + json.len() as u64 > self.max_bytes / 2 {
            std::fs::rename(&self.path, self.rotated())?;
            *file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        file.write_all(&json)
    }

    /// The last `n` lines kept (all of them when `n` is `None`), oldest first.
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        // Hold the writer's lock so a rotation cannot happen mid-read.
        let _guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Vec::new();
        for path in [self.rotated(), self.path.clone()] {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            for raw in BufReader::new(file).lines().map_while(Result::ok) {
                if let Ok(line) = serde_json::from_str::<LogLine>(&raw) {
                    lines.push(line);
                }
            }
        }
        if let Some(n) = n {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        lines
    }

    /// A receiver of lines written from now on.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    fn delete_files(&self) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.rotated());
    }
}

/// A guest's stdout or stderr, feeding one instance's lines into its
/// service's log.
#[derive(Clone)]
pub struct LogStream {
    log: Arc<ServiceLog>,
    instance: Arc<str>,
    stream: Stream,
}

impl LogStream {
    /// The `stream` of instance `instance`, logged to `log`.
    pub fn new(log: Arc<ServiceLog>, instance: &str, stream: Stream) -> LogStream {
        LogStream {
            log,
            instance: instance.into(),
            stream,
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            target: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Splits written bytes into lines; a partial last line is kept until its
/// newline comes or the writer is dropped.
struct LineWriter {
    target: LogStream,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        self.target.log.write(LogLine {
            time: Utc::now(),
            instance: self.target.instance.to_string(),
            stream: self.target.stream,
            text: text.to_string(),
        });
    }

    fn take_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        while self.pending.len() >= MAX_LINE_BYTES {
            let line: Vec<u8> = self.pending.drain(..MAX_LINE_BYTES).collect();
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.take_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    fn key() -> ServiceKey {
        ServiceKey {
            env: "default".into(),
            stack: "app".into(),
            name: "worker".into(),
        }
    }

    #[tokio::test]
    async fn lines_are_split_stamped_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), 1 << 20);
        let log = logs.service(&key());
        let mut follower = log.follow();
        let stream = LogStream::new(log.clone(), "worker.1", Stream::Stdout);
        let mut w = std::pin::Pin::from(wasmtime_wasi::cli::StdoutStream::async_stream(&stream));
        w.write_all(b"one\ntw").await.unwrap();
        w.write_all(b"o\nthree").await.unwrap();
        drop(w);
        let texts: Vec<_> = log.tail(None).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert_eq!(log.tail(Some(1))[0].instance, "worker.1");
        assert_eq!(follower.recv().await.unwrap().text, "one");
    }

    #[test]
    fn the_log_is_bounded_and_drops_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), 8 * 1024);
        let log = logs.service(&key());
        for i in 0..1000 {
            log.write(LogLine {
                time: Utc::now(),
                instance: "worker.1".into(),
                stream: Stream::Stderr,
                text: format!("line {i}"),
            });
        }
        let kept = log.tail(None);
        assert!(kept.len() < 1000, "kept {} lines", kept.len());
        assert_eq!(kept.last().unwrap().text, "line 999");
        let on_disk: u64 = ["worker.log", "worker.log.1"]
            .iter()
            .map(|f| {
                std::fs::metadata(dir.path().join("logs/default/app").join(f))
                    .map_or(0, |m| m.len())
            })
            .sum();
        assert!(on_disk <= 8 * 1024, "{on_disk} bytes on disk");
        logs.remove(&key());
        assert!(logs.service(&key()).tail(None).is_empty());
    }
}
