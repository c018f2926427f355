//! The dashboard: one page, its script modules and its style, embedded in
//! the binary and served on the API address at `/ui` with no token (the page
//! asks for one and sends it with each API call as a bearer header, so no
//! cookie exists for another site to ride on).
//!
//! Every answer carries a Content-Security-Policy that allows only these
//! files and calls to this origin: no inline script, no other origin, no
//! framing. The script builds the page from text nodes only, so whatever
//! a guest writes to its log shows as text.

use std::sync::LazyLock;

use axum::extract::Path;
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
    /// Its name under `/ui/`; the page itself is `index.html`, served at
    /// `/ui/`.
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const SCRIPT: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";

/// The page, its style and its script modules (`app.js` imports the rest).
const ASSETS: &[Asset] = &[
    asset("index.html", include_str!("../ui/index.html"), HTML),
    asset("app.css", include_str!("../ui/app.css"), STYLE),
    asset("app.js", include_str!("../ui/app.js"), SCRIPT),
    asset("api.js", include_str!("../ui/api.js"), SCRIPT),
    asset("dom.js", include_str!("../ui/dom.js"), SCRIPT),
    asset("overview.js", include_str!("../ui/overview.js"), SCRIPT),
    asset("page.js", include_str!("../ui/page.js"), SCRIPT),
    asset("service.js", include_str!("../ui/service.js"), SCRIPT),
    asset("charts.js", include_str!("../ui/charts.js"), SCRIPT),
    asset("logs.js", include_str!("../ui/logs.js"), SCRIPT),
];

const fn asset(name: &'static str, body: &'static str, content_type: &'static str) -> Asset {
    Asset {
        name,
        body,
        content_type,
    }
}

/// Each file's version, for `If-None-Match`, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let tag = format!("\"{}\"", &Digest::of(a.body.as_bytes()).hex()[..16]);
            // Hex digits in quotes: always a valid header value.
            HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// The dashboard's routes (no token: the files hold no data).
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|h: HeaderMap| async move { serve(&h, "index.html") }),
        )
        .route(
            "/ui/{file}",
            get(|h: HeaderMap, Path(file): Path<String>| async move { serve(&h, &file) }),
        )
}

/// One file, or 304 when the browser holds this version of it, or 404.
fn serve(request: &HeaderMap, name: &str) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file in the dashboard\n").into_response();
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim().as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(header::ETAG, etag.clone());
    response
}
