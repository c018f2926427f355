//! Run history: the last [`RUNS_KEPT`] runs of every cron job, kept in
//! memory and in one JSON-lines file per job under `DATA/runs/`, so
//! `service ls` shows them across daemon restarts.
//!
//! The file is append-only while it is small, and rewritten (to a temporary
//! file, then renamed) with just the kept runs when it grows past twice
//! that, so a crash mid-rewrite leaves the old file whole. Files are
//! written by the disk writer; memory has the runs at once.

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::model::{Run, RunStatus, ServiceKey};
use crate::telemetry::DiskWriter;

/// Runs kept per job.
pub const RUNS_KEPT: usize = 50;

/// Every job's history, opened on first use.
pub struct Histories {
    dir: PathBuf,
    writer: Arc<DiskWriter>,
    open: Mutex<HashMap<ServiceKey, Arc<History>>>,
}

impl Histories {
    /// Histories under `DATA/runs`.
    pub fn new(data_dir: &Path, writer: Arc<DiskWriter>) -> Histories {
        Histories {
            dir: data_dir.join("runs"),
            writer,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The history of one job, loaded from disk the first time.
    pub fn job(&self, key: &ServiceKey) -> Arc<History> {
        self.open
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(History::load(self.path(key), self.writer.clone())))
            .clone()
    }

    /// Forgets a deleted job's history, file included.
    pub fn remove(&self, key: &ServiceKey) {
        let Some(history) = self.open.lock().remove(key) else {
            // Never opened here: nothing can be writing it.
            let _ = std::fs::remove_file(self.path(key));
            return;
        };
        // Now, so a job made again under the same name starts afresh; and
        // nothing a late run of the deleted job records lands on disk.
        let file = &history.file;
        let _io = file.io.lock();
        file.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = std::fs::remove_file(&file.path);
    }

    fn path(&self, key: &ServiceKey) -> PathBuf {
        self.dir
            .join(&key.env)
            .join(&key.stack)
            .join(format!("{}.jsonl", key.name))
    }
}

/// One job's runs, oldest first.
pub struct History {
    file: Arc<HistoryFile>,
    writer: Arc<DiskWriter>,
    inner: Mutex<Inner>,
}

/// A job's history file, written by the disk writer only.
struct HistoryFile {
    path: PathBuf,
    /// Held for each write and for the delete, so none lands after it.
    io: Mutex<()>,
    /// Set when the job is deleted: nothing is written after that.
    closed: std::sync::atomic::AtomicBool,
}

struct Inner {
    runs: VecDeque<Run>,
    /// Lines in the file, to know when to rewrite it.
    lines_on_disk: usize,
    next_number: u64,
}

impl History {
    fn load(path: PathBuf, writer: Arc<DiskWriter>) -> History {
        let mut runs = VecDeque::new();
        let mut lines_on_disk = 0;
        let mut torn = false;
        if let Ok(file) = std::fs::File::open(&path) {
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                lines_on_disk += 1;
                // A line torn by a crash is skipped, not fatal.
                match serde_json::from_str::<Run>(&line) {
                    Ok(run) => push_bounded(&mut runs, run),
                    Err(_) => torn = true,
                }
            }
        }
        // A run still marked running was cut off by the daemon stopping.
        for run in runs.iter_mut().filter(|r| r.status == RunStatus::Running) {
            run.status = RunStatus::Failed;
            run.message = Some("the daemon stopped during this run".to_string());
            torn = true;
        }
        let next_number = runs.back().map_or(1, |r| r.number + 1);
        let file = Arc::new(HistoryFile {
            path,
            io: Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let history = History {
            file,
            writer,
            inner: Mutex::new(Inner {
                runs,
                lines_on_disk,
                next_number,
            }),
        };
        if torn {
            // Rewrite now, or the next append would join the torn line.
            let mut inner = history.inner.lock();
            match history.file.rewrite(&inner.runs) {
                Ok(()) => inner.lines_on_disk = inner.runs.len(),
                Err(e) => {
                    tracing::warn!(path = %history.file.path.display(), error = %e, "cannot repair run history")
                }
            }
            drop(inner);
        }
        history
    }

    /// Takes the next run number.
    pub fn next_number(&self) -> u64 {
        let mut inner = self.inner.lock();
        let n = inner.next_number;
        inner.next_number += 1;
        n
    }

    /// Records a run: when it starts (status `running`), and again when it
    /// ends or is skipped; a later record of the same number replaces the
    /// earlier one.
    pub fn record(&self, run: Run) {
        let mut inner = self.inner.lock();
        push_bounded(&mut inner.runs, run.clone());
        let file = self.file.clone();
        let job: Box<dyn FnOnce() -> std::io::Result<()> + Send> =
            if inner.lines_on_disk + 1 > 2 * RUNS_KEPT {
                inner.lines_on_disk = inner.runs.len();
                let runs = inner.runs.clone();
                Box::new(move || file.rewrite(&runs))
            } else {
                inner.lines_on_disk += 1;
                Box::new(move || file.append(&run))
            };
        drop(inner);
        let file = self.file.clone();
        self.writer.submit(Box::new(move || {
            let _io = file.io.lock();
            if file.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            if let Err(e) = job() {
                static FAILED: crate::telemetry::Throttle = crate::telemetry::Throttle::new();
                if let Some(times) = FAILED.hit() {
                    tracing::warn!(path = %file.path.display(), error = %e, times, "cannot write run history (reported once per interval)");
                }
            }
        }));
    }

    /// Takes in runs another host recorded (a job that moved here):
    /// those not known here are recorded, and numbering goes on after
    /// the last of them.
    pub fn adopt(&self, runs: Vec<Run>) {
        for run in runs {
            let known = {
                let mut inner = self.inner.lock();
                inner.next_number = inner.next_number.max(run.number + 1);
                inner
                    .runs
                    .binary_search_by_key(&run.number, |r| r.number)
                    .is_ok()
            };
            if !known {
                self.record(run);
            }
        }
    }

    /// The kept runs, newest first.
    pub fn newest_first(&self) -> Vec<Run> {
        self.inner.lock().runs.iter().rev().cloned().collect()
    }
}

impl HistoryFile {
    fn append(&self, run: &Run) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&line_of(run)?)
    }

    fn rewrite(&self, runs: &VecDeque<Run>) -> std::io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut bytes = Vec::new();
        for run in runs {
            bytes.extend_from_slice(&line_of(run)?);
        }
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)
    }
}

fn line_of(run: &Run) -> std::io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec(run).map_err(std::io::Error::other)?;
    json.push(b'\n');
    Ok(json)
}

/// Keeps `runs` ordered by number, one entry a number, at most
/// [`RUNS_KEPT`] (the newest).
fn push_bounded(runs: &mut VecDeque<Run>, run: Run) {
    match runs.binary_search_by_key(&run.number, |r| r.number) {
        Ok(at) => runs[at] = run,
        Err(at) => runs.insert(at, run),
    }
    while runs.len() > RUNS_KEPT {
        runs.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunTrigger;

    fn key() -> ServiceKey {
        ServiceKey {
            env: "default".into(),
            stack: "app".into(),
            name: "mailer".into(),
        }
    }

    fn run(number: u64) -> Run {
        let now = chrono::Utc::now();
        Run {
            number,
            instance: Some(format!("mailer.r{number}")),
            trigger: RunTrigger::Schedule,
            scheduled_at: now,
            started_at: now,
            duration_ms: 3,
            start_us: Some(40),
            exit_code: Some(0),
            status: RunStatus::Succeeded,
            message: None,
        }
    }

    fn open_histories(dir: &Path) -> Histories {
        Histories::new(dir, DiskWriter::start())
    }

    #[test]
    fn keeps_the_newest_runs_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let histories = open_histories(dir.path());
        let history = histories.job(&key());
        for _ in 0..130 {
            let n = history.next_number();
            history.record(run(n));
        }
        histories.writer.flush_blocking();
        let kept = history.newest_first();
        assert_eq!(kept.len(), RUNS_KEPT);
        assert_eq!(kept[0].number, 130);
        assert_eq!(kept[RUNS_KEPT - 1].number, 81);

        // A fresh registry (a restarted daemon) reads the same runs back and
        // numbers on from the last one.
        let reopened = open_histories(dir.path()).job(&key());
        assert_eq!(reopened.newest_first(), kept);
        assert_eq!(reopened.next_number(), 131);
        let lines = std::fs::read_to_string(dir.path().join("runs/default/app/mailer.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * RUNS_KEPT, "{lines} lines on disk");

        histories.remove(&key());
        histories.writer.flush_blocking();
        assert!(open_histories(dir.path())
            .job(&key())
            .newest_first()
            .is_empty());
    }

    #[test]
    fn runs_stay_in_number_order_and_a_cut_off_run_is_failed() {
        let dir = tempfile::tempdir().unwrap();
        let histories = open_histories(dir.path());
        let history = histories.job(&key());
        // Run 1 is slow: it starts, run 2 is skipped, run 3 starts, then
        // 3 ends before 1 does.
        let running = |n| Run {
            status: RunStatus::Running,
            ..run(n)
        };
        history.record(running(1));
        history.record(Run {
            status: RunStatus::Skipped,
            ..run(2)
        });
        history.record(running(3));
        history.record(run(3));
        history.record(run(1));
        history.record(running(4));
        histories.writer.flush_blocking();
        let numbers = |runs: Vec<Run>| runs.iter().map(|r| r.number).collect::<Vec<_>>();
        assert_eq!(numbers(history.newest_first()), [4, 3, 2, 1]);
        assert_eq!(history.newest_first()[0].status, RunStatus::Running);
        assert_eq!(history.newest_first()[3].status, RunStatus::Succeeded);

        // The daemon dies during run 4: after a restart it is a failed run,
        // and numbering goes on after it.
        let reopened = open_histories(dir.path()).job(&key());
        let runs = reopened.newest_first();
        assert_eq!(numbers(runs.clone()), [4, 3, 2, 1]);
        assert_eq!(runs[0].status, RunStatus::Failed);
        assert_eq!(
            runs[0].message.as_deref(),
            Some("the daemon stopped during this run")
        );
        assert_eq!(reopened.next_number(), 5);
        // And the repair is on disk.
        let again = open_histories(dir.path()).job(&key());
        assert_eq!(again.newest_first(), runs);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let histories = open_histories(dir.path());
        let history = histories.job(&key());
        history.record(run(1));
        histories.writer.flush_blocking();
        let path = dir.path().join("runs/default/app/mailer.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"number\": 2, \"inst");
        std::fs::write(&path, text).unwrap();
        let reopened = open_histories(dir.path()).job(&key());
        assert_eq!(reopened.newest_first().len(), 1);
        assert_eq!(reopened.next_number(), 2);
        reopened.record(run(2));
        reopened.writer.flush_blocking();
        let again = open_histories(dir.path()).job(&key());
        let numbers: Vec<u64> = again.newest_first().iter().map(|r| r.number).collect();
        assert_eq!(numbers, [2, 1]);
    }
}
