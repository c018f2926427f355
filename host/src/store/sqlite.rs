//! The embedded [`Kv`] backend: one SQLite file in the data directory, in
//! WAL mode with `synchronous=FULL`, so a transaction acknowledged to a
//! caller survives `kill -9` and power loss.
//!
//! Beside it lies a reserve file of [`RESERVE_BYTES`]. When the disk is
//! full, a transaction that only deletes (taking a service down, say)
//! gives the reserve up and is tried again, so removing things still
//! works on a full disk; the reserve is made again at the next start.

use parking_lot::Mutex;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;

use super::kv::{Change, Compare, KeyValue, Kv, KvError, Op, Txn};

/// How many revisions of change feed to keep; older ones are compacted.
const CHANGES_KEPT: u64 = 10_000;

/// Space kept aside for deletes on a full disk.
pub const RESERVE_BYTES: usize = 8 * 1024 * 1024;

/// A [`Kv`] on one SQLite file.
pub struct SqliteKv {
    conn: Mutex<Connection>,
    revision: watch::Sender<u64>,
    /// The reserve file.
    reserve: std::path::PathBuf,
}

impl SqliteKv {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteKv, KvError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY,
                 mod_rev INTEGER NOT NULL,
                 value BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS changes (
                 rev INTEGER NOT NULL,
                 seq INTEGER NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB,
                 PRIMARY KEY (rev, seq)
             );
             CREATE TABLE IF NOT EXISTS meta (
                 name TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );",
        )
        .map_err(backend)?;
        let rev = read_revision(&conn)?;
        let (revision, _) = watch::channel(rev);
        let reserve = path.with_extension("reserve");
        if !reserve.exists() {
            if let Err(e) = std::fs::write(&reserve, vec![0u8; RESERVE_BYTES]) {
                let _ = std::fs::remove_file(&reserve);
                tracing::warn!(path = %reserve.display(), error = %e, "cannot keep space aside for deletes on a full disk");
            }
        }
        Ok(SqliteKv {
            conn: Mutex::new(conn),
            revision,
            reserve,
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// One attempt at a transaction.
    fn try_txn(&self, txn: &Txn) -> Result<u64, KvError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        for compare in &txn.compares {
            let (key, want) = match compare {
                Compare::Absent(key) => (key, None),
                Compare::ModRev(key, rev) => (key, Some(*rev)),
            };
            let have: Option<i64> = tx
                .query_row("SELECT mod_rev FROM kv WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?;
            if have.map(|r| r as u64) != want {
                return Err(KvError::Conflict(key.clone()));
            }
        }
        let rev = read_revision(&tx)? + 1;
        for (seq, op) in txn.ops.iter().enumerate() {
            match op {
                Op::Put(key, value) => {
                    tx.execute(
                        "INSERT INTO kv (key, mod_rev, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT(key) DO UPDATE SET mod_rev = ?2, value = ?3",
                        params![key, rev as i64, value],
                    )
                    .map_err(backend)?;
                    tx.execute(
                        "INSERT INTO changes (rev, seq, key, value) VALUES (?1, ?2, ?3, ?4)",
                        params![rev as i64, seq as i64, key, value],
                    )
                    .map_err(backend)?;
                }
                Op::Delete(key) => {
                    tx.execute("DELETE FROM kv WHERE key = ?1", params![key])
                        .map_err(backend)?;
                    tx.execute(
                        "INSERT INTO changes (rev, seq, key, value) VALUES (?1, ?2, ?3, NULL)",
                        params![rev as i64, seq as i64, key],
                    )
                    .map_err(backend)?;
                }
            }
        }
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('revision', ?1)
             ON CONFLICT(name) DO UPDATE SET value = ?1",
            params![rev as i64],
        )
        .map_err(backend)?;
        if rev % 1000 == 0 && rev > CHANGES_KEPT {
            tx.execute(
                "DELETE FROM changes WHERE rev <= ?1",
                params![(rev - CHANGES_KEPT) as i64],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        drop(conn);
        self.revision.send_replace(rev);
        Ok(rev)
    }
}

fn backend(e: rusqlite::Error) -> KvError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        KvError::Full(e.to_string())
    } else {
        KvError::Backend(e.to_string())
    }
}

fn read_revision(conn: &Connection) -> Result<u64, KvError> {
    let rev: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(backend)?;
    Ok(rev.unwrap_or(0) as u64)
}

impl Kv for SqliteKv {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT mod_rev, value FROM kv WHERE key = ?1",
            params![key],
            |r| {
                Ok(KeyValue {
                    key: key.to_string(),
                    mod_rev: r.get::<_, i64>(0)? as u64,
                    value: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(backend)
    }

    fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), KvError> {
        let (mut ranges, rev) = self.ranges(&[prefix])?;
        Ok((ranges.pop().unwrap_or_default(), rev))
    }

    fn ranges(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, u64), KvError> {
        let mut conn = self.lock();
        // One read transaction, so the rows of every prefix and the
        // revision agree.
        let tx = conn.transaction().map_err(backend)?;
        let rev = read_revision(&tx)?;
        let mut stmt = tx
            .prepare_cached(
                "SELECT key, mod_rev, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )
            .map_err(backend)?;
        let mut all = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let rows = stmt
                .query_map(params![prefix, prefix_end(prefix)], |r| {
                    Ok(KeyValue {
                        key: r.get(0)?,
                        mod_rev: r.get::<_, i64>(1)? as u64,
                        value: r.get(2)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            all.push(rows);
        }
        drop(stmt);
        tx.commit().map_err(backend)?;
        Ok((all, rev))
    }

    fn txn(&self, txn: Txn) -> Result<u64, KvError> {
        let deletes_only = txn.ops.iter().all(|op| matches!(op, Op::Delete(_)));
        match self.try_txn(&txn) {
            Err(KvError::Full(why)) if deletes_only && self.reserve.exists() => {
                tracing::warn!(path = %self.reserve.display(), "the disk is full: giving up the reserve so a delete goes through");
                let _ = std::fs::remove_file(&self.reserve);
                self.try_txn(&txn).map_err(|e| match e {
                    KvError::Full(_) => KvError::Full(why),
                    other => other,
                })
            }
            other => other,
        }
    }

    fn revision(&self) -> Result<u64, KvError> {
        read_revision(&self.lock())
    }

    fn changes_since(&self, after: u64) -> Result<Vec<Change>, KvError> {
        let conn = self.lock();
        let oldest: Option<i64> = conn
            .query_row("SELECT MIN(rev) FROM changes", [], |r| r.get(0))
            .map_err(backend)?;
        if let Some(oldest) = oldest {
            if after + 1 < oldest as u64 {
                return Err(KvError::Compacted(after));
            }
        }
        let mut stmt = conn
            .prepare_cached("SELECT rev, key, value FROM changes WHERE rev > ?1 ORDER BY rev, seq")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![after as i64], |r| {
                Ok(Change {
                    rev: r.get::<_, i64>(0)? as u64,
                    key: r.get(1)?,
                    value: r.get(2)?,
                })
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

/// The smallest string greater than every string starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    // Keys are ASCII paths; appending the highest scalar bounds them all.
    format!("{prefix}\u{10FFFF}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SqliteKv) {
        let dir = tempfile::tempdir().unwrap();
        let kv = SqliteKv::open(&dir.path().join("state.db")).unwrap();
        (dir, kv)
    }

    #[test]
    fn put_get_range_and_revisions() {
        let (_dir, kv) = open();
        let r1 = kv.txn(Txn::new().put("/a/1", b"one".to_vec())).unwrap();
        let r2 = kv
            .txn(
                Txn::new()
                    .put("/a/2", b"two".to_vec())
                    .put("/b/1", b"x".to_vec()),
            )
            .unwrap();
        assert_eq!((r1, r2), (1, 2));
        assert_eq!(kv.get("/a/1").unwrap().unwrap().mod_rev, 1);
        let (rows, rev) = kv.range("/a/").unwrap();
        assert_eq!(rev, 2);
        let keys: Vec<_> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["/a/1", "/a/2"]);
    }

    #[test]
    fn compare_and_swap_rejects_stale_writers() {
        let (_dir, kv) = open();
        kv.txn(
            Txn::new()
                .when(Compare::Absent("/k".into()))
                .put("/k", b"1".to_vec()),
        )
        .unwrap();
        let again = kv.txn(
            Txn::new()
                .when(Compare::Absent("/k".into()))
                .put("/k", b"2".to_vec()),
        );
        assert!(matches!(again, Err(KvError::Conflict(_))));
        let stale = kv.txn(
            Txn::new()
                .when(Compare::ModRev("/k".into(), 7))
                .delete("/k"),
        );
        assert!(matches!(stale, Err(KvError::Conflict(_))));
        assert_eq!(kv.get("/k").unwrap().unwrap().value, b"1");
        kv.txn(
            Txn::new()
                .when(Compare::ModRev("/k".into(), 1))
                .delete("/k"),
        )
        .unwrap();
        assert!(kv.get("/k").unwrap().is_none());
    }

    #[test]
    fn change_feed_and_subscription_follow_commits() {
        let (_dir, kv) = open();
        let mut sub = kv.subscribe();
        kv.txn(Txn::new().put("/x", b"1".to_vec())).unwrap();
        kv.txn(Txn::new().delete("/x")).unwrap();
        assert!(sub.has_changed().unwrap());
        assert_eq!(*sub.borrow_and_update(), 2);
        let changes = kv.changes_since(0).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].value, None);
        assert_eq!(kv.changes_since(1).unwrap().len(), 1);
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let kv = SqliteKv::open(&path).unwrap();
            kv.txn(Txn::new().put("/kept", b"yes".to_vec())).unwrap();
        }
        let kv = SqliteKv::open(&path).unwrap();
        assert_eq!(kv.revision().unwrap(), 1);
        assert_eq!(kv.get("/kept").unwrap().unwrap().value, b"yes");
    }
}
