//! `mesh`: the command-line client of the mesh control API, and `mesh up`,
//! which runs the daemon. Parsing lives in `args`, API calls in `client`,
//! what each command does in `commands`, tables in `table`.

mod args;
mod attach;
mod client;
mod commands;
mod table;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use args::{
    Cli, Command, EnvCommand, EnvTokenCommand, NodeCommand, ServiceCommand, StackCommand, UpArgs,
};
use commands::Out;

fn main() -> ExitCode {
    // The daemon starts its container shims from its own binary.
    mesh_host::container::shim::run_if_shim();
    quiet_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Out { json: cli.json };
    let data_dir = cli.data_dir.as_deref();
    match cli.command {
        Command::Up(args) => up(cli.data_dir.clone(), args),
        Command::Service(command) => {
            let client = client::Client::discover(data_dir)?;
            match command {
                ServiceCommand::Create(args) => commands::create(&client, &out, args),
                ServiceCommand::Update(args) => commands::update(&client, &out, args),
                ServiceCommand::Delete(args) => commands::delete(&client, &out, args),
                ServiceCommand::Ls(args) => commands::list(&client, &out, args),
                ServiceCommand::Logs(args) => commands::logs(&client, &out, args),
                ServiceCommand::Trigger(args) => commands::trigger(&client, &out, args),
                ServiceCommand::Restart(args) => commands::restart(&client, &out, args),
                ServiceCommand::Run(args) => commands::run(&client, args),
                ServiceCommand::Publish(args) => commands::publish(&client, &out, args, true),
                ServiceCommand::Unpublish(args) => commands::publish(&client, &out, args, false),
                ServiceCommand::Runs(args) => commands::runs(&client, &out, args),
            }
        }
        Command::Events(args) => {
            let client = client::Client::discover(data_dir)?;
            commands::events(&client, &out, args)
        }
        Command::Run(args) => {
            let client = client::Client::discover(data_dir)?;
            commands::run(&client, args)
        }
        Command::Env(command) => {
            let client = client::Client::discover(data_dir)?;
            match command {
                EnvCommand::Create(args) => commands::env_create(&client, &out, args),
                EnvCommand::Ls => commands::env_list(&client, &out),
                EnvCommand::Set(args) => commands::env_set(&client, &out, args),
                EnvCommand::Update(args) => commands::env_update(&client, &out, args),
                EnvCommand::Token(EnvTokenCommand::Rotate(args)) => {
                    commands::env_token_rotate(&client, &out, args)
                }
            }
        }
        Command::Node(command) => {
            let client = client::Client::discover(data_dir)?;
            match command {
                NodeCommand::Ls => commands::nodes(&client, &out),
                NodeCommand::Drain(args) => commands::node_drain(&client, &out, &args.name, true),
                NodeCommand::Resume(args) => commands::node_drain(&client, &out, &args.name, false),
            }
        }
        Command::Stack(command) => {
            let client = client::Client::discover(data_dir)?;
            match command {
                StackCommand::Deploy(args) => commands::deploy(&client, &out, args),
                StackCommand::Versions(args) => commands::versions(&client, &out, args),
                StackCommand::Rollback(args) => commands::rollback(&client, &out, args),
                StackCommand::Ls => commands::stacks(&client, &out),
            }
        }
    }
}

/// The machine's hostname as a host name, or `local`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim().to_ascii_lowercase();
    match mesh_host::model::validate_name("host", &name) {
        Ok(()) => name,
        Err(_) => mesh_host::config::DEFAULT_NODE.to_string(),
    }
}

/// `mesh up`: the daemon in the foreground, logging to stderr.
fn up(data_dir: Option<std::path::PathBuf>, args: UpArgs) -> anyhow::Result<()> {
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
            None => hostname(),
        },
        advertise: args.advertise,
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
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(mesh_host::run(config))
}

/// Help and version go to stdout with success; every other parse error is
/// one line on stderr and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see `mesh --help`)");
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.lines().collect::<Vec<_>>().join(" ")
}

/// Like other Unix tools, end quietly when the reader of our output goes
/// away (`mesh events | head -1`). SIGPIPE stays ignored (a closed API
/// socket must be an error, not a silent death), so a print to a closed
/// pipe panics in `println!`; that one panic exits like SIGPIPE would.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
