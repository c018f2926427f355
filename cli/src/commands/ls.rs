//! `mesh service ls` and `mesh svc runs`: services, their instances and a
//! cron job's runs, as tables.

use anyhow::bail;
use chrono::Utc;
use clap::Args;
use mesh_host::api::wire::ServiceView;
use mesh_host::model::{format_memory, InstanceState, RunStatus};

use super::{encode, service_path, NamedArgs, Out};
use crate::client::Client;
use crate::table::{age, Table};

/// `mesh service ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only this stack.
    #[arg(long, value_name = "STACK")]
    pub stack: Option<String>,

    /// Only this service.
    #[arg(value_name = "NAME")]
    pub positional: Option<String>,

    /// Only this service (same as NAME).
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub name: Option<String>,

    /// One row per service (instances running of those wanted, restarts,
    /// endpoints) instead of one per instance.
    #[arg(short = 's', long)]
    pub summary: bool,
}

/// `mesh service ls`.
pub fn list(client: &Client, out: &Out, args: LsArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(stack) = &args.stack {
        query.push(format!("stack={}", encode(stack)));
    }
    let name = match (&args.positional, &args.name) {
        (Some(a), Some(b)) if a != b => bail!("two different service names given: {a} and {b}"),
        (Some(name), _) | (None, Some(name)) => Some(name),
        (None, None) => None,
    };
    if let Some(name) = name {
        query.push(format!("name={}", encode(name)));
    }
    let path = if query.is_empty() {
        "/v1/services".to_string()
    } else {
        format!("/v1/services?{}", query.join("&"))
    };
    let services: Vec<ServiceView> = client.get(&path)?;
    if args.summary {
        return out.print(&services, || print_summary(&services));
    }
    out.print(&services, || print_services(&services))
}

/// `--summary`: a row per service.
fn print_summary(services: &[ServiceView]) {
    if services.is_empty() {
        println!("No services yet. Create one with: mesh svc create -n NAME -- app.wasm ARGS");
        return;
    }
    let mut table = Table::new(&[
        "SERVICE",
        "TYPE",
        "INSTANCES",
        "STATE",
        "RESTARTS",
        "ENDPOINTS",
    ]);
    for s in services {
        let running = s
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        // The worst state an instance is in says how the service is.
        let state = s
            .instances
            .iter()
            .map(|i| i.state)
            .find(|state| *state != InstanceState::Running)
            .map_or(
                if running > 0 {
                    "running".to_string()
                } else {
                    "-".to_string()
                },
                |state| state.to_string(),
            );
        let restarts: u64 = s.instances.iter().map(|i| u64::from(i.restarts)).sum();
        table.row(vec![
            format!("{}/{}", s.stack, s.name),
            s.service_type.to_string(),
            match &s.settings.schedule {
                Some(spec) => format!("cron {spec}"),
                None => format!("{running}/{}", s.settings.instances_desired),
            },
            state,
            restarts.to_string(),
            s.endpoints.join(", "),
        ]);
    }
    table.print();
}

/// The default listing: a row per instance, web endpoints, cron jobs.
fn print_services(services: &[ServiceView]) {
    if services.is_empty() {
        println!("No services yet. Create one with: mesh svc create -n NAME -- app.wasm ARGS");
        return;
    }
    let (jobs, services): (Vec<&ServiceView>, Vec<&ServiceView>) =
        services.iter().partition(|s| s.settings.schedule.is_some());
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
        let schedule = match &job.settings.timezone {
            Some(zone) => format!(
                "{} ({zone})",
                job.settings.schedule.as_deref().unwrap_or("")
            ),
            None => job.settings.schedule.clone().unwrap_or_default(),
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
                format!("{} wanted", service.settings.instances_desired),
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

/// `mesh svc runs`.
pub fn runs(client: &Client, out: &Out, args: NamedArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let view: ServiceView = client.get(&service_path(&args.stack.stack, name))?;
    if view.settings.schedule.is_none() {
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

/// `mesh svc show`: one service, every setting on a line of its own.
pub fn show(client: &Client, out: &Out, args: NamedArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let view: ServiceView = client.get(&service_path(&args.stack.stack, name))?;
    out.print(&view, || print_service(&view))
}

/// The lines of `svc show`: what the service is, then its settings.
fn print_service(view: &ServiceView) {
    let settings = &view.settings;
    let running = view
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    println!(
        "{} ({} {}) in stack {}, version {}",
        view.name, view.service_type, view.kind, view.stack, view.version
    );
    let mut table = Table::new(&["SETTING", "VALUE"]);
    let mut row = |what: &str, value: String| table.row(vec![what.to_string(), value]);
    if let Some(text) = &settings.description {
        row("description", text.clone());
    }
    row("command", view.command.join(" "));
    row(
        "instances",
        format!("{} wanted, {running} running", settings.instances_desired),
    );
    row(
        "memory",
        format!("{} each", format_memory(settings.memory_limit_bytes)),
    );
    if !view.endpoints.is_empty() {
        row("endpoints", view.endpoints.join(", "));
        row("serving", view.serving.clone());
    }
    if let Some(spec) = &settings.schedule {
        row("schedule", spec.clone());
        row(
            "timezone",
            settings.timezone.clone().unwrap_or("UTC".into()),
        );
        row(
            "next run",
            view.next_run.map_or("-".into(), |t| t.to_rfc3339()),
        );
    }
    let env: Vec<String> = settings
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    row(
        "env",
        if env.is_empty() {
            "-".into()
        } else {
            env.join(" ")
        },
    );
    if let Some(bytes) = settings.scratch_bytes {
        row("scratch", format_memory(bytes));
    }
    if let Some(image) = &settings.image {
        row("image", image.clone());
    }
    if let Some(check) = &settings.health {
        row(
            "health",
            format!(
                "GET {} every {}ms, {}ms timeout, unhealthy after {} failures",
                check.path,
                check.interval().as_millis(),
                check.timeout().as_millis(),
                check.threshold()
            ),
        );
    }
    if let Some(rollout) = &view.rollout {
        let state = match rollout.state {
            mesh_host::model::RolloutState::Rolling => "rolling".to_string(),
            mesh_host::model::RolloutState::Done => "done".to_string(),
            mesh_host::model::RolloutState::Failed => format!(
                "failed: {}",
                rollout.reason.as_deref().unwrap_or("no reason given")
            ),
        };
        row(
            "last rollout",
            format!(
                "v{} -> v{}, {} ago: {state}",
                rollout.from_version,
                rollout.to_version,
                age(Utc::now() - rollout.started_at)
            ),
        );
    }
    row("dns name", view.dns_name.clone());
    if !view.called_by.is_empty() {
        let callers: Vec<String> = view
            .called_by
            .iter()
            .map(|c| {
                let ago = age(Utc::now() - c.last_call_at);
                format!("{}/{} ({ago} ago)", c.stack, c.name)
            })
            .collect();
        row("called by", callers.join(", "));
    }
    row(
        "created",
        format!("{} ago", age(Utc::now() - view.created_at)),
    );
    table.print();
}
