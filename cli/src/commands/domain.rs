//! `mesh domain ls`: every published host name that gets its certificate
//! from ACME, and where that stands (issued, when it expires and renews,
//! the last error and the next try).

use chrono::Utc;
use clap::Subcommand;
use mesh_host::acme::records::DomainStatus;

use super::Out;
use crate::client::Client;
use crate::table::{age, Table};

/// `mesh domain ...`.
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// List the environment's published host names and their ACME
    /// certificates (every environment's, for the operator).
    #[command(
        visible_alias = "list",
        after_help = "\
Names under .localhost (and IP addresses) use the local CA and are not
listed. Certificates are ordered when a name is first published (mesh up
--acme-directory URL) and renewed two thirds into their life; a failed
order is tried again after 30 s, then twice as long each time (at most 6 h),
at most 5 times an hour per name and 10 per environment.

Examples:
  mesh domain ls
  mesh domain ls --json"
    )]
    Ls,
}

/// Runs one `mesh domain` command.
pub fn run(client: &Client, out: &Out, command: DomainCommand) -> anyhow::Result<()> {
    match command {
        DomainCommand::Ls => list(client, out),
    }
}

fn list(client: &Client, out: &Out) -> anyhow::Result<()> {
    let domains: Vec<DomainStatus> = client.get("/v1/domains")?;
    out.print(&domains, || {
        let now = Utc::now();
        let when = |t: Option<chrono::DateTime<Utc>>| match t {
            Some(t) if t > now => format!("in {}", age(t - now)),
            Some(t) => format!("{} ago", age(now - t)),
            None => "-".to_string(),
        };
        let mut table = Table::new(&[
            "NAME",
            "ENV",
            "STATE",
            "ISSUED",
            "EXPIRES",
            "RENEWS",
            "LAST ERROR",
        ]);
        for d in &domains {
            let error = match (&d.last_error, d.next_try) {
                (Some(e), Some(next)) => format!("{e} (next try {})", when(Some(next))),
                (Some(e), None) => e.clone(),
                (None, _) => String::new(),
            };
            table.row(vec![
                d.name.clone(),
                d.env.clone(),
                d.state.clone(),
                when(d.issued_at),
                when(d.expires_at),
                when(d.renew_at),
                error,
            ]);
        }
        table.print();
    })
}
