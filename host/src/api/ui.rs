//! The dashboard: one page, its script and its style, embedded in the
//! binary and served on the API address at `/ui` with no token (the page
//! asks for one and sends it with each API call as a bearer header, so no
//! cookie exists for another site to ride on).
//!
//! Every answer carries a Content-Security-Policy that allows only these
//! files and calls to this origin: no inline script, no other origin, no
//! framing. The script builds the page from text nodes only, so whatever
//! a guest writes to its log shows as text.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::ApiState;
use crate::model::Digest;

/// What the page may load and call.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static str,
    kind: &'static str,
    /// Its version, for `If-None-Match`.
    etag: LazyLock<String>,
}

const INDEX_BODY: &str = include_str!("../ui/index.html");
const SCRIPT_BODY: &str = include_str!("../ui/app.js");
const STYLE_BODY: &str = include_str!("../ui/app.css");

static INDEX: Asset = Asset {
    body: INDEX_BODY,
    kind: "text/html",
    etag: LazyLock::new(|| etag(INDEX_BODY)),
};
static SCRIPT: Asset = Asset {
    body: SCRIPT_BODY,
    kind: "text/javascript",
    etag: LazyLock::new(|| etag(SCRIPT_BODY)),
};
static STYLE: Asset = Asset {
    body: STYLE_BODY,
    kind: "text/css",
    etag: LazyLock::new(|| etag(STYLE_BODY)),
};

/// The dashboard's routes (no token: the files hold no data).
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|h: HeaderMap| async move { serve(&h, &INDEX) }))
        .route(
            "/ui/app.js",
            get(|h: HeaderMap| async move { serve(&h, &SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|h: HeaderMap| async move { serve(&h, &STYLE) }),
        )
}

fn etag(body: &str) -> String {
    format!("\"{}\"", &Digest::of(body.as_bytes()).hex()[..16])
}

/// One file, or 304 when the browser holds this version of it.
fn serve(request: &HeaderMap, asset: &Asset) -> Response {
    let etag = asset.etag.as_str();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    let kind = format!("{}; charset=utf-8", asset.kind);
    for (name, value) in [
        (header::CONTENT_TYPE, kind.as_str()),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, etag),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}
