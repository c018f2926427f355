//! The control API: HTTP/JSON, every call authenticated by a bearer token
//! that names the environment it acts on.
//!
//! Handlers validate a request, write desired state to the store, and
//! answer; they never touch instances (the supervisor converges). Errors
//! are `{"error": "..."}` with one line a person can act on.
//!
//! - `wire`: request and response bodies, shared with the CLI.
//! - `services`: create, update, delete, list, logs.
//! - `endpoints`: publish and unpublish.
//! - `envs`: environments: outbound policy, reach, domains, quotas, tokens.
//! - `quotas`: what one environment may use, checked on every change.
//! - `run`: interactive runs over an upgraded connection.
//! - `code`: code uploads (components, files, images) and downloads.
//! - `stacks`: deploys, versions, rollback.
//! - `restart`: a service's instances rolled by hand.
//! - `stats`: a service's recent requests, for the dashboard's charts.
//! - `streams`: follow streams (events, logs), bounded per environment.
//! - `uploads`: uploads going, bounded per environment, and their pace.
//! - `ui`: the dashboard, a page served from the binary.

mod code;
mod endpoints;
mod envs;
pub mod here;
mod nodes;
mod pulls;
mod quotas;
mod registries;
mod restart;
mod run;
mod services;
pub mod settings;
mod stacks;
mod stats;
mod streams;
pub mod ui;
mod uploads;
pub mod wire;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::Serialize;

use crate::config::DaemonConfig;
use crate::cron::Scheduler;
use crate::model::DEFAULT_ENVIRONMENT;
use crate::runtime::Engine;
use crate::services::{CodeSource, Supervisor};
use crate::store::{KvError, Store, Txn};
use crate::telemetry::{Event, Logs};
use wire::ErrorBody;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// Desired state.
    pub store: Store,
    /// Code acceptance and collection.
    pub engine: Arc<Engine>,
    /// Images and the containers made of them.
    pub containers: Arc<crate::container::Containers>,
    /// Code loading, as the services layer sees it.
    pub code: Arc<dyn CodeSource>,
    /// Instance status (read only).
    pub supervisor: Arc<Supervisor>,
    /// Cron jobs: triggers and run history.
    pub scheduler: Arc<Scheduler>,
    /// The store revision the running system has applied.
    pub applied: tokio::sync::watch::Receiver<u64>,
    /// Instance output.
    pub logs: Arc<Logs>,
    /// Daemon settings.
    pub config: Arc<DaemonConfig>,
    /// The operator's token.
    pub admin_token: Arc<str>,
    /// Turns true when the daemon shuts down: followers end their streams.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Interactive runs going, by environment.
    pub runs: Arc<quotas::Runs>,
    /// Follow streams open, by environment.
    pub streams: Arc<streams::Streams>,
    /// Uploads going, by environment.
    pub places: Arc<uploads::Places>,
    /// Code uploaded and not deployed yet, by environment.
    pub uploads: Arc<quotas::Uploads>,
    /// This host, as it was when it started.
    pub node: crate::model::Node,
    /// Whether hosts share the store (a cluster).
    pub clustered: bool,
    /// The other hosts of a cluster, asked for the instances they run.
    pub others: Option<Arc<dyn OtherHosts>>,
    /// The ports the ingress listens on, so endpoints show as URLs that
    /// answer.
    pub ingress: IngressPorts,
    /// Seals and opens registry passwords.
    pub sealer: Arc<crate::sealed::Sealer>,
    /// Pulls code from OCI registries.
    pub registries: Arc<crate::registry::Registries>,
}

/// The ports of this host's ingress listeners.
#[derive(Clone, Copy, Debug, Default)]
pub struct IngressPorts {
    /// The HTTP listener's.
    pub http: Option<u16>,
    /// The HTTPS listener's, when there is one.
    pub https: Option<u16>,
}

impl IngressPorts {
    /// An endpoint's URL through this host's ingress: with the port when
    /// it is not the scheme's own.
    pub fn url(&self, endpoint: &crate::model::Endpoint) -> String {
        endpoint.url_at(match endpoint.scheme.as_str() {
            "https" => self.https,
            _ => self.http,
        })
    }
}

/// The other hosts of a cluster, as the API sees them.
pub trait OtherHosts: Send + Sync + 'static {
    /// The instances each other live host runs of environment `env`'s
    /// services (hosts that do not answer in time are left out).
    fn instances(
        &self,
        env: &str,
    ) -> crate::services::code::BoxFuture<'static, Vec<wire::HereInstances>>;
}

/// Longest a command waits for its change to take effect.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl ApiState {
    /// Commits a change durably and answers once the supervisor has
    /// applied it: after `mesh env set outbound deny` or `mesh svc
    /// publish` returns, the next request already sees the change.
    pub async fn commit(&self, txn: Txn) -> Result<u64, KvError> {
        let revision = self.store.commit(txn).await?;
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|&r| r >= revision)).await;
        Ok(revision)
    }
}

/// `GET /v1/domains`: the caller's published host names that ACME
/// certifies, and where each stands (every environment's for the
/// operator).
async fn domains(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult<Json<Vec<crate::acme::records::DomainStatus>>> {
    let env = (!caller.admin).then_some(caller.env.as_str());
    Ok(Json(crate::acme::statuses(&state.store, env).await?))
}

/// Restores in desired state the version each failed rollout came from
/// (see [`Supervisor::report_failures_to`](crate::services::Supervisor::report_failures_to)),
/// until `failures` closes or `stopping` turns true.
pub async fn roll_back_failures(
    state: ApiState,
    mut failures: tokio::sync::mpsc::Receiver<crate::services::RolloutFailure>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let failure = tokio::select! {
            failure = failures.recv() => failure,
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(failure) = failure else { return };
        if failure.from_version == failure.to_version {
            // New settings or a restart: nothing to roll back in the
            // stack; the previous instances were kept.
            continue;
        }
        for attempt in 0..3 {
            match stacks::roll_back_failed(&state, &failure).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(service = %failure.key, attempt, error = %e.message, "cannot roll back a failed rollout");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Who is calling: the environment their token acts on.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Environment name.
    pub env: String,
    /// Whether it is the operator (who may manage environments).
    pub admin: bool,
}

impl Caller {
    /// Refuses, naming `what`, unless the caller is the operator.
    pub fn require_operator(&self, what: &str) -> ApiResult<()> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "only the operator's token (daemon.json) can {what}"
            )))
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: the thing named does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 404 for an environment the caller cannot see or that does not exist.
    pub fn no_environment(name: &str) -> ApiError {
        ApiError::not_found(format!("no environment named {name}"))
    }

    /// 409: it conflicts with what exists.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }

    /// 413: the upload is too large.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: message.into(),
        }
    }

    /// 403: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// 502: a server the daemon needed (a registry) failed or could not
    /// be reached.
    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: message.into(),
        }
    }

    /// 408: the request's body did not come in time.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: message.into(),
        }
    }

    /// 429: the caller holds as many of something as it may.
    pub fn too_many(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
        }
    }

    /// 403: a quota of the environment would be exceeded.
    pub fn quota(message: impl Into<String>) -> ApiError {
        ApiError::forbidden(message)
    }

    fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if let Some(KvError::Full(why)) = e.downcast_ref::<KvError>() {
            tracing::warn!(error = %why, "a change was refused: the disk is full");
            return ApiError {
                status: StatusCode::INSUFFICIENT_STORAGE,
                message: format!(
                    "the data directory's disk is full, so nothing was changed: free some space and try again (deleting services still works) ({why})"
                ),
            };
        }
        if let Some(KvError::Conflict(_)) = e.downcast_ref::<KvError>() {
            return ApiError::conflict(
                "the state changed while this request was applied; run the command again",
            );
        }
        tracing::error!(error = %format!("{e:#}"), "request failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("internal error: {e:#}"),
        }
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> ApiError {
        ApiError::from(anyhow::Error::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// The API's routes, all behind the token check.
pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/v1/services", get(services::list).post(services::create))
        .route(
            "/v1/services/{stack}/{name}",
            get(services::show)
                .patch(services::update)
                .delete(services::delete),
        )
        .route("/v1/services/{stack}/{name}/logs", get(services::logs))
        .route(
            "/v1/services/{stack}/{name}/trigger",
            post(services::trigger),
        )
        .route("/v1/services/{stack}/{name}/run", post(run::service_run))
        .route(
            "/v1/services/{stack}/{name}/restart",
            post(restart::restart),
        )
        .route("/v1/services/{stack}/{name}/stats", get(stats::stats))
        .route("/v1/whoami", get(whoami))
        .route("/v1/run", post(run::once))
        .route(
            "/v1/services/{stack}/{name}/publish",
            post(endpoints::publish),
        )
        .route(
            "/v1/services/{stack}/{name}/unpublish",
            post(endpoints::unpublish),
        )
        .route("/metrics", get(metrics))
        .route("/v1/events", get(events))
        .route("/v1/domains", get(domains))
        .route("/v1/envs", get(envs::list).post(envs::create))
        .route("/v1/envs/{name}", patch(envs::update))
        .route("/v1/envs/{name}/token", post(envs::rotate_token))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/here/instances", get(services::here))
        .route(
            "/v1/here/call/{env}/{stack}/{service}",
            axum::routing::any(here::call_root),
        )
        .route(
            "/v1/here/call/{env}/{stack}/{service}/{*path}",
            axum::routing::any(here::call),
        )
        .route("/v1/nodes/{name}/drain", post(nodes::drain))
        .route("/v1/nodes/{name}/resume", post(nodes::resume))
        .route("/v1/registries", get(registries::list))
        .route("/v1/pulls", get(registries::pulls))
        .route(
            "/v1/registries/{host}",
            put(registries::login).delete(registries::logout),
        )
        .route("/v1/stacks", get(stacks::list))
        .route("/v1/stacks/{stack}/deploy", post(stacks::deploy))
        .route("/v1/stacks/{stack}/versions", get(stacks::versions))
        .route("/v1/stacks/{stack}/rollback", post(stacks::rollback))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES));
    // Uploads enforce their own, larger limit with a clear message.
    let uploads = Router::new()
        .route("/v1/code", put(code::upload_code))
        .route("/v1/code/{digest}", get(code::download_code))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(ui::router())
        .merge(authed)
        .merge(uploads)
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(axum::middleware::from_fn(errors_as_json))
        .with_state(state)
}

/// Largest JSON request body, in bytes.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// Rewrites every error answer not already JSON (the ones axum's
/// extractors make: a bad body, a wrong content type, a bad path or
/// query, a wrong method) as `{"error": "..."}` with the same status.
async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    ApiError { status, message }.into_response()
}

/// `GET /v1/events?follow=BOOL&tail=N`: the caller's environment's events
/// (every environment's for the operator), oldest first; with `follow`,
/// NDJSON that stays open for new ones.
async fn events(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::extract::Query(query): axum::extract::Query<wire::EventsQuery>,
) -> ApiResult<Response> {
    // A service is named within the token's environment, as everywhere else.
    let env = (!caller.admin || query.service.is_some()).then_some(caller.env.clone());
    let service = query.service;
    let wanted = move |event: &Event| {
        env.as_ref().is_none_or(|e| &event.env == e)
            && service
                .as_ref()
                .is_none_or(|s| event.service.as_ref() == Some(s))
    };
    let events = state.supervisor.events().clone();
    let mut list = events.matching(&wanted);
    if let Some(n) = query.tail {
        let skip = list.len().saturating_sub(n);
        list.drain(..skip);
    }
    if !query.follow {
        return Ok(Json(list).into_response());
    }
    let slot = state.streams.open(&caller)?;
    Ok(follow_ndjson(
        list,
        events.follow(),
        state.stopping.clone(),
        wanted,
        slot,
    ))
}

/// `GET /v1/whoami`: the environment the token acts on, and whether it is
/// the operator's.
async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Json<wire::WhoAmI> {
    Json(wire::WhoAmI {
        env: caller.env,
        operator: caller.admin,
    })
}

/// Names joined for a message, or `none`.
pub(super) fn list_or_none<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A response that streams `backlog`, then every item from `live` that
/// `wanted` keeps, one JSON object per line, until the client goes away or
/// the daemon stops. Items the receiver lagged behind on are skipped.
/// `held` (the stream's count) is dropped with the stream.
pub(super) fn follow_ndjson<T>(
    backlog: Vec<T>,
    live: tokio::sync::broadcast::Receiver<T>,
    stopping: tokio::sync::watch::Receiver<bool>,
    wanted: impl Fn(&T) -> bool + Send + 'static,
    held: impl Send + Sync + 'static,
) -> Response
where
    T: Serialize + Clone + Send + 'static,
{
    use futures::StreamExt as _;
    use tokio::sync::broadcast::error::RecvError;
    let backlog = futures::stream::iter(backlog);
    let new = futures::stream::unfold(
        (live, stopping, wanted),
        |(mut live, mut stopping, wanted)| async move {
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    _ = stopping.wait_for(|stopped| *stopped) => return None,
                };
                match received {
                    Ok(item) if wanted(&item) => return Some((item, (live, stopping, wanted))),
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    let body = backlog.chain(new).map(move |item| {
        let _held = &held;
        let mut json = serde_json::to_vec(&item).unwrap_or_default();
        json.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(json))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text, for the operator's token only (it
/// names every environment's services).
async fn metrics(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult<Response> {
    caller.require_operator("read metrics (they cover every environment)")?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.supervisor.metrics_text(),
    )
        .into_response())
}

async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing API token: send `Authorization: Bearer <token>` (the CLI reads it from daemon.json or MESH_TOKEN)",
            )
        })?;
    let admin = crate::auth::constant_time_eq(token, &state.admin_token);
    let env = if admin {
        DEFAULT_ENVIRONMENT.to_string()
    } else {
        state
            .store
            .environment_of_token(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid API token"))?
    };
    request.extensions_mut().insert(Caller { env, admin });
    Ok(next.run(request).await)
}
