//! Restarts: a service's instances replaced one at a time, by hand.
//!
//! A restart is desired state like any other change: the service records
//! when it was asked for, and every host running its instances rolls them
//! when it sees the new time, each up again before the next stops. A web
//! service's requests in flight finish on the instances they started on.

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
            "service {name} is a cron job: each run is a fresh instance, so there is nothing to restart; run it now with `mesh svc trigger {name}`"
        )));
    }
    if service.instances == 0 {
        return Err(ApiError::bad_request(format!(
            "service {name} has no instances to restart: scale it up with `mesh svc update {name} --instances N`"
        )));
    }
    service.restarted_at = Some(Utc::now());
    let service_key = key::service(&caller.env, &stack, &name);
    let txn = Txn::new()
        .when(Compare::ModRev(service_key.clone(), found.mod_rev))
        .put(service_key, encode(&service));
    state.commit(txn).await?;
    let key = ServiceKey::of(&service);
    tracing::info!(service = %key, "restart asked for");
    state.supervisor.events().service(
        &key,
        "service.restarted",
        None,
        format!("restarting {} instances, one at a time", service.instances),
    );
    Ok(Json(view(&state, service)))
}
