//! `mesh run` and `mesh service run`: one instance with this terminal
//! attached.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use super::code::{upload, upload_files};
use super::{encode, service_path, StackArg};
use crate::client::Client;

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

/// `mesh service run` (with `-n`) and `mesh run` (a .wasm file, once).
pub fn run(client: &Client, args: RunArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(scratch) = &args.scratch {
        query.push(format!("scratch={}", encode(scratch)));
    }
    let path = match &args.name {
        Some(name) => {
            if !args.env.is_empty() || args.memory.is_some() || args.files.is_some() {
                bail!("--env, --memory and --files are for running a .wasm file; a service's run has the service's settings and its stack's files");
            }
            if !args.argv.is_empty() {
                query.push(format!(
                    "command={}",
                    encode(&serde_json::to_string(&args.argv)?)
                ));
            }
            format!(
                "{}/run?{}",
                service_path(&args.stack.stack, name),
                query.join("&")
            )
        }
        None => {
            let Some(first) = args.argv.first() else {
                bail!("give a service with -n NAME, or a .wasm file to run: `mesh run -- app.wasm ARGS`");
            };
            if !first.ends_with(".wasm") {
                bail!("without -n, the command must start with a .wasm file (got `{first}`)");
            }
            let component = upload(client, Path::new(first))?;
            if let Some(dir) = &args.files {
                let files = upload_files(client, dir)?;
                query.push(format!("files={}", encode(files.as_str())));
            }
            if !args.env.is_empty() {
                query.push(format!(
                    "env={}",
                    encode(&serde_json::to_string(&args.env)?)
                ));
            }
            if let Some(memory) = &args.memory {
                query.push(format!("memory={}", encode(memory)));
            }
            let mut argv = args.argv.clone();
            argv[0] = component.name;
            query.push(format!("digest={}", encode(component.digest.as_str())));
            query.push(format!(
                "command={}",
                encode(&serde_json::to_string(&argv)?)
            ));
            format!("/v1/run?{}", query.join("&"))
        }
    };
    crate::attach::run(client, &path)
}
