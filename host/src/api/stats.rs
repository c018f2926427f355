//! Statistics of one service for the dashboard's charts, per window over
//! the last minutes: requests, errors and latency from the counters the
//! ingress and intra-DNS calls already keep, and memory and CPU from the
//! samples the metrics take.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{TimeZone as _, Utc};

use super::services::find;
use super::wire::{StatsPoint, StatsView};
use super::{ApiResult, ApiState, Caller};
use crate::model::ServiceKey;
use crate::telemetry::recent::STEP_SECONDS;

/// `GET /v1/services/{stack}/{name}/stats`: what this host served of the
/// service (in a cluster, each host counts its own).
pub(super) async fn stats(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((stack, name)): Path<(String, String)>,
) -> ApiResult<Json<StatsView>> {
    let found = find(&state, &caller.env, &stack, &name).await?;
    let key = ServiceKey::of(&found.value);
    let now = Utc::now().timestamp().max(0) as u64;
    let usage = state.supervisor.recent_usage(&key, now);
    let points = state
        .supervisor
        .recent_requests(&key, now)
        .into_iter()
        .zip(usage)
        .map(|(w, u)| StatsPoint {
            time: Utc
                .timestamp_opt(w.start_secs as i64, 0)
                .single()
                .unwrap_or_default(),
            requests: w.requests,
            errors: w.errors,
            p50_ms: w.p50.map(|s| s * 1000.0),
            p95_ms: w.p95.map(|s| s * 1000.0),
            memory_bytes: u.memory_bytes,
            cpu_seconds: u.cpu_seconds,
        })
        .collect();
    Ok(Json(StatsView {
        step_seconds: STEP_SECONDS,
        points,
    }))
}
