//! Services: a command and its settings, named by [`ServiceKey`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::endpoint::Endpoint;

/// How long an instance has after SIGTERM before SIGKILL unless its
/// service says otherwise.
pub const DEFAULT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest `--stop-timeout` a service may have.
pub const MAX_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// How long a rollout waits for a new instance to come up (healthy)
/// unless its service says otherwise.
pub const DEFAULT_ROLLOUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A service's health check: a `GET` of `path` on each instance, which
/// answers 2xx or 3xx when healthy. A new instance takes requests only
/// once it has (readiness); a live one that fails `failures` checks in a
/// row is replaced (liveness).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path asked, e.g. `/healthz`.
    pub path: String,
    /// Between two checks of a live instance, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Longest one check may take, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Failed checks in a row that make an instance unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
}

impl HealthCheck {
    /// Between two checks unless the service says otherwise.
    pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
    /// Longest one check may take unless the service says otherwise.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    /// Failures in a row that make an instance unhealthy, by default.
    pub const DEFAULT_FAILURES: u32 = 3;

    /// A check of `path` with the default timings.
    pub fn of(path: &str) -> HealthCheck {
        HealthCheck {
            path: path.to_string(),
            interval_ms: None,
            timeout_ms: None,
            failures: None,
        }
    }

    /// Between two checks of a live instance.
    pub fn interval(&self) -> std::time::Duration {
        self.interval_ms
            .map_or(Self::DEFAULT_INTERVAL, std::time::Duration::from_millis)
    }

    /// Longest one check may take: by default 2 s, or the interval when
    /// that is shorter.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout_ms.map_or(
            Self::DEFAULT_TIMEOUT.min(self.interval()),
            std::time::Duration::from_millis,
        )
    }

    /// Failed checks in a row that make an instance unhealthy.
    pub fn threshold(&self) -> u32 {
        self.failures.unwrap_or(Self::DEFAULT_FAILURES).max(1)
    }
}

/// A command to launch from the stack's code, plus its settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Service {
    /// Environment the service belongs to.
    pub env: String,
    /// Stack whose code the service runs.
    pub stack: String,
    /// DNS-label name, unique within the stack.
    pub name: String,
    /// argv; the first word names a component of the stack's bundle.
    pub command: Vec<String>,
    /// How many instances to keep running.
    pub instances: u32,
    /// Memory limit of each instance: all its linear memories together.
    pub memory_bytes: u64,
    /// Environment variables the guest sees.
    pub env_vars: BTreeMap<String, String>,
    /// Cron schedule; a service with one is a cron job.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in; UTC when `None`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Longest a cron run may take before it is stopped (`timed_out`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Public URLs the service is bound to; a service with any is a web service.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Serve every request from a fresh store instead of reusing instances.
    #[serde(default)]
    pub fresh_per_request: bool,
    /// Keep reusing instances even after one fails a request in a way
    /// that suggests the code cannot be reused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_reuse: bool,
    /// Bytes of private scratch space each instance gets at `/tmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_bytes: Option<u64>,
    /// CPU time one request may use, in milliseconds; the default when
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_ms: Option<u64>,
    /// The stack image its command runs in (`--image`), when the command
    /// does not start with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How long an instance has after SIGTERM before SIGKILL, in
    /// milliseconds (`--stop-timeout`); 10 s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// When someone last asked for its instances to restart (`mesh svc
    /// restart`): a new time replaces them (a worker's one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<DateTime<Utc>>,
    /// What the service is for, in its owner's words (`--description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The path its instances answer when healthy (`--health`), and how
    /// often and how strictly it is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Longest a new instance of a rollout may take to come up healthy
    /// before the rollout stops and the previous version is restored, in
    /// milliseconds (`--rollout-timeout`); 60 s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_timeout_ms: Option<u64>,
    /// When the service was created.
    pub created_at: DateTime<Utc>,
}

impl Service {
    /// A new service with the default settings and no command yet.
    pub fn new(env: &str, stack: &str, name: &str) -> Service {
        Service {
            env: env.to_string(),
            stack: stack.to_string(),
            name: name.to_string(),
            command: Vec::new(),
            instances: 1,
            memory_bytes: super::DEFAULT_MEMORY_BYTES,
            env_vars: BTreeMap::new(),
            schedule: None,
            timezone: None,
            timeout_ms: None,
            endpoints: Vec::new(),
            fresh_per_request: false,
            always_reuse: false,
            scratch_bytes: None,
            cpu_limit_ms: None,
            image: None,
            stop_timeout_ms: None,
            restarted_at: None,
            description: None,
            health: None,
            rollout_timeout_ms: None,
            created_at: Utc::now(),
        }
    }

    /// What kind of service the settings make it.
    pub fn service_type(&self) -> ServiceType {
        if self.schedule.is_some() {
            ServiceType::Cron
        } else if !self.endpoints.is_empty() {
            ServiceType::Web
        } else {
            ServiceType::Worker
        }
    }

    /// CPU time one request may use.
    pub fn cpu_limit(&self) -> std::time::Duration {
        self.cpu_limit_ms
            .map_or(super::DEFAULT_CPU_LIMIT, std::time::Duration::from_millis)
    }

    /// How long an instance has to stop before it is killed.
    pub fn stop_grace(&self) -> std::time::Duration {
        self.stop_timeout_ms
            .map_or(DEFAULT_STOP_TIMEOUT, std::time::Duration::from_millis)
    }

    /// How long a rollout waits for each new instance to come up healthy.
    pub fn rollout_timeout(&self) -> std::time::Duration {
        self.rollout_timeout_ms
            .map_or(DEFAULT_ROLLOUT_TIMEOUT, std::time::Duration::from_millis)
    }

    /// The component the command names (its first word).
    pub fn component(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }

    /// The service's intra-DNS name, `<stack>-<service>`.
    pub fn dns_name(&self) -> String {
        dns_name(&self.stack, &self.name)
    }
}

/// Names one service across environments: `env/stack/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Environment.
    pub env: String,
    /// Stack.
    pub stack: String,
    /// Service.
    pub name: String,
}

impl ServiceKey {
    /// The key of a service record.
    pub fn of(service: &Service) -> ServiceKey {
        ServiceKey {
            env: service.env.clone(),
            stack: service.stack.clone(),
            name: service.name.clone(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.env, self.stack, self.name)
    }
}

/// The intra-DNS name of a service: `<stack>-<service>`.
pub fn dns_name(stack: &str, service: &str) -> String {
    format!("{stack}-{service}")
}

/// Worker, web service or cron job: follows from a service's settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// No endpoint, no schedule.
    Worker,
    /// Bound to one or more endpoints.
    Web,
    /// Has a schedule.
    Cron,
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::Worker => "worker",
            ServiceType::Web => "web",
            ServiceType::Cron => "cron",
        })
    }
}
