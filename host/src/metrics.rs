//! Metrics in the Prometheus text format, served at `GET /metrics` on the
//! control API (operator token): requests by service and status, request
//! latency histograms, instances by state, restarts, cron runs by status,
//! memory in use, and outgoing calls (in-process, network, denied).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dns::CallCounts;
use crate::model::{InstanceStatus, RunStatus, ServiceKey};

/// Upper bounds of the request latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Every service's counters. The parts of the daemon that serve a service
/// (its pool, its slots, its cron job) hold its [`ServiceMetrics`], so
/// counting a request takes only that service's lock; a deleted service's
/// series leave the exposition at once, and late counts from its last
/// in-flight requests go to the detached series.
#[derive(Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<ServiceKey, Arc<ServiceMetrics>>>,
}

/// One service's counters.
#[derive(Default)]
pub struct ServiceMetrics {
    counts: Mutex<Counts>,
    /// Linear memory its instances use, kept by their memory limiters.
    memory: AtomicI64,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain counters; a panic mid-update leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServiceMetrics {
    /// Counts one request the service answered (ingress or intra-DNS).
    pub fn request(&self, status: u16, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut c = lock(&self.counts);
        *c.requests.entry(status).or_default() += 1;
        let h = &mut c.latency;
        for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Counts one cron run.
    pub fn cron_run(&self, status: RunStatus) {
        *lock(&self.counts).cron_runs.entry(status).or_default() += 1;
    }

    /// Counts one restart of one of the service's instances.
    pub fn restart(&self) {
        lock(&self.counts).restarts += 1;
    }

    /// Adds `bytes` (negative: frees them) to the memory in use.
    pub fn memory_changed(&self, bytes: i64) {
        self.memory.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A service's counters, made on first use.
    pub fn service(&self, key: &ServiceKey) -> Arc<ServiceMetrics> {
        let mut services = lock(&self.services);
        if let Some(series) = services.get(key) {
            return series.clone();
        }
        services.entry(key.clone()).or_default().clone()
    }

    /// Drops a deleted service's series.
    pub fn forget(&self, key: &ServiceKey) {
        lock(&self.services).remove(key);
    }

    /// The text exposition, with instance status and call counts read now.
    pub fn render(
        &self,
        instances: &[(ServiceKey, Vec<InstanceStatus>)],
        calls: CallCounts,
    ) -> String {
        let mut out = String::new();
        // A copy of each service's counts, so no lock is held while writing.
        let services: Vec<(ServiceKey, Counts, i64)> = lock(&self.services)
            .iter()
            .map(|(key, s)| {
                let memory = s.memory.load(Ordering::Relaxed).max(0);
                (key.clone(), lock(&s.counts).clone(), memory)
            })
            .collect();
        header(
            &mut out,
            "mesh_requests_total",
            "counter",
            "Requests answered, by service and HTTP status.",
        );
        for (key, s, _) in &services {
            by_status(&mut out, "mesh_requests_total", key, &s.requests);
        }
        header(
            &mut out,
            "mesh_request_duration_seconds",
            "histogram",
            "Time to answer a request, by service.",
        );
        for (key, s, _) in services.iter().filter(|(_, s, _)| s.latency.count > 0) {
            let h = &s.latency;
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let le = format!(",le=\"{bound}\"");
                sample(
                    &mut out,
                    "mesh_request_duration_seconds_bucket",
                    key,
                    &le,
                    count,
                );
            }
            let inf = ",le=\"+Inf\"";
            sample(
                &mut out,
                "mesh_request_duration_seconds_bucket",
                key,
                inf,
                h.count,
            );
            sample(
                &mut out,
                "mesh_request_duration_seconds_sum",
                key,
                "",
                h.sum,
            );
            sample(
                &mut out,
                "mesh_request_duration_seconds_count",
                key,
                "",
                h.count,
            );
        }
        header(
            &mut out,
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
                sample(
                    &mut out,
                    "mesh_instances",
                    key,
                    &format!(",state=\"{state}\""),
                    n,
                );
            }
        }
        header(
            &mut out,
            "mesh_instance_restarts",
            "gauge",
            "Restarts of the current instances, by service.",
        );
        for (key, list) in instances {
            let restarts: u64 = list.iter().map(|i| u64::from(i.restarts)).sum();
            sample(&mut out, "mesh_instance_restarts", key, "", restarts);
        }
        header(
            &mut out,
            "mesh_restarts_total",
            "counter",
            "Restarts of a service's instances since the daemon started.",
        );
        for (key, s, _) in &services {
            sample(&mut out, "mesh_restarts_total", key, "", s.restarts);
        }
        header(
            &mut out,
            "mesh_cron_runs_total",
            "counter",
            "Cron runs, by job and status.",
        );
        for (key, s, _) in &services {
            by_status(&mut out, "mesh_cron_runs_total", key, &s.cron_runs);
        }
        header(
            &mut out,
            "mesh_memory_bytes",
            "gauge",
            "Linear memory in use by a service's instances.",
        );
        for (key, _, bytes) in &services {
            sample(&mut out, "mesh_memory_bytes", key, "", bytes);
        }
        header(
            &mut out,
            "mesh_outgoing_calls_total",
            "counter",
            "Outgoing guest requests: in-process by name, to the network, or denied by policy.",
        );
        for (kind, n) in [
            ("in_process", calls.in_process),
            ("network", calls.outbound),
            ("denied", calls.denied),
        ] {
            let _ = writeln!(out, "mesh_outgoing_calls_total{{kind=\"{kind}\"}} {n}");
        }
        out
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
        let text = m.render(&[], CallCounts::default());
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
        let text = m.render(&[], CallCounts::default());
        assert!(!text.contains("service=\"web\""), "{text}");
    }
}
