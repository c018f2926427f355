//! What each command does: build the request, call the API, print.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use chrono::Utc;
use mesh_host::api::wire::{
    ComponentRef, CreateEnv, CreateService, DeployRequest, DeployResult, EnvCreated, EnvView,
    NodeView, PublishRequest, RollbackRequest, ServiceView, StackView, TokenRotated, TriggerResult,
    UpdateEnv, UpdateService, VersionView,
};
use mesh_host::model::{format_memory, Digest, RunStatus, ServiceType, FILES_ENTRY};
use mesh_host::runtime::CodeInfo;
use mesh_host::telemetry::Event;
use mesh_host::telemetry::LogLine;
use serde::Serialize;

use crate::args::{
    CreateArgs, DeployArgs, EnvCreateArgs, EnvSetArgs, EnvSettingsArgs, EnvTokenArgs,
    EnvUpdateArgs, EventsArgs, LogsArgs, LsArgs, NamedArgs, PublishArgs, RollbackArgs, RunArgs,
    StackNameArgs, UpdateArgs,
};
use crate::client::Client;
use crate::table::{age, Table};

/// Output settings shared by every command.
pub struct Out {
    /// Print JSON.
    pub json: bool,
}

impl Out {
    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce()) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human();
        }
        Ok(())
    }
}

/// `mesh svc create`.
pub fn create(client: &Client, out: &Out, args: CreateArgs) -> anyhow::Result<()> {
    let (command, component) = resolve_command(client, args.argv)?;
    let request = CreateService {
        stack: args.stack.stack,
        name: args.name,
        command,
        instances: args.instances,
        memory: args.memory,
        env: args.env,
        schedule: args.schedule,
        timezone: args.timezone,
        timeout: args.timeout,
        cpu_limit: args.cpu_limit,
        fresh_per_request: args.fresh_per_request.then_some(true),
        always_reuse: args.reuse_instances.then_some(true),
        scratch: args.scratch,
        image: args.image,
        stop_timeout: args.stop_timeout,
        component,
    };
    let view: ServiceView = client.post("/v1/services", &request)?;
    if view.schedule.is_some() {
        return out.print(&view, || {
            println!(
                "Created cron job {} in stack {} v{}: `{}` on `{}`{}, next run {}",
                view.name,
                view.stack,
                view.version.max(1),
                view.command.join(" "),
                view.schedule.as_deref().unwrap_or(""),
                view.timezone
                    .as_deref()
                    .map(|z| format!(" ({z})"))
                    .unwrap_or_default(),
                view.next_run.map_or("soon".to_string(), |t| t.to_rfc3339())
            )
        });
    }
    out.print(&view, || {
        println!(
            "Created {} {} in stack {} v{}: `{}`, {} instance{}, {} each",
            view.service_type,
            view.name,
            view.stack,
            view.version.max(1),
            view.command.join(" "),
            view.instances_desired,
            plural(view.instances_desired),
            format_memory(view.memory_limit_bytes)
        )
    })
}

/// `mesh svc update`.
pub fn update(client: &Client, out: &Out, args: UpdateArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let (command, component) = match args.command {
        Some(text) => {
            let words = split_words(&text)?;
            let (command, component) = resolve_command(client, words)?;
            (Some(command), component)
        }
        None => (None, None),
    };
    let request = UpdateService {
        command,
        instances: args.instances,
        memory: args.memory,
        env: args.env,
        unset_env: args.unset_env,
        schedule: args.schedule,
        timezone: args.timezone,
        timeout: args.timeout,
        cpu_limit: args.cpu_limit,
        fresh_per_request: args.fresh_per_request,
        always_reuse: args.reuse_instances,
        scratch: args.scratch,
        image: args.image,
        stop_timeout: args.stop_timeout,
        component,
    };
    let view: ServiceView = client.patch(&service_path(&args.stack.stack, name), &request)?;
    out.print(&view, || {
        println!(
            "Updated {} in stack {}: `{}`, {} instance{}, {} each",
            view.name,
            view.stack,
            view.command.join(" "),
            view.instances_desired,
            plural(view.instances_desired),
            format_memory(view.memory_limit_bytes)
        )
    })
}

/// `mesh svc delete`.
pub fn delete(client: &Client, out: &Out, args: NamedArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let view: ServiceView = client.delete(&service_path(&args.stack.stack, name))?;
    out.print(&view, || {
        println!("Deleted {} from stack {}", view.name, view.stack)
    })
}

/// `mesh service ls`.
pub fn list(client: &Client, out: &Out, args: LsArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(stack) = &args.stack {
        query.push(format!("stack={}", encode(stack)));
    }
    if let Some(name) = &args.name {
        query.push(format!("name={}", encode(name)));
    }
    let path = if query.is_empty() {
        "/v1/services".to_string()
    } else {
        format!("/v1/services?{}", query.join("&"))
    };
    let services: Vec<ServiceView> = client.get(&path)?;
    out.print(&services, || print_services(&services))
}

fn print_services(services: &[ServiceView]) {
    if services.is_empty() {
        println!("No services yet. Create one with: mesh svc create -n NAME -- app.wasm ARGS");
        return;
    }
    let (jobs, services): (Vec<&ServiceView>, Vec<&ServiceView>) =
        services.iter().partition(|s| s.schedule.is_some());
    if !services.is_empty() {
        print_instances(&services);
    }
    let web: Vec<&&ServiceView> = services
        .iter()
        .filter(|s| !s.endpoints.is_empty())
        .collect();
    if !web.is_empty() {
        println!();
        let mut table = Table::new(&["SERVICE", "ENDPOINTS", "SERVING"]);
        for s in web {
            table.row(vec![
                format!("{}/{}", s.stack, s.name),
                s.endpoints.join(", "),
                match &s.fresh_because {
                    Some(why) => format!("fresh per request: {why}"),
                    None => s.serving.clone(),
                },
            ]);
        }
        table.print();
    }
    if !jobs.is_empty() {
        if !services.is_empty() {
            println!();
        }
        print_jobs(&jobs);
    }
}

/// Cron jobs: their schedule, next run and last run instead of instances.
fn print_jobs(jobs: &[&ServiceView]) {
    let mut table = Table::new(&[
        "SERVICE", "TYPE", "SCHEDULE", "NEXT RUN", "LAST RUN", "STATUS", "EXIT", "MESSAGE",
    ]);
    let now = Utc::now();
    for job in jobs {
        let last = job.runs.first();
        // Exit code and message come from the last run that ended.
        let ended = job.runs.iter().find(|r| r.status != RunStatus::Running);
        let running = job.instances.first();
        let schedule = match &job.timezone {
            Some(zone) => format!("{} ({zone})", job.schedule.as_deref().unwrap_or("")),
            None => job.schedule.clone().unwrap_or_default(),
        };
        table.row(vec![
            format!("{}/{}", job.stack, job.name),
            job.service_type.to_string(),
            schedule,
            job.next_run
                .map_or("-".into(), |t| format!("in {}", age(t - now))),
            last.map_or("never".into(), |r| {
                format!("{} ago", age(now - r.started_at))
            }),
            match running {
                Some(i) => format!("{} ({})", i.state, i.id),
                None => last.map_or("-".into(), |r| r.status.to_string()),
            },
            ended
                .and_then(|r| r.exit_code)
                .map_or("-".into(), |c| c.to_string()),
            ended.and_then(|r| r.message.clone()).unwrap_or_default(),
        ]);
    }
    table.print();
}

fn print_instances(services: &[&ServiceView]) {
    // In a cluster (instances on more than one host) each says its host.
    let mut nodes: Vec<&str> = services
        .iter()
        .flat_map(|s| s.instances.iter().map(|i| i.node.as_str()))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let clustered = nodes.len() > 1;
    let mut header = vec!["SERVICE", "TYPE", "INSTANCE"];
    if clustered {
        header.push("NODE");
    }
    header.extend(["STATE", "RESTARTS", "EXIT", "AGE", "MESSAGE"]);
    let mut table = Table::new(&header);
    let now = Utc::now();
    for service in services {
        let name = format!("{}/{}", service.stack, service.name);
        if service.instances.is_empty() {
            let mut row = vec![name.clone(), service.service_type.to_string(), "-".into()];
            if clustered {
                row.push("-".into());
            }
            row.extend([
                format!("{} wanted", service.instances_desired),
                "-".into(),
                "-".into(),
                "-".into(),
                String::new(),
            ]);
            table.row(row);
        }
        for instance in &service.instances {
            let mut row = vec![
                name.clone(),
                service.service_type.to_string(),
                instance.id.clone(),
            ];
            if clustered {
                row.push(instance.node.clone());
            }
            row.extend([
                instance.state.to_string(),
                instance.restarts.to_string(),
                instance.exit_code.map_or("-".into(), |c| c.to_string()),
                instance.started_at.map_or("-".into(), |t| age(now - t)),
                instance.describe(),
            ]);
            table.row(row);
        }
    }
    table.print();
}

/// `mesh svc logs`.
pub fn logs(client: &Client, out: &Out, args: LogsArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let mut query = Vec::new();
    if let Some(n) = args.tail {
        query.push(format!("tail={n}"));
    }
    if let Some(instance) = &args.instance {
        query.push(format!("instance={}", encode(instance)));
    }
    if let Some(since) = &args.since {
        query.push(format!(
            "since={}",
            encode(&since_time(since)?.to_rfc3339())
        ));
    }
    if args.follow {
        query.push("follow=true".to_string());
    }
    let path = format!(
        "{}/logs?{}",
        service_path(&args.stack.stack, name),
        query.join("&")
    );
    if args.follow {
        return follow(client, out, &path, print_log_line);
    }
    let lines: Vec<LogLine> = client.get(&path)?;
    out.print(&lines, || lines.iter().for_each(print_log_line))
}

fn print_log_line(line: &LogLine) {
    println!(
        "{} {} {}",
        line.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        line.instance,
        line.text
    );
}

/// `--since`: an age (`10m`) or an RFC 3339 time.
fn since_time(text: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = mesh_host::cron::parse_duration(text).map_err(|e| {
        anyhow!("invalid --since `{text}`: {e}; use an age like 10m or an RFC 3339 time")
    })?;
    Ok(Utc::now() - chrono::TimeDelta::from_std(age)?)
}

/// `mesh svc publish` (`publish` true) and `unpublish`.
pub fn publish(client: &Client, out: &Out, args: PublishArgs, publish: bool) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let request = PublishRequest {
        endpoint: args.endpoint,
        path: args.path,
    };
    let verb = if publish { "publish" } else { "unpublish" };
    let view: ServiceView = client.post(
        &format!("{}/{verb}", service_path(&args.stack.stack, name)),
        &request,
    )?;
    out.print(&view, || {
        if publish {
            println!(
                "Published {}/{} (now a {} service); its endpoints: {}",
                view.stack,
                view.name,
                view.service_type,
                view.endpoints.join(", ")
            );
        } else if view.endpoints.is_empty() {
            println!(
                "Unpublished {}/{}: it has no endpoints and is a {} again",
                view.stack, view.name, view.service_type
            );
        } else {
            println!(
                "Unpublished; {}/{} is still published at {}",
                view.stack,
                view.name,
                view.endpoints.join(", ")
            );
        }
    })
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
                format_memory(n.capacity_memory_bytes),
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
        mesh_host::model::format_memory(n)
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

/// `mesh events`.
pub fn events(client: &Client, out: &Out, args: EventsArgs) -> anyhow::Result<()> {
    let mut query = vec![format!("follow={}", args.follow)];
    if let Some(n) = args.tail {
        query.push(format!("tail={n}"));
    }
    let path = format!("/v1/events?{}", query.join("&"));
    let print = |event: &Event| {
        println!(
            "{}  {:<20} {:<24} {:<14} {}",
            event.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            event.kind,
            event.service.as_deref().unwrap_or("-"),
            event.instance.as_deref().unwrap_or("-"),
            event.message
        )
    };
    if args.follow {
        return follow(client, out, &path, print);
    }
    let events: Vec<Event> = client.get(&path)?;
    out.print(&events, || events.iter().for_each(print))
}

/// Prints a followed NDJSON stream as it comes, until Ctrl-C; the stream
/// ending means the daemon went away.
fn follow<T: serde::de::DeserializeOwned>(
    client: &Client,
    out: &Out,
    path: &str,
    print: impl Fn(&T),
) -> anyhow::Result<()> {
    use std::io::Write as _;
    for line in client.get_lines(path)? {
        let line = line?;
        if out.json {
            println!("{line}");
        } else if let Ok(item) = serde_json::from_str::<T>(&line) {
            print(&item);
        }
        std::io::stdout().flush()?;
    }
    Err(anyhow!("the daemon stopped; nothing more to follow"))
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

/// `mesh svc trigger`.
pub fn trigger(client: &Client, out: &Out, args: NamedArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let result: TriggerResult = client.post(
        &format!("{}/trigger", service_path(&args.stack.stack, name)),
        &serde_json::json!({}),
    )?;
    out.print(&result, || {
        println!(
            "Started run {} of {} ({}); see it with `mesh svc logs -n {} --instance {}`",
            result.number, result.name, result.instance, result.name, result.instance
        )
    })
}

/// `mesh svc restart`.
pub fn restart(client: &Client, out: &Out, args: NamedArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let view: ServiceView = client.post(
        &format!("{}/restart", service_path(&args.stack.stack, name)),
        &serde_json::json!({}),
    )?;
    let how = match view.service_type {
        ServiceType::Web => {
            "fresh instances take new requests, requests in flight finish on the old ones"
        }
        _ => "one at a time",
    };
    out.print(&view, || {
        println!(
            "Restarting {} instances of {}: {how}; watch them with `mesh svc ls -n {}`",
            view.instances_desired, view.name, view.name
        )
    })
}

/// `mesh svc runs`.
pub fn runs(client: &Client, out: &Out, args: NamedArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let view: ServiceView = client.get(&service_path(&args.stack.stack, name))?;
    if view.schedule.is_none() {
        bail!(
            "service {name} is a {}, not a cron job: it has no runs",
            view.service_type
        );
    }
    out.print(&view.runs, || {
        if view.runs.is_empty() {
            println!(
                "{name} has not run yet; next run {}",
                view.next_run.map_or("-".to_string(), |t| t.to_rfc3339())
            );
            return;
        }
        let mut table = Table::new(&[
            "RUN", "INSTANCE", "TRIGGER", "STARTED", "DURATION", "STATUS", "EXIT", "MESSAGE",
        ]);
        for run in &view.runs {
            table.row(vec![
                run.number.to_string(),
                run.instance.clone().unwrap_or_else(|| "-".into()),
                format!("{:?}", run.trigger).to_lowercase(),
                run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{}ms", run.duration_ms),
                run.status.to_string(),
                run.exit_code.map_or("-".into(), |c| c.to_string()),
                run.message.clone().unwrap_or_default(),
            ]);
        }
        table.print();
    })
}

/// `mesh stack deploy`.
pub fn deploy(client: &Client, out: &Out, args: DeployArgs) -> anyhow::Result<()> {
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
    };
    let result: DeployResult = client.post(
        &format!("/v1/stacks/{}/deploy", encode(&args.stack)),
        &request,
    )?;
    out.print(&result, || print_deploy(&result))
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
    })
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

/// Uploads any local `.wasm` the command starts with, and rewrites the
/// first word to the component name.
fn resolve_command(
    client: &Client,
    mut argv: Vec<String>,
) -> anyhow::Result<(Vec<String>, Option<ComponentRef>)> {
    let Some(first) = argv.first() else {
        bail!("a service needs a command after `--`, e.g. `-- app.wasm queue`");
    };
    let path = PathBuf::from(first);
    let component = if first.ends_with(".wasm") {
        upload(client, &path)?
    } else if (first.ends_with(".tar") || first.contains('/')) && is_image(&path) {
        upload_image(client, &path, None)?
    } else {
        return Ok((argv, None));
    };
    argv[0] = component.name.clone();
    Ok((argv, Some(component)))
}

/// Uploads one `.wasm` file; its stem names the component.
fn upload(client: &Client, path: &Path) -> anyhow::Result<ComponentRef> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("cannot name a component after {}", path.display()))?
        .to_string();
    let file_name = path.file_name().and_then(|s| s.to_str()).unwrap_or(&name);
    let info: CodeInfo =
        client.put_bytes(&format!("/v1/code?name={}", encode(file_name)), &bytes)?;
    Ok(ComponentRef {
        name,
        digest: info.digest,
    })
}

/// Whether `path` is a container image: an OCI image layout directory, or
/// a tar file (an `oci-archive` or a `docker save`).
fn is_image(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("oci-layout").is_file();
    }
    let mut head = [0u8; 512];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && mesh_host::container::image::is_tar(&head)
}

/// Uploads a container image; named `name`, or after the file or folder.
fn upload_image(client: &Client, path: &Path, name: Option<&str>) -> anyhow::Result<ComponentRef> {
    let bytes = if path.is_dir() {
        mesh_host::container::image::pack_layout(path)?
    } else {
        std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?
    };
    let name = match name {
        Some(name) => name.to_string(),
        None => path
            .file_name()
            .and_then(|s| s.to_str())
            .map(|s| {
                s.trim_end_matches(".tar")
                    .trim_end_matches(".oci")
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("cannot name an image after {}; give --name", path.display()))?,
    };
    let info: CodeInfo = client.put_bytes(
        &format!(
            "/v1/code?kind=image&name={}",
            encode(&path.display().to_string())
        ),
        &bytes,
    )?;
    Ok(ComponentRef {
        name,
        digest: info.digest,
    })
}

/// Packs a folder as a stack's files and uploads it; its digest.
fn upload_files(client: &Client, dir: &Path) -> anyhow::Result<Digest> {
    let bytes = mesh_host::runtime::files::pack(dir)?;
    let name = dir.display().to_string();
    let info: CodeInfo = client.put_bytes(
        &format!("/v1/code?kind=files&name={}", encode(&name)),
        &bytes,
    )?;
    Ok(info.digest)
}

/// The `.wasm` files a deploy path names, and whether they are a whole
/// bundle (a directory) or one component (a file).
fn bundle_files(path: &Path) -> anyhow::Result<(Vec<PathBuf>, bool)> {
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok((vec![path.to_path_buf()], false));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm" || x == "tar") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{} holds no .wasm files or image tars to deploy",
            path.display()
        );
    }
    Ok((files, true))
}

/// Splits `--command "app queue"` into words, honouring simple quotes.
fn split_words(text: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unbalanced quote in --command {text:?}");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn service_path(stack: &str, name: &str) -> String {
    format!("/v1/services/{}/{}", encode(stack), encode(name))
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(split_words("app queue").unwrap(), ["app", "queue"]);
        assert_eq!(
            split_words("  app  'a b' \"c\" ").unwrap(),
            ["app", "a b", "c"]
        );
        assert_eq!(split_words("app ''").unwrap(), ["app", ""]);
        assert!(split_words("app 'oops").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("app.wasm"), "app.wasm");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
