//! What the other hosts of a cluster ask of this one, with the operator's
//! token they share: requests for services it runs, forwarded by a host
//! that runs none of them (from its ingress, or an intra-DNS call of one
//! of its instances). They are answered here and never forwarded again.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::{ApiResult, ApiState, Caller};
use crate::model::ServiceKey;

/// How the forwarding host wants the request answered: `ingress` or `dns`.
pub const VIA_HEADER: &str = "x-mesh-via";
/// The request's own `Host`.
pub const HOST_HEADER: &str = "x-mesh-host";
/// `https` when the client came over HTTPS.
pub const SCHEME_HEADER: &str = "x-mesh-scheme";
/// `1` when the service is already up an intra-DNS call's chain.
pub const CYCLIC_HEADER: &str = "x-mesh-cyclic";

/// `/v1/here/call/{env}/{stack}/{service}/{*path}` (operator only).
pub(super) async fn call(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((env, stack, service, path)): Path<(String, String, String, String)>,
    request: Request,
) -> ApiResult<Response> {
    answer(state, caller, env, stack, service, path, request).await
}

/// The same for the root path.
pub(super) async fn call_root(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((env, stack, service)): Path<(String, String, String)>,
    request: Request,
) -> ApiResult<Response> {
    answer(state, caller, env, stack, service, String::new(), request).await
}

async fn answer(
    state: ApiState,
    caller: Caller,
    env: String,
    stack: String,
    service: String,
    path: String,
    request: Request,
) -> ApiResult<Response> {
    caller.require_operator("forward requests between hosts")?;
    let key = ServiceKey {
        env,
        stack,
        name: service,
    };
    let Some(pool) = state.supervisor.local_pool(&key) else {
        return Ok(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{key} has no instance on host {}", state.node.name),
            Some(1),
        ));
    };
    let (mut parts, body) = request.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    parts.uri = format!("/{path}{query}")
        .parse()
        .map_err(|e| super::ApiError::bad_request(format!("forwarded path: {e}")))?;
    let headers = &mut parts.headers;
    headers.remove(axum::http::header::AUTHORIZATION);
    if let Some(host) = headers.remove(HOST_HEADER) {
        headers.insert(axum::http::header::HOST, host);
    }
    let via = headers.remove(VIA_HEADER);
    let https = headers.remove(SCHEME_HEADER).is_some_and(|v| v == "https");
    let cyclic = headers.remove(CYCLIC_HEADER).is_some_and(|v| v == "1");
    let body = body
        .map_err(|e| wasmtime_wasi_http::Error::Connect(std::io::Error::other(e)))
        .boxed_unsync();
    let request = http::Request::from_parts(parts, body);
    let answered = if via.as_ref().is_some_and(|v| v == "dns") {
        pool.call(request, Scheme::Http, cyclic).await
    } else {
        let scheme = if https { Scheme::Https } else { Scheme::Http };
        pool.handle(request, scheme).await
    };
    Ok(match answered {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body.map_err(|e| format!("{e:?}"))))
        }
        Err(refusal) => refused(refusal.status, &refusal.message, refusal.retry_after),
    })
}

fn refused(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response {
    let mut response = (status, format!("mesh: {message}\n")).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
