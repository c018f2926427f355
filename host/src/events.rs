//! Events: what happened to services and instances, with times: instances
//! started, exited, out of memory, trapped; cron runs fired, skipped,
//! finished; deploys, creates, updates, deletes, publishes. Kept in
//! memory and in `DATA/events.jsonl` (bounded: rotated once, oldest
//! dropped first), and broadcast to `mesh events -f` followers.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

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
    /// `service.published`, `service.unpublished`, `stack.deployed`.
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
    path: PathBuf,
    inner: Mutex<Inner>,
    live: broadcast::Sender<Event>,
}

struct Inner {
    kept: VecDeque<Event>,
    /// The events file, open for appending, and its size: an event costs
    /// one write, not an open and a stat.
    file: Option<(std::fs::File, u64)>,
}

impl Events {
    /// The event log of a data directory, read back from disk.
    pub fn open(data_dir: &Path) -> Events {
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
            path,
            inner: Mutex::new(Inner { kept, file: None }),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Records an event.
    pub fn record(&self, event: Event) {
        let mut inner = self.lock();
        // On an error the file is reopened for the next event.
        if let Err(e) = self.append(&mut inner.file, &event) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write an event");
        }
        inner.kept.push_back(event.clone());
        if inner.kept.len() > KEPT {
            inner.kept.pop_front();
        }
        drop(inner);
        // No follower is not an error.
        let _ = self.live.send(event);
    }

    fn append(
        &self,
        file: &mut Option<(std::fs::File, u64)>,
        event: &Event,
    ) -> std::io::Result<()> {
        let mut json = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let len = json.len() as u64;
        let (mut f, mut size) = match file.take() {
            Some(open) => open,
            None => self.open_file()?,
        };
        if size > 0 && size + len > FILE_BYTES {
            drop(f);
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
            (f, size) = self.open_file()?;
        }
        f.write_all(&json)?;
        *file = Some((f, size + len));
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

    /// The kept events of an environment (all of them for `None`), oldest
    /// first.
    pub fn list(&self, env: Option<&str>) -> Vec<Event> {
        self.lock()
            .kept
            .iter()
            .filter(|e| env.is_none_or(|env| e.env == env))
            .cloned()
            .collect()
    }

    /// A receiver of events recorded from now on.
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_per_environment_and_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::open(dir.path());
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
        let reopened = Events::open(dir.path());
        assert_eq!(
            reopened.list(Some("b"))[0].instance.as_deref(),
            Some("web.1")
        );
    }
}
