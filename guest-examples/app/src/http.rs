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
//! - `/spin[?ms=N]`    keeps a core busy for N ms (or forever)
//! - `/drain`          reads the whole body without keeping it: `read N bytes`
//! - `/count`          requests handled by this instance so far
//! - `/args`           the argv the host gave this instance
//! - `/pay?amount=N&target=URL`  `POST {"amount":N,"currency":"EUR"}` to
//!   `target` (default `http://finance-payments/payments`), answered with the
//!   callee's status and body
//! - `/call?url=URL`   `GET URL` (percent-encoded): `status: <code>` and the
//!   first 4 KB of the body
//! - `/hop?target=URL&n=N`  N sequential `POST`s to `target`, timed
//! - `/loop?depth=N`   calls this service by name with `depth=N+1`; the
//!   platform's hop limit ends the chain (508)
//! - anything else     404
//!
//! The calling routes (see `client.rs`) answer 502 with the `wasi:http`
//! error code's debug text when the outgoing request fails.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::client::{self, Request};

use kit::respond;
use wasip2::http::types::{IncomingBody, IncomingRequest, Method, ResponseOutparam};

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

        if path == "/call-then-drop" {
            // Calls out, then returns without answering: a request that
            // must not be sent again, since its call already happened.
            let _ = call(query);
            drop(response_out);
            return;
        }
        let calls = match path {
            "/pay" => Some(pay(query)),
            "/call" => Some(call(query)),
            "/hop" => Some(hop(query)),
            "/loop" => Some(call_loop(query)),
            _ => None,
        };
        if let Some((status, content_type, body)) = calls {
            respond(response_out, status, &content_type, &body);
            return;
        }

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
            "/spin" => spin(query),
            "/drain" => drain(&request),
            "/count" => (200, format!("count: {handled}\n")),
            "/healthz" => healthz(),
            "/sick" => {
                SICK.store(true, Ordering::SeqCst);
                (200, "this instance now fails /healthz\n".to_string())
            }
            "/args" => {
                let args: Vec<String> = std::env::args().collect();
                (200, format!("argv: {}\n", args.join(" ")))
            }
            _ => (404, format!("not found: {path_with_query}\n")),
        };
        respond(response_out, status, "text/plain", body.as_bytes());
    }
}

/// Set by `/sick`: this instance answers `/healthz` with 500 from then on.
static SICK: AtomicBool = AtomicBool::new(false);

/// `/healthz`: 500 once `/sick` was asked; else the status the
/// `HEALTH_STATUS` variable or the stack's file `/health` names; else 200.
fn healthz() -> (u16, String) {
    if SICK.load(Ordering::SeqCst) {
        return (500, "sick\n".to_string());
    }
    let named = std::env::var("HEALTH_STATUS")
        .ok()
        .or_else(|| std::fs::read_to_string("/health").ok());
    match named.and_then(|text| text.trim().parse::<u16>().ok()) {
        Some(status) => (status, format!("health: {status}\n")),
        None => (200, "ok\n".to_string()),
    }
}

/// A response as the calling routes build it: status, content type, body.
type Reply = (u16, String, Vec<u8>);

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

/// Where `/pay` sends payments unless `target=` says otherwise.
const PAYMENTS_URL: &str = "http://finance-payments/payments";

fn text(status: u16, body: String) -> Reply {
    (status, TEXT.to_string(), body.into_bytes())
}

/// `/pay?amount=N[&target=URL]`: a payment through the `payments` service,
/// relayed as the callee answered it.
fn pay(query: &str) -> Reply {
    let amount = match query_param(query, "amount").map(|a| a.parse::<i64>()) {
        Some(Ok(amount)) => amount,
        _ => {
            return text(
                400,
                "pay: amount=N (a whole number) is required\n".to_string(),
            )
        }
    };
    let target = query_param(query, "target").unwrap_or_else(|| PAYMENTS_URL.to_string());
    let body = format!("{{\"amount\":{amount},\"currency\":\"EUR\"}}");
    match client::send(&Request::post_json(&target, body.as_bytes())) {
        Ok(response) => (response.status, JSON.to_string(), response.body),
        Err(e @ client::Error::Url(_)) => text(400, format!("pay: {e}\n")),
        Err(e) => text(502, format!("pay: {e}\n")),
    }
}

/// `/call?url=URL`: a `GET` to anywhere, to see what the outbound policy
/// allows. Failures pass the host's error code through verbatim.
fn call(query: &str) -> Reply {
    let Some(url) = query_param(query, "url") else {
        return text(
            400,
            "call: url=URL (percent-encoded) is required\n".to_string(),
        );
    };
    match client::send(&Request::get(&url).max_body(4096)) {
        Ok(response) => {
            let mut body = format!("status: {}\n", response.status).into_bytes();
            body.extend_from_slice(&response.body);
            (200, TEXT.to_string(), body)
        }
        Err(e @ client::Error::Url(_)) => text(400, format!("call failed: {e}\n")),
        Err(e) => text(502, format!("call failed: {e}\n")),
    }
}

/// `/hop?target=URL&n=N`: N sequential payments of 1 to `target`, each
/// response read in full, timed with the monotonic clock.
fn hop(query: &str) -> Reply {
    let Some(target) = query_param(query, "target") else {
        return text(400, "hop: target=URL is required\n".to_string());
    };
    let n = match query_param(query, "n").map(|n| n.parse::<u64>()) {
        None => 1,
        Some(Ok(n)) if (1..=1_000_000).contains(&n) => n,
        Some(_) => {
            return text(
                400,
                "hop: n must be a whole number from 1 to 1000000\n".to_string(),
            )
        }
    };
    let body = br#"{"amount":1,"currency":"EUR"}"#;
    let request = Request::post_json(&target, body);
    let start = Instant::now();
    for i in 1..=n {
        match client::send(&request) {
            Ok(response) if response.status < 400 => {}
            Ok(response) => {
                return text(
                    502,
                    format!(
                        "hop {i}: status {}: {}\n",
                        response.status,
                        String::from_utf8_lossy(&response.body).trim_end()
                    ),
                )
            }
            Err(e @ client::Error::Url(_)) => return text(400, format!("hop: {e}\n")),
            Err(e) => return text(502, format!("hop {i}: {e}\n")),
        }
    }
    let total_us = start.elapsed().as_micros();
    let per_hop_us = total_us / u128::from(n);
    text(
        200,
        format!("hops: {n}\ntotal_us: {total_us}\nper_hop_us: {per_hop_us}\n"),
    )
}

/// `/loop?depth=N`: calls this very service by name with `depth=N+1` and
/// relays the answer. There is no limit here on purpose: the platform's hop
/// limit ends the chain with 508.
fn call_loop(query: &str) -> Reply {
    let depth = match query_param(query, "depth").map(|d| d.parse::<u64>()) {
        None => 0,
        Some(Ok(depth)) => depth,
        Some(Err(_)) => return text(400, "loop: depth must be a whole number\n".to_string()),
    };
    let stack = std::env::var("MESH_STACK").unwrap_or_else(|_| "?".to_string());
    let service = std::env::var("MESH_SERVICE").unwrap_or_else(|_| "?".to_string());
    let url = format!("http://{stack}-{service}/loop?depth={}", depth + 1);
    match client::send(&Request::get(&url)) {
        Ok(response) => (
            response.status,
            response.content_type.unwrap_or_else(|| TEXT.to_string()),
            response.body,
        ),
        Err(e @ client::Error::Url(_)) => text(400, format!("loop: {e}\n")),
        Err(e) => text(502, format!("loop: {e}\n")),
    }
}

/// The value of `name` in a query string, percent-decoded (`+` stays `+`:
/// the values here are URLs and numbers).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: &u8| (*b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).and_then(hex);
            let low = bytes.get(i + 2).and_then(hex);
            if let (Some(high), Some(low)) = (high, low) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    // Echo at most 1 MiB of the body.
    let body = kit::read_body(request, 1 << 20).unwrap_or_default();
    if !body.is_empty() {
        out.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
    }
    out
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

/// `/drain`: reads the request body to its end, keeping none of it.
fn drain(request: &IncomingRequest) -> (u16, String) {
    let Ok(body) = request.consume() else {
        return (200, "read 0 bytes\n".to_string());
    };
    let read = match body.stream() {
        Ok(mut stream) => std::io::copy(&mut stream, &mut std::io::sink()),
        Err(()) => Ok(0),
    };
    drop(IncomingBody::finish(body));
    match read {
        Ok(n) => (200, format!("read {n} bytes\n")),
        Err(e) => (400, format!("cannot read the body: {e}\n")),
    }
}

/// `/spin[?ms=N]`: keeps a core busy for N ms of wall-clock time, or
/// forever, to show CPU limits and fair shares.
fn spin(query: &str) -> (u16, String) {
    let ms = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|n| n.parse::<u64>().ok());
    let start = std::time::Instant::now();
    let mut turns: u64 = 0;
    while ms.is_none_or(|ms| start.elapsed() < Duration::from_millis(ms)) {
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
    (200, format!("spun {turns} turns\n"))
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
