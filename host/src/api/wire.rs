//! The control API's request and response bodies, shared by the daemon and
//! the `mesh` CLI so both sides agree by construction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::settings::{ServiceSettings, SettingsView};
use crate::model::{Digest, InstanceStatus, Run, ServiceType};

/// A component of the bundle being named in a request: code already
/// uploaded (`PUT /v1/code`), under a component name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComponentRef {
    /// Component name (file stem): `app` for `app.wasm`.
    pub name: String,
    /// Digest the upload returned.
    pub digest: Digest,
}

/// `POST /v1/services`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CreateService {
    /// Stack; `app` when empty.
    pub stack: String,
    /// Service name.
    pub name: String,
    /// argv; the first word names a component.
    pub command: Vec<String>,
    /// Its settings; the defaults where absent.
    #[serde(flatten)]
    pub settings: ServiceSettings,
    /// Code to add to the stack's bundle first (the `-- app.wasm ...` form).
    pub component: Option<ComponentRef>,
    /// Code to pull from a registry into the stack's bundle first (the
    /// `-- HOST/REPO:TAG ...` form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullRef>,
}

/// A component to pull from a registry, and its name in the stack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PullRef {
    /// The component's name: the repository's last part unless given.
    pub name: String,
    /// `HOST[:PORT]/REPO:TAG` or `HOST/REPO@sha256:...`.
    pub reference: String,
}

/// `POST /v1/services/{stack}/{name}/publish` and `.../unpublish`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PublishRequest {
    /// A label (`www`, relative to the environment's alias) or a URL.
    pub endpoint: String,
    /// Path prefix, e.g. `/blog`.
    pub path: Option<String>,
    /// Serve it over HTTPS only: plain HTTP redirected, HSTS sent.
    #[serde(default)]
    pub https_only: bool,
}

/// `PATCH /v1/services/{stack}/{name}`: only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpdateService {
    /// New argv.
    pub command: Option<Vec<String>>,
    /// Settings to change.
    #[serde(flatten)]
    pub settings: ServiceSettings,
    /// Variable names to remove.
    #[serde(default)]
    pub unset_env: Vec<String>,
    /// Code to add to the stack's bundle first.
    pub component: Option<ComponentRef>,
    /// Code to pull from a registry into the stack's bundle first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullRef>,
}

/// What `POST /v1/services/{stack}/{name}/trigger` started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TriggerResult {
    /// Stack.
    pub stack: String,
    /// Service.
    pub name: String,
    /// Run number.
    pub number: u64,
    /// Instance id of the run.
    pub instance: String,
}

/// A service that called another by name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallerView {
    /// Its stack.
    pub stack: String,
    /// Its name.
    pub name: String,
    /// When it last called.
    pub last_call_at: DateTime<Utc>,
}

/// A service as `mesh service ls --json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Stack.
    pub stack: String,
    /// worker, web or cron.
    #[serde(rename = "type")]
    pub service_type: ServiceType,
    /// argv.
    pub command: Vec<String>,
    /// Its settings.
    #[serde(flatten)]
    pub settings: SettingsView,
    /// Public URLs.
    pub endpoints: Vec<String>,
    /// How requests are served now: `reused` or `fresh per request`.
    #[serde(default)]
    pub serving: String,
    /// Why each request gets a fresh instance, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_because: Option<String>,
    /// Next cron firing.
    pub next_run: Option<DateTime<Utc>>,
    /// Cron history, newest first.
    pub runs: Vec<Run>,
    /// Intra-DNS name, `<stack>-<service>`.
    pub dns_name: String,
    /// Stack version the service is on.
    pub version: u64,
    /// When the service was created.
    pub created_at: DateTime<Utc>,
    /// Every instance.
    pub instances: Vec<InstanceStatus>,
    /// `wasm` or `container`: what its instances are.
    #[serde(default)]
    pub kind: String,
    /// When its instances were last restarted by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<DateTime<Utc>>,
    /// Services that called it by name on the host that answered, most
    /// recent first (only when one service is asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub called_by: Vec<CallerView>,
    /// Where its component came from, when it was pulled from a registry:
    /// the reference and the digest it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::model::Source>,
    /// Its last rollout on the host that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::model::Rollout>,
    /// In the answer to a change: the revision of desired state it made,
    /// which a rollout it started names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// `GET /v1/whoami`: whom the token speaks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The environment it acts on.
    pub env: String,
    /// Whether it is the operator's token.
    pub operator: bool,
}

/// `GET /v1/services/{stack}/{name}/stats`: the requests this host served
/// for the service over the last minutes, one point per window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsView {
    /// Length of each window, in seconds.
    pub step_seconds: u64,
    /// Oldest first; windows without requests included.
    pub points: Vec<StatsPoint>,
}

/// The requests of one window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatsPoint {
    /// When the window started.
    pub time: DateTime<Utc>,
    /// Requests answered.
    pub requests: u64,
    /// Of which answered with a 5xx status.
    pub errors: u64,
    /// Median latency in milliseconds (the upper bound of its bucket).
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// The most memory its instances held in the window, in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// CPU time its instances used in the window, in seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
}

/// `POST /v1/stacks/{stack}/deploy`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployRequest {
    /// Components of the new version, by name.
    pub components: BTreeMap<String, Digest>,
    /// Whether these are the whole bundle (a directory) or replace only the
    /// components named (a single file).
    pub replace: bool,
    /// Components the daemon pulls from registries, by name:
    /// `HOST[:PORT]/REPO:TAG` or `HOST/REPO@sha256:...`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pull: BTreeMap<String, String>,
}

/// A component a deploy pulled.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PulledView {
    /// Its name in the stack.
    pub name: String,
    /// The reference as given.
    pub reference: String,
    /// The manifest digest it resolved to.
    pub digest: String,
    /// Blobs fetched from the registry.
    pub fetched: usize,
    /// Blobs this host held already.
    pub cached: usize,
}

/// What a deploy or rollback did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployResult {
    /// The stack.
    pub stack: String,
    /// The version now current.
    pub version: VersionView,
    /// Whether a new version was made (false when the code was unchanged).
    pub created: bool,
    /// Services that restart because their component changed.
    pub restarting: Vec<String>,
    /// What was pulled from registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulled: Vec<PulledView>,
    /// The revision of desired state the deploy made (0 when it changed
    /// nothing), which the rollouts it started name.
    #[serde(default)]
    pub revision: u64,
}

/// `POST /v1/stacks/{stack}/rollback`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// Version to go back to; the one before the current when absent.
    pub to: Option<u64>,
}

/// One kept version of a stack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionView {
    /// Version number.
    pub number: u64,
    /// Bundle digest.
    pub digest: Digest,
    /// Components by name.
    pub components: BTreeMap<String, Digest>,
    /// Where components pulled from registries came from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, crate::model::Source>,
    /// Why it was made.
    pub reason: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Whether it is the stack's current version.
    pub current: bool,
}

/// A stack as `mesh stack ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackView {
    /// Stack name.
    pub name: String,
    /// Current version number (0: no code yet).
    pub version: u64,
    /// Components of the current version.
    pub components: BTreeMap<String, Digest>,
    /// Where its components pulled from registries came from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, crate::model::Source>,
    /// Services in the stack.
    pub services: Vec<String>,
}

/// `POST /v1/envs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateEnv {
    /// Environment name (a DNS label).
    pub name: String,
    /// Its first settings.
    #[serde(flatten)]
    pub settings: UpdateEnv,
}

/// `PATCH /v1/envs/{name}`: what to change; absent fields stay as they
/// are. Only the operator may change anything but nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpdateEnv {
    /// `allow`, `deny`, or `host[:port]` patterns separated by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<String>,
    /// Non-public ranges its guests may reach, comma-separated CIDRs, or
    /// `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<String>,
    /// A custom domain to assign to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_domain: Option<String>,
    /// A custom domain to take back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_domain: Option<String>,
    /// Most instances of all its services together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Most memory, all instances' limits added up (`8Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
    /// Most code its stacks keep (`256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_code: Option<String>,
    /// Most services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_services: Option<u32>,
    /// Most tasks (processes and threads) of all its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
}

/// An environment's quotas and what it uses of each.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuotaView {
    /// Most services.
    pub max_services: u32,
    /// Most instances.
    pub max_instances: u32,
    /// Most memory, in bytes.
    pub max_memory_bytes: u64,
    /// Most code, in bytes.
    pub max_code_bytes: u64,
    /// Services it has.
    pub services: u32,
    /// Instances its services ask for.
    pub instances: u32,
    /// Memory its instances' limits add up to, in bytes.
    pub memory_bytes: u64,
    /// Code its stacks keep, in bytes.
    pub code_bytes: u64,
    /// Most tasks of its containers.
    #[serde(default)]
    pub max_tasks: u32,
    /// Tasks its containers have now (on the host that answered).
    #[serde(default)]
    pub tasks: u64,
}

/// `POST /v1/envs/{name}/token`: a new token, the old one revoked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRotated {
    /// The environment.
    pub name: String,
    /// Its new API token, shown this once.
    pub token: String,
}

/// An environment as `mesh env ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvView {
    /// Name.
    pub name: String,
    /// Outbound policy, as words.
    pub outbound: String,
    /// Domain endpoint labels are relative to.
    pub alias: String,
    /// Non-public ranges its guests may reach.
    #[serde(default)]
    pub reach: Vec<String>,
    /// Custom domains it may publish on.
    #[serde(default)]
    pub domains: Vec<String>,
    /// How the ingress serves each of its custom domains over HTTPS.
    #[serde(default)]
    pub domain_certificates: Vec<DomainCertificate>,
    /// Its quotas and use.
    pub quotas: QuotaView,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The certificate the ingress serves for a custom domain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainCertificate {
    /// The domain.
    pub domain: String,
    /// Where its certificate comes from, in words.
    pub certificate: String,
    /// Whether browsers trust it without being told to.
    pub trusted: bool,
}

/// What creating an environment returns: its token, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvCreated {
    /// The environment.
    #[serde(flatten)]
    pub env: EnvView,
    /// Its API token.
    pub token: String,
}

/// Every error the API returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line saying what is wrong and, where possible, how to fix it.
    pub error: String,
}

/// Query of `GET /v1/services`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only this stack.
    pub stack: Option<String>,
    /// Only this service.
    pub name: Option<String>,
}

/// Query of `GET /v1/services/{stack}/{name}/logs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Last N lines only.
    pub tail: Option<usize>,
    /// Only this instance.
    pub instance: Option<String>,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lines written before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only lines containing this text, in any case.
    pub grep: Option<String>,
    /// Keep the answer open and stream new lines (NDJSON).
    #[serde(default)]
    pub follow: bool,
}

/// Query of the interactive run routes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunQuery {
    /// argv as a JSON array; the service's command when absent.
    pub command: Option<String>,
    /// Whether the caller's stdin is a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Code to run (`POST /v1/run` only).
    pub digest: Option<String>,
    /// `KEY=VALUE` settings as a JSON array (`POST /v1/run` only).
    pub env: Option<String>,
    /// Memory limit, e.g. `64Mi` (`POST /v1/run` only).
    pub memory: Option<String>,
    /// Files to see at `/`: the digest of an uploaded files archive
    /// (`POST /v1/run` only).
    pub files: Option<String>,
    /// Scratch space at `/tmp`, e.g. `16Mi`.
    pub scratch: Option<String>,
}

/// Query of `GET /v1/events`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventsQuery {
    /// Last N events only.
    pub tail: Option<usize>,
    /// Only this service's events, `stack/name`, in the token's own
    /// environment (the operator's too).
    pub service: Option<String>,
    /// Keep the answer open and stream new events (NDJSON).
    #[serde(default)]
    pub follow: bool,
}

/// Query of `PUT /v1/code`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CodeQuery {
    /// What the user called the file, for error messages.
    pub name: Option<String>,
    /// `files` for a stack's files archive; code otherwise.
    pub kind: Option<String>,
}

/// A host as `mesh node ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// `ready`, `draining` or `down`.
    pub state: crate::model::NodeState,
    /// Where the other hosts reach it (where they last did, when down).
    pub address: String,
    /// What it can run: `wasm`, `container`.
    pub runs: Vec<String>,
    /// Live instances it has room for.
    pub capacity_instances: u32,
    /// Memory of the machine, in bytes.
    pub capacity_memory_bytes: u64,
    /// Instances live on it.
    pub used_instances: u32,
    /// Pieces of code (components, images, files) it holds.
    #[serde(default)]
    pub code: usize,
    /// When this run of it started (none when down).
    pub started_at: Option<DateTime<Utc>>,
    /// Since when it has been draining.
    pub draining_since: Option<DateTime<Utc>>,
}

impl NodeView {
    /// A live host.
    pub fn of(
        node: crate::model::Node,
        state: crate::model::NodeState,
        draining_since: Option<DateTime<Utc>>,
    ) -> NodeView {
        NodeView {
            name: node.name,
            state,
            address: node.address,
            runs: node.runs,
            capacity_instances: node.capacity_instances,
            capacity_memory_bytes: node.capacity_memory_bytes,
            used_instances: node.used_instances,
            code: node.holds.len(),
            started_at: Some(node.started_at),
            draining_since,
        }
    }

    /// A host that joined once and is not up now, as it last joined.
    pub fn down(node: crate::model::Node, draining_since: Option<DateTime<Utc>>) -> NodeView {
        NodeView {
            used_instances: 0,
            started_at: None,
            ..NodeView::of(node, crate::model::NodeState::Down, draining_since)
        }
    }
}

/// The instances one host runs of one service (`GET /v1/here/instances`,
/// how the hosts of a cluster show each other's).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HereInstances {
    /// Stack.
    pub stack: String,
    /// Service.
    pub service: String,
    /// Its instances on that host.
    pub instances: Vec<InstanceStatus>,
    /// For a cron job, the runs that host recorded, newest first.
    #[serde(default)]
    pub runs: Vec<Run>,
}

/// `PUT /v1/registries/{host}`.
#[derive(Clone, Serialize, Deserialize)]
pub struct RegistryLoginRequest {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for RegistryLoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A registry login as `mesh registry ls` shows it: never its password.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryLoginView {
    /// The registry, `HOST[:PORT]`.
    pub host: String,
    /// The user name.
    pub username: String,
    /// When it was kept.
    pub created_at: DateTime<Utc>,
}

impl RegistryLoginView {
    /// What may be shown of a login.
    pub fn of(login: &crate::registry::Login) -> RegistryLoginView {
        RegistryLoginView {
            host: login.host.clone(),
            username: login.username.clone(),
            created_at: login.created_at,
        }
    }
}
