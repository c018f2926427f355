//! Every command and flag of `mesh`, with its help text, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  mesh up                                         run the platform here (data in ./.mesh)
  mesh svc create -n worker --instances 3 -- app.wasm queue
  mesh svc update worker --instances 1
  mesh service ls
  mesh svc logs -n worker --tail 20
  mesh stack deploy app ./build";

/// mesh: host WebAssembly components as services.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// Data directory of the daemon to run (`up`) or to talk to (reads
    /// DIR/daemon.json). Ignored by clients when MESH_API_URL and MESH_TOKEN
    /// are set.
    #[arg(long, global = true, env = "MESH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables and sentences.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mesh daemon in the foreground.
    #[command(after_help = "\
Examples:
  mesh up
  mesh up --data-dir /var/lib/mesh --api 0.0.0.0:7070 --http 0.0.0.0:80 --alias top.widemesh.dev
  mesh up --api 127.0.0.1:0 --http 127.0.0.1:0     pick free ports (see DIR/daemon.json)
  mesh up --https 127.0.0.1:8443                   HTTPS too; trust .mesh/tls/ca.pem")]
    Up(UpArgs),

    /// Create, change, list, watch and delete services.
    #[command(
        subcommand,
        visible_alias = "svc",
        after_help = "\
Examples:
  mesh svc create -n worker --instances 3 -- app.wasm queue
  mesh svc publish -n web --endpoint www
  mesh service ls
  mesh svc logs -n worker -f
  mesh service run -n worker -- app env"
    )]
    Service(ServiceCommand),

    /// Deploy code to stacks, list versions, roll back.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mesh stack deploy app ./build        every .wasm in ./build is the new bundle
  mesh stack versions app
  mesh stack rollback app --to 3"
    )]
    Stack(StackCommand),

    /// Run a component once with this terminal attached (`-n`: a new
    /// instance of a service instead).
    #[command(after_help = "\
Examples:
  mesh run -- app.wasm env                 upload app.wasm and run `app env` once
  mesh run -e GREETING=hi --memory 32Mi -- prog.wasm     like `wasmtime run --env`
  mesh run --files ./site --scratch 16Mi -- tool.wasm   ./site at /, 16 MiB at /tmp
  mesh run -n worker -- app repl           the same as `mesh service run`
  echo hi | mesh run -- app.wasm cat")]
    Run(RunArgs),

    /// Manage environments (tenants) and their outbound policy.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mesh env create acme                     prints acme's token, once
  mesh env ls
  mesh env set outbound deny --env acme"
    )]
    Env(EnvCommand),

    /// The hosts of a cluster: list them, drain one before maintenance.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mesh node ls
  mesh node drain host-b          move its instances to the other hosts
  mesh node resume host-b         it takes instances again"
    )]
    Node(NodeCommand),

    /// Show what happened: instances started, exited, out of memory; cron
    /// runs; deploys; publishes.
    #[command(
        after_help = "Examples:\n  mesh events\n  mesh events -f\n  mesh events --tail 20 --json"
    )]
    Events(EventsArgs),
}

/// `mesh events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the last N events.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Keep printing new events until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `mesh node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the hosts: state (ready, draining, down), address, what each
    /// can run, instances live and room (operator only).
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  mesh node ls\n  mesh node ls --json"
    )]
    Ls,

    /// Move a host's instances to the others and place none there until
    /// it is resumed (operator only; a cluster).
    #[command(after_help = "Examples:\n  mesh node drain host-b")]
    Drain(NodeArgs),

    /// Let a drained host take instances again (operator only).
    #[command(after_help = "Examples:\n  mesh node resume host-b")]
    Resume(NodeArgs),
}

/// A host named on the command line.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The host's name (`mesh up --node`).
    pub name: String,
}

/// `mesh env ...`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment (operator only); prints its API token once.
    #[command(after_help = "\
Nothing in one environment sees or reaches another's services, state or
logs: the same stack-service names in two environments are two services.

A new environment gets default quotas (50 instances, 4Gi of memory limits,
256Mi of code, 20 services) unless flags set others.

Examples:
  mesh env create staging
  mesh env create acme --max-instances 10 --max-memory 1Gi
  MESH_API_URL=http://127.0.0.1:7070 MESH_TOKEN=<its token> mesh service ls")]
    Create(EnvCreateArgs),

    /// List environments (the operator sees all, a tenant its own).
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  mesh env ls\n  mesh env ls --json"
    )]
    Ls,

    /// Change an environment's settings.
    #[command(after_help = "\
outbound: where guests may connect outside the platform, by wasi:http (host
and port) or raw TCP through wasi:sockets (IP literals and localhost).
Intra-DNS names (stack-service) always work.

Examples:
  mesh env set outbound deny
  mesh env set outbound allow
  mesh env set outbound 'api.stripe.com:443,*.example.com,127.0.0.1:6379'
  mesh env set outbound deny --env staging

Only the operator's token changes environment settings.")]
    Set(EnvSetArgs),

    /// Change an environment's settings: outbound policy, reach, domains,
    /// quotas (operator only).
    #[command(after_help = "\
By default guests reach no loopback, link-local or private address (nor the
daemon's own listeners), whatever the outbound policy; --reach opens ranges.

Examples:
  mesh env update acme --max-instances 100 --max-memory 8Gi
  mesh env update acme --domain shop.example.com     acme may publish there
  mesh env update acme --remove-domain shop.example.com
  mesh env update default --reach 127.0.0.1/32,10.0.0.0/8
  mesh env update acme --outbound deny")]
    Update(EnvUpdateArgs),

    /// API tokens of environments.
    #[command(
        subcommand,
        after_help = "Examples:\n  mesh env token rotate acme\n  mesh env token rotate"
    )]
    Token(EnvTokenCommand),
}

/// `mesh env token ...`.
#[derive(Debug, Subcommand)]
pub enum EnvTokenCommand {
    /// A new token for an environment; the old one stops working at once.
    #[command(after_help = "\
The operator may rotate any environment's token, a tenant its own.

Examples:
  mesh env token rotate acme
  mesh env token rotate            the token's own environment")]
    Rotate(EnvTokenArgs),
}

/// `mesh env token rotate`.
#[derive(Debug, Args)]
pub struct EnvTokenArgs {
    /// Environment (default: the token's own).
    pub name: Option<String>,
}

/// `mesh env create`.
#[derive(Debug, Args)]
pub struct EnvCreateArgs {
    /// Environment name (a DNS label).
    pub name: String,
    /// Its settings.
    #[command(flatten)]
    pub settings: EnvSettingsArgs,
}

/// `mesh env update`.
#[derive(Debug, Args)]
pub struct EnvUpdateArgs {
    /// Environment to change.
    pub name: String,
    /// What to change.
    #[command(flatten)]
    pub settings: EnvSettingsArgs,
    /// Take a custom domain back.
    #[arg(long, value_name = "DOMAIN")]
    pub remove_domain: Option<String>,
}

/// Environment settings, as flags.
#[derive(Debug, Args)]
pub struct EnvSettingsArgs {
    /// Most instances of all its services together.
    #[arg(long, value_name = "N")]
    pub max_instances: Option<u32>,
    /// Most memory, all instances' limits added up (e.g. 8Gi).
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Most code its stacks keep (e.g. 256Mi).
    #[arg(long, value_name = "SIZE")]
    pub max_code: Option<String>,
    /// Most services.
    #[arg(long, value_name = "N")]
    pub max_services: Option<u32>,
    /// Most tasks (processes and threads) of all its containers together.
    #[arg(long, value_name = "N")]
    pub max_tasks: Option<u32>,
    /// Outbound policy: allow, deny, or host[:port] patterns.
    #[arg(long, value_name = "POLICY")]
    pub outbound: Option<String>,
    /// Non-public ranges its guests may reach (CIDRs, or `none`).
    #[arg(long, value_name = "CIDRS")]
    pub reach: Option<String>,
    /// Assign a custom domain it may publish on (and its subdomains).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
}

/// An environment name.
#[derive(Debug, Args)]
pub struct EnvNameArgs {
    /// Environment name (a DNS label).
    pub name: String,
}

/// `mesh env set`.
#[derive(Debug, Args)]
pub struct EnvSetArgs {
    /// Setting: `outbound`.
    #[arg(value_parser = ["outbound"])]
    pub setting: String,
    /// `allow`, `deny`, or host[:port] patterns separated by commas.
    pub value: String,
    /// Environment to change (default: the token's own).
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
}

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

/// The stack a command acts on.
#[derive(Debug, Args)]
pub struct StackArg {
    /// Stack of the service.
    #[arg(long, env = "MESH_STACK", default_value = mesh_host::model::DEFAULT_STACK)]
    pub stack: String,
}

/// A service named either as `NAME` or with `-n NAME`.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Service name.
    #[arg(value_name = "NAME")]
    pub positional: Option<String>,

    /// Service name (same as NAME).
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub flag: Option<String>,
}

impl NameArg {
    /// The name, however it was given.
    pub fn get(&self) -> anyhow::Result<&str> {
        match (&self.positional, &self.flag) {
            (Some(a), Some(b)) if a != b => {
                anyhow::bail!("two different service names given: {a} and {b}")
            }
            (Some(name), _) | (None, Some(name)) => Ok(name),
            (None, None) => anyhow::bail!("which service? give its name: NAME or -n NAME"),
        }
    }
}

/// `mesh service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service and start its instances.
    #[command(after_help = "\
The first word of the command names a component of the stack's code. A path
to a local .wasm file adds that file to the stack as a component named by its
file stem (app.wasm is `app`), then runs it.

The memory limit counts all of an instance's linear memories together.

Examples:
  mesh svc create -n worker --instances 3 -- app.wasm queue
  mesh svc create -n mailer --memory 64Mi --env FROM=ops@example.com -- app send-emails
  mesh svc create --stack finance -n payments -- payments.wasm
  mesh svc create -n emailsender --schedule \"@hourly\" -- app.wasm send-emails
  mesh svc create -n report --schedule \"5 4 * * mon-fri\" --timezone Europe/Berlin --timeout 10m -- app report
  mesh svc create -n legacy -- prog.wasm                 a wasip1 module: as a worker, or CGI when published
  mesh svc create -n thumbs --scratch 64Mi -- app thumbs  a private 64 MiB /tmp per instance

Web services reuse instances; a component that cannot answer a second
request on one instance (componentize-js's fetch event) is detected and
served fresh per request, shown under SERVING in `mesh svc ls`.

Schedules (UTC unless --timezone): 5-field cron `MIN HOUR DOM MON DOW` with
lists, ranges, steps and names (`*/15 9-17 * * mon-fri`); when both day
fields are restricted either one matching is enough (Vixie cron); macros
@yearly @monthly @weekly @daily @hourly; `@every 2m` (90s, 1h30m, ...,
aligned to the Unix epoch). Firings missed while the daemon is down are not
replayed.")]
    Create(CreateArgs),

    /// Change a service's command, instances, memory or environment.
    #[command(after_help = "\
Examples:
  mesh svc update worker --command \"app queue\"
  mesh svc update web --instances 5
  mesh svc update worker --memory 256Mi --env LOG_LEVEL=debug --unset-env OLD
  mesh svc update emailsender --schedule \"@every 30m\"
  mesh svc update emailsender --schedule none        (a worker again)")]
    Update(UpdateArgs),

    /// Delete a service and stop its instances.
    #[command(
        after_help = "Examples:\n  mesh svc delete worker\n  mesh svc delete -n payments --stack finance"
    )]
    Delete(NamedArgs),

    /// List services and every instance: state, restarts, exit code, message.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  mesh service ls\n  mesh service ls --stack finance --json"
    )]
    Ls(LsArgs),

    /// Show a service's output (stdout and stderr of every instance).
    #[command(
        after_help = "Examples:\n  mesh svc logs -n worker\n  mesh svc logs worker --tail 50 --instance worker.2\n  mesh svc logs -n web -f --since 10m"
    )]
    Logs(LogsArgs),

    /// Publish a service on an endpoint: it becomes a web service.
    #[command(after_help = "\
The service's component must export wasi:http/incoming-handler. Requests
match on Host (any port) and the longest path prefix; the instances serve
one request at a time each and are reused.

Examples:
  mesh svc publish -n web --endpoint www                    http://www.localhost
  mesh svc publish -n worker --endpoint https://top.widemesh.dev
  mesh service publish --stack myblog --n web --endpoint www --path /blog")]
    Publish(PublishArgs),

    /// Remove an endpoint; without endpoints a web service is a worker again.
    #[command(after_help = "\
Examples:
  mesh svc unpublish -n worker --endpoint https://top.widemesh.dev
  mesh svc unpublish --stack myblog -n web --endpoint www --path /blog")]
    Unpublish(PublishArgs),

    /// Start one new instance of a service with this terminal attached; the
    /// CLI exits with the guest's exit code.
    #[command(after_help = "\
The instance runs the service's stack code with its env and memory limit,
and shows in `mesh service ls` while it runs. Without `-- ARGV` it runs the
service's own command. When stdin is a terminal it goes raw for the run and
Ctrl-C stops the remote instance.

Examples:
  mesh service run -n web -- app env
  mesh service run -n worker -- app repl
  echo hello | mesh svc run -n worker -- app cat")]
    Run(RunArgs),

    /// Restart a service's instances: a worker's one at a time, each up
    /// again before the next stops; a web service's all at once.
    #[command(after_help = "\
A web service keeps serving while it restarts: fresh instances take new
requests at once, and requests in flight finish on the old ones. Cron jobs
have nothing to restart (each run is a fresh instance): run one now with
`mesh svc trigger`.

Examples:
  mesh svc restart -n worker
  mesh svc restart web --stack shop")]
    Restart(NamedArgs),

    /// Run a cron job now (recorded as a manual run).
    #[command(
        after_help = "Examples:\n  mesh svc trigger -n emailsender\n  mesh svc trigger report --stack ops"
    )]
    Trigger(NamedArgs),

    /// Show a cron job's kept runs (the last 50), newest first.
    #[command(
        after_help = "Examples:\n  mesh svc runs -n emailsender\n  mesh svc runs emailsender --json"
    )]
    Runs(NamedArgs),
}

/// `mesh svc create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name (a DNS label: lowercase letters, digits, hyphens).
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub stack: StackArg,

    /// Cron schedule (`5 4 * * *`, `@hourly`, `@every 2m`): makes the
    /// service a cron job, whose every firing runs a fresh instance.
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,

    /// Time zone the schedule is read in (IANA name); default UTC.
    #[arg(long, value_name = "AREA/CITY")]
    pub timezone: Option<String>,

    /// Stop a cron run that takes longer than this, e.g. 30s or 5m.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// CPU time one request may use before it is stopped (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub cpu_limit: Option<String>,

    /// Instances to keep running.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub instances: Option<i64>,

    /// Memory limit of each instance (all its memories together), e.g. 64Mi.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Environment variable for the guest, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Web services: serve every request from a fresh store instead of
    /// reusing instances (strongest isolation, a little slower). Without
    /// it, instances are reused until the code shows it cannot be.
    #[arg(long, conflicts_with = "reuse_instances")]
    pub fresh_per_request: bool,

    /// Web services: keep reusing instances even when a reused instance
    /// fails in a way that suggests the code cannot be reused.
    #[arg(long)]
    pub reuse_instances: bool,

    /// A private writable directory at /tmp for each instance, at most
    /// this large (e.g. 64Mi), wiped when the instance ends.
    #[arg(long, value_name = "SIZE")]
    pub scratch: Option<String>,

    /// The command: a component name or a .wasm path, then its arguments.
    /// The stack image the command runs in, when the stack has several
    /// and the command does not start with one's name.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,

    /// Containers: how long an instance has after SIGTERM before SIGKILL
    /// (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,

    #[arg(last = true, required = true, value_name = "ARGV")]
    pub argv: Vec<String>,
}

/// `mesh svc update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,

    /// New command, as one string: "app queue" (a .wasm path as the first
    /// word adds that file to the stack).
    #[arg(long, value_name = "ARGV")]
    pub command: Option<String>,

    /// Instances to keep running.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub instances: Option<i64>,

    /// Memory limit of each instance, e.g. 256Mi.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Cron schedule; `none` makes a cron job a worker again.
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,

    /// Time zone of the schedule (IANA name, or UTC).
    #[arg(long, value_name = "AREA/CITY")]
    pub timezone: Option<String>,

    /// Cron run timeout, e.g. 30s; `none` removes it.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// CPU time one request may use, e.g. 2s; `default` for 10s.
    #[arg(long, value_name = "DURATION")]
    pub cpu_limit: Option<String>,

    /// Set an environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,

    /// Web services: a fresh store per request (true) or reused instances (false).
    #[arg(long, value_name = "BOOL")]
    pub fresh_per_request: Option<bool>,

    /// Web services: keep reusing instances whatever fails (true), or
    /// switch to fresh per request when the code cannot be reused (false).
    #[arg(long, value_name = "BOOL")]
    pub reuse_instances: Option<bool>,

    /// Scratch directory at /tmp for each instance, e.g. 64Mi; `none`
    /// removes it.
    #[arg(long, value_name = "SIZE")]
    pub scratch: Option<String>,

    /// The stack image the command runs in; `none` to clear.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,

    /// Containers: how long an instance has after SIGTERM before SIGKILL;
    /// `default` for 10s.
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,
}

/// `mesh service run` and `mesh run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Service name.
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub stack: StackArg,

    /// Environment variable, KEY=VALUE (repeatable; running a .wasm file).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Memory limit, e.g. 64Mi (running a .wasm file).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// A folder the guest sees read-only at / (running a .wasm file; a
    /// service's run sees its stack's files).
    #[arg(long, value_name = "DIR")]
    pub files: Option<PathBuf>,

    /// A private writable directory at /tmp, at most this large.
    #[arg(long, value_name = "SIZE")]
    pub scratch: Option<String>,

    /// The command: a component name (or, without -n, a .wasm path) and
    /// its arguments.
    #[arg(last = true, value_name = "ARGV")]
    pub argv: Vec<String>,
}

/// `mesh svc publish` and `unpublish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,

    /// A label relative to the platform alias (`www` is www.ALIAS) or a URL
    /// (`https://top.example.com`).
    #[arg(long, value_name = "URL|LABEL")]
    pub endpoint: String,

    /// Path prefix: requests for it and below it reach the service, which
    /// sees the original path.
    #[arg(long, value_name = "/PATH")]
    pub path: Option<String>,
}

/// A command that names one service.
#[derive(Debug, Args)]
pub struct NamedArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,
}

/// `mesh service ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only this stack.
    #[arg(long, value_name = "STACK")]
    pub stack: Option<String>,

    /// Only this service.
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub name: Option<String>,
}

/// `mesh svc logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,

    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,

    /// Only this instance, e.g. worker.2.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,

    /// Only lines from this long ago (`10m`, `1h30m`) or since a time
    /// (RFC 3339).
    #[arg(long, value_name = "AGE|TIME")]
    pub since: Option<String>,

    /// Keep printing new lines as they are written (across instance
    /// restarts) until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `mesh stack ...`.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy code: a directory of .wasm files (the whole bundle) or one
    /// .wasm file (replaces that component only).
    #[command(after_help = "\
A .wasm file may be a component (wasm32-wasip2, any toolchain) or a wasip1
core module. A directory's files/ folder is deployed with its code: every
instance sees it read-only at / (at most 64 MiB; no symlinks out of it).
A new version is made only when some component's digest changed, and only
the services whose component changed restart, one instance at a time.

Examples:
  mesh stack deploy app ./build        ./build/*.wasm, and ./build/files/ if there
  mesh stack deploy finance payments.wasm")]
    Deploy(DeployArgs),

    /// List a stack's kept versions, newest first.
    #[command(after_help = "Examples:\n  mesh stack versions app")]
    Versions(StackNameArgs),

    /// Go back to an earlier version (the previous one by default).
    #[command(
        after_help = "Examples:\n  mesh stack rollback app\n  mesh stack rollback app --to 3"
    )]
    Rollback(RollbackArgs),

    /// List stacks.
    #[command(visible_alias = "list", after_help = "Examples:\n  mesh stack ls")]
    Ls,
}

/// `mesh stack deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Stack to deploy to.
    pub stack: String,
    /// A directory of .wasm files (and image tars), one .wasm file, or one
    /// container image: an OCI image layout directory, an oci-archive tar
    /// or a `docker save` tar.
    pub path: PathBuf,
    /// The component name of an image (default: its file or folder name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// A command that names one stack.
#[derive(Debug, Args)]
pub struct StackNameArgs {
    /// Stack name.
    pub stack: String,
}

/// `mesh stack rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Stack name.
    pub stack: String,
    /// Version number to go back to.
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
}
