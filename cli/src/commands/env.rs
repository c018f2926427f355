//! `mesh env ...`: environments (tenants), their settings, quotas and
//! tokens.

use chrono::Utc;
use clap::{Args, Subcommand};
use mesh_host::api::wire::{CreateEnv, EnvCreated, EnvView, TokenRotated, UpdateEnv};

use super::{encode, Out};
use crate::client::Client;
use crate::table::{age, Table};

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

/// Runs one `mesh env` command.
pub fn run(client: &Client, out: &Out, command: EnvCommand) -> anyhow::Result<()> {
    match command {
        EnvCommand::Create(args) => env_create(client, out, args),
        EnvCommand::Ls => env_list(client, out),
        EnvCommand::Set(args) => env_set(client, out, args),
        EnvCommand::Update(args) => env_update(client, out, args),
        EnvCommand::Token(EnvTokenCommand::Rotate(args)) => env_token_rotate(client, out, args),
    }
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

/// `mesh env create`.
pub fn env_create(client: &Client, out: &Out, args: EnvCreateArgs) -> anyhow::Result<()> {
    let request = CreateEnv {
        name: args.name,
        settings: settings(args.settings, None),
    };
    let created: EnvCreated = client.post("/v1/envs", &request)?;
    out.print(&created, || {
        println!(
            "Created environment {} (endpoint labels under {}).",
            created.env.name, created.env.alias
        );
        println!("Its API token, shown only now: {}", created.token);
        println!(
            "Use it with: MESH_API_URL={} MESH_TOKEN={} mesh service ls",
            client.base(),
            created.token
        );
    })
}

/// `mesh env ls`.
pub fn env_list(client: &Client, out: &Out) -> anyhow::Result<()> {
    let envs: Vec<EnvView> = client.get("/v1/envs")?;
    out.print(&envs, || {
        let mut table = Table::new(&[
            "ENVIRONMENT",
            "ALIAS",
            "OUTBOUND",
            "SERVICES",
            "INSTANCES",
            "MEMORY",
            "CODE",
            "CREATED",
        ]);
        let now = Utc::now();
        for e in &envs {
            let q = &e.quotas;
            table.row(vec![
                e.name.clone(),
                e.alias.clone(),
                e.outbound.clone(),
                format!("{}/{}", q.services, quota_count(q.max_services)),
                format!("{}/{}", q.instances, quota_count(q.max_instances)),
                format!(
                    "{}/{}",
                    quota_bytes(q.memory_bytes),
                    quota_bytes(q.max_memory_bytes)
                ),
                format!(
                    "{}/{}",
                    quota_bytes(q.code_bytes),
                    quota_bytes(q.max_code_bytes)
                ),
                format!("{} ago", age(now - e.created_at)),
            ]);
        }
        table.print();
    })
}

/// `mesh env set outbound ...`.
pub fn env_set(client: &Client, out: &Out, args: EnvSetArgs) -> anyhow::Result<()> {
    let name = match args.env {
        Some(name) => name,
        None => own_env(client)?,
    };
    let request = UpdateEnv {
        outbound: Some(args.value),
        ..UpdateEnv::default()
    };
    let view: EnvView = client.patch(&format!("/v1/envs/{}", encode(&name)), &request)?;
    out.print(&view, || {
        println!("Environment {}: outbound {}", view.name, view.outbound)
    })
}

/// A count quota, `-` when unlimited.
fn quota_count(n: u32) -> String {
    if n == u32::MAX {
        "-".to_string()
    } else {
        n.to_string()
    }
}

/// A size quota or use, `-` when unlimited.
fn quota_bytes(n: u64) -> String {
    if n == u64::MAX {
        "-".to_string()
    } else {
        crate::table::size(n)
    }
}

/// `mesh env update`.
pub fn env_update(client: &Client, out: &Out, args: EnvUpdateArgs) -> anyhow::Result<()> {
    let request = settings(args.settings, args.remove_domain);
    let view: EnvView = client.patch(&format!("/v1/envs/{}", encode(&args.name)), &request)?;
    out.print(&view, || {
        let q = &view.quotas;
        println!(
            "Environment {}: outbound {}; reach {}; domains {}; {} services, {} instances at most",
            view.name,
            view.outbound,
            if view.reach.is_empty() {
                "none".to_string()
            } else {
                view.reach.join(",")
            },
            if view.domains.is_empty() {
                "none".to_string()
            } else {
                view.domains.join(",")
            },
            quota_count(q.max_services),
            quota_count(q.max_instances)
        )
    })
}

/// `mesh env token rotate`.
pub fn env_token_rotate(client: &Client, out: &Out, args: EnvTokenArgs) -> anyhow::Result<()> {
    let name = match args.name {
        Some(name) => name,
        None => own_env(client)?,
    };
    let rotated: TokenRotated = client.post(
        &format!("/v1/envs/{}/token", encode(&name)),
        &serde_json::json!({}),
    )?;
    out.print(&rotated, || {
        println!(
            "New token for environment {} (the old one no longer works), shown only now: {}",
            rotated.name, rotated.token
        )
    })
}

/// The environment the token acts on: a tenant sees only its own.
fn own_env(client: &Client) -> anyhow::Result<String> {
    let envs: Vec<EnvView> = client.get("/v1/envs")?;
    Ok(if envs.len() == 1 {
        envs[0].name.clone()
    } else {
        mesh_host::model::DEFAULT_ENVIRONMENT.to_string()
    })
}

fn settings(args: EnvSettingsArgs, remove_domain: Option<String>) -> UpdateEnv {
    UpdateEnv {
        outbound: args.outbound,
        reach: args.reach,
        add_domain: args.domain,
        remove_domain,
        max_instances: args.max_instances,
        max_memory: args.max_memory,
        max_code: args.max_code,
        max_services: args.max_services,
        max_tasks: args.max_tasks,
    }
}
