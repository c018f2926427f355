//! Events: what happened to services and instances, with times: instances
//! started, exited, out of memory, trapped; cron runs fired, skipped,
//! finished; deploys, creates, updates, deletes, publishes. Kept in
//! memory and in `DATA/events.jsonl` (bounded: rotated once, oldest
//! dropped first), and broadcast to `mesh events -f` followers.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::writer::DiskWriter;
use crate::model::ServiceKey;

/// Events kept in memory for `mesh events`.
const KEPT: usize = 1000;
/// Bytes of the events file before it is rotated.
const FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One thing that happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub time: DateTime<Utc>,
    /// Environment it happened in.
    pub env: String,
    /// What: `instance.started`, `instance.exited`, `instance.oom`,
    /// `instance.failed`, `cron.fired`, `cron.skipped`, `cron.finished`,
    /// `service.created`, `service.updated`, `service.deleted`,
    /// `service.restarted`, `service.published`, `service.unpublished`,
    /// `stack.deployed`.
    pub kind: String,
    /// The service, `stack/name`.
    pub service: Option<String>,
    /// The instance id.
    pub instance: Option<String>,
    /// Details for people.
    pub message: String,
}

/// The event log.
pub struct Events {
    file: Arc<EventFile>,
    writer: Arc<DiskWriter>,
    kept: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

/// The events file, written by the disk writer only.
struct EventFile {
    path: PathBuf,
    /// The file, open for appending, and its size: an event costs one
    /// write, not an open and a stat.
    open: Mutex<Option<(std::fs::File, u64)>>,
}

impl Events {
    /// The event log of a data directory, read back from disk.
    pub fn open(data_dir: &Path, writer: Arc<DiskWriter>) -> Events {
        let path = data_dir.join("events.jsonl");
        let mut kept = VecDeque::new();
        for file in [path.with_extension("jsonl.1"), path.clone()] {
            let Ok(file) = std::fs::File::open(&file) else {
                continue;
            };
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Event>(&line) {
                    kept.push_back(event);
                    if kept.len() > KEPT {
                        kept.pop_front();
                    }
                }
            }
        }
        let (live, _) = broadcast::channel(256);
        Events {
            file: Arc::new(EventFile {
                path,
                open: Mutex::new(None),
            }),
            writer,
            kept: Mutex::new(kept),
            live,
        }
    }

    /// Records an event about a service (and maybe one of its instances).
    pub fn service(&self, key: &ServiceKey, kind: &str, instance: Option<&str>, message: String) {
        self.record(Event {
            time: Utc::now(),
            env: key.env.clone(),
            kind: kind.to_string(),
            service: Some(format!("{}/{}", key.stack, key.name)),
            instance: instance.map(str::to_string),
            message,
        });
    }

    /// Records an event: kept and sent to followers at once, written to
    /// disk by the disk writer.
    pub fn record(&self, event: Event) {
        let file = self.file.clone();
        let on_disk = event.clone();
        self.writer.submit(Box::new(move || {
            if let Err(e) = file.append(&on_disk) {
                static FAILED: super::Throttle = super::Throttle::new();
                if let Some(times) = FAILED.hit() {
                    tracing::warn!(path = %file.path.display(), error = %e, times, "cannot write events (reported once per interval)");
                }
            }
        }));
        {
            let mut kept = self.kept.lock();
            kept.push_back(event.clone());
            if kept.len() > KEPT {
                kept.pop_front();
            }
        }
        // No follower is not an error.
        let _ = self.live.send(event);
    }

    /// The kept events of an environment (all of them for `None`), oldest
    /// first.
    pub fn list(&self, env: Option<&str>) -> Vec<Event> {
        self.matching(|e| env.is_none_or(|env| e.env == env))
    }

    /// The kept events `wanted` takes, oldest first.
    pub fn matching(&self, wanted: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.kept
            .lock()
            .iter()
            .filter(|e| wanted(e))
            .cloned()
            .collect()
    }

    /// A receiver of events recorded from now on.
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

impl EventFile {
    /// Appends one event; on an error the file is reopened next time.
    fn append(&self, event: &Event) -> std::io::Result<()> {
        let mut json = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let len = json.len() as u64;
        let mut open = self.open.lock();
        let (mut f, mut size) = match open.take() {
            Some(file) => file,
            None => self.open_file()?,
        };
        if size > 0 && size + len > FILE_BYTES {
            drop(f);
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
            (f, size) = self.open_file()?;
        }
        f.write_all(&json)?;
        *open = Some((f, size + len));
        Ok(())
    }

    fn open_file(&self) -> std::io::Result<(std::fs::File, u64)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_kept_per_environment_and_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskWriter::start();
        let events = Events::open(dir.path(), writer.clone());
        let key = |env: &str| ServiceKey {
            env: env.into(),
            stack: "app".into(),
            name: "web".into(),
        };
        let mut follower = events.follow();
        events.service(&key("a"), "service.created", None, "created".into());
        events.service(
            &key("b"),
            "instance.started",
            Some("web.1"),
            "started".into(),
        );
        assert_eq!(events.list(Some("a")).len(), 1);
        assert_eq!(events.list(None).len(), 2);
        assert_eq!(follower.try_recv().unwrap().kind, "service.created");
        writer.flush().await;
        let reopened = Events::open(dir.path(), writer);
        assert_eq!(
            reopened.list(Some("b"))[0].instance.as_deref(),
            Some("web.1")
        );
    }
}
