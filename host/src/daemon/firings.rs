//! Cron firings claimed in a cluster's store: the last scheduled time of
//! each job fired anywhere, moved forward by compare-and-swap, so one
//! firing is claimed by exactly one host however many think they hold the
//! job, and a job that moved resumes where it was.

use chrono::{DateTime, Utc};

use crate::cron::{Firings, SHARED_RUNS};
use crate::model::{Run, ServiceKey};
use crate::services::code::BoxFuture;
use crate::store::{encode, key, Compare, KvError, Store, Txn};

/// Tries before a claim that keeps meeting other writers gives up.
const TRIES: usize = 5;

/// [`Firings`] kept in the store.
pub struct StoreFirings {
    store: Store,
}

impl StoreFirings {
    /// Firings in `store`.
    pub fn new(store: Store) -> StoreFirings {
        StoreFirings { store }
    }
}

impl Firings for StoreFirings {
    fn last(&self, service: &ServiceKey) -> BoxFuture<'static, Option<DateTime<Utc>>> {
        let store = self.store.clone();
        let at = key::cron_last(&service.env, &service.stack, &service.name);
        Box::pin(async move {
            store
                .get::<DateTime<Utc>>(at)
                .await
                .ok()
                .flatten()
                .map(|v| v.value)
        })
    }

    fn claim(&self, service: &ServiceKey, at: DateTime<Utc>) -> BoxFuture<'static, bool> {
        let store = self.store.clone();
        let last = key::cron_last(&service.env, &service.stack, &service.name);
        let shown = service.to_string();
        Box::pin(async move {
            for _ in 0..TRIES {
                let current = match store.get::<DateTime<Utc>>(last.clone()).await {
                    Ok(current) => current,
                    Err(e) => {
                        tracing::warn!(service = %shown, error = %format!("{e:#}"), "cannot claim a cron firing: not firing it");
                        return false;
                    }
                };
                let compare = match &current {
                    Some(v) if v.value >= at => return false,
                    Some(v) => Compare::ModRev(last.clone(), v.mod_rev),
                    None => Compare::Absent(last.clone()),
                };
                let txn = Txn::new().when(compare).put(last.clone(), encode(&at));
                match store.commit(txn).await {
                    Ok(_) => return true,
                    Err(KvError::Conflict(_)) => continue,
                    Err(e) => {
                        tracing::warn!(service = %shown, error = %e, "cannot claim a cron firing: not firing it");
                        return false;
                    }
                }
            }
            false
        })
    }

    fn runs(&self, service: &ServiceKey) -> BoxFuture<'static, Vec<Run>> {
        let store = self.store.clone();
        let at = key::cron_runs(&service.env, &service.stack, &service.name);
        Box::pin(async move {
            match store.get::<Vec<Run>>(at).await {
                Ok(runs) => runs.map(|v| v.value).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read a cron job's shared runs");
                    Vec::new()
                }
            }
        })
    }

    fn share(&self, service: &ServiceKey, runs: Vec<Run>) -> BoxFuture<'static, ()> {
        let store = self.store.clone();
        let at = key::cron_runs(&service.env, &service.stack, &service.name);
        let shown = service.to_string();
        Box::pin(async move {
            for _ in 0..TRIES {
                let current = match store.get::<Vec<Run>>(at.clone()).await {
                    Ok(current) => current,
                    Err(e) => {
                        tracing::warn!(service = %shown, error = %format!("{e:#}"), "cannot share a cron job's runs");
                        return;
                    }
                };
                let (compare, mut merged) = match current {
                    Some(v) => (Compare::ModRev(at.clone(), v.mod_rev), v.value),
                    None => (Compare::Absent(at.clone()), Vec::new()),
                };
                // By number, this host's record of a run winning; the
                // newest few kept.
                merged.retain(|old| !runs.iter().any(|r| r.number == old.number));
                merged.extend(runs.iter().cloned());
                merged.sort_by_key(|r| std::cmp::Reverse(r.number));
                merged.truncate(SHARED_RUNS);
                let txn = Txn::new().when(compare).put(at.clone(), encode(&merged));
                match store.commit(txn).await {
                    Ok(_) => return,
                    Err(KvError::Conflict(_)) => continue,
                    Err(e) => {
                        tracing::warn!(service = %shown, error = %e, "cannot share a cron job's runs");
                        return;
                    }
                }
            }
        })
    }
}
