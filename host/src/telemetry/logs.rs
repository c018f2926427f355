//! Instance output: every line a guest writes to stdout or stderr, stamped
//! with the time and the instance id, appended to its service's log file
//! (JSON lines under `DATA/logs/`) and broadcast to live followers.
//!
//! Lines reach followers at once and the disk through the disk writer.
//! Each service's log is bounded: past the configured size the file is
//! rotated once (`.1`), so the oldest lines are dropped first.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;

use super::writer::{DiskWriter, Job, Reserve};
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
    writer: Arc<DiskWriter>,
    open: Mutex<HashMap<ServiceKey, Arc<ServiceLog>>>,
}

impl Logs {
    /// Logs under `DATA/logs`, each bounded to about `max_bytes`, written
    /// to disk by `writer`.
    pub fn new(data_dir: &Path, max_bytes: u64, writer: Arc<DiskWriter>) -> Logs {
        Logs {
            dir: data_dir.join("logs"),
            max_bytes,
            writer,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The log of one service.
    pub fn service(&self, key: &ServiceKey) -> Arc<ServiceLog> {
        self.open
            .lock()
            .entry(key.clone())
            .or_insert_with(|| self.make(key))
            .clone()
    }

    fn make(&self, key: &ServiceKey) -> Arc<ServiceLog> {
        let path = self
            .dir
            .join(&key.env)
            .join(&key.stack)
            .join(format!("{}.log", key.name));
        Arc::new(ServiceLog::new(path, self.max_bytes, self.writer.clone()))
    }

    /// Forgets a deleted service's log, files included. Whoever still
    /// holds it (a task of the deleted service that has not ended yet)
    /// writes nowhere from now on.
    pub fn remove(&self, key: &ServiceKey) {
        let removed = self.open.lock().remove(key);
        let log = removed.unwrap_or_else(|| self.make(key));
        log.close_and_delete();
    }
}

/// One service's log file and its live followers.
pub struct ServiceLog {
    file: Arc<LogFile>,
    writer: Arc<DiskWriter>,
    live: broadcast::Sender<LogLine>,
}

/// The file side of a log: appended to by the disk writer, deleted with
/// the service (under the same lock), read by `tail` without any lock.
struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    open: Mutex<Option<File>>,
    /// Counts rotations, so a reader can tell one happened mid-read.
    rotations: AtomicU64,
    /// Set when the service is deleted: nothing is written after that.
    closed: AtomicBool,
}

impl ServiceLog {
    fn new(path: PathBuf, max_bytes: u64, writer: Arc<DiskWriter>) -> ServiceLog {
        let (live, _) = broadcast::channel(FOLLOW_BUFFER);
        ServiceLog {
            file: Arc::new(LogFile {
                path,
                max_bytes,
                open: Mutex::new(None),
                rotations: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
            writer,
            live,
        }
    }

    /// Appends a platform line and hands it to live followers; never
    /// waits (a full disk queue drops the disk copy).
    pub fn write(&self, line: LogLine) {
        let file = self.file.clone();
        let record = line.clone();
        self.writer.submit(Box::new(move || file.append(&[record])));
        // No follower is not an error.
        let _ = self.live.send(line);
    }

    /// Writes a platform line (`[mesh] ...`) about `instance` to stderr.
    pub fn note(&self, instance: &str, text: String) {
        self.write(LogLine {
            time: Utc::now(),
            instance: instance.to_string(),
            stream: Stream::Stderr,
            text,
        });
    }

    /// The job that appends `lines`, for a writer that waited for room.
    fn job(&self, lines: Vec<LogLine>) -> Job {
        let file = self.file.clone();
        Box::new(move || file.append(&lines))
    }

    /// The last `n` lines kept (all of them when `n` is `None`), oldest
    /// first. Reads without the writer's lock: a rotation during the read
    /// is noticed and the read is done again.
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for _ in 0..10 {
            let before = self.file.rotations.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            lines = self.file.read_all();
            if self.file.rotations.load(Ordering::Acquire) == before {
                break;
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

    /// Closes the log for good and deletes its files now: a write the
    /// disk writer still has queued finds it closed, so nothing recreates
    /// them, and a service made again under the same name starts afresh.
    fn close_and_delete(&self) {
        self.file.delete();
    }
}

impl LogFile {
    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    fn append(&self, lines: &[LogLine]) {
        if let Err(e) = self.try_append(lines) {
            static FAILED: super::Throttle = super::Throttle::new();
            if let Some(times) = FAILED.hit() {
                tracing::warn!(path = %self.path.display(), error = %e, times, "cannot write log lines (reported once per interval)");
            }
        }
    }

    fn try_append(&self, lines: &[LogLine]) -> std::io::Result<()> {
        let mut json = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut json, line).map_err(std::io::Error::other)?;
            json.push(b'\n');
        }
        let mut open = self.open.lock();
        // Checked under the lock `delete` takes, so no write lands after it.
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if open.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            *open = Some(append_to(&self.path)?);
        }
        let Some(file) = open.as_mut() else {
            return Ok(());
        };
        if file.metadata()?.len() + json.len() as u64 > self.max_bytes / 2 {
            // Odd while the files move: a reader that saw an odd count, or
            // a different one after it read, reads again.
            self.rotations.fetch_add(1, Ordering::AcqRel);
            let moved =
                std::fs::rename(&self.path, self.rotated()).and_then(|()| append_to(&self.path));
            self.rotations.fetch_add(1, Ordering::AcqRel);
            *file = moved?;
        }
        file.write_all(&json)
    }

    fn read_all(&self) -> Vec<LogLine> {
        // Both files are opened before either is read, so a rotation
        // between the reads cannot lose the lines it moves.
        let files: Vec<File> = [self.rotated(), self.path.clone()]
            .iter()
            .filter_map(|p| File::open(p).ok())
            .collect();
        let mut lines = Vec::new();
        for file in files {
            for raw in BufReader::new(file).lines().map_while(Result::ok) {
                if let Ok(line) = serde_json::from_str::<LogLine>(&raw) {
                    lines.push(line);
                }
            }
        }
        lines
    }

    fn delete(&self) {
        let mut open = self.open.lock();
        self.closed.store(true, Ordering::Release);
        *open = None;
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.rotated());
    }
}

fn append_to(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
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

    /// A writer that splits bytes into lines and logs them, waiting for
    /// room in the disk queue (so a guest that writes faster than the disk
    /// is slowed, not buffered without bound).
    pub fn writer(&self) -> LineWriter {
        LineWriter {
            target: self.clone(),
            pending: Vec::new(),
            reserve: self.log.writer.reserve(),
        }
    }
}

/// Splits written bytes into lines; a partial last line is kept until its
/// newline comes or the writer is dropped.
pub struct LineWriter {
    target: LogStream,
    pending: Vec<u8>,
    reserve: Reserve,
}

impl LineWriter {
    fn line(&self, bytes: &[u8]) -> LogLine {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        LogLine {
            time: Utc::now(),
            instance: self.target.instance.to_string(),
            stream: self.target.stream,
            text: text.to_string(),
        }
    }

    /// The whole lines in `pending`, taken out of it.
    fn take_lines(&mut self) -> Vec<LogLine> {
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            lines.push(self.line(&raw[..raw.len() - 1]));
        }
        while self.pending.len() >= MAX_LINE_BYTES {
            let raw: Vec<u8> = self.pending.drain(..MAX_LINE_BYTES).collect();
            lines.push(self.line(&raw));
        }
        lines
    }

    fn publish(&mut self, lines: Vec<LogLine>, queued: bool) {
        if lines.is_empty() {
            return;
        }
        let log = &self.target.log;
        // Copies for followers only when someone follows.
        if log.live.receiver_count() > 0 {
            for line in &lines {
                let _ = log.live.send(line.clone());
            }
        }
        let job = log.job(lines);
        if queued {
            self.reserve.send(job);
        } else {
            log.writer.submit(job);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Room first: until there is some, the guest's write waits.
        let queued = match self.reserve.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(ready) => ready.is_ok(),
        };
        self.pending.extend_from_slice(buf);
        let lines = self.take_lines();
        if lines.is_empty() && queued {
            // The room goes unused; give it back for other writers.
            self.reserve.release();
        }
        self.publish(lines, queued);
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
            let line = self.line(&rest);
            self.publish(vec![line], false);
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
        let writer = DiskWriter::start();
        let logs = Logs::new(dir.path(), 1 << 20, writer.clone());
        let log = logs.service(&key());
        let mut follower = log.follow();
        let stream = LogStream::new(log.clone(), "worker.1", Stream::Stdout);
        let mut w = stream.writer();
        w.write_all(b"one\ntw").await.unwrap();
        w.write_all(b"o\nthree").await.unwrap();
        drop(w);
        writer.flush().await;
        let texts: Vec<_> = log.tail(None).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert_eq!(log.tail(Some(1))[0].instance, "worker.1");
        assert_eq!(follower.recv().await.unwrap().text, "one");
    }

    #[tokio::test]
    async fn guest_output_waits_for_the_disk_instead_of_piling_up() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskWriter::start();
        let logs = Logs::new(dir.path(), 64 << 20, writer.clone());
        let log = logs.service(&key());
        // The disk is stuck until `unblock` is sent.
        let (unblock, stuck) = std::sync::mpsc::channel::<()>();
        writer.submit(Box::new(move || {
            let _ = stuck.recv();
        }));
        let mut w = LogStream::new(log.clone(), "worker.1", Stream::Stdout).writer();
        let mut written = 0;
        let filled = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            loop {
                w.write_all(b"a line\n").await.unwrap();
                written += 1;
            }
        })
        .await;
        assert!(filled.is_err(), "writes never waited");
        assert!(
            written <= super::super::writer::QUEUE,
            "{written} writes queued"
        );
        unblock.send(()).unwrap();
        w.write_all(b"the last line\n").await.unwrap();
        writer.flush().await;
        let kept = log.tail(None);
        assert_eq!(kept.len(), written + 1);
        assert_eq!(kept.last().unwrap().text, "the last line");
    }

    #[tokio::test]
    async fn the_log_is_bounded_and_drops_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskWriter::start();
        let logs = Logs::new(dir.path(), 8 * 1024, writer.clone());
        let log = logs.service(&key());
        for i in 0..1000 {
            log.write(LogLine {
                time: Utc::now(),
                instance: "worker.1".into(),
                stream: Stream::Stderr,
                text: format!("line {i}"),
            });
        }
        writer.flush().await;
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
        // A deleted service's late line recreates nothing.
        log.write(LogLine {
            time: Utc::now(),
            instance: "worker.1".into(),
            stream: Stream::Stderr,
            text: "late".into(),
        });
        writer.flush().await;
        assert!(logs.service(&key()).tail(None).is_empty());
        assert!(!dir.path().join("logs/default/app/worker.log").exists());
    }
}
