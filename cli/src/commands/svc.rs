//! `mesh service ...` (`mesh svc`): create, update, delete, publish,
//! restart and trigger services; listing, logs and runs live in `ls`,
//! `logs` and `run`.

use anyhow::bail;
use clap::{Args, Subcommand};
use mesh_host::api::settings::ServiceSettings;
use mesh_host::api::wire::{
    CreateService, PublishRequest, ServiceView, TriggerResult, UpdateService,
};
use mesh_host::model::{format_memory, ServiceType};

use super::code::resolve_command;
use super::logs::LogsArgs;
use super::ls::LsArgs;
use super::rollout::WaitArg;
use super::run::RunArgs;
use super::{service_path, NameArg, NamedArgs, Out, StackArg};
use crate::client::Client;
use crate::table::count;

/// `mesh service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service and start its instances.
    #[command(after_help = "\
The first word of the command names a component of the stack's code. A path
to a local .wasm file adds that file to the stack as a component named by its
file stem (app.wasm is `app`), then runs it.

The memory limit counts all of an instance's linear memories together.

Examples:
  mesh svc create -n worker --instances 3 -- app.wasm queue
  mesh svc create -n mailer --memory 64Mi --env FROM=ops@example.com -- app send-emails
  mesh svc create --stack finance -n payments -- payments.wasm
  mesh svc create -n emailsender --schedule \"@hourly\" -- app.wasm send-emails
  mesh svc create -n report --schedule \"5 4 * * mon-fri\" --timezone Europe/Berlin --timeout 10m -- app report
  mesh svc create -n legacy -- prog.wasm                 a wasip1 module: as a worker, or CGI when published
  mesh svc create -n thumbs --scratch 64Mi -- app thumbs  a private 64 MiB /tmp per instance

Web services reuse instances; a component that cannot answer a second
request on one instance (componentize-js's fetch event) is detected and
served fresh per request, shown under SERVING in `mesh svc ls`.

Schedules (UTC unless --timezone): 5-field cron `MIN HOUR DOM MON DOW` with
lists, ranges, steps and names (`*/15 9-17 * * mon-fri`); when both day
fields are restricted either one matching is enough (Vixie cron); macros
@yearly @monthly @weekly @daily @hourly; `@every 2m` (90s, 1h30m, ...,
aligned to the Unix epoch). Firings missed while the daemon is down are not
replayed.")]
    Create(Box<CreateArgs>),

    /// Change a service's command, instances, memory or environment.
    #[command(after_help = "\
Examples:
  mesh svc update worker --command \"app queue\"
  mesh svc update web --instances 5
  mesh svc update worker --memory 256Mi --env LOG_LEVEL=debug --unset-env OLD
  mesh svc update emailsender --schedule \"@every 30m\"
  mesh svc update emailsender --schedule none        (a worker again)")]
    Update(Box<UpdateArgs>),

    /// Delete a service and stop its instances.
    #[command(after_help = "\
A published service's URLs go offline with it: on a terminal the command
asks first; elsewhere (a script) it needs --yes.

Examples:
  mesh svc delete worker
  mesh svc delete -n payments --stack finance
  mesh svc delete web --yes")]
    Delete(DeleteArgs),

    /// List services and every instance: state, restarts, exit code, message.
    #[command(
        visible_alias = "list",
        after_help = "\
Every instance has a row (a cron job: its schedule and last run); with many
services, --summary gives one row per service instead.

Examples:
  mesh service ls
  mesh service ls worker                 one service's instances
  mesh service ls --summary              one row per service
  mesh service ls --stack finance --json"
    )]
    Ls(LsArgs),

    /// Show one service's whole configuration and its instances.
    #[command(
        after_help = "Examples:\n  mesh svc show web\n  mesh svc show payments --stack finance --json"
    )]
    Show(NamedArgs),

    /// Show a service's output (stdout and stderr of every instance).
    #[command(
        after_help = "Examples:\n  mesh svc logs -n worker\n  mesh svc logs worker --tail 50 --instance worker.2\n  mesh svc logs -n web -f --since 10m"
    )]
    Logs(LogsArgs),

    /// Publish a service on an endpoint: it becomes a web service.
    #[command(after_help = "\
The service's component must export wasi:http/incoming-handler. Requests
match on Host (any port) and the longest path prefix; the instances serve
one request at a time each and are reused.

Examples:
  mesh svc publish -n web --endpoint www                    http://www.localhost
  mesh svc publish -n worker --endpoint https://top.widemesh.dev
  mesh service publish --stack myblog --n web --endpoint www --path /blog")]
    Publish(PublishArgs),

    /// Remove an endpoint; without endpoints a web service is a worker again.
    #[command(after_help = "\
Examples:
  mesh svc unpublish -n worker --endpoint https://top.widemesh.dev
  mesh svc unpublish --stack myblog -n web --endpoint www --path /blog")]
    Unpublish(PublishArgs),

    /// Start one new instance of a service with this terminal attached; the
    /// CLI exits with the guest's exit code.
    #[command(after_help = "\
The instance runs the service's stack code with its env and memory limit,
and shows in `mesh service ls` while it runs. Without `-- ARGV` it runs the
service's own command. When stdin is a terminal it goes raw for the run and
Ctrl-C stops the remote instance.

Examples:
  mesh service run -n web -- app env
  mesh service run -n worker -- app repl
  echo hello | mesh svc run -n worker -- app cat")]
    Run(RunArgs),

    /// Restart a service's instances one at a time, each new one up (and
    /// passing its health check) before an old one stops.
    #[command(after_help = "\
A web service keeps serving while it restarts: it has at most one instance
more than asked for, a new instance takes requests once it is up (and
answers its --health path), and requests in flight finish on the old ones.
When a new instance does not come up within --rollout-timeout, the old
ones are kept and the command fails saying why. Cron jobs have nothing to
restart (each run is a fresh instance): run one now with `mesh svc trigger`.

Examples:
  mesh svc restart -n worker
  mesh svc restart web --stack shop
  mesh svc restart web --no-wait")]
    Restart(RestartArgs),

    /// Run a cron job now (recorded as a manual run).
    #[command(
        after_help = "Examples:\n  mesh svc trigger -n emailsender\n  mesh svc trigger report --stack ops"
    )]
    Trigger(NamedArgs),

    /// Show a cron job's kept runs (the last 50), newest first.
    #[command(
        after_help = "Examples:\n  mesh svc runs -n emailsender\n  mesh svc runs emailsender --json"
    )]
    Runs(NamedArgs),
}

/// Runs one `mesh service` command.
pub fn run(client: &Client, out: &Out, command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => create(client, out, *args),
        ServiceCommand::Update(args) => update(client, out, *args),
        ServiceCommand::Delete(args) => delete(client, out, args),
        ServiceCommand::Ls(args) => super::ls::list(client, out, args),
        ServiceCommand::Show(args) => super::ls::show(client, out, args),
        ServiceCommand::Logs(args) => super::logs::logs(client, out, args),
        ServiceCommand::Trigger(args) => trigger(client, out, args),
        ServiceCommand::Restart(args) => restart(client, out, args),
        ServiceCommand::Run(args) => super::run::run(client, args),
        ServiceCommand::Publish(args) => publish(client, out, args, true),
        ServiceCommand::Unpublish(args) => publish(client, out, args, false),
        ServiceCommand::Runs(args) => super::ls::runs(client, out, args),
    }
}

/// `mesh svc create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name (a DNS label: lowercase letters, digits, hyphens).
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub stack: StackArg,

    #[command(flatten)]
    pub settings: ServiceSettings,

    /// The command: a component name or a .wasm path, then its arguments.
    #[arg(last = true, required = true, value_name = "ARGV")]
    pub argv: Vec<String>,
}

/// `mesh svc update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,

    /// New command, as one string: "app queue" (a .wasm path as the first
    /// word adds that file to the stack).
    #[arg(long, value_name = "ARGV")]
    pub command: Option<String>,

    #[command(flatten)]
    pub settings: ServiceSettings,

    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,

    #[command(flatten)]
    pub wait: WaitArg,
}

/// `mesh svc restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub named: NamedArgs,

    #[command(flatten)]
    pub wait: WaitArg,
}

/// `mesh svc publish` and `unpublish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,

    /// A label relative to the platform alias (`www` is www.ALIAS) or a URL
    /// (`https://top.example.com`).
    #[arg(long, value_name = "URL|LABEL")]
    pub endpoint: String,

    /// Path prefix: requests for it and below it reach the service, which
    /// sees the original path.
    #[arg(long, value_name = "/PATH")]
    pub path: Option<String>,

    /// Serve the endpoint over HTTPS only: plain HTTP gets 308 to HTTPS
    /// (ACME's challenge path excepted), and answers send HSTS.
    #[arg(long)]
    pub https_only: bool,
}

/// `mesh svc create`.
pub fn create(client: &Client, out: &Out, args: CreateArgs) -> anyhow::Result<()> {
    let (command, component, pull) = resolve_command(client, args.argv)?;
    let pulling: Vec<String> = pull.iter().map(|p| p.reference.clone()).collect();
    let request = CreateService {
        stack: args.stack.stack,
        name: args.name,
        command,
        settings: args.settings,
        component,
        pull,
    };
    let view: ServiceView = crate::progress::while_pulling(client, out.json, &pulling, || {
        client.post("/v1/services", &request)
    })?;
    if view.settings.schedule.is_some() {
        return out.print(&view, || {
            println!(
                "Created cron job {} in stack {} v{}: `{}` on `{}`{}, next run {}",
                view.name,
                view.stack,
                view.version.max(1),
                view.command.join(" "),
                view.settings.schedule.as_deref().unwrap_or(""),
                view.settings
                    .timezone
                    .as_deref()
                    .map(|z| format!(" ({z})"))
                    .unwrap_or_default(),
                view.next_run.map_or("soon".to_string(), |t| t.to_rfc3339())
            )
        });
    }
    out.print(&view, || {
        println!(
            "Created {} ({}) in stack {} v{}: `{}`, {}, {} each",
            view.name,
            view.service_type,
            view.stack,
            view.version.max(1),
            view.command.join(" "),
            count(view.settings.instances_desired, "instance"),
            format_memory(view.settings.memory_limit_bytes)
        )
    })
}

/// `mesh svc update`.
pub fn update(client: &Client, out: &Out, args: UpdateArgs) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let (command, component, pull) = match args.command {
        Some(text) => {
            let words = split_words(&text)?;
            let (command, component, pull) = resolve_command(client, words)?;
            (Some(command), component, pull)
        }
        None => (None, None, None),
    };
    let changed = changes(&args.settings, &args.unset_env, command.as_deref());
    let request = UpdateService {
        command,
        settings: args.settings,
        unset_env: args.unset_env,
        component,
        pull,
    };
    let view: ServiceView = client.patch(&service_path(&args.stack.stack, name), &request)?;
    out.print(&view, || {
        println!(
            "Updated {} in stack {}: `{}`, {}, {} each",
            view.name,
            view.stack,
            view.command.join(" "),
            count(view.settings.instances_desired, "instance"),
            format_memory(view.settings.memory_limit_bytes)
        );
        if !changed.is_empty() {
            println!("Changed: {}", changed.join("; "));
        }
        if let (Some(spec), Some(next)) = (&view.settings.schedule, view.next_run) {
            println!("Schedule `{spec}`: next run {}", next.to_rfc3339());
        }
    })?;
    wait_for(client, &args.wait, &view)
}

/// Waits for the rollout a change of one service started, unless told
/// not to.
fn wait_for(client: &Client, wait: &WaitArg, view: &ServiceView) -> anyhow::Result<()> {
    match view.revision {
        Some(revision) if !wait.no_wait => super::rollout::wait(
            client,
            &view.stack,
            std::slice::from_ref(&view.name),
            revision,
        ),
        _ => Ok(()),
    }
}

/// What an update asks to change, in words: `instances 5`, `env set
/// LOG_LEVEL`, `schedule @every 30m`.
fn changes(
    settings: &ServiceSettings,
    unset_env: &[String],
    command: Option<&[String]>,
) -> Vec<String> {
    let mut said = Vec::new();
    if let Some(command) = command {
        said.push(format!("command `{}`", command.join(" ")));
    }
    let json = serde_json::to_value(settings).unwrap_or_default();
    for (field, value) in json.as_object().into_iter().flatten() {
        let shown = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Array(items) if items.is_empty() => continue,
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str())
                .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let field = if field == "env" {
            "env set"
        } else {
            field.as_str()
        };
        said.push(format!("{} {shown}", field.replace('_', " ")));
    }
    if !unset_env.is_empty() {
        said.push(format!("env unset {}", unset_env.join(", ")));
    }
    said
}

/// `mesh svc delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub named: NamedArgs,

    /// Delete without asking, even a published service.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// `mesh svc delete`: asks first when the service is published.
pub fn delete(client: &Client, out: &Out, args: DeleteArgs) -> anyhow::Result<()> {
    let name = args.named.name.get()?;
    let path = service_path(&args.named.stack.stack, name);
    if !args.yes {
        let view: ServiceView = client.get(&path)?;
        let mut why = Vec::new();
        if !view.endpoints.is_empty() {
            why.push(format!(
                "{name} is published at {}: deleting it takes those URLs offline",
                view.endpoints.join(", ")
            ));
        }
        if !view.called_by.is_empty() {
            let callers: Vec<String> = view
                .called_by
                .iter()
                .map(|c| {
                    format!(
                        "{}/{} (last {} ago)",
                        c.stack,
                        c.name,
                        crate::table::age(chrono::Utc::now() - c.last_call_at)
                    )
                })
                .collect();
            why.push(format!(
                "{name} is called by name by {}: their calls will fail",
                callers.join(", ")
            ));
        }
        if !why.is_empty() {
            confirm(&why.join("; "), &format!("Delete {name}?"))?;
        }
    }
    let view: ServiceView = client.delete(&path)?;
    out.print(&view, || {
        println!("Deleted {} from stack {}", view.name, view.stack)
    })
}

/// `mesh svc publish` (`publish` true) and `unpublish`.
pub fn publish(client: &Client, out: &Out, args: PublishArgs, publish: bool) -> anyhow::Result<()> {
    let name = args.name.get()?;
    let request = PublishRequest {
        endpoint: args.endpoint,
        path: args.path,
        https_only: args.https_only,
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
pub fn restart(client: &Client, out: &Out, args: RestartArgs) -> anyhow::Result<()> {
    let name = args.named.name.get()?;
    let view: ServiceView = client.post(
        &format!("{}/restart", service_path(&args.named.stack.stack, name)),
        &serde_json::json!({}),
    )?;
    let how = match view.service_type {
        ServiceType::Web => {
            "one at a time, each new one up (and healthy) before an old one goes; requests in flight finish on the old ones"
        }
        _ => "one at a time",
    };
    out.print(&view, || {
        println!(
            "Restarting {} of {}: {how}; watch them with `mesh svc ls -n {}`",
            count(view.settings.instances_desired, "instance"),
            view.name,
            view.name
        )
    })?;
    wait_for(client, &args.wait, &view)
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

/// Asks `question` on a terminal, after saying `why`; elsewhere refuses,
/// since nobody can answer: `--yes` says it beforehand.
fn confirm(why: &str, question: &str) -> anyhow::Result<()> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        bail!("{why}; add --yes to go ahead");
    }
    eprint!("{why}.\n{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("nothing deleted"),
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
}
