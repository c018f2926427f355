//! `mesh registry ...`: the environment's logins for OCI registries, used
//! when the daemon pulls code from them.

use std::io::Read as _;

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::{Args, Subcommand};
use mesh_host::api::wire::{RegistryLoginRequest, RegistryLoginView};

use super::Out;
use crate::client::Client;
use crate::table::{age, Table};

/// `mesh registry ...`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Keep a login for a registry: pulls by this environment from HOST
    /// use it (the password is read from stdin, sealed by the daemon and
    /// never shown again).
    #[command(after_help = "\
Examples:
  echo \"$GHCR_TOKEN\" | mesh registry login ghcr.io --username octocat --password-stdin
  mesh registry login 127.0.0.1:5000 --username alice --password-stdin < password.txt")]
    Login(LoginArgs),

    /// List the environment's registry logins (never their passwords).
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  mesh registry ls\n  mesh registry ls --json"
    )]
    Ls,

    /// Forget the environment's login for a registry.
    #[command(after_help = "Examples:\n  mesh registry logout ghcr.io")]
    Logout(HostArgs),
}

/// `mesh registry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, `HOST[:PORT]` (e.g. ghcr.io, 127.0.0.1:5000).
    pub host: String,
    /// The user name.
    #[arg(long, short = 'u')]
    pub username: String,
    /// Read the password (or access token) from stdin; required, so it
    /// never shows in the shell's history or the process list.
    #[arg(long)]
    pub password_stdin: bool,
}

/// A registry named on the command line.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// The registry, `HOST[:PORT]`.
    pub host: String,
}

/// Runs one `mesh registry` command.
pub fn run(client: &Client, out: &Out, command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Login(args) => login(client, out, args),
        RegistryCommand::Ls => list(client, out),
        RegistryCommand::Logout(args) => logout(client, out, &args.host),
    }
}

fn login(client: &Client, out: &Out, args: LoginArgs) -> anyhow::Result<()> {
    if !args.password_stdin {
        bail!("give the password on stdin with --password-stdin (e.g. `echo \"$TOKEN\" | mesh registry login {} --username {} --password-stdin`)", args.host, args.username);
    }
    let mut password = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    // One trailing newline is the shell's, not the password's.
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password)
        .to_string();
    if password.is_empty() {
        bail!("stdin held no password");
    }
    let request = RegistryLoginRequest {
        username: args.username,
        password,
    };
    let view: RegistryLoginView = client.put(&format!("/v1/registries/{}", args.host), &request)?;
    out.print(&view, || {
        println!(
            "Logged in to {} as {}: this environment's pulls from it use this login",
            view.host, view.username
        )
    })
}

fn list(client: &Client, out: &Out) -> anyhow::Result<()> {
    let logins: Vec<RegistryLoginView> = client.get("/v1/registries")?;
    out.print(&logins, || {
        if logins.is_empty() {
            println!("No registry logins: pulls are anonymous. Add one with `mesh registry login HOST --username U --password-stdin`.");
            return;
        }
        let mut table = Table::new(&["REGISTRY", "USER", "SINCE"]);
        let now = Utc::now();
        for l in &logins {
            table.row(vec![l.host.clone(), l.username.clone(), age(now - l.created_at)]);
        }
        table.print();
    })
}

fn logout(client: &Client, out: &Out, host: &str) -> anyhow::Result<()> {
    let view: RegistryLoginView = client.delete(&format!("/v1/registries/{host}"))?;
    out.print(&view, || {
        println!(
            "Logged out of {}: pulls from it are anonymous again",
            view.host
        )
    })
}
