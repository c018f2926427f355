//! `mesh`: the command-line client of the mesh control API, and `mesh up`,
//! which runs the daemon. The top-level command is here; each noun's
//! arguments and what it does live in `commands/` (one file per noun), API
//! calls in `client`, tables in `table`.

mod attach;
mod client;
mod commands;
mod errors;
mod progress;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::env::EnvCommand;
use commands::logs::EventsArgs;
use commands::node::NodeCommand;
use commands::registry::RegistryCommand;
use commands::run::RunArgs;
use commands::stack::StackCommand;
use commands::svc::ServiceCommand;
use commands::up::UpArgs;
use commands::Out;

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
    Up(Box<UpArgs>),

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

    /// Logins for OCI registries, used when code is deployed from them.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mesh registry login ghcr.io --username octocat --password-stdin < token.txt
  mesh registry ls
  mesh registry logout ghcr.io"
    )]
    Registry(RegistryCommand),

    /// Published host names and their certificates from ACME.
    #[command(
        subcommand,
        after_help = "Examples:\n  mesh domain ls\n  mesh domain ls --json"
    )]
    Domain(commands::domain::DomainCommand),

    /// Show what happened: instances started, exited, out of memory; cron
    /// runs; deploys; publishes.
    #[command(
        after_help = "Examples:\n  mesh events\n  mesh events -f\n  mesh events --tail 20 --json"
    )]
    Events(EventsArgs),
}

fn main() -> ExitCode {
    // The daemon starts its container shims from its own binary.
    mesh_host::container::shim::run_if_shim();
    quiet_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return errors::usage_error(e),
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errors::say(json, &errors::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs the command the line names.
fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Out { json: cli.json };
    if let Command::Up(args) = cli.command {
        return commands::up::up(cli.data_dir, *args);
    }
    let client = client::Client::discover(cli.data_dir.as_deref())?;
    match cli.command {
        Command::Up(_) => unreachable!("handled above"),
        Command::Service(command) => commands::svc::run(&client, &out, command),
        Command::Events(args) => commands::logs::events(&client, &out, args),
        Command::Run(args) => commands::run::run(&client, args),
        Command::Env(command) => commands::env::run(&client, &out, command),
        Command::Domain(command) => commands::domain::run(&client, &out, command),
        Command::Node(command) => commands::node::run(&client, &out, command),
        Command::Registry(command) => commands::registry::run(&client, &out, command),
        Command::Stack(command) => commands::stack::run(&client, &out, command),
    }
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
