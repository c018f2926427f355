//! Restarts: a service's instances replaced by fresh ones, by hand.
//!
//! A restart is desired state like any other change: the service records
//! when it was asked for, and every host running its instances replaces
//! them when it sees the new time. A worker's instances roll one at a
//! time, each up again before the next stops; a web service gets a new
//! request pool at once, and requests in flight finish on the old one.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::Utc;

use super::services::{find, view};
use super::wire::ServiceView;
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{ServiceKey, ServiceType};
use crate::store::{encode, key, Compare, Txn};

/// `POST /v1/services/{stack}/{name}/restart`.
pub(super) async fn restart(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let mut service = found.value;
    if service.service_type() == ServiceType::Cron {
        return Err(ApiError::bad_request(format!(
            "service {name} is a cron job: each run is a fresh instance, so there is nothing to restart; run it now with `mesh svc trigger {name} --stack {stack}`"
        )));
    }
    if service.instances == 0 {
        return Err(ApiError::bad_request(format!(
            "service {name} has no instances to restart: scale it up with `mesh svc update {name} --stack {stack} --instances N`"
        )));
    }
    service.restarted_at = Some(Utc::now());
    let service_key = key::service(&caller.env, &stack, &name);
    let txn = Txn::new()
        .when(Compare::ModRev(service_key.clone(), found.mod_rev))
        .put(service_key, encode(&service));
    let revision = state.commit(txn).await?;
    let restarted = ServiceKey::of(&service);
    tracing::info!(service = %restarted, "restart asked for");
    state.supervisor.events().service(
        &restarted,
        "service.restarted",
        None,
        how_it_restarts(service.service_type(), service.instances),
    );
    let mut answer = view(&state, service);
    answer.revision = Some(revision);
    Ok(Json(answer))
}

/// What a restart of `instances` instances does, for its event.
fn how_it_restarts(service_type: ServiceType, instances: u32) -> String {
    match service_type {
        ServiceType::Web => format!(
            "replacing {instances} instances with fresh ones, one at a time; requests in flight finish on the old ones"
        ),
        _ => format!("restarting {instances} instances, one at a time"),
    }
}
