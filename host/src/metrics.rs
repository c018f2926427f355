//! Metrics in the Prometheus text format, served at `GET /metrics` on the
//! control API (operator token): requests by service and status, request
//! latency histograms, instances by state, restarts, cron runs by status,
//! memory in use, and outgoing calls (in-process, network, denied).

use std::collections::{BTreeMap, HashMap};
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

/// Counters the parts of the daemon add to as things happen.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(ServiceKey, u16), u64>>,
    latency: Mutex<BTreeMap<ServiceKey, Histogram>>,
    cron_runs: Mutex<BTreeMap<(ServiceKey, String), u64>>,
    restarts: Mutex<BTreeMap<ServiceKey, u64>>,
    memory: Mutex<HashMap<ServiceKey, Arc<AtomicI64>>>,
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

impl Metrics {
    /// Counts one request a service answered (ingress or intra-DNS).
    pub fn request(&self, key: &ServiceKey, status: u16, took: Duration) {
        *lock(&self.requests)
            .entry((key.clone(), status))
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        let mut latency = lock(&self.latency);
        let h = latency.entry(key.clone()).or_default();
        for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Counts one cron run.
    pub fn cron_run(&self, key: &ServiceKey, status: RunStatus) {
        *lock(&self.cron_runs)
            .entry((key.clone(), status.to_string()))
            .or_default() += 1;
    }

    /// Counts one restart of one of a service's instances.
    pub fn restart(&self, key: &ServiceKey) {
        *lock(&self.restarts).entry(key.clone()).or_default() += 1;
    }

    /// Drops a deleted service's series.
    pub fn forget(&self, key: &ServiceKey) {
        lock(&self.requests).retain(|(k, _), _| k != key);
        lock(&self.latency).remove(key);
        lock(&self.cron_runs).retain(|(k, _), _| k != key);
        lock(&self.restarts).remove(key);
        lock(&self.memory).remove(key);
    }

    /// The gauge of linear memory a service's instances use now.
    pub fn memory(&self, key: &ServiceKey) -> Arc<AtomicI64> {
        lock(&self.memory).entry(key.clone()).or_default().clone()
    }

    /// The text exposition, with instance status and call counts read now.
    pub fn render(
        &self,
        instances: &[(ServiceKey, Vec<InstanceStatus>)],
        calls: CallCounts,
    ) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "mesh_requests_total",
            "counter",
            "Requests answered, by service and HTTP status.",
        );
        for ((key, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "mesh_requests_total{{{},status=\"{status}\"}} {n}",
                labels(key)
            );
        }
        header(
            &mut out,
            "mesh_request_duration_seconds",
            "histogram",
            "Time to answer a request, by service.",
        );
        for (key, h) in lock(&self.latency).iter() {
            let l = labels(key);
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "mesh_request_duration_seconds_bucket{{{l},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "mesh_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "mesh_request_duration_seconds_sum{{{l}}} {}", h.sum);
            let _ = writeln!(
                out,
                "mesh_request_duration_seconds_count{{{l}}} {}",
                h.count
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
                let _ = writeln!(
                    out,
                    "mesh_instances{{{},state=\"{state}\"}} {n}",
                    labels(key)
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
            let _ = writeln!(out, "mesh_instance_restarts{{{}}} {restarts}", labels(key));
        }
        header(
            &mut out,
            "mesh_restarts_total",
            "counter",
            "Restarts of a service's instances since the daemon started.",
        );
        for (key, n) in lock(&self.restarts).iter() {
            let _ = writeln!(out, "mesh_restarts_total{{{}}} {n}", labels(key));
        }
        header(
            &mut out,
            "mesh_cron_runs_total",
            "counter",
            "Cron runs, by job and status.",
        );
        for ((key, status), n) in lock(&self.cron_runs).iter() {
            let _ = writeln!(
                out,
                "mesh_cron_runs_total{{{},status=\"{status}\"}} {n}",
                labels(key)
            );
        }
        header(
            &mut out,
            "mesh_memory_bytes",
            "gauge",
            "Linear memory in use by a service's instances.",
        );
        let memory: BTreeMap<ServiceKey, i64> = lock(&self.memory)
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect();
        for (key, bytes) in memory {
            let _ = writeln!(
                out,
                "mesh_memory_bytes{{{}}} {}",
                labels(&key),
                bytes.max(0)
            );
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

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(key: &ServiceKey) -> String {
    format!(
        "env=\"{}\",stack=\"{}\",service=\"{}\"",
        escape(&key.env),
        escape(&key.stack),
        escape(&key.name)
    )
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
        m.request(&key, 200, Duration::from_millis(3));
        m.request(&key, 500, Duration::from_millis(30));
        m.cron_run(&key, RunStatus::Succeeded);
        m.memory(&key).fetch_add(65536, Ordering::Relaxed);
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
    }
}
