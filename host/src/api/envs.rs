//! Environments: tenants. The operator's token creates them (each gets its
//! own API token, shown once) and alone changes their settings: outbound
//! policy, the non-public ranges they may reach, their custom domains and
//! their quotas. A tenant's token sees only its own environment, and may
//! only rotate its own token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;

use super::quotas;
use super::wire::{CreateEnv, DomainCertificate, EnvCreated, EnvView, TokenRotated, UpdateEnv};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{
    is_ip_like, parse_memory, parse_ranges, validate_name, within, Endpoint, Environment, Outbound,
    DEFAULT_ENVIRONMENT,
};
use crate::store::{encode, key, Compare, Txn, Versioned};

/// `POST /v1/envs` (operator only).
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<CreateEnv>,
) -> ApiResult<(StatusCode, Json<EnvCreated>)> {
    caller.require_operator("create environments")?;
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
    // Its label space must not be a host the operator already publishes.
    let bare = format!("{}.{}", request.name, state.config.alias);
    let on_host = state
        .store
        .list::<serde_json::Value>(key::host_endpoints(&bare))
        .await?;
    if !on_host.is_empty() {
        return Err(ApiError::conflict(format!(
            "{bare} is published by the default environment, so an environment named {} cannot have it as its alias; unpublish it or pick another name",
            request.name
        )));
    }
    let token = crate::auth::new_token();
    let mut env = Environment {
        name: request.name.clone(),
        token_sha256: crate::auth::token_hash(&token),
        created_at: Utc::now(),
        outbound: Outbound::default(),
        reach: Vec::new(),
        domains: Vec::new(),
        quotas: None,
    };
    let txn = Txn::new()
        .when(Compare::Absent(env_key.clone()))
        .put(key::token(&env.token_sha256), encode(&env.name));
    let txn = apply(&state, &mut env, &request.settings, txn).await?;
    state.commit(txn.put(env_key, encode(&env))).await?;
    tracing::info!(environment = %env.name, "environment created");
    Ok((
        StatusCode::CREATED,
        Json(EnvCreated {
            env: view(&state, &env).await?,
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
    let mut views = Vec::new();
    for env in envs.iter().map(|e| &e.value) {
        if caller.admin || env.name == caller.env {
            views.push(view(&state, env).await?);
        }
    }
    Ok(Json(views))
}

/// `PATCH /v1/envs/{name}`: its settings (operator only).
pub(super) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(request): Json<UpdateEnv>,
) -> ApiResult<Json<EnvView>> {
    let found = find_env(&state, &caller, &name).await?;
    caller.require_operator("change an environment's outbound policy, reach, domains or quotas")?;
    let env_key = key::env(&name);
    let mut env = found.value;
    let txn = Txn::new().when(Compare::ModRev(env_key.clone(), found.mod_rev));
    let txn = apply(&state, &mut env, &request, txn).await?;
    state.commit(txn.put(env_key, encode(&env))).await?;
    tracing::info!(environment = %env.name, outbound = %env.outbound, "environment updated");
    Ok(Json(view(&state, &env).await?))
}

/// `POST /v1/envs/{name}/token`: a new token for the environment; the old
/// one stops working at once. The operator may rotate any, a tenant its
/// own.
pub(super) async fn rotate_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<TokenRotated>> {
    let found = find_env(&state, &caller, &name).await?;
    let env_key = key::env(&name);
    let mut env = found.value;
    let token = crate::auth::new_token();
    let old = std::mem::replace(&mut env.token_sha256, crate::auth::token_hash(&token));
    let txn = Txn::new()
        .when(Compare::ModRev(env_key.clone(), found.mod_rev))
        .delete(key::token(&old))
        .put(key::token(&env.token_sha256), encode(&env.name))
        .put(env_key, encode(&env));
    state.commit(txn).await?;
    tracing::info!(environment = %env.name, "environment token rotated");
    Ok(Json(TokenRotated { name, token }))
}

/// Applies the settings `request` names to `env`, adding what claiming or
/// releasing a domain writes to `txn`.
async fn apply(
    state: &ApiState,
    env: &mut Environment,
    request: &UpdateEnv,
    mut txn: Txn,
) -> ApiResult<Txn> {
    if let Some(outbound) = &request.outbound {
        env.outbound = Outbound::parse(outbound).map_err(ApiError::bad_request)?;
    }
    if let Some(reach) = &request.reach {
        env.reach = parse_ranges(reach).map_err(ApiError::bad_request)?;
    }
    let mut quotas = quotas::quotas_of(state, env);
    let before = quotas;
    if let Some(n) = request.max_instances {
        quotas.max_instances = n;
    }
    if let Some(n) = request.max_services {
        quotas.max_services = n;
    }
    if let Some(n) = request.max_tasks {
        quotas.max_tasks = n;
    }
    if let Some(size) = &request.max_memory {
        quotas.max_memory_bytes = parse_memory(size).map_err(ApiError::bad_request)?;
    }
    if let Some(size) = &request.max_code {
        quotas.max_code_bytes = parse_memory(size).map_err(ApiError::bad_request)?;
    }
    if quotas != before {
        env.quotas = Some(quotas);
    }
    if let Some(domain) = &request.remove_domain {
        let domain = domain.trim().to_ascii_lowercase();
        let Some(i) = env.domains.iter().position(|d| *d == domain) else {
            return Err(ApiError::bad_request(format!(
                "environment {} has no domain {domain} (its domains: {})",
                env.name,
                super::list_or_none(&env.domains)
            )));
        };
        env.domains.remove(i);
        txn = txn.delete(key::domain(&domain));
    }
    if let Some(domain) = &request.add_domain {
        let domain = check_domain(state, &env.name, domain).await?;
        if !env.domains.contains(&domain) {
            env.domains.push(domain.clone());
            txn = txn
                .when(Compare::Absent(key::domain(&domain)))
                .put(key::domain(&domain), encode(&env.name));
        }
    }
    Ok(txn)
}

/// A custom domain to assign to `env`: a host name, not an IP, not under
/// the platform's alias, and not overlapping another environment's.
async fn check_domain(state: &ApiState, env: &str, text: &str) -> ApiResult<String> {
    let alias = &state.config.alias;
    let endpoint =
        Endpoint::parse(&format!("http://{}", text.trim()), None, alias).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid domain `{text}`: use a host name like example.com"
            ))
        })?;
    let domain = endpoint.host;
    if is_ip_like(&domain) || !domain.contains('.') {
        return Err(ApiError::bad_request(format!(
            "invalid domain `{domain}`: use a host name like example.com"
        )));
    }
    if within(&domain, alias) {
        return Err(ApiError::bad_request(format!(
            "{domain} is under the platform's alias {alias}; environments have their labels there already"
        )));
    }
    for other in state.store.environments().await? {
        let other = other.value;
        if other.name == env {
            continue;
        }
        if let Some(d) = other
            .domains
            .iter()
            .find(|d| within(&domain, d) || within(d, &domain))
        {
            return Err(ApiError::conflict(format!(
                "{domain} overlaps {d}, assigned to another environment"
            )));
        }
    }
    Ok(domain)
}

async fn view(state: &ApiState, env: &Environment) -> ApiResult<EnvView> {
    let usage = quotas::usage(state, &env.name).await?;
    Ok(EnvView {
        name: env.name.clone(),
        outbound: env.outbound.to_string(),
        alias: alias_of(&state.config.alias, &env.name),
        reach: env.reach.iter().map(ToString::to_string).collect(),
        domains: env.domains.clone(),
        domain_certificates: env
            .domains
            .iter()
            .map(|domain| certificate_of(state, domain))
            .collect(),
        quotas: quotas::view(&quotas::quotas_of(state, env), &usage),
        created_at: env.created_at,
    })
}

/// What the ingress serves for `domain` over HTTPS.
fn certificate_of(state: &ApiState, domain: &str) -> DomainCertificate {
    let (certificate, trusted) = if state.ingress.https.is_none() {
        (
            "none: the ingress has no HTTPS listener (mesh up --https ADDR)".to_string(),
            false,
        )
    } else if let Some(acme) = &state.config.acme {
        (
            format!(
                "from the ACME server {} for each name published on it, renewed on its own (`mesh domain ls` shows each)",
                acme.directory
            ),
            true,
        )
    } else if state.config.tls_cert.is_some() {
        (
            "the operator's certificate (mesh up --tls-cert)".to_string(),
            true,
        )
    } else {
        (
            format!(
                "issued by the platform's local CA, which browsers do not trust ({})",
                crate::ingress::tls::CA_FILE
            ),
            false,
        )
    };
    DomainCertificate {
        domain: domain.to_string(),
        certificate,
        trusted,
    }
}

/// The alias domain endpoint labels are relative to: the platform alias
/// for the `default` environment, `<env>.<alias>` for the others.
pub(super) fn alias_of(platform_alias: &str, env: &str) -> String {
    if env == DEFAULT_ENVIRONMENT {
        platform_alias.to_string()
    } else {
        format!("{env}.{platform_alias}")
    }
}

/// An environment the caller may see (a tenant only its own), or 404.
async fn find_env(
    state: &ApiState,
    caller: &Caller,
    name: &str,
) -> ApiResult<Versioned<Environment>> {
    if !caller.admin && name != caller.env {
        return Err(ApiError::no_environment(name));
    }
    state
        .store
        .get::<Environment>(key::env(name))
        .await?
        .ok_or_else(|| ApiError::no_environment(name))
}
