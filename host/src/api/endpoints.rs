//! Endpoints: `mesh svc publish` binds a public URL to a service (making it
//! a web service), `mesh svc unpublish` unbinds it (the last one makes it a
//! worker again).
//!
//! An endpoint has one owner across every environment, since the ingress is
//! shared: `/endpoints/<host><path>` names it, and the publish transaction
//! requires that key to be absent, so two publishers cannot both win.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::services::{find, load, require_handler, view};
use super::stacks::resolve_in;
use super::wire::{PublishRequest, ServiceView};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{may_publish, Endpoint, Service, ServiceKey};
use crate::store::{encode, key, Compare, Txn};

/// Who an endpoint is bound to, as kept under `/endpoints/`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Owner {
    env: String,
    stack: String,
    service: String,
}

/// `POST /v1/services/{stack}/{name}/publish`.
pub(super) async fn publish(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
    Json(request): Json<PublishRequest>,
) -> ApiResult<Json<ServiceView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let mut service = found.value.clone();
    let endpoint = parse(&state, &caller.env, &request)?;
    check_host(&state, &caller.env, &endpoint.host).await?;
    if service.schedule.is_some() {
        return Err(ApiError::bad_request(format!(
            "{name} is a cron job: a service with a schedule cannot take requests; remove it with `--schedule none` first"
        )));
    }
    if service.endpoints.iter().any(|e| e.same_place(&endpoint)) {
        return Err(ApiError::conflict(format!(
            "{name} is already published at {}",
            state.ingress.url(&endpoint)
        )));
    }
    let owner_key = key::endpoint(&endpoint.host, &endpoint.path);
    if let Some(owner) = state.store.get::<Owner>(owner_key.clone()).await? {
        let owner = owner.value;
        let who = if owner.env == caller.env {
            format!("service {} in stack {}", owner.service, owner.stack)
        } else {
            "another environment".to_string()
        };
        return Err(ApiError::conflict(format!(
            "endpoint {} is taken by {who}; pick another host or path",
            state.ingress.url(&endpoint)
        )));
    }
    // A host belongs to one environment: no tenant takes a path under
    // another's host.
    let on_host = state
        .store
        .list::<Owner>(key::host_endpoints(&endpoint.host))
        .await?;
    if on_host.iter().any(|o| o.value.env != caller.env) {
        return Err(ApiError::conflict(format!(
            "host {} belongs to another environment; pick another host",
            endpoint.host
        )));
    }
    let (digest, _, stack_record) =
        resolve_in(&state, &caller.env, &service, &service.command).await?;
    // An image serves HTTP on $PORT: not looked at (nor fetched).
    if !stack_record.images.contains(&digest) {
        require_handler(load(&state, &digest).await?.as_ref(), &service)?;
    }

    service.endpoints.push(endpoint.clone());
    let service_key = key::service(&caller.env, &stack, &name);
    let owner = Owner {
        env: caller.env.clone(),
        stack: stack.clone(),
        service: name.clone(),
    };
    let txn = Txn::new()
        .when(Compare::ModRev(service_key.clone(), found.mod_rev))
        .when(Compare::Absent(owner_key.clone()))
        .put(service_key, encode(&service))
        .put(owner_key, encode(&owner));
    state.commit(txn).await?;
    announce(&state, &service, &endpoint, "service.published");
    Ok(Json(view(&state, service)))
}

/// `POST /v1/services/{stack}/{name}/unpublish`.
pub(super) async fn unpublish(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
    Json(request): Json<PublishRequest>,
) -> ApiResult<Json<ServiceView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let mut service = found.value.clone();
    let endpoint = parse(&state, &caller.env, &request)?;
    let Some(index) = service
        .endpoints
        .iter()
        .position(|e| e.same_place(&endpoint))
    else {
        let have: Vec<String> = service
            .endpoints
            .iter()
            .map(|e| state.ingress.url(e))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{name} is not published at {} (its endpoints: {})",
            state.ingress.url(&endpoint),
            super::list_or_none(&have)
        )));
    };
    service.endpoints.remove(index);
    let service_key = key::service(&caller.env, &stack, &name);
    let txn = Txn::new()
        .when(Compare::ModRev(service_key.clone(), found.mod_rev))
        .put(service_key, encode(&service))
        .delete(key::endpoint(&endpoint.host, &endpoint.path));
    state.commit(txn).await?;
    announce(&state, &service, &endpoint, "service.unpublished");
    Ok(Json(view(&state, service)))
}

/// Logs and records an acknowledged endpoint change.
fn announce(state: &ApiState, service: &Service, endpoint: &Endpoint, kind: &str) {
    let key = ServiceKey::of(service);
    tracing::info!(service = %key, endpoint = %endpoint.url(), kind);
    state
        .supervisor
        .events()
        .service(&key, kind, None, endpoint.url());
}

/// Refuses a host outside the environment's name space and domains.
async fn check_host(state: &ApiState, env: &str, host: &str) -> ApiResult<()> {
    let envs = state.store.environments().await?;
    let names: Vec<String> = envs.iter().map(|e| e.value.name.clone()).collect();
    let own: Vec<String> = envs
        .iter()
        .filter(|e| e.value.name == env)
        .flat_map(|e| e.value.domains.clone())
        .collect();
    let taken: Vec<String> = envs
        .iter()
        .filter(|e| e.value.name != env)
        .flat_map(|e| e.value.domains.clone())
        .collect();
    may_publish(host, env, &state.config.alias, &names, &own, &taken).map_err(ApiError::forbidden)
}

fn parse(state: &ApiState, env: &str, request: &PublishRequest) -> ApiResult<Endpoint> {
    let alias = super::envs::alias_of(&state.config.alias, env);
    let mut endpoint = Endpoint::parse(&request.endpoint, request.path.as_deref(), &alias)
        .map_err(ApiError::bad_request)?;
    if request.https_only {
        if state.ingress.https.is_none() {
            return Err(ApiError::bad_request(
                "--https-only needs the HTTPS listener: the daemon runs without --https",
            ));
        }
        endpoint.scheme = "https".to_string();
        endpoint.hsts = true;
    }
    Ok(endpoint)
}
