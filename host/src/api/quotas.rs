//! Quotas: what one environment may use of the machine. Every change that
//! adds services, instances, memory or code is checked against its
//! environment's quotas before it is committed. The environment's record
//! is read first ([`guard`]) and the commit rewrites it under a compare,
//! so of two changes made at once the second conflicts instead of both
//! slipping under a limit.
//!
//! A tenant's interactive runs count too, while they live: each holds one
//! instance and its memory limit (and scratch), so `mesh run --memory 1Gi`
//! is refused where `svc create --memory 1Gi` would be, and a service
//! cannot be scaled into the room a run holds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::wire::QuotaView;
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::content::UNDEPLOYED_GRACE;
use crate::model::{format_memory, Digest, Environment, Quotas, Service, DEFAULT_ENVIRONMENT};
use crate::store::{encode, key, Compare, KvError, Txn, Versioned};

/// What an environment uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Usage {
    pub services: u32,
    pub instances: u32,
    pub memory_bytes: u64,
    pub code_bytes: u64,
    /// Tasks its containers have on this host now.
    pub tasks: u64,
}

impl Usage {
    /// The services' part of the use: a cron job holds one instance.
    fn of_services<'a>(services: impl Iterator<Item = &'a Service>) -> Usage {
        let mut usage = Usage::default();
        for service in services {
            let instances = if service.schedule.is_some() {
                1
            } else {
                service.instances
            };
            usage.services += 1;
            usage.instances = usage.instances.saturating_add(instances);
            // Scratch space is a tmpfs: memory too.
            let each = service
                .memory_bytes
                .saturating_add(service.scratch_bytes.unwrap_or(0));
            usage.memory_bytes = usage
                .memory_bytes
                .saturating_add(u64::from(instances).saturating_mul(each));
        }
        usage
    }
}

/// The quotas that apply to `env`: those the operator set, else the
/// defaults for its kind (the operator's own environment may use the
/// whole platform).
pub(super) fn quotas_of(state: &ApiState, env: &Environment) -> Quotas {
    env.quotas
        .unwrap_or_else(|| platform_default(state, &env.name))
}

/// Default quotas by kind of environment.
pub(super) fn platform_default(state: &ApiState, env: &str) -> Quotas {
    if env == DEFAULT_ENVIRONMENT {
        Quotas {
            max_instances: state.config.max_instances,
            max_memory_bytes: u64::MAX,
            max_code_bytes: u64::MAX,
            max_services: u32::MAX,
            max_tasks: u32::MAX,
        }
    } else {
        Quotas::TENANT
    }
}

/// What `env` uses now.
pub(super) async fn usage(state: &ApiState, env: &str) -> ApiResult<Usage> {
    let services = state.store.services(env).await?;
    let mut usage = Usage::of_services(services.iter().map(|s| &s.value));
    state.runs.add_to(env, &mut usage);
    usage.code_bytes = code_bytes(state, env, None).await?.0;
    usage.tasks = state.containers.tasks_of(env);
    Ok(usage)
}

/// Interactive runs one tenant may have going at once (the operator's
/// have seats of their own in the engine).
pub const MAX_RUNS_PER_ENVIRONMENT: u32 = 8;

/// Tenants' interactive runs going, by environment: how many and the
/// memory they may take.
#[derive(Default)]
pub struct Runs {
    live: parking_lot::Mutex<HashMap<String, RunUse>>,
    /// Runs this host has started, which number them (per host, so two
    /// hosts in one process count their own).
    started: std::sync::atomic::AtomicU64,
}

/// What one environment's live runs hold.
#[derive(Clone, Copy, Debug, Default)]
struct RunUse {
    runs: u32,
    memory_bytes: u64,
}

/// One interactive run counted against its environment until dropped.
pub(super) struct RunSlot {
    runs: Arc<Runs>,
    env: String,
    memory_bytes: u64,
}

impl Runs {
    /// The next run's number: 1 for a host's first.
    pub(super) fn next_number(&self) -> u64 {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Adds `env`'s live runs to `usage` (one instance each, and memory).
    fn add_to(&self, env: &str, usage: &mut Usage) {
        if let Some(live) = self.live.lock().get(env) {
            usage.instances = usage.instances.saturating_add(live.runs);
            usage.memory_bytes = usage.memory_bytes.saturating_add(live.memory_bytes);
        }
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut live = self.runs.live.lock();
        if let Some(going) = live.get_mut(&self.env) {
            going.runs -= 1;
            going.memory_bytes -= self.memory_bytes;
            if going.runs == 0 {
                live.remove(&self.env);
            }
        }
    }
}

/// Counts an interactive run of the caller's against its environment's
/// run, instance and memory quotas, or says which it would exceed. The
/// operator's runs are bounded by their seats instead.
pub(super) async fn take_run(
    state: &ApiState,
    caller: &Caller,
    memory_bytes: u64,
    scratch_bytes: Option<u64>,
) -> ApiResult<Option<RunSlot>> {
    if caller.admin {
        return Ok(None);
    }
    let env = &caller.env;
    let memory_bytes = memory_bytes.saturating_add(scratch_bytes.unwrap_or(0));
    let env_key = key::env(env);
    // Counted on the first pass; held (and given back on any error) after.
    let mut slot: Option<RunSlot> = None;
    for _ in 0..RUN_COMMIT_TRIES {
        let found: Versioned<Environment> = state
            .store
            .get(env_key.clone())
            .await?
            .ok_or_else(|| ApiError::no_environment(env))?;
        let quotas = quotas_of(state, &found.value);
        let services = state.store.services(env).await?;
        let mut now = Usage::of_services(services.iter().map(|s| &s.value));
        // Checked and counted under one lock, so runs started at once
        // cannot all slip under the limit.
        {
            let mut live = state.runs.live.lock();
            let going = live.get(env).copied().unwrap_or_default();
            if slot.is_none() && going.runs >= MAX_RUNS_PER_ENVIRONMENT {
                return Err(ApiError::quota(format!(
                    "environment {env} already has {MAX_RUNS_PER_ENVIRONMENT} interactive runs going; end one first"
                )));
            }
            // Without this run, and with it.
            let mine = if slot.is_some() {
                (1, memory_bytes)
            } else {
                (0, 0)
            };
            now.instances = now.instances.saturating_add(going.runs - mine.0);
            now.memory_bytes = now.memory_bytes.saturating_add(going.memory_bytes - mine.1);
            let wanted = Usage {
                instances: now.instances.saturating_add(1),
                memory_bytes: now.memory_bytes.saturating_add(memory_bytes),
                ..now
            };
            exceeds(env, &quotas, &now, &wanted).map_err(|why| {
                ApiError::quota(format!(
                    "{why} (an interactive run holds an instance and its memory while it lives)"
                ))
            })?;
            if slot.is_none() {
                let entry = live.entry(env.clone()).or_default();
                entry.runs += 1;
                entry.memory_bytes += memory_bytes;
                slot = Some(RunSlot {
                    runs: state.runs.clone(),
                    env: env.clone(),
                    memory_bytes,
                });
            }
        }
        // The environment's record is rewritten under a compare, as a
        // change to its services rewrites it: a scale checked before this
        // run was counted conflicts instead of both passing. If another
        // change (another run) came first, this one is checked again
        // against the services as they are then.
        let txn = Txn::new()
            .when(Compare::ModRev(env_key.clone(), found.mod_rev))
            .put(env_key.clone(), encode(&found.value));
        match state.store.commit(txn).await {
            Ok(_) => return Ok(slot),
            Err(KvError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "the environment kept changing while this run was counted; run the command again",
    ))
}

/// Times an interactive run's count is committed before it gives up to
/// changes made at the same time.
const RUN_COMMIT_TRIES: usize = 8;

/// Code environments uploaded and have not deployed yet: it is kept for
/// [`UNDEPLOYED_GRACE`] and counts against their code quota meanwhile.
/// An upload is counted from the moment its check passes ([`check_upload`]
/// counts it in the same step), so uploads made at once cannot all slip
/// under the quota; one that then fails is no longer counted.
#[derive(Default)]
pub struct Uploads {
    recent: parking_lot::Mutex<HashMap<String, HashMap<Digest, Upload>>>,
}

/// One upload's size and when it came.
type Upload = (u64, Instant);

impl Uploads {
    /// Whether `env` uploaded `digest` within the grace period.
    pub(super) fn has(&self, env: &str, digest: &Digest) -> bool {
        self.recent
            .lock()
            .get(env)
            .and_then(|mine| mine.get(digest))
            .is_some_and(|(_, at)| at.elapsed() < UNDEPLOYED_GRACE)
    }

    /// Bytes `env` uploaded within the grace period that `kept` does not
    /// name (the rest is counted as kept code already), with `recent`
    /// locked; `but` is left out.
    fn pending_in(
        recent: &mut HashMap<String, HashMap<Digest, Upload>>,
        env: &str,
        kept: &HashSet<Digest>,
        but: Option<&Digest>,
    ) -> u64 {
        let Some(mine) = recent.get_mut(env) else {
            return 0;
        };
        mine.retain(|_, (_, at)| at.elapsed() < UNDEPLOYED_GRACE);
        let pending = mine
            .iter()
            .filter(|(digest, _)| !kept.contains(*digest) && Some(*digest) != but)
            .map(|(_, (size, _))| size)
            .sum();
        if mine.is_empty() {
            recent.remove(env);
        }
        pending
    }
}

/// An upload counted against its environment's code quota while it is
/// checked and stored; [`Reserved::keep`] keeps it counted for the grace
/// period, and dropping it otherwise stops counting it.
pub(super) struct Reserved {
    uploads: Arc<Uploads>,
    env: String,
    digest: Digest,
    /// Whether this upload put the record there (else it was counted
    /// already, kept or uploaded before, and is left alone).
    ours: bool,
    /// The code quota, the bytes its stacks keep, and the bytes of its
    /// other uploads when it was checked.
    quota: u64,
    kept_bytes: u64,
    pending: u64,
    kept: HashSet<Digest>,
}

impl Reserved {
    /// Bytes the upload may still grow to (an image as it unpacks).
    pub(super) fn room(&self) -> u64 {
        self.quota
            .saturating_sub(self.kept_bytes.saturating_add(self.pending))
    }

    /// Counts the upload at its final `size`, checking it still fits with
    /// what else the environment uploaded meanwhile, and keeps it counted.
    pub(super) fn keep(mut self, size: u64) -> ApiResult<()> {
        if !self.ours {
            return Ok(());
        }
        let mut recent = self.uploads.recent.lock();
        let pending = Uploads::pending_in(&mut recent, &self.env, &self.kept, Some(&self.digest));
        let used = self.kept_bytes + pending;
        let want = used + size;
        if want > self.quota {
            return Err(over_code_quota(&self.env, self.quota, used, want));
        }
        recent
            .entry(self.env.clone())
            .or_default()
            .insert(self.digest.clone(), (size, Instant::now()));
        self.ours = false;
        Ok(())
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if !self.ours {
            return;
        }
        let mut recent = self.uploads.recent.lock();
        if let Some(mine) = recent.get_mut(&self.env) {
            mine.remove(&self.digest);
            if mine.is_empty() {
                recent.remove(&self.env);
            }
        }
    }
}

fn over_code_quota(env: &str, quota: u64, used: u64, want: u64) -> ApiError {
    ApiError::quota(format!(
        "environment {env} is over its code quota (--max-code {}): its stacks and recent uploads take {} and this upload needs {}",
        format_memory(quota),
        format_memory(used),
        format_memory(want)
    ))
}

/// `env`'s code quota, the digests its stacks keep, and their bytes.
async fn code_standing(state: &ApiState, env: &str) -> ApiResult<(u64, HashSet<Digest>, u64)> {
    let found: Versioned<Environment> = state
        .store
        .get(key::env(env))
        .await?
        .ok_or_else(|| ApiError::no_environment(env))?;
    let quota = quotas_of(state, &found.value).max_code_bytes;
    let kept = kept_digests(state, env).await?;
    let engine = state.engine.clone();
    let measured = kept.clone();
    let kept_bytes = tokio::task::spawn_blocking(move || {
        measured
            .iter()
            .map(|d| engine.content().code_bytes(d))
            .sum::<u64>()
    })
    .await
    .map_err(|e| anyhow::anyhow!("measuring code failed: {e}"))?;
    Ok((quota, kept, kept_bytes))
}

/// Bytes `env` may still upload: its code quota less what its stacks keep
/// and what it uploaded lately (an upload streamed past it is refused
/// before it is all on disk).
pub(super) async fn upload_room(state: &ApiState, env: &str) -> ApiResult<u64> {
    let (quota, kept, kept_bytes) = code_standing(state, env).await?;
    let pending = Uploads::pending_in(&mut state.uploads.recent.lock(), env, &kept, None);
    Ok(quota.saturating_sub(kept_bytes.saturating_add(pending)))
}

/// Checks that an upload of `size` bytes fits `env`'s code quota, with
/// what its stacks keep and what it uploaded lately and did not deploy,
/// and counts it in the same step.
pub(super) async fn check_upload(
    state: &ApiState,
    env: &str,
    digest: &Digest,
    size: u64,
) -> ApiResult<Reserved> {
    let (quota, kept, kept_bytes) = code_standing(state, env).await?;
    let mut recent = state.uploads.recent.lock();
    let counted = kept.contains(digest)
        || recent
            .get(env)
            .and_then(|mine| mine.get(digest))
            .is_some_and(|(_, at)| at.elapsed() < UNDEPLOYED_GRACE);
    let pending = Uploads::pending_in(&mut recent, env, &kept, None);
    let used = kept_bytes + pending;
    let mut reserved = Reserved {
        uploads: state.uploads.clone(),
        env: env.to_string(),
        digest: digest.clone(),
        ours: false,
        quota,
        kept_bytes,
        pending,
        kept,
    };
    if counted {
        return Ok(reserved);
    }
    let want = used + size;
    if want > quota {
        return Err(over_code_quota(env, quota, used, want));
    }
    recent
        .entry(env.to_string())
        .or_default()
        .insert(digest.clone(), (size, Instant::now()));
    reserved.ours = true;
    Ok(reserved)
}

/// Every digest `env`'s stacks keep.
pub(super) async fn kept_digests(state: &ApiState, env: &str) -> ApiResult<HashSet<Digest>> {
    let (stacks, versions) = state.store.code_of(env).await?;
    Ok(stacks
        .into_iter()
        .chain(versions)
        .flat_map(|(_, digests)| digests)
        .collect())
}

/// One stack as a change leaves it: its name and every digest it keeps.
pub(super) type StackCode = (String, Vec<Digest>);

/// Bytes of distinct code the environment's stacks keep (current bundles
/// and every kept version): now, and with `change` in place of its stack.
async fn code_bytes(
    state: &ApiState,
    env: &str,
    change: Option<&StackCode>,
) -> ApiResult<(u64, u64)> {
    let (stacks, versions) = state.store.code_of(env).await?;
    let mut now: HashSet<Digest> = HashSet::new();
    let mut after: HashSet<Digest> = HashSet::new();
    for (stack, digests) in stacks.into_iter().chain(versions) {
        let replaced = change.is_some_and(|(name, _)| *name == stack);
        for digest in digests {
            if !replaced {
                after.insert(digest.clone());
            }
            now.insert(digest);
        }
    }
    if let Some((_, kept)) = change {
        after.extend(kept.iter().cloned());
    }
    let engine = state.engine.clone();
    let sizes = tokio::task::spawn_blocking(move || {
        let size = |set: &HashSet<Digest>| {
            set.iter()
                .map(|d| engine.content().code_bytes(d))
                .sum::<u64>()
        };
        (size(&now), size(&after))
    });
    Ok(sizes
        .await
        .map_err(|e| anyhow::anyhow!("measuring code failed: {e}"))?)
}

/// An environment's record, read before the services a change is checked
/// against: the change's commit compares it, so a change another commit
/// made in between (it rewrites the record too) makes this one conflict.
pub(super) struct Guard(Versioned<Environment>);

/// Reads `env`'s record to guard a change with; call it before reading
/// the services the change is checked against.
pub(super) async fn guard(state: &ApiState, env: &str) -> ApiResult<Guard> {
    let found = state
        .store
        .get(key::env(env))
        .await?
        .ok_or_else(|| ApiError::no_environment(env))?;
    Ok(Guard(found))
}

impl Guard {
    /// Checks that the environment, going from services `before` to
    /// `after` and with its stack as `change` leaves it, stays within its
    /// quotas. Returns the compare and write for the change's transaction.
    pub(super) async fn check(
        self,
        state: &ApiState,
        before: &[&Service],
        after: &[&Service],
        change: Option<&StackCode>,
    ) -> ApiResult<impl FnOnce(Txn) -> Txn> {
        let Guard(found) = self;
        let env = &found.value.name;
        let quotas = quotas_of(state, &found.value);
        let mut now = Usage::of_services(before.iter().copied());
        let mut wanted = Usage::of_services(after.iter().copied());
        state.runs.add_to(env, &mut now);
        state.runs.add_to(env, &mut wanted);
        (now.code_bytes, wanted.code_bytes) = code_bytes(state, env, change).await?;
        exceeds(env, &quotas, &now, &wanted).map_err(ApiError::quota)?;
        let env_key = key::env(env);
        let record = encode(&found.value);
        Ok(move |txn: Txn| {
            txn.when(Compare::ModRev(env_key.clone(), found.mod_rev))
                .put(env_key, record)
        })
    }
}

/// The first quota `wanted` goes over, where it also grows past `now`
/// (a change that shrinks use is never refused).
fn exceeds(env: &str, quotas: &Quotas, now: &Usage, wanted: &Usage) -> Result<(), String> {
    let count = |what: &str, flag: &str, limit: u64, used: u64, want: u64| {
        if want > limit && want > used {
            Err(format!(
                "environment {env} is over its {what} quota ({flag} {limit}): it uses {used} and this change needs {want}"
            ))
        } else {
            Ok(())
        }
    };
    let bytes = |what: &str, flag: &str, limit: u64, used: u64, want: u64| {
        if want > limit && want > used {
            Err(format!(
                "environment {env} is over its {what} quota ({flag} {}): it uses {} and this change needs {}",
                format_memory(limit),
                format_memory(used),
                format_memory(want)
            ))
        } else {
            Ok(())
        }
    };
    count(
        "service",
        "--max-services",
        quotas.max_services.into(),
        now.services.into(),
        wanted.services.into(),
    )?;
    count(
        "instance",
        "--max-instances",
        quotas.max_instances.into(),
        now.instances.into(),
        wanted.instances.into(),
    )?;
    bytes(
        "memory",
        "--max-memory",
        quotas.max_memory_bytes,
        now.memory_bytes,
        wanted.memory_bytes,
    )?;
    bytes(
        "code",
        "--max-code",
        quotas.max_code_bytes,
        now.code_bytes,
        wanted.code_bytes,
    )
}

/// Quotas and use, as `mesh env ls` shows them.
pub(super) fn view(quotas: &Quotas, usage: &Usage) -> QuotaView {
    QuotaView {
        max_services: quotas.max_services,
        max_instances: quotas.max_instances,
        max_memory_bytes: quotas.max_memory_bytes,
        max_code_bytes: quotas.max_code_bytes,
        services: usage.services,
        instances: usage.instances,
        memory_bytes: usage.memory_bytes,
        code_bytes: usage.code_bytes,
        max_tasks: quotas.max_tasks,
        tasks: usage.tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_over_a_quota_is_refused_naming_it_and_the_use() {
        let quotas = Quotas {
            max_instances: 10,
            max_memory_bytes: 1 << 30,
            max_code_bytes: 1 << 20,
            max_services: 3,
            max_tasks: 100,
        };
        let now = Usage {
            services: 2,
            instances: 8,
            memory_bytes: 512 << 20,
            code_bytes: 1000,
            tasks: 0,
        };
        let over = Usage {
            instances: 12,
            ..now
        };
        let err = exceeds("acme", &quotas, &now, &over).unwrap_err();
        assert_eq!(
            err,
            "environment acme is over its instance quota (--max-instances 10): it uses 8 and this change needs 12"
        );
        let memory = Usage {
            memory_bytes: 2 << 30,
            ..now
        };
        let err = exceeds("acme", &quotas, &now, &memory).unwrap_err();
        assert!(err.contains("memory quota (--max-memory 1 GiB)"), "{err}");
        assert!(exceeds("acme", &quotas, &now, &now).is_ok());
        // Already over (the operator lowered the quota): shrinking is fine.
        let lowered = Quotas {
            max_instances: 4,
            ..quotas
        };
        let fewer = Usage {
            instances: 6,
            ..now
        };
        assert!(exceeds("acme", &lowered, &now, &fewer).is_ok());
    }
}
