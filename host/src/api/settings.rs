//! A service's settings from end to end: how a user writes them (the
//! flags `mesh svc create` and `mesh svc update` share, and the fields of
//! the API bodies they send), how the daemon checks them and writes them
//! into the stored [`Service`], and how `mesh service ls` shows them.
//!
//! A new setting is a field of [`ServiceSettings`] (its flag, its JSON
//! field and its help at once), a line of [`ServiceSettings::apply`], a
//! field of [`SettingsView`] with its line in [`SettingsView::of`], and a
//! field of [`Service`]: this file and `model/service.rs`, plus wherever
//! the dashboard shows it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult, ApiState};
use crate::cron::{parse_duration, Schedule};
use crate::model::{
    parse_memory, validate_component_name, validate_env_var, HealthCheck, Service, MAX_INSTANCES,
    MAX_STOP_TIMEOUT, MIN_MEMORY_BYTES,
};

/// Most scratch space one instance may ask for.
pub const MAX_SCRATCH_BYTES: u64 = 1 << 30;

/// Every setting a create or an update may give, as the user wrote it:
/// the flags of `svc create` and `svc update` and the fields of their
/// bodies. What is absent stays as it is (or at its default, for a new
/// service).
#[derive(Clone, Debug, Default, Serialize, Deserialize, clap::Args)]
pub struct ServiceSettings {
    /// Instances to keep running.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub instances: Option<i64>,

    /// Memory limit of each instance (all its memories together), e.g.
    /// 64Mi; default 128Mi.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Environment variable for the guest, KEY=VALUE (repeatable); an
    /// update adds or replaces.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    #[serde(default)]
    pub env: Vec<String>,

    /// Cron schedule (`5 4 * * *`, `@hourly`, `@every 2m`): makes the
    /// service a cron job, whose every firing runs a fresh instance;
    /// `none` makes a cron job a worker again.
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,

    /// Time zone the schedule is read in (IANA name); default UTC.
    #[arg(long, value_name = "AREA/CITY")]
    pub timezone: Option<String>,

    /// Stop a cron run that takes longer than this, e.g. 30s or 5m;
    /// `none` removes the limit.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// CPU time one request may use before it is stopped, e.g. 2s;
    /// `default` for 10s.
    #[arg(long, value_name = "DURATION")]
    pub cpu_limit: Option<String>,

    /// Web services: serve every request from a fresh store instead of
    /// reusing instances (strongest isolation, a little slower); `false`
    /// to reuse them again.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub fresh_per_request: Option<bool>,

    /// Web services: keep reusing instances even when a reused instance
    /// fails in a way that suggests the code cannot be reused; `false` to
    /// switch to fresh per request when that happens.
    #[arg(
        long = "reuse-instances",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub always_reuse: Option<bool>,

    /// A private writable directory at /tmp for each instance, at most
    /// this large (e.g. 64Mi), wiped when the instance ends; `none`
    /// removes it.
    #[arg(long, value_name = "SIZE")]
    pub scratch: Option<String>,

    /// The stack image the command runs in, when the stack has several
    /// and the command does not start with one's name; `none` to clear.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,

    /// Containers: how long an instance has after SIGTERM before SIGKILL
    /// (e.g. 30s); `default` for 10s.
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,

    /// A line saying what the service is for, shown by `mesh service ls
    /// --json` and the dashboard; "" removes it.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// Web services: a path each instance answers with 2xx or 3xx when
    /// healthy (e.g. /healthz). A new instance gets requests only once it
    /// has, and one that fails --health-failures checks in a row is
    /// replaced; `none` removes the check.
    #[arg(long, value_name = "PATH")]
    pub health: Option<String>,

    /// Between two health checks of a live instance, e.g. 10s; default 5s.
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,

    /// Longest one health check may take, e.g. 1s; default 2s.
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,

    /// Failed health checks in a row that make an instance unhealthy;
    /// default 3.
    #[arg(long, value_name = "N")]
    pub health_failures: Option<u32>,

    /// Longest a new instance may take to come up (and pass its health
    /// check) during a rollout before the rollout stops and the previous
    /// version is restored, e.g. 2m; `default` for 60s.
    #[arg(long, value_name = "DURATION")]
    pub rollout_timeout: Option<String>,
}

impl ServiceSettings {
    /// Checks every setting given and writes it into `service`. On error
    /// the caller drops the service, so a half-applied one is never kept.
    pub(super) fn apply(self, state: &ApiState, service: &mut Service) -> ApiResult<()> {
        reuse(service, self.fresh_per_request, self.always_reuse)?;
        if let Some(instances) = self.instances {
            if !(0..=i64::from(MAX_INSTANCES)).contains(&instances) {
                return Err(ApiError::bad_request(format!(
                    "invalid instance count {instances}: use a number from 0 to {MAX_INSTANCES}"
                )));
            }
            service.instances = instances as u32;
        }
        if let Some(memory) = self.memory {
            service.memory_bytes = memory_limit(state, &memory)?;
        }
        for setting in &self.env {
            let (k, v) = setting.split_once('=').ok_or_else(|| {
                ApiError::bad_request(format!("invalid --env `{setting}`: use KEY=VALUE"))
            })?;
            validate_env_var(k).map_err(ApiError::bad_request)?;
            service.env_vars.insert(k.to_string(), v.to_string());
        }
        crate::model::check_env_vars(&service.env_vars).map_err(ApiError::bad_request)?;
        if let Some(text) = &self.cpu_limit {
            service.cpu_limit_ms = cpu_limit(text)?;
        }
        if let Some(text) = &self.scratch {
            service.scratch_bytes = scratch(text)?;
        }
        if let Some(name) = &self.image {
            service.image = image(name)?;
        }
        if let Some(text) = &self.stop_timeout {
            service.stop_timeout_ms = stop_timeout(text)?;
        }
        if let Some(text) = self.description {
            service.description = description(text)?;
        }
        if let Some(text) = &self.rollout_timeout {
            service.rollout_timeout_ms = rollout_timeout(text)?;
        }
        health(
            service,
            self.health,
            self.health_interval,
            self.health_timeout,
            self.health_failures,
        )?;
        schedule(service, self.schedule, self.timezone, self.timeout)?;
        if service.schedule.is_some() && service.health.is_some() {
            return Err(ApiError::bad_request(format!(
                "{} is a cron job, whose runs take no requests: a health check applies to web services",
                service.name
            )));
        }
        Ok(())
    }
}

/// A service's settings as `mesh service ls --json` shows them (flattened
/// into its view).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SettingsView {
    /// Instances asked for.
    pub instances_desired: u32,
    /// Memory limit of each instance.
    pub memory_limit_bytes: u64,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Cron schedule.
    pub schedule: Option<String>,
    /// Time zone of the schedule (UTC when null).
    pub timezone: Option<String>,
    /// Longest a cron run may take, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether each request gets a fresh store because the service says so.
    pub fresh_per_request: bool,
    /// Whether instances are reused even when the code seems not to allow it.
    #[serde(default)]
    pub always_reuse: bool,
    /// Scratch space of each instance, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_bytes: Option<u64>,
    /// The stack image its command runs in, when chosen with `--image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How long an instance has after SIGTERM, when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// What the service is for, when said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its health check, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::model::HealthCheck>,
    /// Its rollout timeout, when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_timeout_ms: Option<u64>,
}

impl SettingsView {
    /// The settings of a stored service.
    pub(super) fn of(service: &Service) -> SettingsView {
        SettingsView {
            instances_desired: service.instances,
            memory_limit_bytes: service.memory_bytes,
            env: service.env_vars.clone(),
            schedule: service.schedule.clone(),
            timezone: service.timezone.clone(),
            timeout_ms: service.timeout_ms,
            fresh_per_request: service.fresh_per_request,
            always_reuse: service.always_reuse,
            scratch_bytes: service.scratch_bytes,
            image: service.image.clone(),
            stop_timeout_ms: service.stop_timeout_ms,
            description: service.description.clone(),
            health: service.health.clone(),
            rollout_timeout_ms: service.rollout_timeout_ms,
        }
    }
}

/// The memory limit and environment variables of a one-off run, checked
/// as a service's are.
pub(super) fn run_settings(
    state: &ApiState,
    memory: Option<String>,
    env: Vec<String>,
) -> ApiResult<(u64, BTreeMap<String, String>)> {
    let mut scratch = Service::new("", "", "");
    let settings = ServiceSettings {
        memory,
        env,
        ..ServiceSettings::default()
    };
    settings.apply(state, &mut scratch)?;
    Ok((scratch.memory_bytes, scratch.env_vars))
}

/// A service's argv: the first word names a component.
pub(super) fn command(words: Vec<String>) -> ApiResult<Vec<String>> {
    if words.first().is_none_or(|w| w.is_empty()) {
        return Err(ApiError::bad_request(
            "a service needs a command: `-- COMPONENT ARGS...` (e.g. `-- app queue` or `-- app.wasm queue`)",
        ));
    }
    Ok(words)
}

/// `--memory`: a size from 1Mi to the daemon's largest.
fn memory_limit(state: &ApiState, text: &str) -> ApiResult<u64> {
    let max = state.config.max_memory_bytes;
    match parse_memory(text) {
        Ok(bytes) if (MIN_MEMORY_BYTES..=max).contains(&bytes) => Ok(bytes),
        _ => Err(ApiError::bad_request(format!(
            "invalid memory limit `{text}`: use a size from 1Mi to {}, e.g. 64Mi or 1Gi",
            crate::model::format_memory(max)
        ))),
    }
}

/// `--fresh-per-request` and `--reuse-instances`: each turns the other
/// off, and both at once make no sense.
fn reuse(service: &mut Service, fresh: Option<bool>, always_reuse: Option<bool>) -> ApiResult<()> {
    if fresh == Some(true) && always_reuse == Some(true) {
        return Err(ApiError::bad_request(
            "--fresh-per-request and --reuse-instances contradict each other: choose one",
        ));
    }
    if let Some(fresh) = fresh {
        service.fresh_per_request = fresh;
        service.always_reuse &= !fresh;
    }
    if let Some(always) = always_reuse {
        service.always_reuse = always;
        service.fresh_per_request &= !always;
    }
    Ok(())
}

/// `--scratch`: a size up to [`MAX_SCRATCH_BYTES`], or `none`.
pub(super) fn scratch(text: &str) -> ApiResult<Option<u64>> {
    if text.trim() == "none" {
        return Ok(None);
    }
    if !crate::runtime::scratch::Scratch::supported() {
        return Err(ApiError::bad_request(
            "--scratch needs the daemon to run as root: each instance's scratch space is a tmpfs of its own",
        ));
    }
    match parse_memory(text) {
        Ok(bytes) if (MIN_MEMORY_BYTES..=MAX_SCRATCH_BYTES).contains(&bytes) => Ok(Some(bytes)),
        _ => Err(ApiError::bad_request(format!(
            "invalid --scratch `{text}`: use a size from 1Mi to {}, or none",
            crate::model::format_memory(MAX_SCRATCH_BYTES)
        ))),
    }
}

/// `--image`: a component name, or `none`.
fn image(name: &str) -> ApiResult<Option<String>> {
    match name.trim() {
        "" | "none" => Ok(None),
        name => {
            validate_component_name(name).map_err(ApiError::bad_request)?;
            Ok(Some(name.to_string()))
        }
    }
}

/// Longest `--description`, in characters.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// `--description`: one line of at most [`MAX_DESCRIPTION_CHARS`], or ""
/// for none.
fn description(text: String) -> ApiResult<Option<String>> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid --description: use one line of text, without control characters",
        ));
    }
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "invalid --description: at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// `--stop-timeout`: a duration up to [`MAX_STOP_TIMEOUT`], or `default`.
fn stop_timeout(text: &str) -> ApiResult<Option<u64>> {
    if text.trim() == "default" {
        return Ok(None);
    }
    match parse_duration(text) {
        Ok(d) if d <= MAX_STOP_TIMEOUT => Ok(Some(d.as_millis() as u64)),
        Ok(_) => Err(ApiError::bad_request(format!(
            "invalid --stop-timeout `{text}`: use from 0s to {}s",
            MAX_STOP_TIMEOUT.as_secs()
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "invalid --stop-timeout `{text}`: {e}"
        ))),
    }
}

/// `--cpu-limit`: a duration up to the maximum, or `default`.
fn cpu_limit(text: &str) -> ApiResult<Option<u64>> {
    if text.trim() == "default" {
        return Ok(None);
    }
    let max = crate::model::MAX_CPU_LIMIT;
    match parse_duration(text) {
        Ok(d) if !d.is_zero() && d <= max => Ok(Some(d.as_millis() as u64)),
        Ok(_) => Err(ApiError::bad_request(format!(
            "invalid --cpu-limit `{text}`: use from 1ms to {}s",
            max.as_secs()
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "invalid --cpu-limit `{text}`: {e}"
        ))),
    }
}

/// `--schedule`, `--timezone` and `--timeout`, checked together: `--schedule
/// none` turns a cron job back into a worker, and the other two need a
/// schedule.
fn schedule(
    service: &mut Service,
    schedule: Option<String>,
    timezone: Option<String>,
    timeout: Option<String>,
) -> ApiResult<()> {
    match schedule.as_deref().map(str::trim) {
        Some("none") => {
            service.schedule = None;
            service.timezone = None;
            service.timeout_ms = None;
        }
        Some(_) if !service.endpoints.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "{} is a web service: unpublish its endpoints before giving it a schedule",
                service.name
            )));
        }
        Some(spec) => service.schedule = Some(spec.to_string()),
        None => {}
    }
    if let Some(zone) = timezone {
        service.timezone = match zone.trim() {
            "" | "UTC" | "utc" | "Etc/UTC" => None,
            zone => Some(zone.to_string()),
        };
    }
    if let Some(timeout) = timeout {
        service.timeout_ms = run_timeout(&timeout)?;
    }
    match &service.schedule {
        Some(spec) => {
            Schedule::parse(spec, service.timezone.as_deref())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        None if service.timezone.is_some() || service.timeout_ms.is_some() => {
            return Err(ApiError::bad_request(format!(
                "--timezone and --timeout apply to cron jobs, and {} has no schedule: give one with --schedule",
                service.name
            )));
        }
        None => {}
    }
    Ok(())
}

/// `--timeout`: a positive duration, or `none`.
fn run_timeout(text: &str) -> ApiResult<Option<u64>> {
    let text = text.trim();
    if text == "none" {
        return Ok(None);
    }
    let d = parse_duration(text)
        .map_err(|e| ApiError::bad_request(format!("invalid --timeout `{text}`: {e}")))?;
    if d.is_zero() {
        return Err(ApiError::bad_request(format!(
            "invalid --timeout `{text}`: use a positive duration, e.g. 30s or 5m"
        )));
    }
    Ok(Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

/// Longest `--health` path, in bytes.
const MAX_HEALTH_PATH: usize = 256;
/// Shortest and longest `--health-interval`.
const HEALTH_INTERVALS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// Shortest and longest `--health-timeout`.
const HEALTH_TIMEOUTS: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(60));
/// Most `--health-failures`.
const MAX_HEALTH_FAILURES: u32 = 100;
/// Shortest and longest `--rollout-timeout`.
const ROLLOUT_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// `--health` and its timings, checked together: the timings need a path.
fn health(
    service: &mut Service,
    path: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    failures: Option<u32>,
) -> ApiResult<()> {
    match path.as_deref().map(str::trim) {
        Some("none") => service.health = None,
        Some(path) => {
            let valid = path.starts_with('/')
                && path.len() <= MAX_HEALTH_PATH
                && path.parse::<http::uri::PathAndQuery>().is_ok()
                && !path.chars().any(|c| c.is_whitespace() || c.is_control());
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "invalid --health `{path}`: use a path starting with / (at most {MAX_HEALTH_PATH} bytes), e.g. /healthz, or none"
                )));
            }
            let check = service.health.get_or_insert_with(|| HealthCheck::of(path));
            check.path = path.to_string();
        }
        None => {}
    }
    let given = interval.is_some() || timeout.is_some() || failures.is_some();
    let Some(check) = service.health.as_mut() else {
        if given {
            return Err(ApiError::bad_request(format!(
                "--health-interval, --health-timeout and --health-failures need a health check, and {} has none: give one with --health PATH",
                service.name
            )));
        }
        return Ok(());
    };
    if let Some(text) = interval {
        check.interval_ms = Some(bounded_ms("--health-interval", &text, HEALTH_INTERVALS)?);
    }
    if let Some(text) = timeout {
        check.timeout_ms = Some(bounded_ms("--health-timeout", &text, HEALTH_TIMEOUTS)?);
    }
    if let Some(n) = failures {
        if !(1..=MAX_HEALTH_FAILURES).contains(&n) {
            return Err(ApiError::bad_request(format!(
                "invalid --health-failures {n}: use a number from 1 to {MAX_HEALTH_FAILURES}"
            )));
        }
        check.failures = Some(n);
    }
    if check.timeout() > check.interval() {
        return Err(ApiError::bad_request(format!(
            "--health-timeout ({}ms) is longer than --health-interval ({}ms): a check must end before the next one",
            check.timeout().as_millis(),
            check.interval().as_millis()
        )));
    }
    Ok(())
}

/// `--rollout-timeout`: a duration in range, or `default`.
fn rollout_timeout(text: &str) -> ApiResult<Option<u64>> {
    if text.trim() == "default" {
        return Ok(None);
    }
    bounded_ms("--rollout-timeout", text, ROLLOUT_TIMEOUTS).map(Some)
}

/// A duration flag's value in milliseconds, within `(min, max)`.
fn bounded_ms(flag: &str, text: &str, (min, max): (Duration, Duration)) -> ApiResult<u64> {
    match parse_duration(text) {
        Ok(d) if d >= min && d <= max => Ok(d.as_millis() as u64),
        Ok(_) => Err(ApiError::bad_request(format!(
            "invalid {flag} `{text}`: use from {}ms to {}s",
            min.as_millis(),
            max.as_secs()
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "invalid {flag} `{text}`: {e}"
        ))),
    }
}
