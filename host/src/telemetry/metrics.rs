//! Metrics in the Prometheus text format, served at `GET /metrics` on the
//! control API (operator token): requests by service and status, request
//! latency histograms, instances by state, restarts, cron runs by status,
//! memory in use, and outgoing calls (in-process, network, denied).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use super::recent::{bucket_of, now_secs, Recent, Usage, UsageStats, WindowStats};
use crate::model::{InstanceStatus, RunStatus, ServiceKey};

/// Upper bounds of the request latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// A service's recent requests: one latency bucket per bound, one beyond.
type RecentRequests = Recent<{ BUCKETS.len() + 1 }>;

/// Counts of outgoing requests since the daemon started.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CallCounts {
    /// Dispatched in-process to a service by its intra-DNS name.
    pub in_process: u64,
    /// Sent to the network.
    pub outbound: u64,
    /// Refused by an outbound policy.
    pub denied: u64,
}

/// Every service's counters. The parts of the daemon that serve a service
/// (its pool, its slots, its cron job) hold its [`ServiceMetrics`], so
/// counting a request takes only that service's lock; a deleted service's
/// series leave the exposition at once, and late counts from its last
/// in-flight requests go to the detached series.
#[derive(Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<ServiceKey, Arc<ServiceMetrics>>>,
    /// Outgoing guest requests, by where they went.
    pub calls: CallCounters,
    /// Open ingress connections.
    pub connections: AtomicI64,
}

/// Outgoing guest requests since the daemon started.
#[derive(Default)]
pub struct CallCounters {
    /// Dispatched in-process by name.
    pub in_process: AtomicU64,
    /// Sent to the network.
    pub outbound: AtomicU64,
    /// Refused by a policy.
    pub denied: AtomicU64,
}

impl CallCounters {
    /// The counts now.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            in_process: self.in_process.load(Ordering::Relaxed),
            outbound: self.outbound.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
        }
    }
}

/// One service's counters.
#[derive(Default)]
pub struct ServiceMetrics {
    tallies: Mutex<Tallies>,
    /// Linear memory its instances use, kept by their memory limiters.
    memory: AtomicI64,
    /// Requests waiting for a free instance now.
    waiting: AtomicI64,
    /// CPU time its instances used, in nanoseconds: wasm counted by the
    /// epoch ticks it ran across, containers read from their cgroups.
    pub cpu_nanos: Arc<AtomicU64>,
    /// Its memory and CPU use over the last minutes.
    usage: Mutex<Usage>,
    /// The intra-DNS names its instances called, with when they last did
    /// (seconds since the epoch); at most [`MAX_CALLED`].
    called: Mutex<BTreeMap<String, u64>>,
}

/// How often every service's memory and CPU use is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Names a service's record of whom it called keeps; past it, the one
/// called longest ago makes room.
const MAX_CALLED: usize = 64;

/// A service that called another by name on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalledBy {
    /// The caller.
    pub key: ServiceKey,
    /// When it last called, in seconds since the epoch.
    pub last_secs: u64,
}

/// Everything counted under the service's one lock.
#[derive(Default)]
struct Tallies {
    counts: Counts,
    recent: RecentRequests,
}

#[derive(Default, Clone)]
struct Counts {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    cron_runs: BTreeMap<RunStatus, u64>,
    restarts: u64,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl ServiceMetrics {
    /// Counts one request the service answered (ingress or intra-DNS).
    pub fn request(&self, status: u16, took: Duration) {
        let seconds = took.as_secs_f64();
        let now = now_secs();
        let bucket = bucket_of(seconds, &BUCKETS);
        let mut tallies = self.tallies.lock();
        tallies.recent.record(now, status, seconds, bucket);
        let c = &mut tallies.counts;
        *c.requests.entry(status).or_default() += 1;
        let h = &mut c.latency;
        // Cumulative: every bound the request was within.
        for count in &mut h.counts[bucket..] {
            *count += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Counts one cron run.
    pub fn cron_run(&self, status: RunStatus) {
        *self
            .tallies
            .lock()
            .counts
            .cron_runs
            .entry(status)
            .or_default() += 1;
    }

    /// Counts one restart of one of the service's instances.
    pub fn restart(&self) {
        self.tallies.lock().counts.restarts += 1;
    }

    /// Adds `bytes` (negative: frees them) to the memory in use.
    pub fn memory_changed(&self, bytes: i64) {
        self.memory.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Notes that one of its instances called `name` (an intra-DNS name)
    /// at `now_secs`.
    /// A hint, on every call by name: it never waits for the lock (a
    /// call that finds it taken is not noted; the next one is).
    pub fn called(&self, name: &str, now_secs: u64) {
        let Some(mut called) = self.called.try_lock() else {
            return;
        };
        if let Some(last) = called.get_mut(name) {
            *last = now_secs;
            return;
        }
        if called.len() >= MAX_CALLED {
            let oldest = called
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                called.remove(&oldest);
            }
        }
        called.insert(name.to_string(), now_secs);
    }

    /// One more request waits for an instance (`-1`: one less). Counted
    /// by delta, so a service's old and new pools add up.
    pub fn waiting_changed(&self, delta: i64) {
        self.waiting.fetch_add(delta, Ordering::Relaxed);
    }
}

/// One service's numbers, copied so no lock is held while writing.
struct Snapshot {
    key: ServiceKey,
    counts: Counts,
    memory: i64,
    waiting: i64,
}

impl Metrics {
    /// A service's counters, made on first use.
    pub fn service(&self, key: &ServiceKey) -> Arc<ServiceMetrics> {
        self.services.lock().entry(key.clone()).or_default().clone()
    }

    /// A service's requests over the last minutes as of `now_secs` (none
    /// when it has served none since the daemon started).
    pub fn recent(&self, key: &ServiceKey, now_secs: u64) -> Vec<WindowStats> {
        let service = self.services.lock().get(key).cloned();
        match service {
            Some(s) => s.tallies.lock().recent.stats(now_secs, &BUCKETS),
            None => RecentRequests::default().stats(now_secs, &BUCKETS),
        }
    }

    /// The services of `key`'s environment whose instances called it by
    /// name on this host since the daemon started, most recent first.
    pub fn callers_of(&self, key: &ServiceKey) -> Vec<CalledBy> {
        let name = crate::model::dns_name(&key.stack, &key.name);
        let services: Vec<(ServiceKey, Arc<ServiceMetrics>)> = self
            .services
            .lock()
            .iter()
            .filter(|(k, _)| k.env == key.env && *k != key)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let mut callers: Vec<CalledBy> = services
            .into_iter()
            .filter_map(|(k, s)| {
                let last_secs = *s.called.lock().get(&name)?;
                Some(CalledBy { key: k, last_secs })
            })
            .collect();
        callers.sort_by(|a, b| b.last_secs.cmp(&a.last_secs).then(a.key.cmp(&b.key)));
        callers
    }

    /// A service's memory and CPU use over the last minutes as of
    /// `now_secs`.
    pub fn usage(&self, key: &ServiceKey, now_secs: u64) -> Vec<UsageStats> {
        let service = self.services.lock().get(key).cloned();
        match service {
            Some(s) => s.usage.lock().stats(now_secs),
            None => Usage::default().stats(now_secs),
        }
    }

    /// Takes one sample of every service's memory and CPU use.
    pub fn sample(&self, now_secs: u64) {
        let services: Vec<Arc<ServiceMetrics>> = self.services.lock().values().cloned().collect();
        for s in services {
            let memory = s.memory.load(Ordering::Relaxed).max(0) as u64;
            let cpu = s.cpu_nanos.load(Ordering::Relaxed);
            let mut usage = s.usage.lock();
            if !usage.idle(memory, cpu) {
                usage.sample(now_secs, memory, cpu);
            }
        }
    }

    /// Samples every service's use every [`SAMPLE_EVERY`] until `stopping`
    /// turns true.
    pub async fn sample_until(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.sample(now_secs()),
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Drops a deleted service's series.
    pub fn forget(&self, key: &ServiceKey) {
        self.services.lock().remove(key);
    }

    /// The text exposition, with instance status read now.
    pub fn render(&self, instances: &[(ServiceKey, Vec<InstanceStatus>)]) -> String {
        let services: Vec<Snapshot> = self
            .services
            .lock()
            .iter()
            .map(|(key, s)| Snapshot {
                key: key.clone(),
                counts: s.tallies.lock().counts.clone(),
                memory: s.memory.load(Ordering::Relaxed).max(0),
                waiting: s.waiting.load(Ordering::Relaxed).max(0),
            })
            .collect();
        let mut out = String::new();
        render_requests(&mut out, &services);
        render_instances(&mut out, instances);
        render_counters(&mut out, &services);
        self.render_host(&mut out);
        out
    }

    fn render_host(&self, out: &mut String) {
        header(
            out,
            "mesh_outgoing_calls_total",
            "counter",
            "Outgoing guest requests: in-process by name, to the network, or denied by policy.",
        );
        let calls = self.calls.counts();
        for (kind, n) in [
            ("in_process", calls.in_process),
            ("network", calls.outbound),
            ("denied", calls.denied),
        ] {
            let _ = writeln!(out, "mesh_outgoing_calls_total{{kind=\"{kind}\"}} {n}");
        }
        header(
            out,
            "mesh_ingress_connections",
            "gauge",
            "Open connections to the ingress.",
        );
        let open = self.connections.load(Ordering::Relaxed).max(0);
        let _ = writeln!(out, "mesh_ingress_connections {open}");
    }
}

/// Requests by status, their latency, and requests waiting.
fn render_requests(out: &mut String, services: &[Snapshot]) {
    header(
        out,
        "mesh_requests_total",
        "counter",
        "Requests answered, by service and HTTP status.",
    );
    for s in services {
        by_status(out, "mesh_requests_total", &s.key, &s.counts.requests);
    }
    header(
        out,
        "mesh_request_duration_seconds",
        "histogram",
        "Time to answer a request, by service.",
    );
    for s in services.iter().filter(|s| s.counts.latency.count > 0) {
        let h = &s.counts.latency;
        let name = "mesh_request_duration_seconds";
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            let le = format!(",le=\"{bound}\"");
            sample(out, &format!("{name}_bucket"), &s.key, &le, count);
        }
        sample(
            out,
            &format!("{name}_bucket"),
            &s.key,
            ",le=\"+Inf\"",
            h.count,
        );
        sample(out, &format!("{name}_sum"), &s.key, "", h.sum);
        sample(out, &format!("{name}_count"), &s.key, "", h.count);
    }
    header(
        out,
        "mesh_requests_waiting",
        "gauge",
        "Requests waiting for a free instance, by service.",
    );
    for s in services {
        sample(out, "mesh_requests_waiting", &s.key, "", s.waiting);
    }
}

/// Instances by state and the restarts of the current ones.
fn render_instances(out: &mut String, instances: &[(ServiceKey, Vec<InstanceStatus>)]) {
    header(
        out,
        "mesh_instances",
        "gauge",
        "Instances, by service and state.",
    );
    for (key, list) in instances {
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        for i in list {
            *by_state.entry(i.state.to_string()).or_default() += 1;
        }
        for (state, n) in by_state {
            let more = format!(",state=\"{state}\"");
            sample(out, "mesh_instances", key, &more, n);
        }
    }
    header(
        out,
        "mesh_instance_restarts",
        "gauge",
        "Restarts of the current instances, by service.",
    );
    for (key, list) in instances {
        let restarts: u64 = list.iter().map(|i| u64::from(i.restarts)).sum();
        sample(out, "mesh_instance_restarts", key, "", restarts);
    }
}

/// Restarts, cron runs and memory, from each service's counters.
fn render_counters(out: &mut String, services: &[Snapshot]) {
    header(
        out,
        "mesh_restarts_total",
        "counter",
        "Restarts of a service's instances since the daemon started.",
    );
    for s in services {
        sample(out, "mesh_restarts_total", &s.key, "", s.counts.restarts);
    }
    header(
        out,
        "mesh_cron_runs_total",
        "counter",
        "Cron runs, by job and status.",
    );
    for s in services {
        by_status(out, "mesh_cron_runs_total", &s.key, &s.counts.cron_runs);
    }
    header(
        out,
        "mesh_memory_bytes",
        "gauge",
        "Linear memory in use by a service's instances.",
    );
    for s in services {
        sample(out, "mesh_memory_bytes", &s.key, "", s.memory);
    }
}

/// One line: `name{env=..,stack=..,service=..<more>} value`.
fn sample(
    out: &mut String,
    name: &str,
    key: &ServiceKey,
    more: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(
        out,
        "{name}{{env=\"{}\",stack=\"{}\",service=\"{}\"{more}}} {value}",
        escape(&key.env),
        escape(&key.stack),
        escape(&key.name)
    );
}

/// One line per status: `name{..,status="S"} n`.
fn by_status<S: std::fmt::Display>(
    out: &mut String,
    name: &str,
    key: &ServiceKey,
    counts: &BTreeMap<S, u64>,
) {
    for (status, n) in counts {
        sample(out, name, key, &format!(",status=\"{status}\""), n);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        let key = ServiceKey {
            env: "default".into(),
            stack: "app".into(),
            name: "web".into(),
        };
        let web = m.service(&key);
        web.request(200, Duration::from_millis(3));
        web.request(500, Duration::from_millis(30));
        web.cron_run(RunStatus::Succeeded);
        web.memory_changed(65536);
        let text = m.render(&[]);
        let l = "env=\"default\",stack=\"app\",service=\"web\"";
        assert!(
            text.contains(&format!("mesh_requests_total{{{l},status=\"200\"}} 1")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "mesh_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 1"
        )));
        assert!(text.contains(&format!(
            "mesh_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"
        )));
        assert!(text.contains(&format!(
            "mesh_cron_runs_total{{{l},status=\"succeeded\"}} 1"
        )));
        assert!(text.contains(&format!("mesh_memory_bytes{{{l}}} 65536")));

        // A deleted service's series goes; a late count from one of its
        // last requests does not bring it back.
        m.forget(&key);
        web.request(200, Duration::from_millis(1));
        let text = m.render(&[]);
        assert!(!text.contains("service=\"web\""), "{text}");
    }
}
