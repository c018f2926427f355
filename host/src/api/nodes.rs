//! Hosts (operator only): which machines run instances, whether each is
//! up, what it has room for and holds; draining one before maintenance
//! and taking it back after. On one machine the daemon is the only host.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::Utc;

use super::wire::NodeView;
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{Drain, Node, NodeState};
use crate::runtime::seats::Seat;
use crate::store::{encode, key, Txn};

/// `GET /v1/nodes`: every host, live or down, by name.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<NodeView>>> {
    caller.require_operator("list hosts")?;
    if !state.clustered {
        let me = Node {
            used_instances: state.engine.seats().live(Seat::Service),
            holds: state.engine.content().stored_digests(),
            ..state.node.clone()
        };
        return Ok(Json(vec![NodeView::of(me, NodeState::Ready, None)]));
    }
    let hosts = state.store.nodes().await?;
    let drained = |name: &str| {
        hosts
            .drains
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.since)
    };
    let mut views: Vec<NodeView> = hosts
        .live
        .iter()
        .map(|node| {
            let since = drained(&node.name);
            let status = match since {
                Some(_) => NodeState::Draining,
                None => NodeState::Ready,
            };
            NodeView::of(node.clone(), status, since)
        })
        .collect();
    // Hosts that joined once and are not up now.
    for node in &hosts.known {
        if !views.iter().any(|v| v.name == node.name) {
            views.push(NodeView::down(node.clone(), drained(&node.name)));
        }
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(views))
}

/// `POST /v1/nodes/{name}/drain`: moves the host's instances elsewhere
/// and places none there until it is resumed.
pub(super) async fn drain(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<NodeView>> {
    caller.require_operator("drain hosts")?;
    require_cluster(&state, "draining")?;
    let node = live(&state, &name).await?;
    let since = Utc::now();
    state
        .commit(Txn::new().put(key::drain(&name), encode(&Drain { since })))
        .await?;
    tracing::info!(node = %name, "host draining");
    Ok(Json(NodeView::of(node, NodeState::Draining, Some(since))))
}

/// `POST /v1/nodes/{name}/resume`: the host takes instances again.
pub(super) async fn resume(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<NodeView>> {
    caller.require_operator("resume hosts")?;
    require_cluster(&state, "resuming")?;
    let node = live(&state, &name).await?;
    state.commit(Txn::new().delete(key::drain(&name))).await?;
    tracing::info!(node = %name, "host resumed");
    Ok(Json(NodeView::of(node, NodeState::Ready, None)))
}

fn require_cluster(state: &ApiState, what: &str) -> ApiResult<()> {
    if state.clustered {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{what} a host needs a cluster: this daemon runs alone (mesh up --store etcd://...)"
    )))
}

/// The live host of that name.
async fn live(state: &ApiState, name: &str) -> ApiResult<Node> {
    let nodes = state.store.nodes().await?.live;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no host named {name} is up (up: {})",
                names.join(", ")
            ))
        })
}
