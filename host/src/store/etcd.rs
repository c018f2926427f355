//! The cluster [`Kv`] backend: an etcd v3 cluster shared by every host.
//!
//! etcd has the shape [`Kv`] was drawn from: one revision per transaction,
//! `mod_revision` per key, compare-and-swap transactions, a watchable
//! history. Each call goes to one member; when that member is down or cut
//! off from its leader (the client asks members to refuse without one),
//! the call moves on to the next, round the list, until the call's
//! deadline. (A client handed every endpoint at once keeps failing while
//! one is down: `../shared/notes/state-store.md`.)
//!
//! A transaction whose answer was lost to a dying member may have been
//! applied; tried again elsewhere, a compare-and-swap then reports a
//! conflict, which every caller already handles by reading again.
//!
//! The client runs on a small runtime of its own, so the trait's blocking
//! calls (made from `spawn_blocking`) can wait on it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, TxnOp, TxnOpResponse,
    WatchOptions,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::kv::{Change, Compare, KeyValue, Kv, KvError, LeaseId, Op, Txn};

/// Longest one call keeps trying members before it fails.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Longest one request to one member may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after every member failed once, before going round again.
const ROUND_PAUSE: Duration = Duration::from_millis(200);
/// HTTP/2 pings that find a dead member's connection.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Largest answer a range may bring (etcd's own default limit on a
/// request is far smaller; this bounds what a reply may hold).
const MAX_REPLY_BYTES: usize = 256 << 20;
/// Every key mesh keeps starts with this.
const ROOT: &str = "/";

/// An etcd cluster, as a [`Kv`].
pub struct EtcdKv {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    /// `http://host:port` of each member.
    endpoints: Vec<String>,
    /// A client per member, made on first use and dropped when it fails.
    clients: Mutex<Vec<Option<Client>>>,
    /// The member calls go to first.
    current: AtomicUsize,
    /// The latest revision seen, for subscribers.
    revision: watch::Sender<u64>,
    /// Key prefixes whose changes alone subscribers are not told of.
    quiet: &'static [&'static str],
}

impl EtcdKv {
    /// Connects to the members and reads the current revision; fails when
    /// none answers within the call deadline. Changes only to keys under
    /// `quiet` (heartbeats, reports) are not announced to subscribers.
    /// Blocks: call it from a blocking thread.
    pub fn connect(
        endpoints: Vec<String>,
        quiet: &'static [&'static str],
    ) -> Result<EtcdKv, KvError> {
        if endpoints.is_empty() {
            return Err(KvError::Backend("no etcd endpoints given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mesh-etcd")
            .enable_all()
            .build()
            .map_err(|e| KvError::Backend(format!("starting the etcd client: {e}")))?;
        let (revision, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            clients: Mutex::new(vec![None; endpoints.len()]),
            endpoints,
            current: AtomicUsize::new(0),
            revision,
            quiet,
        });
        let first = runtime.block_on(inner.revision())?;
        inner.revision.send_replace(first);
        runtime.spawn(follow(inner.clone()));
        Ok(EtcdKv {
            inner,
            runtime: Some(runtime),
        })
    }

    fn block<R>(&self, call: impl Future<Output = Result<R, KvError>>) -> Result<R, KvError> {
        match &self.runtime {
            Some(runtime) => runtime.block_on(call),
            None => Err(KvError::Backend("the etcd client has stopped".into())),
        }
    }
}

impl Drop for EtcdKv {
    fn drop(&mut self) {
        // Dropped perhaps inside the daemon's runtime, where waiting is
        // not allowed: its tasks are only connections and the watch.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether the member failed (down, unreachable, without a leader) rather
/// than the request: another member may answer it.
fn member_failed(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
        E::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        ),
        _ => false,
    }
}

/// An error in a few words: gRPC's message and its innermost cause
/// (`tcp connect error: Connection refused (os error 111)`).
fn brief(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost {
        Some(c) => format!("{}: {c}", status.message()),
        None => status.message().to_string(),
    }
}

fn backend(e: etcd_client::Error) -> KvError {
    let text = e.to_string();
    if text.contains("too many operations in txn request") {
        return KvError::Backend(
            "etcd refused a transaction with more operations than its --max-txn-ops allows: start etcd with a larger --max-txn-ops".into(),
        );
    }
    KvError::Backend(format!("etcd: {}", brief(&e)))
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, KvError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|_| KvError::Backend("a key in etcd is not UTF-8".into()))?
            .to_string(),
        mod_rev: rev(kv.mod_revision()),
        value: kv.value().to_vec(),
    })
}

impl Inner {
    /// The client of member `at`, connecting when there is none.
    async fn client(&self, at: usize) -> Result<Client, String> {
        if let Some(client) = self.clients.lock()[at].clone() {
            return Ok(client);
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let endpoint = &self.endpoints[at];
        let client = Client::connect([endpoint], Some(options))
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?;
        self.clients.lock()[at] = Some(client.clone());
        Ok(client)
    }

    /// Runs `call` on the current member, moving on to the next ones
    /// while members fail, until [`CALL_DEADLINE`].
    async fn call<R, F, Fut>(&self, call: F) -> Result<R, KvError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<R, etcd_client::Error>>,
    {
        let deadline = Instant::now() + CALL_DEADLINE;
        let members = self.endpoints.len();
        let mut failed_in_round = 0;
        loop {
            let at = self.current.load(Ordering::Relaxed) % members;
            let failure = match self.client(at).await {
                Ok(client) => match tokio::time::timeout(REQUEST_TIMEOUT, call(client)).await {
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(e)) if !member_failed(&e) => return Err(backend(e)),
                    Ok(Err(e)) => format!("{}: {}", self.endpoints[at], brief(&e)),
                    Err(_) => format!("{}: no answer in {REQUEST_TIMEOUT:?}", self.endpoints[at]),
                },
                Err(e) => e,
            };
            // That member is down or cut off: the next one, from now on.
            self.clients.lock()[at] = None;
            let _ = self.current.compare_exchange(
                at,
                (at + 1) % members,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if Instant::now() >= deadline {
                return Err(KvError::Backend(format!(
                    "no etcd member answered in {CALL_DEADLINE:?} (last: {failure})"
                )));
            }
            failed_in_round += 1;
            if failed_in_round >= members {
                failed_in_round = 0;
                tracing::debug!(%failure, "every etcd member failed once; trying again");
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }

    async fn revision(&self) -> Result<u64, KvError> {
        let answer = self
            .call(|mut c| async move {
                c.get(
                    ROOT,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
            })
            .await?;
        Ok(answer.header().map_or(0, |h| rev(h.revision())))
    }

    /// Whether subscribers are not told of changes to `key` alone.
    fn quiet(&self, key: &[u8]) -> bool {
        self.quiet
            .iter()
            .any(|prefix| key.starts_with(prefix.as_bytes()))
    }

    /// Records a revision seen, for subscribers (never going back).
    fn saw(&self, revision: u64) {
        self.revision.send_if_modified(|latest| {
            let newer = revision > *latest;
            if newer {
                *latest = revision;
            }
            newer
        });
    }

    async fn ranges(&self, prefixes: Vec<String>) -> Result<(Vec<Vec<KeyValue>>, u64), KvError> {
        // One read-only transaction: every range at the same revision.
        let answer = self
            .call(|c| {
                let reads: Vec<TxnOp> = prefixes
                    .iter()
                    .map(|p| TxnOp::get(p.as_str(), Some(GetOptions::new().with_prefix())))
                    .collect();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_REPLY_BYTES)
                        .txn(etcd_client::Txn::new().and_then(reads))
                        .await
                }
            })
            .await?;
        let revision = answer.header().map_or(0, |h| rev(h.revision()));
        let mut ranges = Vec::with_capacity(prefixes.len());
        for reply in answer.op_responses() {
            let TxnOpResponse::Get(got) = reply else {
                return Err(KvError::Backend("etcd answered a read with a write".into()));
            };
            ranges.push(got.kvs().iter().map(key_value).collect::<Result<_, _>>()?);
        }
        Ok((ranges, revision))
    }

    async fn txn(&self, txn: Txn) -> Result<u64, KvError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => EtcdCompare::version(key.as_str(), CompareOp::Equal, 0),
                Compare::ModRev(key, at) => EtcdCompare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    i64::try_from(*at).unwrap_or(i64::MAX),
                ),
            })
            .collect();
        let writes: Vec<TxnOp> = last_write_per_key(&txn.ops)
            .into_iter()
            .map(|op| match op {
                Op::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
                Op::Delete(k) => TxnOp::delete(k.as_str(), None),
            })
            .collect();
        // When a compare fails, the keys are read back to say which.
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(compared_key(c), None))
            .collect();
        let answer = self
            .call(|mut c| {
                let request = etcd_client::Txn::new()
                    .when(compares.clone())
                    .and_then(writes.clone())
                    .or_else(reads.clone());
                async move { c.txn(request).await }
            })
            .await?;
        let revision = answer.header().map_or(0, |h| rev(h.revision()));
        if answer.succeeded() {
            if txn.ops.iter().any(|op| match op {
                Op::Put(key, _) | Op::Delete(key) => !self.quiet(key.as_bytes()),
            }) {
                self.saw(revision);
            }
            return Ok(revision);
        }
        for (compare, reply) in txn.compares.iter().zip(answer.op_responses()) {
            let TxnOpResponse::Get(got) = reply else {
                continue;
            };
            let now = got.kvs().first().map(|kv| rev(kv.mod_revision()));
            let holds = match compare {
                Compare::Absent(_) => now.is_none(),
                Compare::ModRev(_, at) => now == Some(*at),
            };
            if !holds {
                return Err(KvError::Conflict(compared_key(compare).to_string()));
            }
        }
        // Every key is as compared now: it changed and changed back.
        Err(KvError::Conflict(
            txn.compares.first().map_or("", compared_key).to_string(),
        ))
    }

    /// A watch of every key from the revision after `after`.
    async fn watch_after(&self, after: u64) -> Result<etcd_client::WatchStream, KvError> {
        let start = i64::try_from(after + 1).unwrap_or(i64::MAX);
        self.call(|mut c| async move {
            c.watch(
                ROOT,
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await
        })
        .await
    }

    /// Changes after `after` up to the revision current when asked: the
    /// history is replayed by a watch from `after + 1`.
    async fn changes_since(&self, after: u64) -> Result<Vec<Change>, KvError> {
        let upto = self.revision().await?;
        if upto <= after {
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        let mut stream = self.watch_after(after).await?;
        let deadline = Instant::now() + CALL_DEADLINE;
        loop {
            let message =
                tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), stream.message())
                    .await
                    .map_err(|_| {
                        KvError::Backend("etcd did not replay its history in time".into())
                    })?
                    .map_err(backend)?;
            let Some(reply) = message else {
                return Err(KvError::Backend("etcd ended the watch".into()));
            };
            if reply.canceled() {
                if reply.compact_revision() > 0 {
                    return Err(KvError::Compacted(after));
                }
                return Err(KvError::Backend(format!(
                    "etcd cancelled the watch: {}",
                    reply.cancel_reason()
                )));
            }
            for event in reply.events() {
                let Some(kv) = event.kv() else { continue };
                let at = rev(kv.mod_revision());
                if at > upto {
                    return Ok(changes);
                }
                let deleted = event.event_type() == etcd_client::EventType::Delete;
                let mut change = key_value(kv)?;
                change.mod_rev = at;
                changes.push(Change {
                    rev: at,
                    key: change.key,
                    value: (!deleted).then_some(change.value),
                });
            }
            if changes.last().is_some_and(|c| c.rev >= upto) {
                return Ok(changes);
            }
        }
    }
}

fn compared_key(compare: &Compare) -> &str {
    match compare {
        Compare::Absent(key) | Compare::ModRev(key, _) => key,
    }
}

/// etcd refuses a transaction that writes one key twice: only the last
/// write of each key counts (the ops apply in order), kept in order.
fn last_write_per_key(ops: &[Op]) -> Vec<&Op> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Op> = ops
        .iter()
        .rev()
        .filter(|op| match op {
            Op::Put(key, _) | Op::Delete(key) => seen.insert(key.as_str()),
        })
        .collect();
    kept.reverse();
    kept
}

/// Follows every commit to any key, for subscribers, from whichever member
/// answers. After a break (a member died, the history it needed was
/// compacted), it reads the current revision again and watches on from
/// there: subscribers re-read what they need, so a missed change is only
/// a newer revision.
async fn follow(inner: Arc<Inner>) {
    loop {
        if let Err(e) = follow_once(&inner).await {
            tracing::debug!(error = %e, "watch of etcd broke; resuming");
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

async fn follow_once(inner: &Inner) -> Result<(), KvError> {
    let from = inner.revision().await?;
    inner.saw(from);
    let mut stream = inner.watch_after(from).await?;
    while let Some(reply) = stream.message().await.map_err(backend)? {
        if reply.canceled() {
            return Err(KvError::Backend(format!(
                "etcd cancelled the watch ({}; compacted to {})",
                reply.cancel_reason(),
                reply.compact_revision()
            )));
        }
        // Hosts' heartbeats and reports are not desired state: nobody
        // needs to read again for them.
        let newest = reply
            .events()
            .iter()
            .filter_map(|e| e.kv())
            .filter(|kv| !inner.quiet(kv.key()))
            .map(|kv| rev(kv.mod_revision()))
            .max();
        if let Some(newest) = newest {
            inner.saw(newest);
        }
    }
    Err(KvError::Backend("etcd ended the watch".into()))
}

impl Kv for EtcdKv {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let answer = self.block(
            self.inner
                .call(|mut c| async move { c.get(key, None).await }),
        )?;
        answer.kvs().first().map(key_value).transpose()
    }

    fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), KvError> {
        let (mut ranges, revision) = self.ranges(&[prefix])?;
        Ok((ranges.pop().unwrap_or_default(), revision))
    }

    fn ranges(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, u64), KvError> {
        let prefixes = prefixes.iter().map(|p| p.to_string()).collect();
        self.block(self.inner.ranges(prefixes))
    }

    fn txn(&self, txn: Txn) -> Result<u64, KvError> {
        self.block(self.inner.txn(txn))
    }

    fn revision(&self) -> Result<u64, KvError> {
        self.block(self.inner.revision())
    }

    fn changes_since(&self, after: u64) -> Result<Vec<Change>, KvError> {
        self.block(self.inner.changes_since(after))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let granted = self.block(
            self.inner
                .call(|mut c| async move { c.lease_grant(seconds, None).await }),
        )?;
        Ok(granted.id())
    }

    fn keep_lease(&self, lease: LeaseId) -> Result<bool, KvError> {
        let ttl = self.block(self.inner.call(|mut c| async move {
            let (mut keeper, mut answers) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            match answers.message().await? {
                Some(answer) => Ok(answer.ttl()),
                None => Ok(0),
            }
        }))?;
        Ok(ttl > 0)
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        let revoked = self.block(
            self.inner
                .call(|mut c| async move { c.lease_revoke(lease).await }),
        );
        match revoked {
            // Gone already: nothing to end.
            Err(KvError::Backend(e)) if e.contains("requested lease not found") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
        only_if_absent: bool,
    ) -> Result<u64, KvError> {
        let answer = self.block(self.inner.call(|mut c| {
            let write = TxnOp::put(
                key,
                value.clone(),
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            );
            let mut request = etcd_client::Txn::new();
            if only_if_absent {
                request = request.when([EtcdCompare::version(key, CompareOp::Equal, 0)]);
            }
            async move { c.txn(request.and_then([write])).await }
        }))?;
        if !answer.succeeded() {
            return Err(KvError::Conflict(key.to_string()));
        }
        Ok(answer.header().map_or(0, |h| rev(h.revision())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_key_the_last() {
        let ops = [
            Op::Put("/a".into(), b"1".to_vec()),
            Op::Put("/b".into(), b"1".to_vec()),
            Op::Delete("/a".into()),
        ];
        assert_eq!(last_write_per_key(&ops), [&ops[1], &ops[2]]);
    }
}
