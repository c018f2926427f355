//! Services: create, update, delete, list, logs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use chrono::{TimeZone as _, Utc};

use super::settings::{self, SettingsView};
use super::stacks::{check_services_keep_code, require_blob, resolve, StackChange};
use super::wire::{
    CallerView, ComponentRef, CreateService, HereInstances, ListQuery, LogsQuery, PullRef,
    ServiceView, TriggerResult, UpdateService,
};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::cron::Schedule;
use crate::model::{
    dns_name, validate_component_name, validate_name, Digest, Service, ServiceKey, DEFAULT_STACK,
};
use crate::services::Code;
use crate::store::{encode, key, Compare, Txn, Versioned};
use crate::telemetry::LogLine;

/// Longest text `logs?grep=` looks for.
const MAX_GREP_BYTES: usize = 256;

/// How long a trigger waits for a just-created job to be started.
const JOB_START_WAIT: Duration = Duration::from_secs(2);

/// `GET /v1/services`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<ServiceView>>> {
    let in_stack: Vec<Service> = state
        .store
        .services(&caller.env)
        .await?
        .into_iter()
        .map(|s| s.value)
        .filter(|s| query.stack.as_deref().is_none_or(|st| st == s.stack))
        .collect();
    if let (Some(stack), true) = (&query.stack, in_stack.is_empty()) {
        return Err(ApiError::not_found(format!("no services in stack {stack}")));
    }
    if let Some(name) = query
        .name
        .as_ref()
        .filter(|n| !in_stack.iter().any(|s| s.name == **n))
    {
        let have: Vec<&str> = in_stack.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "no service named {name} (services: {})",
            super::list_or_none(&have)
        )));
    }
    let mut views: Vec<ServiceView> = in_stack
        .into_iter()
        .filter(|s| query.name.as_deref().is_none_or(|n| n == s.name))
        .map(|s| view(&state, s))
        .collect();
    with_other_hosts(&state, &caller.env, &mut views).await;
    with_sources(&state, &caller.env, &mut views).await?;
    Ok(Json(views))
}

/// Says, for each service whose component was pulled from a registry,
/// the reference and the digest it resolved to.
async fn with_sources(state: &ApiState, env: &str, views: &mut [ServiceView]) -> ApiResult<()> {
    let stacks = state.store.stacks(env).await?;
    for view in views.iter_mut() {
        let component = view.command.first().map(String::as_str).unwrap_or("");
        view.source = stacks
            .iter()
            .find(|s| s.value.name == view.stack)
            .and_then(|s| s.value.sources.get(component).cloned());
    }
    Ok(())
}

/// Adds the instances the other hosts of a cluster run to `views`.
async fn with_other_hosts(state: &ApiState, env: &str, views: &mut [ServiceView]) {
    let Some(others) = &state.others else {
        return;
    };
    for theirs in others.instances(env).await {
        if let Some(view) = views
            .iter_mut()
            .find(|v| v.stack == theirs.stack && v.name == theirs.service)
        {
            view.instances.extend(theirs.instances);
            view.runs.extend(theirs.runs);
        }
    }
    for view in views {
        // A cron job's runs from every host that ran it, newest first;
        // a run two hosts know (one took it over from the other's shared
        // runs) shown once, ended rather than running.
        view.runs.sort_by(|a, b| {
            b.scheduled_at
                .cmp(&a.scheduled_at)
                .then(b.started_at.cmp(&a.started_at))
                .then(
                    (a.status == crate::model::RunStatus::Running)
                        .cmp(&(b.status == crate::model::RunStatus::Running)),
                )
        });
        view.runs.dedup_by(|later, kept| {
            later.number == kept.number && later.scheduled_at == kept.scheduled_at
        });
        view.runs.truncate(crate::cron::RUNS_KEPT);
        // By number: `w.2` before `w.10`.
        view.instances.sort_by_key(|i| {
            let (name, number) = i.id.rsplit_once('.').unwrap_or((&i.id, ""));
            (name.to_string(), number.len(), number.to_string())
        });
    }
}

/// Query of `GET /v1/here/instances`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct HereQuery {
    env: String,
}

/// `GET /v1/here/instances?env=E` (operator only): the instances this
/// host runs of the environment's services.
pub(super) async fn here(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HereQuery>,
) -> ApiResult<Json<Vec<HereInstances>>> {
    caller.require_operator("list a host's instances")?;
    let services = state.store.services(&query.env).await?;
    let here = services
        .into_iter()
        .map(|s| view(&state, s.value))
        .filter(|v| !v.instances.is_empty() || !v.runs.is_empty())
        .map(|v| HereInstances {
            stack: v.stack,
            service: v.name,
            instances: v.instances,
            runs: v.runs,
        })
        .collect();
    Ok(Json(here))
}

/// `GET /v1/services/{stack}/{name}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let key = ServiceKey::of(&found.value);
    let mut views = [view(&state, found.value)];
    with_other_hosts(&state, &caller.env, &mut views).await;
    with_sources(&state, &caller.env, &mut views).await?;
    let [mut view] = views;
    view.called_by = state
        .supervisor
        .callers_of(&key)
        .into_iter()
        .map(|c| CallerView {
            stack: c.key.stack,
            name: c.key.name,
            last_call_at: Utc
                .timestamp_opt(c.last_secs as i64, 0)
                .single()
                .unwrap_or_default(),
        })
        .collect();
    Ok(Json(view))
}

/// `POST /v1/services`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<CreateService>,
) -> ApiResult<(StatusCode, Json<ServiceView>)> {
    let stack_name = if request.stack.is_empty() {
        DEFAULT_STACK.to_string()
    } else {
        request.stack.clone()
    };
    validate_name("service", &request.name).map_err(ApiError::bad_request)?;
    validate_name("stack", &stack_name).map_err(ApiError::bad_request)?;
    let mut service = Service::new(&caller.env, &stack_name, &request.name);
    service.command = settings::command(request.command)?;
    request.settings.apply(&state, &mut service)?;

    let guard = super::quotas::guard(&state, &caller.env).await?;
    let existing = state.store.services(&caller.env).await?;
    if existing
        .iter()
        .any(|s| s.value.stack == service.stack && s.value.name == service.name)
    {
        return Err(ApiError::conflict(format!(
            "service {} already exists in stack {}; change it with `mesh svc update {}`",
            service.name, service.stack, service.name
        )));
    }
    let name = service.dns_name();
    if name.len() > 63 {
        return Err(ApiError::bad_request(format!(
            "stack {} and service {} make the intra-DNS name {name}, longer than a DNS label's 63 characters; pick shorter names",
            service.stack, service.name
        )));
    }
    if let Some(other) = existing.iter().find(|s| s.value.dns_name() == name) {
        return Err(ApiError::conflict(format!(
            "service {} in stack {} would share the intra-DNS name {name} with service {} in stack {}; pick another name",
            service.name, service.stack, other.value.name, other.value.stack
        )));
    }

    let pulled = pull_named(&state, &caller, request.pull.as_ref()).await?;
    let mut change = StackChange::load(&state, &caller.env, &stack_name).await?;
    let digest = plan_code(
        &state,
        &mut change,
        request.component.as_ref(),
        pulled,
        &service,
    )
    .await?;
    check_runnable(&state, &change.stack, &digest, &service).await?;
    let in_stack: Vec<&Service> = existing
        .iter()
        .map(|s| &s.value)
        .filter(|s| s.stack == stack_name)
        .collect();
    check_services_keep_code(&state, &change.stack, &in_stack, None)?;
    let before: Vec<&Service> = existing.iter().map(|s| &s.value).collect();
    let mut after = before.clone();
    after.push(&service);
    let code = change.kept_code(state.config.versions_kept);
    let quota = guard.check(&state, &before, &after, Some(&code)).await?;

    let service_key = key::service(&service.env, &service.stack, &service.name);
    let name_key = key::dns_name(&service.env, &name);
    let txn = quota(Txn::new())
        .when(Compare::Absent(service_key.clone()))
        .when(Compare::Absent(name_key.clone()))
        .put(service_key, encode(&service))
        .put(name_key, encode(&ServiceKey::of(&service)));
    state
        .commit(change.txn(txn, state.config.versions_kept))
        .await?;
    change.announce(&state, &caller.env, &[]);
    settings_event(&state, &service, "service.created");
    Ok((StatusCode::CREATED, Json(view(&state, service))))
}

/// `PATCH /v1/services/{stack}/{name}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
    Json(request): Json<UpdateService>,
) -> ApiResult<Json<ServiceView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let mut service = found.value.clone();
    if let Some(command) = request.command {
        service.command = settings::command(command)?;
    }
    for k in &request.unset_env {
        service.env_vars.remove(k);
    }
    request.settings.apply(&state, &mut service)?;
    let pulled = pull_named(&state, &caller, request.pull.as_ref()).await?;
    let mut change = StackChange::load(&state, &caller.env, &stack).await?;
    let digest = plan_code(
        &state,
        &mut change,
        request.component.as_ref(),
        pulled,
        &service,
    )
    .await?;
    check_runnable(&state, &change.stack, &digest, &service).await?;
    let guard = super::quotas::guard(&state, &caller.env).await?;
    let services = state.store.services(&caller.env).await?;
    let in_stack: Vec<&Service> = services
        .iter()
        .map(|s| &s.value)
        .filter(|s| s.stack == stack)
        .collect();
    check_services_keep_code(&state, &change.stack, &in_stack, Some(&name))?;
    let after: Vec<&Service> = services
        .iter()
        .map(|s| &s.value)
        .map(|s| {
            if s.stack == stack && s.name == name {
                &service
            } else {
                s
            }
        })
        .collect();
    let before: Vec<&Service> = services.iter().map(|s| &s.value).collect();
    let code = change.kept_code(state.config.versions_kept);
    let quota = guard.check(&state, &before, &after, Some(&code)).await?;

    let service_key = key::service(&caller.env, &stack, &name);
    let txn = quota(Txn::new())
        .when(Compare::ModRev(service_key.clone(), found.mod_rev))
        .put(service_key, encode(&service));
    let revision = state
        .commit(change.txn(txn, state.config.versions_kept))
        .await?;
    change.announce(&state, &caller.env, std::slice::from_ref(&name));
    settings_event(&state, &service, "service.updated");
    let mut answer = view(&state, service);
    answer.revision = Some(revision);
    Ok(Json(answer))
}

/// `DELETE /v1/services/{stack}/{name}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let service_key = key::service(&caller.env, &stack, &name);
    let mut txn = Txn::new()
        .when(Compare::ModRev(service_key.clone(), found.mod_rev))
        .delete(service_key)
        .delete(key::dns_name(&caller.env, &found.value.dns_name()));
    for endpoint in &found.value.endpoints {
        txn = txn.delete(key::endpoint(&endpoint.host, &endpoint.path));
    }
    state.commit(txn).await?;
    let key = ServiceKey::of(&found.value);
    tracing::info!(service = %key, "service deleted");
    state
        .supervisor
        .events()
        .service(&key, "service.deleted", None, "deleted".into());
    let mut gone = view(&state, found.value);
    gone.instances.clear();
    Ok(Json(gone))
}

/// `GET /v1/services/{stack}/{name}/logs`.
pub(super) async fn logs(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Response> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let key = ServiceKey::of(&found.value);
    let log = state.logs.service(&key);
    let reader = log.clone();
    let mut lines = tokio::task::spawn_blocking(move || reader.tail(None))
        .await
        .map_err(|e| anyhow::anyhow!("reading logs failed: {e}"))?;
    if let Some(instance) = &query.instance {
        let live = state.supervisor.instances(&key);
        let known =
            live.iter().any(|i| &i.id == instance) || lines.iter().any(|l| &l.instance == instance);
        if !known {
            // The live instances, then the newest few others that logged.
            let mut ids: Vec<String> = live.into_iter().map(|i| i.id).collect();
            for line in lines.iter().rev() {
                if ids.len() >= 8 {
                    break;
                }
                if !ids.contains(&line.instance) {
                    ids.push(line.instance.clone());
                }
            }
            return Err(ApiError::not_found(format!(
                "no instance {instance} of {name} (its instances: {})",
                super::list_or_none(&ids)
            )));
        }
    }
    let grep = match &query.grep {
        Some(text) if text.len() > MAX_GREP_BYTES => {
            return Err(ApiError::bad_request(format!(
                "the text to look for is {} bytes; at most {MAX_GREP_BYTES}",
                text.len()
            )))
        }
        Some(text) if !text.is_empty() => Some(text.to_lowercase()),
        _ => None,
    };
    let wanted = move |line: &LogLine| {
        query.instance.as_ref().is_none_or(|i| &line.instance == i)
            && query.since.is_none_or(|since| line.time >= since)
            && query.until.is_none_or(|until| line.time < until)
            && grep
                .as_ref()
                .is_none_or(|text| line.text.to_lowercase().contains(text))
    };
    lines.retain(&wanted);
    if let Some(n) = query.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    if !query.follow {
        return Ok(Json(lines).into_response());
    }
    // Follow: what is kept so far, then every new line as it is written
    // (across instance restarts), one JSON object per line, until the
    // client goes away.
    let slot = state.streams.open(&caller)?;
    Ok(super::follow_ndjson(
        lines,
        log.follow(),
        state.stopping.clone(),
        wanted,
        slot,
    ))
}

/// Logs and records a service's committed settings.
fn settings_event(state: &ApiState, service: &Service, kind: &str) {
    let key = ServiceKey::of(service);
    tracing::info!(service = %key, kind);
    let message = format!(
        "`{}`, {} instance{}",
        service.command.join(" "),
        service.instances,
        if service.instances == 1 { "" } else { "s" }
    );
    state.supervisor.events().service(&key, kind, None, message);
}

/// Finds a service or says which ones exist.
pub(super) async fn find(
    state: &ApiState,
    env: &str,
    stack: &str,
    name: &str,
) -> ApiResult<Versioned<Service>> {
    if let Some(found) = state.store.service(env, stack, name).await? {
        return Ok(found);
    }
    let services = state.store.services(env).await?;
    let have: Vec<String> = services
        .iter()
        .filter(|s| s.value.stack == stack)
        .map(|s| s.value.name.clone())
        .collect();
    let elsewhere: Vec<&str> = services
        .iter()
        .filter(|s| s.value.name == name && s.value.stack != stack)
        .map(|s| s.value.stack.as_str())
        .collect();
    if let [other] = elsewhere.as_slice() {
        return Err(ApiError::not_found(format!(
            "no service named {name} in stack {stack}: {name} is in stack {other}; add --stack {other}"
        )));
    }
    let hint = if !elsewhere.is_empty() {
        format!(
            "{name} is in stacks {}: add --stack STACK",
            elsewhere.join(", ")
        )
    } else if have.is_empty() {
        format!("stack {stack} has no services")
    } else {
        format!("stack {stack} has: {}", have.join(", "))
    };
    Err(ApiError::not_found(format!(
        "no service named {name} in stack {stack} ({hint})"
    )))
}

/// `POST /v1/services/{stack}/{name}/trigger`: runs a cron job now.
pub(super) async fn trigger(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
) -> ApiResult<Json<TriggerResult>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    if found.value.schedule.is_none() {
        return Err(ApiError::bad_request(format!(
            "service {name} is a {}, not a cron job: give it a schedule with `mesh svc update {name} --schedule SPEC`",
            found.value.service_type()
        )));
    }
    let key = ServiceKey::of(&found.value);
    // A job created a moment ago may not have been started by the
    // supervisor yet.
    let deadline = tokio::time::Instant::now() + JOB_START_WAIT;
    let trigger = loop {
        if let Some(trigger) = state.scheduler.trigger(&key) {
            break trigger;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::conflict(format!(
                "cron job {name} is not running yet; try again"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let started = trigger
        .fire()
        .await
        .map_err(|why| ApiError::conflict(format!("cannot run {name} now: {why}")))?;
    tracing::info!(service = %key, instance = %started.instance, "cron job triggered by hand");
    Ok(Json(TriggerResult {
        stack,
        name,
        number: started.number,
        instance: started.instance,
    }))
}

/// Pulls the component a request names by registry reference, if it does.
async fn pull_named(
    state: &ApiState,
    caller: &Caller,
    pull: Option<&PullRef>,
) -> ApiResult<Option<super::pulls::Kept>> {
    let Some(pull) = pull else {
        return Ok(None);
    };
    let one = std::collections::BTreeMap::from([(pull.name.clone(), pull.reference.clone())]);
    Ok(super::pulls::pull_all(state, caller, &one).await?.pop())
}

/// Adds uploaded or pulled code to the stack's bundle if the request
/// brings some, and returns the digest of the component the service's
/// command names.
async fn plan_code(
    state: &ApiState,
    change: &mut StackChange,
    component: Option<&ComponentRef>,
    pulled: Option<super::pulls::Kept>,
    service: &Service,
) -> ApiResult<Digest> {
    if let Some(kept) = pulled {
        let mut components = change.stack.components.clone();
        components.insert(kept.name.clone(), kept.digest.clone());
        let mut sources = change.stack.sources.clone();
        let reason = format!("pull {}", kept.source.reference);
        sources.insert(kept.name.clone(), kept.source);
        change.set_components(components, sources, &reason, &|d| state.code.is_image(d));
    }
    if let Some(component) = component {
        validate_component_name(&component.name).map_err(ApiError::bad_request)?;
        require_blob(state, &service.env, &component.digest).await?;
        let mut components = change.stack.components.clone();
        components.insert(component.name.clone(), component.digest.clone());
        let mut sources = change.stack.sources.clone();
        sources.remove(&component.name);
        change.set_components(components, sources, "upload", &|d| state.code.is_image(d));
    }
    resolve(state, &change.stack, service, &service.command).map(|(digest, _)| digest)
}

/// Loads stored code off the async threads.
pub(super) async fn load(state: &ApiState, digest: &Digest) -> ApiResult<Arc<dyn Code>> {
    state
        .code
        .load(digest)
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("loading code failed: {e}")))
}

/// Checks the component can run the way the service needs: a web service
/// needs the HTTP handler. (Every accepted component has `wasi:cli/run` or
/// the handler, and a handler-only worker can still take requests by name.)
/// An image runs any command and serves HTTP: it is not looked at (nor
/// fetched by a host that does not hold it).
async fn check_runnable(
    state: &ApiState,
    stack: &crate::model::Stack,
    digest: &Digest,
    service: &Service,
) -> ApiResult<()> {
    if stack.images.contains(digest) {
        return Ok(());
    }
    if service.schedule.is_some() {
        let loaded = load(state, digest).await?;
        if !loaded.runs_command() {
            return Err(ApiError::bad_request(format!(
                "component '{}' does not export `wasi:cli/run`, so {} cannot run on a schedule (it exports {})",
                service.component(),
                service.name,
                loaded.exports().join(", ")
            )));
        }
    }
    if service.endpoints.is_empty() {
        return Ok(());
    }
    let loaded = load(state, digest).await?;
    require_handler(loaded.as_ref(), service)
}

/// Refuses code that cannot take requests.
pub(super) fn require_handler(loaded: &dyn Code, service: &Service) -> ApiResult<()> {
    if loaded.serves_http() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "component '{}' does not export `wasi:http/incoming-handler`, so {} cannot serve requests (it exports {})",
        service.component(),
        service.name,
        loaded.exports().join(", ")
    )))
}
/// What `mesh service ls` shows of a service.
pub(super) fn view(state: &ApiState, service: Service) -> ServiceView {
    let key = ServiceKey::of(&service);
    let kind = state.supervisor.kind(&key);
    let mut instances = state.supervisor.instances(&key);
    for instance in &mut instances {
        instance.kind = kind.to_string();
        instance.node.clone_from(&state.node.name);
    }
    let fresh_because = state.supervisor.fresh_because(&key);
    let version = instances.first().map_or(0, |i| i.version);
    let (next_run, runs) = match &service.schedule {
        Some(spec) => {
            // The job computes the same from the same schedule; asking the
            // schedule is right even before the supervisor has seen a change.
            let next = Schedule::parse(spec, service.timezone.as_deref())
                .ok()
                .and_then(|s| s.next_after(Utc::now()));
            (next, state.scheduler.runs(&key))
        }
        None => (None, Vec::new()),
    };
    ServiceView {
        service_type: service.service_type(),
        dns_name: dns_name(&service.stack, &service.name),
        settings: SettingsView::of(&service),
        next_run,
        runs,
        version,
        created_at: service.created_at,
        instances,
        endpoints: service
            .endpoints
            .iter()
            .map(|e| state.ingress.url(e))
            .collect(),
        serving: if fresh_because.is_some() {
            "fresh per request".to_string()
        } else {
            "reused".to_string()
        },
        fresh_because,
        kind: kind.to_string(),
        restarted_at: service.restarted_at,
        called_by: Vec::new(),
        source: None,
        rollout: state.supervisor.rollout(&key),
        revision: None,
        name: service.name,
        stack: service.stack,
        command: service.command,
    }
}
