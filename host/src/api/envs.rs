//! Environments: tenants. The operator's token creates them (each gets its
//! own API token, shown once); a tenant's token sees and changes only its
//! own environment.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;

use super::wire::{CreateEnv, EnvCreated, EnvView, UpdateEnv};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{validate_name, Environment, Outbound};
use crate::store::{encode, key, Compare, Txn};

/// `POST /v1/envs` (operator only).
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<CreateEnv>,
) -> ApiResult<(StatusCode, Json<EnvCreated>)> {
    require_admin(&caller, "create environments")?;
    validate_name("environment", &request.name).map_err(ApiError::bad_request)?;
    let env_key = key::env(&request.name);
    if state
        .store
        .get::<Environment>(env_key.clone())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "environment {} already exists",
            request.name
        )));
    }
    let token = crate::auth::new_token();
    let env = Environment {
        name: request.name.clone(),
        token_sha256: crate::auth::token_hash(&token),
        created_at: Utc::now(),
        outbound: Outbound::default(),
    };
    let txn = Txn::new()
        .when(Compare::Absent(env_key.clone()))
        .put(env_key, encode(&env))
        .put(key::token(&env.token_sha256), encode(&env.name));
    state.commit(txn).await?;
    tracing::info!(environment = %env.name, "environment created");
    Ok((
        StatusCode::CREATED,
        Json(EnvCreated {
            env: view(&state, &env),
            token,
        }),
    ))
}

/// `GET /v1/envs`: every environment for the operator, the caller's own
/// for a tenant.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<EnvView>>> {
    let envs = state.store.environments().await?;
    Ok(Json(
        envs.iter()
            .map(|e| &e.value)
            .filter(|e| caller.admin || e.name == caller.env)
            .map(|e| view(&state, e))
            .collect(),
    ))
}

/// `PATCH /v1/envs/{name}`: the outbound policy.
pub(super) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(request): Json<UpdateEnv>,
) -> ApiResult<Json<EnvView>> {
    if !caller.admin && name != caller.env {
        return Err(unknown(&name));
    }
    let env_key = key::env(&name);
    let found = state
        .store
        .get::<Environment>(env_key.clone())
        .await?
        .ok_or_else(|| unknown(&name))?;
    let mut env = found.value;
    if let Some(outbound) = &request.outbound {
        env.outbound = Outbound::parse(outbound).map_err(ApiError::bad_request)?;
    }
    let txn = Txn::new()
        .when(Compare::ModRev(env_key.clone(), found.mod_rev))
        .put(env_key, encode(&env));
    state.commit(txn).await?;
    tracing::info!(environment = %env.name, outbound = %env.outbound, "environment updated");
    Ok(Json(view(&state, &env)))
}

fn view(state: &ApiState, env: &Environment) -> EnvView {
    EnvView {
        name: env.name.clone(),
        outbound: env.outbound.to_string(),
        alias: alias_of(&state.config.alias, &env.name),
        created_at: env.created_at,
    }
}

/// The alias domain endpoint labels are relative to: the platform alias
/// for the `default` environment, `<env>.<alias>` for the others.
pub(super) fn alias_of(platform_alias: &str, env: &str) -> String {
    if env == crate::model::DEFAULT_ENVIRONMENT {
        platform_alias.to_string()
    } else {
        format!("{env}.{platform_alias}")
    }
}

fn require_admin(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "only the operator's token (daemon.json) can {what}"
        )))
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!("no environment named {name}"))
}
