//! Placement: one host at a time (the leader, holding a key bound to its
//! own lease, so it leads only while it lives) decides which host runs
//! each instance. It spreads a service's instances over the ready hosts
//! (up and not drained), within each host's room; an instance stays where
//! it is while its host is ready, so a change moves only what must move;
//! a cron job is placed on one host, which alone fires it. The decisions
//! are desired state (`/placements/...`): every host reads them and runs
//! its own share.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::{Desired, Digest, Node, Placement, Service, ServiceKey, ServiceType, Stack};
use crate::services::spec::resolve_command;
use crate::store::{encode, key, Compare, KvError, LeaseId, Store, Txn};

/// How often the leader looks at the hosts (their comings and goings are
/// not desired state, so no change of it wakes the leader for them).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Most writes in one transaction (etcd refuses more than 128 by default).
const WRITES_PER_TXN: usize = 100;

/// Takes the lead whenever no host has it, and places while leading,
/// until the task is dropped.
pub async fn run(store: Store, me: String, mut lease: watch::Receiver<Option<LeaseId>>) {
    let mut revisions = store.subscribe();
    let mut leading: Option<(LeaseId, u64)> = None;
    loop {
        let current = *lease.borrow_and_update();
        match current {
            None => leading = None,
            Some(granted) => {
                if leading.is_none_or(|(held, _)| held != granted) {
                    leading = lead(&store, &me, granted).await;
                }
                if let Some((_, since)) = leading {
                    match place(&store, since).await {
                        Ok(()) => {}
                        Err(KvError::Conflict(_)) => {
                            tracing::info!("another host leads now: placing no more");
                            leading = None;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot place instances"),
                    }
                }
            }
        }
        revisions.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            _ = revisions.changed() => {}
            _ = lease.changed() => {}
        }
    }
}

/// Takes the lead if no host holds it: the revision the lead was taken
/// at, which every placement compares against.
async fn lead(store: &Store, me: &str, lease: LeaseId) -> Option<(LeaseId, u64)> {
    match store
        .put_leased(key::LEADER.to_string(), &me, lease, true)
        .await
    {
        Ok(revision) => {
            tracing::info!(node = me, "this host leads: it places instances");
            Some((lease, revision))
        }
        Err(KvError::Conflict(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the lead");
            None
        }
    }
}

/// Places every service's instances, writing what changed.
async fn place(store: &Store, since: u64) -> Result<(), KvError> {
    let hosts = store
        .nodes()
        .await
        .map_err(|e| KvError::Backend(format!("{e:#}")))?;
    let desired = store
        .desired()
        .await
        .map_err(|e| KvError::Backend(format!("{e:#}")))?;
    let ready: Vec<&Node> = hosts
        .live
        .iter()
        .filter(|n| !hosts.drains.iter().any(|(name, _)| *name == n.name))
        .collect();
    let writes = plan(&desired, &ready);
    for chunk in writes.chunks(WRITES_PER_TXN) {
        let mut txn = Txn::new().when(Compare::ModRev(key::LEADER.to_string(), since));
        for (key, placement) in chunk {
            txn = match placement {
                Some(p) => txn.put(key.clone(), encode(p)),
                None => txn.delete(key.clone()),
            };
        }
        store.commit(txn).await?;
    }
    Ok(())
}

/// The placement writes that bring `desired` onto the `ready` hosts: a
/// placement to put, or `None` to delete one.
fn plan(desired: &Desired, ready: &[&Node]) -> Vec<(String, Option<Placement>)> {
    let current: HashMap<ServiceKey, &Placement> =
        desired.placements.iter().map(|p| (p.key(), p)).collect();
    // What each host holds of what stays where it is.
    let mut load: HashMap<&str, u32> = ready.iter().map(|n| (n.name.as_str(), 0)).collect();
    let mut services: Vec<_> = desired.services_with_stacks().collect();
    services.sort_by(|a, b| a.0.cmp(&b.0));
    let mut kept: Vec<(Needs, BTreeMap<u32, String>)> = Vec::new();
    for (key, service, stack) in &services {
        let needs = Needs::of(service, *stack);
        let wanted = wanted_numbers(service.service_type(), service.instances);
        let mut numbers = BTreeMap::new();
        if let Some(old) = current.get(key) {
            for (&number, node) in &old.numbers {
                let host = ready.iter().find(|n| n.name == *node);
                if number <= wanted && host.is_some_and(|h| needs.can_run_on(h)) {
                    *load.get_mut(node.as_str()).expect("ready host") += 1;
                    numbers.insert(number, node.clone());
                }
            }
        }
        kept.push((needs, numbers));
    }
    let mut writes = Vec::new();
    for ((key, service, _), (needs, mut numbers)) in services.iter().zip(kept) {
        let wanted = wanted_numbers(service.service_type(), service.instances);
        for number in 1..=wanted {
            if numbers.contains_key(&number) {
                continue;
            }
            // The host with fewest of this service, then one that holds
            // its code, then the least loaded, with room left.
            let here = |node: &str| numbers.values().filter(|n| n.as_str() == node).count();
            let best = ready
                .iter()
                .filter(|n| needs.can_run_on(n) && load[n.name.as_str()] < n.capacity_instances)
                .min_by_key(|n| {
                    (
                        here(&n.name),
                        !needs.held_by(n),
                        load[n.name.as_str()],
                        n.name.clone(),
                    )
                });
            let Some(best) = best else {
                if ready.iter().any(|n| needs.can_run_on(n)) {
                    tracing::warn!(service = %key, number, "no host has room for this instance");
                } else {
                    tracing::warn!(service = %key, "no ready host runs containers: this image's instances wait for one");
                }
                break;
            };
            *load.get_mut(best.name.as_str()).expect("ready host") += 1;
            numbers.insert(number, best.name.clone());
        }
        let placement = Placement {
            env: key.env.clone(),
            stack: key.stack.clone(),
            service: key.name.clone(),
            numbers,
        };
        if current.get(key).copied() != Some(&placement) {
            writes.push((
                key::placement(&key.env, &key.stack, &key.name),
                Some(placement),
            ));
        }
    }
    // Placements of services that are gone, and a cron job's firings.
    for (key, _) in current {
        if !services.iter().any(|(k, _, _)| *k == key) {
            writes.push((key::placement(&key.env, &key.stack, &key.name), None));
            writes.push((key::cron_last(&key.env, &key.stack, &key.name), None));
            writes.push((key::cron_runs(&key.env, &key.stack, &key.name), None));
        }
    }
    writes
}

/// What a service asks of the host its instances run on.
struct Needs {
    /// The code its command runs, when it resolves.
    code: Option<Digest>,
    /// Whether that code is a container image.
    image: bool,
}

impl Needs {
    fn of(service: &Service, stack: Option<&Stack>) -> Needs {
        // Only what the deploy recorded counts: the placer need not hold
        // the code to know what it is.
        let code = resolve_command(
            &service.stack,
            &service.command,
            service.image.as_deref(),
            stack,
            &|_| false,
        )
        .ok()
        .map(|(digest, _)| digest);
        let image = code
            .as_ref()
            .zip(stack)
            .is_some_and(|(digest, stack)| stack.images.contains(digest));
        Needs { code, image }
    }

    /// Whether `host` can run it: an image only where containers run.
    fn can_run_on(&self, host: &Node) -> bool {
        !self.image || host.runs.iter().any(|r| r == "container")
    }

    /// Whether `host` has its code already (no fetch before it starts).
    fn held_by(&self, host: &Node) -> bool {
        self.code.as_ref().is_some_and(|c| host.holds.contains(c))
    }
}

/// How many instances a service has placed: a cron job one, the host that
/// fires it.
fn wanted_numbers(kind: ServiceType, instances: u32) -> u32 {
    match kind {
        ServiceType::Cron => 1,
        ServiceType::Worker | ServiceType::Web => instances,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, room: u32) -> Node {
        Node {
            name: name.into(),
            id: name.into(),
            address: String::new(),
            runs: vec!["wasm".into()],
            capacity_instances: room,
            capacity_memory_bytes: 0,
            used_instances: 0,
            holds: Vec::new(),
            started_at: chrono::Utc::now(),
        }
    }

    fn with(node: Node, runs: &[&str], holds: &[&Digest]) -> Node {
        Node {
            runs: runs.iter().map(|r| r.to_string()).collect(),
            holds: holds.iter().map(|&d| d.clone()).collect(),
            ..node
        }
    }

    /// Stack `app` with a component `app` and an image `box`.
    fn stack(app: &Digest, image: &Digest) -> Stack {
        Stack {
            env: "default".into(),
            name: "app".into(),
            current: 1,
            components: [("app".into(), app.clone()), ("box".into(), image.clone())].into(),
            images: [image.clone()].into(),
            sources: Default::default(),
            next_version: 2,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn images_go_only_where_containers_run_and_code_goes_where_it_is() {
        let (app, image) = (Digest::of(b"app"), Digest::of(b"image"));
        let a = with(node("a", 100), &["wasm"], &[]);
        let b = with(node("b", 100), &["wasm", "container"], &[]);
        let c = with(node("c", 100), &["wasm"], &[&app]);
        let boxed = crate::model::Service {
            command: vec!["box".into(), "sleep".into()],
            ..service("boxed", 3)
        };
        let one = crate::model::Service {
            command: vec!["app".into()],
            ..service("one", 1)
        };
        let desired = Desired {
            services: vec![boxed, one],
            stacks: vec![stack(&app, &image)],
            ..Desired::default()
        };
        let writes = plan(&desired, &[&a, &b, &c]);
        let placed = |name: &str| {
            writes
                .iter()
                .find_map(|(_, p)| p.clone().filter(|p| p.service == name))
                .unwrap()
        };
        // The image's three all on b, the one host running containers.
        assert_eq!(counts(&placed("boxed")), [("b".to_string(), 3)].into());
        // A lone instance goes to c, which holds its code, though c sorts
        // last.
        assert_eq!(counts(&placed("one")), [("c".to_string(), 1)].into());
        // No host runs containers: nothing of the image is placed, and an
        // instance of it on a host that cannot run it is moved off.
        let mut placed_before = desired.clone();
        placed_before.placements = vec![Placement {
            numbers: [(1, "a".to_string())].into(),
            ..placed("boxed")
        }];
        let writes = plan(&placed_before, &[&a, &c]);
        let boxed = writes
            .iter()
            .find_map(|(_, p)| p.clone().filter(|p| p.service == "boxed"))
            .unwrap();
        assert!(boxed.numbers.is_empty(), "{boxed:?}");
    }

    fn service(name: &str, instances: u32) -> crate::model::Service {
        crate::model::Service {
            instances,
            ..crate::model::Service::new("default", "app", name)
        }
    }

    fn counts(p: &Placement) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for n in p.numbers.values() {
            *c.entry(n.clone()).or_default() += 1;
        }
        c
    }

    #[test]
    fn instances_spread_stay_put_and_move_only_off_hosts_that_went() {
        let (a, b, c) = (node("a", 100), node("b", 100), node("c", 100));
        let mut desired = Desired {
            services: vec![service("w", 6)],
            ..Desired::default()
        };
        let writes = plan(&desired, &[&a, &b, &c]);
        let placed = writes[0].1.clone().unwrap();
        assert_eq!(counts(&placed).values().collect::<Vec<_>>(), [&2, &2, &2]);
        // Nothing changes: nothing to write.
        desired.placements = vec![placed.clone()];
        assert!(plan(&desired, &[&a, &b, &c]).is_empty());
        // c goes: only its two move, one to each of the others.
        let moved = plan(&desired, &[&a, &b]).remove(0).1.unwrap();
        assert_eq!(counts(&moved).values().collect::<Vec<_>>(), [&3, &3]);
        for (number, host) in &placed.numbers {
            if host != "c" {
                assert_eq!(moved.numbers[number], *host);
            }
        }
        // Room is respected; a deleted service's placement goes.
        let small = node("s", 1);
        let tight = plan(
            &Desired {
                services: vec![service("w", 3)],
                ..Desired::default()
            },
            &[&small],
        );
        assert_eq!(tight[0].1.as_ref().unwrap().numbers.len(), 1);
        desired.services.clear();
        let gone = plan(&desired, &[&a]);
        assert_eq!(
            gone,
            [
                (key::placement("default", "app", "w"), None),
                (key::cron_last("default", "app", "w"), None),
                (key::cron_runs("default", "app", "w"), None)
            ]
        );
    }
}
