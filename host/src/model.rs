//! The words of DESIGN.md as types: environments, stacks, versions,
//! services, instances, and the small values they are made of (names,
//! memory sizes, digests).
//!
//! These are the records kept in the state store (desired state) and the
//! status the supervisor reports back (actual state).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The environment every daemon creates at first start; the operator's
/// token acts on it.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// The stack a service lands in when none is named.
pub const DEFAULT_STACK: &str = "app";

/// Memory limit of an instance when the service does not set one.
pub const DEFAULT_MEMORY_BYTES: u64 = 128 * MIB;

/// The smallest memory limit that can run anything useful.
pub const MIN_MEMORY_BYTES: u64 = MIB;

/// Most instances one service may ask for.
pub const MAX_INSTANCES: u32 = 1000;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A tenant: owns stacks and a token; nothing in one environment sees
/// another.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Environment {
    /// DNS-label name, e.g. `default`.
    pub name: String,
    /// sha256 (hex) of the environment's API token; the token itself is
    /// never stored.
    pub token_sha256: String,
    /// When the environment was created.
    pub created_at: DateTime<Utc>,
    /// Where its services may connect outside the platform.
    #[serde(default)]
    pub outbound: Outbound,
}

/// An environment's outbound policy: where its guests may connect, by
/// `wasi:http` (matched on host and port) or raw `wasi:sockets` TCP
/// (matched on IP literals and `localhost`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outbound {
    /// Anywhere (the default: services reach the internet).
    #[default]
    Allow,
    /// Nowhere outside the platform (intra-DNS names still work).
    Deny,
    /// Only `host[:port]` patterns; `*.example.com` matches subdomains.
    AllowList(Vec<String>),
}

impl Outbound {
    /// Parses `allow`, `deny` or a comma-separated list of `host[:port]`.
    pub fn parse(text: &str) -> Result<Outbound, String> {
        match text.trim() {
            "allow" => return Ok(Outbound::Allow),
            "deny" => return Ok(Outbound::Deny),
            _ => {}
        }
        let mut patterns = Vec::new();
        for pattern in text.split(',').map(str::trim) {
            let (host, port) = split_pattern(pattern);
            let host_ok = !host.is_empty()
                && host
                    .trim_start_matches("*.")
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !host_ok || port.is_some_and(|p| p.parse::<u16>().is_err()) {
                return Err(format!(
                    "invalid outbound policy `{text}`: use allow, deny, or host[:port] patterns separated by commas (e.g. api.stripe.com:443,*.example.com,127.0.0.1:6379)"
                ));
            }
            patterns.push(pattern.to_ascii_lowercase());
        }
        Ok(Outbound::AllowList(patterns))
    }

    /// Whether a connection to `host` (a name or IP literal) and `port`
    /// is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Outbound::Allow => true,
            Outbound::Deny => false,
            Outbound::AllowList(patterns) => patterns.iter().any(|p| {
                let (p_host, p_port) = split_pattern(p);
                let host_ok = match p_host.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => host == p_host,
                };
                host_ok && p_port.is_none_or(|p| p.parse() == Ok(port))
            }),
        }
    }

    /// The plain host names (no wildcard, no IP literal) an allow-list
    /// lets reach `port`: raw sockets connect to addresses, so these are
    /// resolved to see whether an address is one of theirs.
    pub fn names_for_port(&self, port: u16) -> Vec<String> {
        let Outbound::AllowList(patterns) = self else {
            return Vec::new();
        };
        patterns
            .iter()
            .filter_map(|p| {
                let (host, p_port) = split_pattern(p);
                let named = !host.starts_with("*.") && host.parse::<std::net::IpAddr>().is_err();
                (named && p_port.is_none_or(|p| p.parse() == Ok(port))).then(|| host.to_string())
            })
            .collect()
    }
}

/// `host[:port]` of an allow-list pattern (the port as written; `parse`
/// checks it is a number).
fn split_pattern(pattern: &str) -> (&str, Option<&str>) {
    match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (pattern, None),
    }
}

impl fmt::Display for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outbound::Allow => f.write_str("allow"),
            Outbound::Deny => f.write_str("deny"),
            Outbound::AllowList(patterns) => write!(f, "allow only {}", patterns.join(",")),
        }
    }
}

/// A named group of services that run the same version of the code.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stack {
    /// Environment the stack belongs to.
    pub env: String,
    /// DNS-label name, e.g. `finance`.
    pub name: String,
    /// Number of the version every service of the stack runs; 0 before the
    /// first deploy.
    pub current: u64,
    /// Components of the current version (a copy of that version's map, so
    /// the supervisor reads one record per stack).
    pub components: BTreeMap<String, Digest>,
    /// Number the next version will get.
    pub next_version: u64,
    /// When the stack was first named.
    pub created_at: DateTime<Utc>,
}

/// One immutable version of a stack's code: a bundle of components.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Version {
    /// 1, 2, 3, ... per stack.
    pub number: u64,
    /// Digest of the bundle: of its sorted `name=digest` lines.
    pub digest: Digest,
    /// Component name (file stem) to content digest.
    pub components: BTreeMap<String, Digest>,
    /// Why this version exists ("deploy", "add component app", "rollback to v2").
    pub reason: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl Version {
    /// The digest that names a bundle: equal bundles get equal digests.
    pub fn bundle_digest(components: &BTreeMap<String, Digest>) -> Digest {
        let mut text = String::new();
        for (name, digest) in components {
            text.push_str(name);
            text.push('=');
            text.push_str(digest.as_str());
            text.push('\n');
        }
        Digest::of(text.as_bytes())
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
    /// When the service was created.
    pub created_at: DateTime<Utc>,
}

impl Service {
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

    /// The component the command names (its first word).
    pub fn component(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }

    /// The service's intra-DNS name, `<stack>-<service>`.
    pub fn dns_name(&self) -> String {
        dns_name(&self.stack, &self.name)
    }
}

/// A public URL bound to a web service: requests whose Host is `host`
/// (any port) and whose path is `path` or below it reach the service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// `http` or `https`, as the user wrote it (labels: `http`).
    pub scheme: String,
    /// Lowercase host name, without a port.
    pub host: String,
    /// Path prefix, `/` or `/a/b` (no trailing slash).
    pub path: String,
}

impl Endpoint {
    /// Parses what `--endpoint` and `--path` say. A label (`www`, no dots,
    /// no scheme) is relative to the environment's alias domain; anything
    /// else is a host name or URL. The path comes from `--path` or from the
    /// URL, not both.
    pub fn parse(text: &str, path: Option<&str>, alias: &str) -> Result<Endpoint, String> {
        let text = text.trim();
        let bad = |why: &str| {
            format!("invalid endpoint `{text}`: {why}; use a label like `www` or a URL like https://top.example.com")
        };
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                if scheme != "http" && scheme != "https" {
                    return Err(bad("the scheme must be http or https"));
                }
                (scheme, rest)
            }
            None => ("http".to_string(), text),
        };
        let (authority, url_path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if authority.contains(['?', '#', '@']) || url_path.is_some_and(|p| p.contains(['?', '#'])) {
            return Err(bad("it may not have a query, fragment or user"));
        }
        let host = strip_port(authority)
            .map_err(|why| bad(&why))?
            .to_ascii_lowercase();
        let host = if text.contains("://") || host.contains('.') {
            host
        } else {
            format!("{host}.{alias}")
        };
        validate_host(&host).map_err(|why| bad(&why))?;
        let path = match (path, url_path) {
            (Some(_), Some(p)) if p != "/" => {
                return Err(format!(
                    "invalid endpoint `{text}`: give the path once, in the URL or with --path"
                ))
            }
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => "/",
        };
        Ok(Endpoint {
            scheme,
            host,
            path: normalize_path(path)?,
        })
    }

    /// The endpoint as a URL: `https://top.example.com/blog`.
    pub fn url(&self) -> String {
        let path = if self.path == "/" { "" } else { &self.path };
        format!("{}://{}{path}", self.scheme, self.host)
    }

    /// Whether a request path falls under this endpoint's path, on segment
    /// boundaries: `/blog` takes `/blog` and `/blog/x`, not `/blogger`.
    pub fn covers(&self, path: &str) -> bool {
        self.path == "/"
            || path.strip_prefix(self.path.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
            })
    }
}

fn strip_port(authority: &str) -> Result<&str, String> {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse::<u16>() {
            Ok(n) if n > 0 => Ok(host),
            _ => Err(format!("`{port}` is not a port (1-65535)")),
        },
        _ => Ok(authority),
    }
}

fn validate_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a valid host name"))
    }
}

/// RFC 3986 path characters: unreserved, sub-delims, `:`, `@`, `/`, and
/// `%` followed by two hex digits.
fn path_chars_ok(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

/// `/blog/` → `/blog`; a path must start with `/`.
fn normalize_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "invalid path `{path}`: it must start with `/`, e.g. /blog"
        ));
    }
    if path.contains("//") || path.split('/').any(|s| s == ".." || s == ".") || !path_chars_ok(path)
    {
        return Err(format!(
            "invalid path `{path}`: use plain segments like /blog or /api/v1 (letters, digits, -._~!$&'()*+,;=:@ and %XX escapes)"
        ));
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
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

/// Where one instance is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Loading code and instantiating.
    Starting,
    /// Running guest code.
    Running,
    /// Ended and waiting out its back-off before the next start.
    Backoff,
    /// Cannot start with the current settings (e.g. the command names no
    /// component); not retried until the service or its stack changes.
    Crashed,
    /// Ran to completion and will not be restarted (one-shot runs).
    Exited,
    /// Stopped by the platform (scale down, delete, shutdown).
    Stopped,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Backoff => "backoff",
            InstanceState::Crashed => "crashed",
            InstanceState::Exited => "exited",
            InstanceState::Stopped => "stopped",
        })
    }
}

/// What the supervisor knows of one instance right now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    /// `<service>.<n>`, stable across restarts of the same slot.
    pub id: String,
    /// Current state.
    pub state: InstanceState,
    /// Restarts since the slot started or its settings last changed.
    pub restarts: u32,
    /// Exit code of the last run, if it exited with one (traps have none).
    pub exit_code: Option<i32>,
    /// Human explanation of the state, e.g. `exceeded memory limit 64 MiB`.
    pub message: Option<String>,
    /// When the current (or last) run started.
    pub started_at: Option<DateTime<Utc>>,
    /// Stack version the instance runs.
    pub version: u64,
    /// While in `backoff`: how long the wait before the next start is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

impl InstanceStatus {
    /// A slot about to start its first run.
    pub fn starting(id: String, version: u64) -> InstanceStatus {
        InstanceStatus {
            id,
            state: InstanceState::Starting,
            restarts: 0,
            exit_code: None,
            message: None,
            started_at: None,
            version,
            backoff_ms: None,
        }
    }

    /// Moves to `state`; the back-off wait only means something in
    /// `backoff`, so any other state clears it.
    pub fn enter(&mut self, state: InstanceState) {
        self.state = state;
        if state != InstanceState::Backoff {
            self.backoff_ms = None;
        }
    }

    /// Enters `backoff` after a run ended with `message`, restarting after
    /// `delay`.
    pub fn back_off(&mut self, exit_code: Option<i32>, message: String, delay: Duration) {
        self.state = InstanceState::Backoff;
        self.restarts = self.restarts.saturating_add(1);
        self.exit_code = exit_code;
        self.message = Some(message);
        self.backoff_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    }

    /// The message as `service ls` shows it: in `backoff`, with the wait,
    /// e.g. `exited with code 3; back-off 3.2s after 5 restarts`.
    pub fn describe(&self) -> String {
        let message = self.message.clone().unwrap_or_default();
        match (self.state, self.backoff_ms) {
            (InstanceState::Backoff, Some(ms)) => {
                let plural = if self.restarts == 1 { "" } else { "s" };
                format!(
                    "{message}; back-off {:.1}s after {} restart{plural}",
                    ms as f64 / 1000.0,
                    self.restarts
                )
            }
            _ => message,
        }
    }
}

/// How one cron run ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited non-zero, trapped, ran out of memory or could not start.
    Failed,
    /// Not started: the previous run was still going at the firing time.
    Skipped,
    /// Stopped after the job's `--timeout`.
    TimedOut,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::TimedOut => "timed_out",
        })
    }
}

/// What started a cron run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    /// The schedule fired.
    Schedule,
    /// `mesh svc trigger`.
    Manual,
}

/// One firing of a cron job: a fresh instance run to completion (or a
/// firing skipped because the previous run was still going).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Run {
    /// 1, 2, 3, ... per job, kept across daemon restarts.
    pub number: u64,
    /// Instance id of the run, `<service>.r<number>`; `None` when skipped.
    pub instance: Option<String>,
    /// What started it.
    pub trigger: RunTrigger,
    /// When the schedule said it should start (the trigger time for manual runs).
    pub scheduled_at: DateTime<Utc>,
    /// When it really started.
    pub started_at: DateTime<Utc>,
    /// How long it ran; 0 for a skipped firing.
    pub duration_ms: u64,
    /// Microseconds from the firing to the fresh instance running guest
    /// code (loading and instantiating); `None` when it never ran.
    #[serde(default)]
    pub start_us: Option<u64>,
    /// Exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// How it ended.
    pub status: RunStatus,
    /// Why, for people: `exited with code 3`, `timed out after 2s`.
    pub message: Option<String>,
}

/// A sha256 content digest, written `sha256:<hex>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    /// The `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Just the hex part, for file names.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// A short form for people: the first 12 hex digits.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest `{text}` must start with `sha256:`"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "digest `{text}` must be `sha256:` and 64 lowercase hex digits"
            ));
        }
        Ok(Digest(text))
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `name` can be a stack, service or environment name: a DNS
/// label of lowercase letters, digits and inner hyphens, at most 63 long.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name `{name}`: use 1-63 lowercase letters, digits and inner hyphens (a DNS label)"
        ))
    }
}

/// Parses a memory size: plain bytes, `Ki`/`Mi`/`Gi` (binary, optionally
/// with a trailing `B`), or `K`/`M`/`G` and `KB`/`MB`/`GB` (also binary, as
/// people mean them for memory).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || {
        format!("invalid memory size `{text}`: use a number with a unit, e.g. 64Mi, 512Mi or 1Gi")
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kb" | "kib" => KIB,
        "m" | "mi" | "mb" | "mib" => MIB,
        "g" | "gi" | "gb" | "gib" => GIB,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// Writes a byte count the way people read memory limits: `64 MiB`.
pub fn format_memory(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Checks environment variable settings: names are non-empty and hold no `=`.
pub fn validate_env_var(key: &str) -> Result<(), String> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(format!(
            "invalid environment variable name `{key}`: use KEY=VALUE with a non-empty KEY"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("64Mi"), Ok(64 * MIB));
        assert_eq!(parse_memory("64MiB"), Ok(64 * MIB));
        assert_eq!(parse_memory("1Gi"), Ok(GIB));
        assert_eq!(parse_memory("512k"), Ok(512 * KIB));
        assert_eq!(parse_memory("1048576"), Ok(MIB));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("64Qi").is_err());
        assert!(parse_memory("-1Mi").is_err());
        assert!(parse_memory("99999999999999999Gi").is_err());
    }

    #[test]
    fn memory_sizes_format() {
        assert_eq!(format_memory(64 * MIB), "64 MiB");
        assert_eq!(format_memory(2 * GIB), "2 GiB");
        assert_eq!(format_memory(1000), "1000 bytes");
    }

    #[test]
    fn outbound_policies_match_hosts_and_ports() {
        let list = Outbound::parse("api.stripe.com:443, *.example.com,127.0.0.1:6379").unwrap();
        assert!(list.allows("api.stripe.com", 443));
        assert!(!list.allows("api.stripe.com", 80));
        assert!(list.allows("www.example.com", 80));
        assert!(!list.allows("example.com", 80));
        assert!(list.allows("127.0.0.1", 6379));
        // Raw sockets resolve the plain names that cover the port.
        let list =
            Outbound::parse("db.internal:5432,cache:6379,*.example.com,10.0.0.1,queue").unwrap();
        assert_eq!(list.names_for_port(5432), ["db.internal", "queue"]);
        assert_eq!(list.names_for_port(6379), ["cache", "queue"]);
        assert!(Outbound::Deny.names_for_port(80).is_empty());
        assert!(!list.allows("127.0.0.1", 6380));
        assert!(Outbound::Allow.allows("anything", 1));
        assert!(!Outbound::Deny.allows("anything", 1));
        assert!(Outbound::parse("bad host!").is_err());
        assert!(Outbound::parse("x.com:99999").is_err());
        assert_eq!(Outbound::parse("deny").unwrap(), Outbound::Deny);
    }

    #[test]
    fn endpoints_parse_from_labels_and_urls() {
        let e = Endpoint::parse("www", Some("/blog/"), "localhost").unwrap();
        assert_eq!(
            (e.host.as_str(), e.path.as_str()),
            ("www.localhost", "/blog")
        );
        assert_eq!(e.url(), "http://www.localhost/blog");
        let e = Endpoint::parse("https://Top.Widemesh.dev", None, "localhost").unwrap();
        assert_eq!(e.url(), "https://top.widemesh.dev");
        let e = Endpoint::parse("https://top.widemesh.dev:8443/api", None, "x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.path.as_str()),
            ("top.widemesh.dev", "/api")
        );
        assert!(Endpoint::parse("ftp://x.dev", None, "x").is_err());
        assert!(Endpoint::parse("www", Some("blog"), "x").is_err());
        assert!(Endpoint::parse("bad_label", None, "x").is_err());
        assert!(Endpoint::parse("https://x.dev/a", Some("/b"), "x").is_err());
        assert!(Endpoint::parse("https://x.dev:99999", None, "x").is_err());
        assert!(Endpoint::parse("https://x.dev/a?b", None, "x").is_err());
        for bad in [
            "http://x.dev:0",
            "http://x.dev:",
            "http://a.dev/%zz",
            "http://a.dev/%4",
            "http://x.dev/p|q",
            "http://x.dev/a b",
            "http://x.dev/./a",
            "ab*",
            "https://*.wild.dev",
            "http://x..dev",
            "http://-x.dev",
        ] {
            assert!(
                Endpoint::parse(bad, None, "localhost").is_err(),
                "{bad} was taken"
            );
        }
        let e = Endpoint::parse("http://x.dev/caf%C3%A9/v1.2~x", None, "x").unwrap();
        assert_eq!(e.path, "/caf%C3%A9/v1.2~x");
    }

    #[test]
    fn endpoint_paths_match_on_segment_boundaries() {
        let blog = Endpoint::parse("www", Some("/blog"), "localhost").unwrap();
        assert!(blog.covers("/blog"));
        assert!(blog.covers("/blog/x"));
        assert!(blog.covers("/blog?page=2"));
        assert!(!blog.covers("/blogger"));
        assert!(!blog.covers("/"));
        let root = Endpoint::parse("www", None, "localhost").unwrap();
        assert!(root.covers("/anything"));
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_name("service", "web").is_ok());
        assert!(validate_name("service", "send-emails2").is_ok());
        assert!(validate_name("service", "Web").is_err());
        assert!(validate_name("service", "-web").is_err());
        assert!(validate_name("service", "web_1").is_err());
        assert!(validate_name("service", "").is_err());
        assert!(validate_name("service", &"a".repeat(64)).is_err());
    }

    #[test]
    fn digests_round_trip_and_reject_junk() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::try_from(d.to_string()), Ok(d.clone()));
        assert_eq!(d.short().len(), 12);
        assert!(Digest::try_from("sha256:xyz".to_string()).is_err());
        assert!(Digest::try_from("md5:00".to_string()).is_err());
    }

    #[test]
    fn bundle_digest_depends_on_names_and_contents() {
        let mut a = BTreeMap::new();
        a.insert("app".to_string(), Digest::of(b"1"));
        let mut b = a.clone();
        assert_eq!(Version::bundle_digest(&a), Version::bundle_digest(&b));
        b.insert("pay".to_string(), Digest::of(b"2"));
        assert_ne!(Version::bundle_digest(&a), Version::bundle_digest(&b));
    }
}
