//! `app`'s second door: an exported `wasi:http/incoming-handler`.
//!
//! The same `app.wasm` that runs as `app queue` (through `wasi:cli/run`, i.e.
//! `fn main`) is also an HTTP service: the platform delivers each request to
//! [`Handler::handle`], never to `main`. Routes:
//!
//! - `GET /`           greeting plus `service: <MESH_STACK>-<MESH_SERVICE>`
//! - `/echo`           method, path, sorted headers and body of the request
//! - `/trap`           executes `unreachable` (the host answers 500)
//! - `/sleep?ms=N`     sleeps N ms, then answers
//! - `/count`          requests handled by this instance so far
//! - `/args`           the argv the host gave this instance
//! - anything else     404

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Handler);

struct Handler;

/// Every request this instance handles, whatever its route. A fresh instance
/// answers `/count` with `count: 1`; a reused one counts up.
static REQUESTS: AtomicU32 = AtomicU32::new(0);

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let handled = REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
        let method = request.method();
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_with_query.as_str(), ""),
        };

        let (status, body) = match path {
            "/" => match method {
                Method::Get | Method::Head => (200, hello()),
                _ => (
                    405,
                    format!("method not allowed: {}\n", method_name(&method)),
                ),
            },
            "/echo" => (200, echo(&request, &method, &path_with_query)),
            "/trap" => trap(),
            "/sleep" => sleep(query),
            "/count" => (200, format!("count: {handled}\n")),
            "/args" => {
                let args: Vec<String> = std::env::args().collect();
                (200, format!("argv: {}\n", args.join(" ")))
            }
            _ => (404, format!("not found: {path_with_query}\n")),
        };
        respond(response_out, status, "text/plain", body.as_bytes());
    }
}

fn hello() -> String {
    let stack = std::env::var("MESH_STACK").unwrap_or_else(|_| "?".to_string());
    let service = std::env::var("MESH_SERVICE").unwrap_or_else(|_| "?".to_string());
    format!("hello from app\nservice: {stack}-{service}\n")
}

/// Describes the request back: method, path with query, headers sorted by
/// name (lowercase), then the body if there is one.
fn echo(request: &IncomingRequest, method: &Method, path_with_query: &str) -> String {
    let mut out = format!("method: {}\npath: {path_with_query}\n", method_name(method));
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    // Stable: repeated headers keep the order they arrived in.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in headers {
        out.push_str(&format!(
            "header: {name}: {}\n",
            String::from_utf8_lossy(&value)
        ));
    }
    let body = read_body(request);
    if !body.is_empty() {
        out.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
    }
    out
}

/// Reads the whole request body (empty if there is none).
fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Ok(body) = request.consume() else {
        return bytes;
    };
    if let Ok(mut stream) = body.stream() {
        let _ = stream.read_to_end(&mut bytes);
        // The stream is a child of the body: drop it before finishing.
    }
    drop(IncomingBody::finish(body));
    bytes
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn sleep(query: &str) -> (u16, String) {
    let ms = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .map(str::parse::<u64>);
    match ms {
        None => sleep_for(1000),
        Some(Ok(ms)) => sleep_for(ms),
        Some(Err(_)) => (
            400,
            "sleep: ms must be a whole number of milliseconds\n".to_string(),
        ),
    }
}

fn sleep_for(ms: u64) -> (u16, String) {
    std::thread::sleep(Duration::from_millis(ms));
    (200, format!("slept {ms} ms\n"))
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// Sends a complete response: status, `content-type`, body.
fn respond(response_out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("a response's body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(mut stream) = outgoing.write() {
        let _ = stream.write_all(body);
        let _ = stream.flush();
        // The stream is a child of the body: drop it before finishing.
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
