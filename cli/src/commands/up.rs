//! `mesh up`: the daemon in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// `mesh up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where desired state lives: `sqlite` (a file in the data directory,
    /// for one machine) or `etcd://HOST:PORT[,HOST:PORT...]`, an etcd
    /// cluster several hosts share. Give every member: calls move on to
    /// the next while one is down.
    #[arg(long, default_value = "sqlite", value_name = "URL", env = "MESH_STORE")]
    pub store: String,

    /// This host's name, unique among the hosts of a cluster [default:
    /// the machine's hostname].
    #[arg(long, value_name = "NAME", env = "MESH_NODE")]
    pub node: Option<String>,

    /// Where the other hosts of a cluster reach this one's API, as
    /// HOST:PORT [default: the --api address, unless it is 0.0.0.0].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// The 32-byte key registry passwords are sealed with, kept outside
    /// the state store [default: DATA/sealing.key, made at first start].
    /// Every host of a cluster must be given the same file.
    #[arg(long, value_name = "FILE")]
    pub sealing_key: Option<std::path::PathBuf>,

    /// A private CA's certificate (PEM) that registries' certificates may
    /// chain to, besides the system's; repeat for more.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Vec<std::path::PathBuf>,

    /// A registry to speak plain HTTP to (HOST[:PORT]); repeat for more.
    /// Off by default: every other registry is HTTPS only.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,

    /// A registry at a loopback or private address that tenants may pull
    /// from (HOST[:PORT]); repeat for more. Without it a tenant's pulls
    /// reach public addresses only; the operator's reach any.
    #[arg(long, value_name = "HOST")]
    pub private_registry: Vec<String>,

    /// A directory of compiled code shared with other daemons on this
    /// machine: read when this daemon's cache lacks code, filled after
    /// each compile, never cleaned by the daemon. Trust it like the data
    /// directory: compiled code in it runs.
    #[arg(long, value_name = "DIR", env = "MESH_SHARED_CACHE")]
    pub shared_cache: Option<PathBuf>,

    /// The containers' bridge network: the daemon's address on it and
    /// the prefix length. Containers get addresses from it; nothing is
    /// routed out of it. `none`: this host runs no containers (in a
    /// cluster, images are placed on the hosts that do).
    #[arg(long, default_value = mesh_host::container::net::DEFAULT_SUBNET, value_name = "CIDR")]
    pub container_network: String,

    /// Process ids kept for the host: all containers together may have
    /// the host's pid_max (or threads-max, the lower) less this many
    /// tasks, so no tenant's forks can make fork fail for the machine.
    /// Default: a quarter of the host's.
    #[arg(long, value_name = "N")]
    pub reserved_tasks: Option<u64>,

    /// Largest container image a tenant may upload.
    #[arg(long, default_value = "2Gi", value_name = "SIZE")]
    pub max_image: String,

    /// Control API address (port 0 picks a free one).
    #[arg(long, default_value = mesh_host::config::DEFAULT_API_ADDR, value_name = "ADDR")]
    pub api: SocketAddr,

    /// Ingress address for web services (port 0 picks a free one).
    #[arg(long, default_value = mesh_host::config::DEFAULT_HTTP_ADDR, value_name = "ADDR")]
    pub http: SocketAddr,

    /// HTTPS ingress address (off unless given). Without --tls-cert, a
    /// local CA in DIR/tls/ issues certificates; trust DIR/tls/ca.pem.
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,

    /// Certificate chain (PEM) for the HTTPS ingress.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// An ACME server's directory URL (e.g. Let's Encrypt's
    /// https://acme-v02.api.letsencrypt.org/directory): every published
    /// host name outside .localhost gets a certificate from it, renewed on
    /// its own. Needs --https.
    #[arg(long, value_name = "URL", requires = "https")]
    pub acme_directory: Option<String>,

    /// The ACME account's contact address.
    #[arg(long, value_name = "ADDR", requires = "acme_directory")]
    pub acme_email: Option<String>,

    /// A private ACME server's CA certificate (PEM), to trust for its API.
    #[arg(long, value_name = "FILE", requires = "acme_directory")]
    pub acme_ca: Option<PathBuf>,

    /// How names are proved: http-01 (the plain-HTTP listener answers;
    /// port 80 must reach it) or tls-alpn-01 (the HTTPS listener answers;
    /// port 443).
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "http-01",
        requires = "acme_directory"
    )]
    pub acme_challenge: String,

    /// Serve no certificate at all for a name ACME covers until it has
    /// one, instead of the local CA's.
    #[arg(long, requires = "acme_directory")]
    pub acme_only: bool,

    /// Largest request head the ingress accepts (431 beyond), e.g. 64Ki.
    #[arg(long, default_value = "64Ki", value_name = "SIZE")]
    pub max_header_size: String,

    /// Largest request body the ingress accepts (413 beyond), e.g. 16Mi.
    #[arg(long, default_value = "16Mi", value_name = "SIZE")]
    pub max_body_size: String,

    /// Requests that may wait per web instance while all are busy; past
    /// that the ingress answers 503 with Retry-After.
    #[arg(long, default_value_t = mesh_host::config::DEFAULT_QUEUE_PER_INSTANCE, value_name = "N")]
    pub queue_per_instance: usize,

    /// Ingress connections open at once; at the limit new ones wait to be
    /// accepted until one closes.
    #[arg(long, default_value_t = mesh_host::config::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,

    /// Connections one client address may hold open on a listener; more
    /// are closed at once.
    #[arg(long, default_value_t = mesh_host::config::DEFAULT_MAX_CONNECTIONS_PER_CLIENT, value_name = "N")]
    pub max_connections_per_client: usize,

    /// Longest a client may take to send a request head [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// Longest a connection may sit idle between requests [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Platform alias domain: the endpoint label `www` becomes `www.DOMAIN`.
    #[arg(long, default_value = mesh_host::config::DEFAULT_ALIAS, value_name = "DOMAIN")]
    pub alias: String,

    /// Largest component upload, e.g. 64Mi.
    #[arg(long, default_value = "64Mi", value_name = "SIZE")]
    pub max_upload: String,

    /// Live instances (all services together) the engine makes room for.
    #[arg(long, default_value_t = mesh_host::config::DEFAULT_MAX_INSTANCES, value_name = "N")]
    pub max_instances: u32,

    /// Log bytes kept per service; older lines are dropped first.
    #[arg(long, default_value = "8Mi", value_name = "SIZE")]
    pub log_size: String,
}

/// `mesh up`: the daemon in the foreground, logging to stderr.
pub fn up(data_dir: Option<std::path::PathBuf>, args: UpArgs) -> anyhow::Result<()> {
    let parse = |what: &str, text: &str| {
        mesh_host::model::parse_memory(text).map_err(|e| anyhow::anyhow!("{what}: {e}"))
    };
    let duration = |what: &str, text: Option<&str>, default| {
        let Some(text) = text else {
            return Ok(default);
        };
        match mesh_host::cron::parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(anyhow::anyhow!("{what}: must be longer than 0")),
            Err(e) => Err(anyhow::anyhow!("{what}: {e}")),
        }
    };
    let config = mesh_host::DaemonConfig {
        data_dir: data_dir.unwrap_or_else(|| mesh_host::config::DEFAULT_DATA_DIR.into()),
        api_addr: args.api,
        http_addr: args.http,
        https_addr: args.https,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        max_header_bytes: usize::try_from(parse("--max-header-size", &args.max_header_size)?)
            .unwrap_or(usize::MAX),
        max_body_bytes: parse("--max-body-size", &args.max_body_size)?,
        queue_per_instance: args.queue_per_instance,
        max_connections: args.max_connections,
        max_connections_per_client: args.max_connections_per_client,
        header_timeout: duration(
            "--header-timeout",
            args.header_timeout.as_deref(),
            mesh_host::config::DEFAULT_HEADER_TIMEOUT,
        )?,
        idle_timeout: duration(
            "--idle-timeout",
            args.idle_timeout.as_deref(),
            mesh_host::config::DEFAULT_IDLE_TIMEOUT,
        )?,
        alias: args.alias,
        max_upload_bytes: parse("--max-upload", &args.max_upload)?,
        max_instances: args.max_instances,
        log_bytes_per_service: parse("--log-size", &args.log_size)?,
        shared_cache: args.shared_cache,
        container_network: args.container_network,
        reserved_tasks: args.reserved_tasks,
        max_image_bytes: parse("--max-image", &args.max_image)?,
        store: mesh_host::config::StoreConfig::parse(&args.store)
            .map_err(|e| anyhow::anyhow!("--store: {e}"))?,
        node: match args.node {
            Some(name) => {
                mesh_host::model::validate_name("host", &name)
                    .map_err(|e| anyhow::anyhow!("--node: {e}"))?;
                name
            }
            None => mesh_host::config::default_node(),
        },
        advertise: args.advertise,
        sealing_key: args.sealing_key,
        acme: match args.acme_directory {
            Some(directory) => Some(mesh_host::config::AcmeSettings {
                directory,
                email: args.acme_email,
                ca_file: args.acme_ca,
                challenge: mesh_host::config::AcmeChallenge::parse(&args.acme_challenge)
                    .map_err(|e| anyhow::anyhow!("--acme-challenge: {e}"))?,
                only: args.acme_only,
            }),
            None => None,
        },
        registries: mesh_host::config::RegistrySettings {
            ca_files: args.registry_ca,
            insecure: args
                .insecure_registry
                .iter()
                .map(|h| {
                    mesh_host::registry::check_host(h)
                        .map_err(|e| anyhow::anyhow!("--insecure-registry: {e}"))
                })
                .collect::<anyhow::Result<_>>()?,
            private: args
                .private_registry
                .iter()
                .map(|h| {
                    mesh_host::registry::check_host(h)
                        .map_err(|e| anyhow::anyhow!("--private-registry: {e}"))
                })
                .collect::<anyhow::Result<_>>()?,
        },
        ..mesh_host::DaemonConfig::default()
    };
    // wasmtime makes an error each time a store with a component ends, and
    // with RUST_BACKTRACE set each error captures a backtrace: a tenth of
    // the CPU of a fresh-per-request service. Panics still print theirs
    // (they read RUST_BACKTRACE); RUST_LIB_BACKTRACE=1 asks for the rest.
    // Set before the runtime starts a thread.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal who has not said
        // NO_COLOR: a log file or a pipe gets plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(mesh_host::run(config))
}
