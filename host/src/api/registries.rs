//! Registry logins, per environment: `mesh registry login HOST`, `ls`,
//! `logout`. The password is sealed ([`crate::sealed`]) before it reaches
//! the store, bound to its environment and registry, and never given
//! back: not in answers, logs or events. Pulls of an environment use its
//! own logins only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;

use super::wire::{RegistryLoginRequest, RegistryLoginView};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::registry::{login_purpose, Credentials, Login};
use crate::store::{encode, key, Txn};

/// Longest user name or password taken.
const MAX_CREDENTIAL_BYTES: usize = 4096;

/// `PUT /v1/registries/{host}`: keeps (or replaces) the environment's
/// login for a registry.
pub(super) async fn login(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(host): Path<String>,
    Json(request): Json<RegistryLoginRequest>,
) -> ApiResult<(StatusCode, Json<RegistryLoginView>)> {
    let host = crate::registry::check_host(&host).map_err(ApiError::bad_request)?;
    if request.username.is_empty() || request.password.is_empty() {
        return Err(ApiError::bad_request(
            "give a user name and a password (mesh registry login HOST --username U --password-stdin)",
        ));
    }
    if request.username.len() > MAX_CREDENTIAL_BYTES
        || request.password.len() > MAX_CREDENTIAL_BYTES
    {
        return Err(ApiError::bad_request(format!(
            "a user name or password is at most {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    if request.username.contains(':') {
        return Err(ApiError::bad_request("a user name cannot hold `:`"));
    }
    let password = state.sealer.seal(
        &login_purpose(&caller.env, &host),
        request.password.as_bytes(),
    )?;
    let login = Login {
        env: caller.env.clone(),
        host: host.clone(),
        username: request.username,
        password,
        created_at: Utc::now(),
    };
    state
        .commit(Txn::new().put(key::registry_login(&caller.env, &host), encode(&login)))
        .await?;
    // The user name is no secret; the password never reaches a log.
    tracing::info!(env = %caller.env, registry = %host, user = %login.username, "registry login kept");
    Ok((StatusCode::CREATED, Json(RegistryLoginView::of(&login))))
}

/// `GET /v1/registries`: the environment's logins, without passwords.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<RegistryLoginView>>> {
    let logins = logins(&state, &caller.env).await?;
    Ok(Json(logins.iter().map(RegistryLoginView::of).collect()))
}

/// `DELETE /v1/registries/{host}`: forgets the environment's login.
pub(super) async fn logout(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(host): Path<String>,
) -> ApiResult<Json<RegistryLoginView>> {
    let host = crate::registry::check_host(&host).map_err(ApiError::bad_request)?;
    let key = key::registry_login(&caller.env, &host);
    let Some(found) = state.store.get::<Login>(key.clone()).await? else {
        let known: Vec<String> = logins(&state, &caller.env)
            .await?
            .into_iter()
            .map(|l| l.host)
            .collect();
        return Err(ApiError::not_found(format!(
            "no login for registry {host} (logins: {})",
            super::list_or_none(&known)
        )));
    };
    state.commit(Txn::new().delete(key)).await?;
    tracing::info!(env = %caller.env, registry = %host, "registry login forgotten");
    Ok(Json(RegistryLoginView::of(&found.value)))
}

/// `GET /v1/pulls`: the environment's pulls in flight, and how far each
/// has come (what `mesh stack deploy REF` shows while it waits).
pub(super) async fn pulls(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<crate::registry::PullStatus>> {
    Json(state.registries.in_flight(&caller.env))
}

/// Every login of an environment.
async fn logins(state: &ApiState, env: &str) -> ApiResult<Vec<Login>> {
    Ok(state
        .store
        .list::<Login>(key::registry_logins(env))
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// The credentials an environment's pull from `host` uses: its own login
/// for that registry, unsealed, or none (an anonymous pull).
pub(super) async fn credentials_for(
    state: &ApiState,
    env: &str,
    host: &str,
) -> ApiResult<Option<Credentials>> {
    crate::registry::credentials_for(&state.store, &state.sealer, env, host)
        .await
        .map_err(|e| {
            // The whole story (the key's path) for the operator's log; the
            // tenant hears what to ask for.
            tracing::warn!(env, registry = host, "cannot open a registry login: {e:#}");
            ApiError::from(anyhow::anyhow!(
                "this host cannot open the login for {host}: it was sealed with another sealing key (the operator gives every host the same `mesh up --sealing-key`)"
            ))
        })
}
