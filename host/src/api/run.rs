//! Interactive runs over the control API: `POST /v1/services/{stack}/{name}/run`
//! (a new instance of a service: its code, env and memory limit) and
//! `POST /v1/run` (an uploaded component, once). Both answer `101` and
//! hand the upgraded connection to [`crate::services::session`].

use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Extension;
use hyper_util::rt::TokioIo;

use super::quotas::RunSlot;
use super::services::{find, load};
use super::settings::{run_settings, scratch};
use super::stacks::{require_blob, resolve_in};
use super::wire::RunQuery;
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{Digest, ServiceKey, FILES_ENTRY};
use crate::runtime::Seat;
use crate::services::session::{self, Session};
use crate::services::Code;

/// The operator's runs sit in seats of their own.
fn seat_of(caller: &Caller) -> Seat {
    if caller.admin {
        Seat::Operator
    } else {
        Seat::Service
    }
}

/// `POST /v1/services/{stack}/{name}/run?command=JSON&tty=BOOL`.
pub(super) async fn service_run(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
    Query(query): Query<RunQuery>,
    request: Request,
) -> ApiResult<Response> {
    require_upgrade(&request)?;
    let service = find(&state, &caller.env, &stack, &name).await?.value;
    let command = match &query.command {
        Some(json) => parse_command(json)?,
        None => service.command.clone(),
    };
    let (digest, argv, record) = resolve_in(&state, &caller.env, &service, &command).await?;
    if record.images.contains(&digest) {
        // Run here, where the client asked: not fetched to be refused.
        if let Some(why) = state.containers.unsupported() {
            return Err(ApiError::bad_request(format!(
                "cannot run {name}: {why}; run it through a host that runs containers (`mesh node ls`)"
            )));
        }
    }
    let code = runnable(&state, &digest, &command).await?;
    let scratch_bytes = match &query.scratch {
        Some(text) => run_scratch(text)?,
        None => service.scratch_bytes,
    };
    let slot =
        super::quotas::take_run(&state, &caller, service.memory_bytes, scratch_bytes).await?;
    let version = record.current;
    let key = ServiceKey::of(&service);
    let id = format!("{name}.run{}", state.runs.next_number());
    let mut env: Vec<(String, String)> = service.env_vars.clone().into_iter().collect();
    env.push(("MESH_STACK".into(), stack.clone()));
    env.push(("MESH_SERVICE".into(), name.clone()));
    env.push(("MESH_INSTANCE".into(), id.clone()));
    let session = Session {
        seat: seat_of(&caller),
        code,
        args: argv,
        env,
        memory_bytes: service.memory_bytes,
        stop_grace: service.stop_grace(),
        who: Some(state.supervisor.identity(&key, &id)),
        terminal: query.tty,
        log: Some((state.logs.service(&key), id.clone())),
        files: stack_files(&state, &caller.env, &stack).await?,
        scratch_bytes,
    };
    tracing::info!(service = %key, instance = %id, "interactive run");
    Ok(attach(&state, key, id, version, session, slot, request))
}

/// `POST /v1/run?digest=D&command=JSON&tty=BOOL`: an uploaded component
/// run once, outside any service, in the caller's environment.
pub(super) async fn once(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<RunQuery>,
    request: Request,
) -> ApiResult<Response> {
    require_upgrade(&request)?;
    let digest = query
        .digest
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("name the code to run: ?digest=sha256:..."))
        .and_then(|d| Digest::try_from(d.to_string()).map_err(ApiError::bad_request))?;
    require_blob(&state, &caller.env, &digest).await?;
    let command = match &query.command {
        Some(json) => parse_command(json)?,
        None => vec!["main".to_string()],
    };
    let code = runnable(&state, &digest, &command).await?;
    let settings: Vec<String> = match &query.env {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            ApiError::bad_request(format!("env must be a JSON array of KEY=VALUE: {e}"))
        })?,
        None => Vec::new(),
    };
    let (memory_bytes, vars) = run_settings(&state, query.memory.clone(), settings)?;
    let files = match &query.files {
        Some(text) => {
            let digest = Digest::try_from(text.clone()).map_err(ApiError::bad_request)?;
            require_blob(&state, &caller.env, &digest).await?;
            Some(digest)
        }
        None => None,
    };
    let scratch_bytes = match &query.scratch {
        Some(text) => run_scratch(text)?,
        None => None,
    };
    let slot = super::quotas::take_run(&state, &caller, memory_bytes, scratch_bytes).await?;
    // Its own log and identity, so the environment's policy applies.
    let key = ServiceKey {
        env: caller.env.clone(),
        stack: "_".into(),
        name: "run".into(),
    };
    let id = format!("run{}", state.runs.next_number());
    let session = Session {
        seat: seat_of(&caller),
        code,
        args: command,
        // Only what the caller gave, as under `wasmtime run --env`.
        env: vars.into_iter().collect(),
        memory_bytes,
        who: Some(state.supervisor.identity(&key, &id)),
        terminal: query.tty,
        log: None,
        files,
        scratch_bytes,
        stop_grace: crate::model::DEFAULT_STOP_TIMEOUT,
    };
    Ok(attach(&state, key, id, 0, session, slot, request))
}

/// Most scratch space an interactive run may ask for (runs are bounded
/// per environment; scratch is memory).
pub const MAX_RUN_SCRATCH_BYTES: u64 = 256 << 20;

/// `--scratch` of an interactive run.
fn run_scratch(text: &str) -> ApiResult<Option<u64>> {
    let bytes = scratch(text)?;
    if bytes.is_some_and(|b| b > MAX_RUN_SCRATCH_BYTES) {
        return Err(ApiError::bad_request(format!(
            "invalid --scratch `{text}`: a run may have at most {}",
            crate::model::format_memory(MAX_RUN_SCRATCH_BYTES)
        )));
    }
    Ok(bytes)
}

/// The files of a stack's current version, if it has any.
async fn stack_files(state: &ApiState, env: &str, stack: &str) -> ApiResult<Option<Digest>> {
    let found = state.store.stack(env, stack).await?;
    Ok(found.and_then(|s| s.value.components.get(FILES_ENTRY).cloned()))
}

/// Answers `101` and runs the session on the upgraded connection.
fn attach(
    state: &ApiState,
    key: ServiceKey,
    id: String,
    version: u64,
    session: Session,
    slot: Option<RunSlot>,
    mut request: Request,
) -> Response {
    let upgrade = hyper::upgrade::on(&mut request);
    let status = Arc::new(Mutex::new(session::starting(id.clone(), version)));
    let supervisor = state.supervisor.clone();
    // Shown among the service's instances until the run ends, however it ends.
    let shown = supervisor.track(&key, status.clone());
    // A service's interactive instances are in its events like any other.
    let events = session.log.is_some().then(|| supervisor.events().clone());
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if let Some(events) = &events {
                    let command = session.args.join(" ");
                    events.service(
                        &key,
                        "instance.started",
                        Some(&id),
                        format!("interactive run of `{command}`"),
                    );
                }
                let outcome = session::serve(session, TokioIo::new(upgraded), status.clone()).await;
                if let Some(events) = &events {
                    events.service(&key, "instance.exited", Some(&id), outcome.message);
                }
            }
            Err(e) => tracing::warn!(instance = %id, error = %e, "interactive run: upgrade failed"),
        }
        drop((shown, slot));
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static(session::PROTOCOL),
    );
    response
}

fn require_upgrade(request: &Request) -> ApiResult<()> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    if upgrade.is_some_and(|u| u.eq_ignore_ascii_case(session::PROTOCOL)) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "an interactive run needs `Connection: Upgrade` and `Upgrade: {}` (use `mesh service run`)",
            session::PROTOCOL
        )))
    }
}

fn parse_command(json: &str) -> ApiResult<Vec<String>> {
    let command: Vec<String> = serde_json::from_str(json).map_err(|e| {
        ApiError::bad_request(format!("command must be a JSON array of strings: {e}"))
    })?;
    if command.first().is_none_or(|w| w.is_empty()) {
        return Err(ApiError::bad_request(
            "give a command to run: `-- COMPONENT ARGS...`",
        ));
    }
    Ok(command)
}

async fn runnable(
    state: &ApiState,
    digest: &Digest,
    command: &[String],
) -> ApiResult<Arc<dyn Code>> {
    let code = load(state, digest).await?;
    if !code.runs_command() {
        return Err(ApiError::bad_request(format!(
            "component '{}' does not export `wasi:cli/run`, so it cannot run interactively (it exports {})",
            command.first().map(String::as_str).unwrap_or(""),
            code.exports().join(", ")
        )));
    }
    Ok(code)
}
