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

/// Counters the parts of the daemon add to as things happen, one set per
/// service, so a request touches one lock and a deleted service is one
/// removal.
#[derive(Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<ServiceKey, Series>>,
}

/// One service's counters.
#[derive(Default)]
struct Series {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    cron_runs: BTreeMap<RunStatus, u64>,
    restarts: u64,
    /// Handed to its instances' memory limiters, which keep it current.
    memory: Arc<AtomicI64>,
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
    /// Runs `f` on a service's series, made on first use (the key is
    /// cloned only then).
    fn with<R>(&self, key: &ServiceKey, f: impl FnOnce(&mut Series) -> R) -> R {
        let mut services = lock(&self.services);
        if let Some(series) = services.get_mut(key) {
            return f(series);
        }
        f(services.entry(key.clone()).or_default())
    }

    /// Counts one request a service answered (ingress or intra-DNS).
    pub fn request(&self, key: &ServiceKey, status: u16, took: Duration) {
        let seconds = took.as_secs_f64();
        self.with(key, |s| {
            *s.requests.entry(status).or_default() += 1;
            let h = &mut s.latency;
            for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        });
    }

    /// Counts one cron run.
    pub fn cron_run(&self, key: &ServiceKey, status: RunStatus) {
        self.with(key, |s| *s.cron_runs.entry(status).or_default() += 1);
    }

    /// Counts one restart of one of a service's instances.
    pub fn restart(&self, key: &ServiceKey) {
        self.with(key, |s| s.restarts += 1);
    }

    /// Drops a deleted service's series.
    pub fn forget(&self, key: &ServiceKey) {
        lock(&self.services).remove(key);
    }

    /// The gauge of linear memory a service's instances use now.
    pub fn memory(&self, key: &ServiceKey) -> Arc<AtomicI64> {
        self.with(key, |s| s.memory.clone())
    }

    /// The text exposition, with instance status and call counts read now.
    pub fn render(
        &self,
        instances: &[(ServiceKey, Vec<InstanceStatus>)],
        calls: CallCounts,
    ) -> String {
        let mut out = String::new();
        let services = lock(&self.services);
        header(
            &mut out,
            "mesh_requests_total",
            "counter",
            "Requests answered, by service and HTTP status.",
        );
        for (key, s) in services.iter() {
            for (status, n) in &s.requests {
                sample(
                    &mut out,
                    "mesh_requests_total",
                    key,
                    &format!(",status=\"{status}\""),
                    n,
                );
            }
        }
        header(
            &mut out,
            "mesh_request_duration_seconds",
            "histogram",
            "Time to answer a request, by service.",
        );
        for (key, s) in services.iter().filter(|(_, s)| s.latency.count > 0) {
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
        for (key, s) in services.iter() {
            sample(&mut out, "mesh_restarts_total", key, "", s.restarts);
        }
        header(
            &mut out,
            "mesh_cron_runs_total",
            "counter",
            "Cron runs, by job and status.",
        );
        for (key, s) in services.iter() {
            for (status, n) in &s.cron_runs {
                sample(
                    &mut out,
                    "mesh_cron_runs_total",
                    key,
                    &format!(",status=\"{status}\""),
                    n,
                );
            }
        }
        header(
            &mut out,
            "mesh_memory_bytes",
            "gauge",
            "Linear memory in use by a service's instances.",
        );
        for (key, s) in services.iter() {
            let bytes = s.memory.load(Ordering::Relaxed).max(0);
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
