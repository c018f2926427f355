//! The daemon's configuration: one struct, built once from flags by the
//! caller (`mesh up`), passed down to every part.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default data directory, relative to where `mesh up` runs.
pub const DEFAULT_DATA_DIR: &str = ".mesh";
/// Default control API address.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7070";
/// Default ingress address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default platform alias domain: labels become `www.localhost`.
pub const DEFAULT_ALIAS: &str = "localhost";
/// Largest component upload the API accepts.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 64 * 1024 * 1024;
/// Largest memory limit a service may ask for.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Live instances the engine's pooling allocator has room for.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// Log bytes kept per service before the oldest are dropped.
pub const DEFAULT_LOG_BYTES_PER_SERVICE: u64 = 8 * 1024 * 1024;
/// Versions kept per stack for rollback.
pub const DEFAULT_VERSIONS_KEPT: usize = 20;
/// Largest request head the ingress reads.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Requests that may wait per web instance before the ingress answers 503.
pub const DEFAULT_QUEUE_PER_INSTANCE: usize = 64;
/// Largest request body the ingress passes to a guest.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Ingress connections open at once, over every listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address may hold open on the ingress (and,
/// separately, on the API).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1_000;
/// Longest a client may take to send a request head.
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest a connection may sit idle between requests.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Control API connections open at once.
pub const DEFAULT_API_MAX_CONNECTIONS: usize = 1_000;
/// Control API connections one client address may hold open: a quarter of
/// the API's, so one address cannot take them all.
pub const DEFAULT_API_MAX_PER_CLIENT: usize = DEFAULT_API_MAX_CONNECTIONS / 4;
/// How long shutdown waits for open connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything the daemon needs to know at start.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where state, code, compiled code and logs live.
    pub data_dir: PathBuf,
    /// Control API listen address (port 0 picks one).
    pub api_addr: SocketAddr,
    /// Ingress listen address (port 0 picks one).
    pub http_addr: SocketAddr,
    /// HTTPS ingress listen address; none when `None`.
    pub https_addr: Option<SocketAddr>,
    /// Certificate (PEM chain) for HTTPS; a local CA issues them when `None`.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Requests that may wait per web instance when all are busy.
    pub queue_per_instance: usize,
    /// Platform alias domain of the default environment.
    pub alias: String,
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Largest per-instance memory limit, in bytes.
    pub max_memory_bytes: u64,
    /// Live instances (all services together) the engine has room for.
    pub max_instances: u32,
    /// Log bytes kept per service.
    pub log_bytes_per_service: u64,
    /// A directory of compiled code that several daemons read and fill
    /// (never collected), beside each one's own cache.
    pub shared_cache: Option<std::path::PathBuf>,
    /// Versions kept per stack.
    pub versions_kept: usize,
    /// Ingress connections open at once.
    pub max_connections: usize,
    /// Connections one client address may hold on a listener.
    pub max_connections_per_client: usize,
    /// Longest a client may take to send a request head.
    pub header_timeout: std::time::Duration,
    /// Longest a connection may sit idle.
    pub idle_timeout: std::time::Duration,
    /// The containers' bridge: its address and prefix (`10.213.0.1/16`).
    pub container_network: String,
    /// Tasks (process ids) kept for the host: containers together may
    /// have the host's capacity less this; `None` keeps a quarter.
    pub reserved_tasks: Option<u64>,
    /// Largest container image upload, in bytes.
    pub max_image_bytes: u64,
    /// Where desired state lives.
    pub store: StoreConfig,
    /// This host's name, unique in a cluster.
    pub node: String,
    /// Where the other hosts of a cluster reach this one's API
    /// (`host:port`); the API's own address when `None`.
    pub advertise: Option<String>,
    /// The key sealed values (registry passwords) are sealed with; the
    /// data directory's own `sealing.key` when `None`.
    pub sealing_key: Option<PathBuf>,
    /// How registries are reached: private CAs, plain-HTTP registries.
    pub registries: RegistrySettings,
    /// Certificates from an ACME server for published host names; off
    /// when `None`.
    pub acme: Option<AcmeSettings>,
}

/// Where the ingress's certificates come from when an ACME server issues
/// them: operator settings.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// The server's directory URL (RFC 8555 §7.1.1).
    pub directory: String,
    /// The account's contact address.
    pub email: Option<String>,
    /// A private ACME server's own CA certificate (PEM), to trust for its
    /// API; the system's roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// How names are proved: HTTP-01 on the plain-HTTP listener, or
    /// TLS-ALPN-01 on the TLS listener.
    pub challenge: AcmeChallenge,
    /// Serve no other certificate for a name ACME covers while it has
    /// none (`--acme-only`), rather than the local CA's.
    pub only: bool,
}

/// The ACME challenge the ingress answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `http-01`: a token on the plain-HTTP listener (port 80).
    Http01,
    /// `tls-alpn-01`: a certificate on the TLS listener (port 443).
    TlsAlpn01,
}

impl AcmeChallenge {
    /// `http-01` or `tls-alpn-01`.
    pub fn parse(text: &str) -> Result<AcmeChallenge, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http-01" | "http" => Ok(AcmeChallenge::Http01),
            "tls-alpn-01" | "tls-alpn" => Ok(AcmeChallenge::TlsAlpn01),
            other => Err(format!(
                "unknown challenge `{other}`: use http-01 (on the plain-HTTP listener) or tls-alpn-01 (on the HTTPS listener)"
            )),
        }
    }
}

/// How the daemon reaches OCI registries: operator settings.
#[derive(Clone, Debug, Default)]
pub struct RegistrySettings {
    /// Certificates (PEM files) of private CAs registries' certificates
    /// may chain to, besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// Registries spoken to over plain HTTP (`HOST[:PORT]`).
    pub insecure: Vec<String>,
    /// Registries at loopback or private addresses that tenants may pull
    /// from (the operator may pull from any).
    pub private: Vec<String>,
}

/// A host's name when none is given and the machine has none.
pub const DEFAULT_NODE: &str = "local";

/// The name a host has unless `mesh up --node` gives one: the machine's
/// hostname when it is a valid host name, else [`DEFAULT_NODE`].
pub fn default_node() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim().to_ascii_lowercase();
    match crate::model::validate_name("host", &name) {
        Ok(()) => name,
        Err(_) => DEFAULT_NODE.to_string(),
    }
}

/// Where desired state lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite in the data directory: one machine.
    #[default]
    Embedded,
    /// An etcd cluster the hosts share: its members, as `http://host:port`.
    Etcd(Vec<String>),
}

impl StoreConfig {
    /// Parses `--store`: `sqlite` (the embedded default) or
    /// `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn parse(text: &str) -> Result<StoreConfig, String> {
        if text == "sqlite" {
            return Ok(StoreConfig::Embedded);
        }
        let Some(members) = text.strip_prefix("etcd://") else {
            return Err(format!(
                "`{text}` is not a store: use sqlite or etcd://HOST:PORT[,HOST:PORT...]"
            ));
        };
        let mut endpoints = Vec::new();
        for member in members.trim_end_matches('/').split(',') {
            let port = member.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty()).then_some(())?;
                port.parse::<u16>().ok()
            });
            if port.is_none() {
                return Err(format!("etcd member `{member}` is not HOST:PORT"));
            }
            endpoints.push(format!("http://{member}"));
        }
        Ok(StoreConfig::Etcd(endpoints))
    }
}

/// The containers' bridge: the daemon's address on it and the prefix.
pub const DEFAULT_CONTAINER_NETWORK: &str = "10.213.0.1/16";

/// Largest container image upload unless the operator sets another.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 2 << 30;

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            api_addr: DEFAULT_API_ADDR
                .parse()
                .expect("default API address parses"),
            http_addr: DEFAULT_HTTP_ADDR
                .parse()
                .expect("default HTTP address parses"),
            https_addr: None,
            tls_cert: None,
            tls_key: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            queue_per_instance: DEFAULT_QUEUE_PER_INSTANCE,
            alias: DEFAULT_ALIAS.to_string(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
            log_bytes_per_service: DEFAULT_LOG_BYTES_PER_SERVICE,
            shared_cache: None,
            versions_kept: DEFAULT_VERSIONS_KEPT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            container_network: DEFAULT_CONTAINER_NETWORK.to_string(),
            reserved_tasks: None,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            store: StoreConfig::Embedded,
            node: DEFAULT_NODE.to_string(),
            advertise: None,
            sealing_key: None,
            registries: Default::default(),
            acme: None,
        }
    }
}

impl DaemonConfig {
    /// Tasks all containers together may have: the host's capacity
    /// (`kernel.pid_max`, `kernel.threads-max`) less what is kept for the
    /// host, never less than one container's own bound.
    pub fn container_tasks(&self, capacity: u64) -> u64 {
        let reserved = self.reserved_tasks.unwrap_or(capacity / 4);
        capacity.saturating_sub(reserved).max(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_etcd_members() {
        assert_eq!(StoreConfig::parse("sqlite").unwrap(), StoreConfig::Embedded);
        assert_eq!(
            StoreConfig::parse("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap(),
            StoreConfig::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://10.0.0.2:2379".into()
            ])
        );
        for bad in [
            "http://x:1",
            "etcd://x",
            "etcd://:1",
            "etcd://x:port",
            "etcd://a:1,",
        ] {
            assert!(StoreConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
