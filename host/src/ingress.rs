//! The ingress: the daemon's public HTTP listener, where endpoints will be
//! matched to web services. Until a service is published, every request
//! gets a `404` that names the host and path it did not find.

use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;

/// The ingress router.
pub fn router() -> Router {
    Router::new().fallback(not_found)
}

async fn not_found(headers: axum::http::HeaderMap, uri: Uri) -> impl IntoResponse {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("(no host)");
    (
        StatusCode::NOT_FOUND,
        format!(
            "mesh: no endpoint for host {host} and path {}\n",
            uri.path()
        ),
    )
}
