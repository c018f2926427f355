//! `mesh node ...`: the hosts of a cluster.

use chrono::Utc;
use clap::{Args, Subcommand};
use mesh_host::api::wire::NodeView;

use super::Out;
use crate::client::Client;
use crate::table::{age, size, Table};

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

/// Runs one `mesh node` command.
pub fn run(client: &Client, out: &Out, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls => nodes(client, out),
        NodeCommand::Drain(args) => node_drain(client, out, &args.name, true),
        NodeCommand::Resume(args) => node_drain(client, out, &args.name, false),
    }
}

/// A host named on the command line.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The host's name (`mesh up --node`).
    pub name: String,
}

/// `mesh node ls`.
pub fn nodes(client: &Client, out: &Out) -> anyhow::Result<()> {
    let nodes: Vec<NodeView> = client.get("/v1/nodes")?;
    out.print(&nodes, || {
        let mut table = Table::new(&[
            "NODE",
            "STATE",
            "ADDRESS",
            "RUNS",
            "INSTANCES",
            "MEMORY",
            "UP",
        ]);
        let now = Utc::now();
        for n in &nodes {
            table.row(vec![
                n.name.clone(),
                n.state.as_str().to_string(),
                n.address.clone(),
                n.runs.join(","),
                format!("{}/{}", n.used_instances, n.capacity_instances),
                size(n.capacity_memory_bytes),
                n.started_at.map_or("-".to_string(), |at| age(now - at)),
            ]);
        }
        table.print();
    })
}

/// `mesh node drain NAME` and `mesh node resume NAME`.
pub fn node_drain(client: &Client, out: &Out, name: &str, drain: bool) -> anyhow::Result<()> {
    let action = if drain { "drain" } else { "resume" };
    let node: NodeView = client.post(&format!("/v1/nodes/{name}/{action}"), &())?;
    out.print(&node, || {
        if drain {
            println!("Draining {name}: its instances move to the other hosts");
        } else {
            println!("Resumed {name}: it takes instances again");
        }
    })
}
