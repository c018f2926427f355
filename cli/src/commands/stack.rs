//! `mesh stack ...`: deploy code, list versions, roll back, list stacks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use chrono::Utc;
use clap::{Args, Subcommand};
use mesh_host::api::wire::{DeployRequest, DeployResult, RollbackRequest, StackView, VersionView};
use mesh_host::model::FILES_ENTRY;

use super::code::{bundle_files, component_of, is_image, upload, upload_files, upload_image};
use super::rollout::WaitArg;
use super::{encode, Out};
use crate::client::Client;
use crate::table::{age, Table};

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

Code can also come from an OCI registry: a reference HOST[:PORT]/REPO:TAG
or HOST/REPO@sha256:DIGEST (a word that names no file or directory, whose
first part has a dot or a port) is pulled by the daemon, with this
environment's login for that registry (`mesh registry login`). The tag is
resolved once, now: the version keeps the digest, and rollbacks, restarts
and other hosts use that digest. A WebAssembly component artifact (as wkg
and wash push it) becomes a component; an image becomes an image.

Examples:
  mesh stack deploy app ./build        ./build/*.wasm, and ./build/files/ if there
  mesh stack deploy finance payments.wasm
  mesh stack deploy app ghcr.io/acme/app:1.4          component `app`
  mesh stack deploy boxes 127.0.0.1:5000/busybox:1.36 --name busybox")]
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

/// Runs one `mesh stack` command.
pub fn run(client: &Client, out: &Out, command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Deploy(args) => deploy(client, out, args),
        StackCommand::Versions(args) => versions(client, out, args),
        StackCommand::Rollback(args) => rollback(client, out, args),
        StackCommand::Ls => stacks(client, out),
    }
}

/// `mesh stack deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Stack to deploy to.
    pub stack: String,
    /// A directory of .wasm files (and image tars), one .wasm file, one
    /// container image (an OCI image layout directory, an oci-archive tar
    /// or a `docker save` tar), or a registry reference.
    pub path: PathBuf,
    /// The component name of an image or a reference (default: its file
    /// or folder name, or the repository's last part).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub wait: WaitArg,
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

    #[command(flatten)]
    pub wait: WaitArg,
}

/// `mesh stack deploy`.
pub fn deploy(client: &Client, out: &Out, args: DeployArgs) -> anyhow::Result<()> {
    let text = args.path.to_string_lossy().to_string();
    if !args.path.exists() && mesh_host::registry::is_reference(&text) {
        let result = deploy_reference(client, out, &args.stack, &text, args.name)?;
        return wait_unless(client, &args.wait, &result);
    }
    let mut components = BTreeMap::new();
    let replace = if is_image(&args.path) {
        // One image: a component added to (or replaced in) the bundle.
        let image = upload_image(client, &args.path, args.name.as_deref())?;
        components.insert(image.name, image.digest);
        false
    } else {
        if args.name.is_some() {
            bail!("--name names an image; {} is not one", args.path.display());
        }
        let (files, replace) = bundle_files(&args.path)?;
        for file in files {
            let component = if is_image(&file) {
                upload_image(client, &file, None)?
            } else {
                upload(client, &file)?
            };
            components.insert(component.name, component.digest);
        }
        replace
    };
    // A directory's `files/` folder is deployed with its code.
    let folder = args.path.join("files");
    if replace && folder.is_dir() {
        components.insert(FILES_ENTRY.to_string(), upload_files(client, &folder)?);
    }
    let request = DeployRequest {
        components,
        replace,
        pull: BTreeMap::new(),
    };
    let result: DeployResult = client.post(
        &format!("/v1/stacks/{}/deploy", encode(&args.stack)),
        &request,
    )?;
    out.print(&result, || print_deploy(&result))?;
    wait_unless(client, &args.wait, &result)
}

/// Waits for the rollouts a deploy or rollback started, unless told not
/// to.
fn wait_unless(client: &Client, wait: &WaitArg, result: &DeployResult) -> anyhow::Result<()> {
    if wait.no_wait || result.revision == 0 || result.restarting.is_empty() {
        return Ok(());
    }
    super::rollout::wait(client, &result.stack, &result.restarting, result.revision)
}

/// `mesh stack deploy S REF`: the daemon pulls.
fn deploy_reference(
    client: &Client,
    out: &Out,
    stack: &str,
    reference: &str,
    name: Option<String>,
) -> anyhow::Result<DeployResult> {
    let name = match name {
        Some(name) => name,
        None => component_of(reference)?,
    };
    let request = DeployRequest {
        components: BTreeMap::new(),
        replace: false,
        pull: BTreeMap::from([(name, reference.to_string())]),
    };
    let path = format!("/v1/stacks/{}/deploy", encode(stack));
    let result: DeployResult =
        crate::progress::while_pulling(client, out.json, &[reference.to_string()], || {
            client.post(&path, &request)
        })?;
    out.print(&result, || {
        for p in &result.pulled {
            println!(
                "Pulled {} ({}) as component {}: {} blobs fetched, {} already here",
                p.reference, p.digest, p.name, p.fetched, p.cached
            );
        }
        if !result.created {
            let digest = result.pulled.first().map_or("", |p| p.digest.as_str());
            println!(
                "{} is already at {digest} (v{}); nothing changed",
                result.stack, result.version.number
            );
            return;
        }
        print_deploy(&result)
    })?;
    Ok(result)
}

fn print_deploy(result: &DeployResult) {
    let v = &result.version;
    if result.created {
        println!(
            "Deployed {} v{} ({}): {}",
            result.stack,
            v.number,
            &v.digest.as_str()[7..19],
            v.components.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    } else {
        println!(
            "{} is already on this code (v{}); nothing changed",
            result.stack, v.number
        );
    }
    if !result.restarting.is_empty() {
        println!(
            "Restarting, one instance at a time: {}",
            result.restarting.join(", ")
        );
    }
}

/// `mesh stack versions`.
pub fn versions(client: &Client, out: &Out, args: StackNameArgs) -> anyhow::Result<()> {
    let versions: Vec<VersionView> =
        client.get(&format!("/v1/stacks/{}/versions", encode(&args.stack)))?;
    out.print(&versions, || {
        let mut table = Table::new(&["VERSION", "DIGEST", "CREATED", "COMPONENTS", "REASON"]);
        let now = Utc::now();
        for v in &versions {
            let marker = if v.current { " (current)" } else { "" };
            table.row(vec![
                format!("v{}{marker}", v.number),
                v.digest.short().to_string(),
                format!("{} ago", age(now - v.created_at)),
                v.components.keys().cloned().collect::<Vec<_>>().join(", "),
                v.reason.clone(),
            ]);
        }
        table.print();
    })
}

/// `mesh stack rollback`.
pub fn rollback(client: &Client, out: &Out, args: RollbackArgs) -> anyhow::Result<()> {
    let request = RollbackRequest { to: args.to };
    let result: DeployResult = client.post(
        &format!("/v1/stacks/{}/rollback", encode(&args.stack)),
        &request,
    )?;
    out.print(&result, || {
        println!(
            "Rolled {} back: {} is now v{}",
            result.stack, result.version.reason, result.version.number
        );
        if !result.restarting.is_empty() {
            println!(
                "Restarting, one instance at a time: {}",
                result.restarting.join(", ")
            );
        }
    })?;
    wait_unless(client, &args.wait, &result)
}

/// `mesh stack ls`.
pub fn stacks(client: &Client, out: &Out) -> anyhow::Result<()> {
    let stacks: Vec<StackView> = client.get("/v1/stacks")?;
    out.print(&stacks, || {
        let mut table = Table::new(&["STACK", "VERSION", "COMPONENTS", "SERVICES"]);
        for s in &stacks {
            table.row(vec![
                s.name.clone(),
                format!("v{}", s.version),
                s.components.keys().cloned().collect::<Vec<_>>().join(", "),
                s.services.join(", "),
            ]);
        }
        table.print();
    })
}
