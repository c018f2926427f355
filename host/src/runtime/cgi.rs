//! wasip1 modules serving HTTP the way WAGI (and Spin, for such modules)
//! does: each request runs the module's `_start` in a fresh store as a CGI
//! program. The request line and headers are environment variables, the
//! body is stdin, and stdout is the response: CGI headers (`Content-Type`,
//! `Status`, `Location`, any others), a blank line, then the body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiBody;

use super::engine::{Engine, Loaded};
use super::http::CallLimits;
use super::instance::{run_module, Launch};
use super::io::{Output, RunStdin};
use super::outcome::{Interrupt, Outcome};

/// Largest request body a CGI request reads into the module's stdin.
pub const MAX_CGI_BODY: usize = 16 << 20;
/// Largest response (headers and body) a module may write.
pub const MAX_CGI_OUTPUT: usize = 16 << 20;

/// Serves one request by running `code` (a wasip1 module) as a CGI
/// program; the whole of it (reading the body included) is stopped after
/// `limits`. A body over [`MAX_CGI_BODY`] is answered `413` without
/// running the module.
pub async fn serve_cgi(
    engine: &Engine,
    code: &Loaded,
    launch: Launch,
    request: http::Request<WasiBody>,
    limits: CallLimits,
) -> Result<http::Response<HyperOutgoingBody>, Outcome> {
    let served = serve_within(engine, code, launch, request, limits);
    match tokio::time::timeout(limits.wall, served).await {
        Ok(served) => served,
        Err(_) => Err(Outcome::failed(format!(
            "request took longer than {} and was stopped",
            crate::model::format_duration(limits.wall)
        ))),
    }
}

async fn serve_within(
    engine: &Engine,
    code: &Loaded,
    mut launch: Launch,
    request: http::Request<WasiBody>,
    limits: CallLimits,
) -> Result<http::Response<HyperOutgoingBody>, Outcome> {
    let Some(module) = &code.module else {
        return Err(Outcome::failed("the code is not a wasip1 module".into()));
    };
    let (head, body) = request.into_parts();
    let body = match Limited::new(body, MAX_CGI_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(plain(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("mesh: a CGI request body may be at most {MAX_CGI_BODY} bytes\n"),
            ));
        }
        Err(e) => return Err(Outcome::failed(format!("reading the request body: {e}"))),
    };
    launch.env.extend(cgi_env(&head, body.len()));
    launch.stdin = Some(RunStdin::new(std::io::Cursor::new(body), false));
    let stdout = Captured::default();
    launch.stdout = stdout.output();
    let interrupt = Interrupt::default();
    let outcome = run_module(engine, module, launch, interrupt, || {}, limits.cpu).await;
    if !outcome.succeeded() {
        return Err(outcome);
    }
    let written = std::mem::take(&mut stdout.0.lock().bytes);
    parse_response(Bytes::from(written))
        .map_err(|why| Outcome::failed(format!("the module's CGI response {why}")))
}

/// A plain-text answer made by the platform.
fn plain(status: http::StatusCode, text: String) -> http::Response<HyperOutgoingBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

/// Headers about the connection, not the response: the host's to set.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The CGI/1.1 variables for a request, plus WAGI's `X_FULL_URL` and one
/// `HTTP_*` variable per header.
fn cgi_env(head: &http::request::Parts, body_len: usize) -> Vec<(String, String)> {
    let uri = &head.uri;
    let host = head
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.host())
        .unwrap_or("localhost");
    let (server_name, server_port) = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => (name, port),
        _ => (host, "80"),
    };
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let mut env = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "mesh".into()),
        ("SERVER_PROTOCOL".into(), format!("{:?}", head.version)),
        ("REQUEST_METHOD".into(), head.method.to_string()),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), path.to_string()),
        ("QUERY_STRING".into(), query.to_string()),
        (
            "REQUEST_URI".into(),
            uri.path_and_query()
                .map_or(path, |pq| pq.as_str())
                .to_string(),
        ),
        ("SERVER_NAME".into(), server_name.to_string()),
        ("SERVER_PORT".into(), server_port.to_string()),
        (
            "X_FULL_URL".into(),
            format!(
                "http://{host}{}",
                uri.path_and_query().map_or(path, |pq| pq.as_str())
            ),
        ),
        ("CONTENT_LENGTH".into(), body_len.to_string()),
    ];
    for (name, value) in &head.headers {
        let Ok(value) = value.to_str() else { continue };
        let upper = name.as_str().to_ascii_uppercase().replace('-', "_");
        match upper.as_str() {
            "CONTENT_TYPE" => env.push(("CONTENT_TYPE".into(), value.to_string())),
            "CONTENT_LENGTH" => {}
            _ => env.push((format!("HTTP_{upper}"), value.to_string())),
        }
    }
    env
}

/// Largest response head a CGI module may write: what the ingress
/// accepts of a request head, so a module cannot hand the client (or a
/// proxy before it) more than a client may send.
const MAX_CGI_HEAD: usize = crate::config::DEFAULT_MAX_HEADER_BYTES;
/// Most header lines in a CGI response head.
const MAX_CGI_HEADERS: usize = 256;

/// A CGI response: header lines up to a blank line, then the body. It
/// must say at least one of `Content-Type`, `Location` or `Status`.
fn parse_response(out: Bytes) -> Result<http::Response<HyperOutgoingBody>, String> {
    let (head_len, body_at) = split_head(&out).ok_or("has no blank line after its headers")?;
    if head_len > MAX_CGI_HEAD {
        return Err(format!(
            "has a response head of {head_len} bytes, more than the {} KiB a request head may have",
            MAX_CGI_HEAD / 1024
        ));
    }
    let head = &out[..head_len];
    if head.split(|b| *b == b'\n').count() > MAX_CGI_HEADERS {
        return Err(format!("has more than {MAX_CGI_HEADERS} header lines"));
    }
    let head = std::str::from_utf8(head).map_err(|_| "has headers that are not UTF-8")?;
    let mut response = http::Response::builder();
    let mut status = None;
    let mut meaningful = false;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("has a header line without a colon: {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let parsed = code
                .parse::<http::StatusCode>()
                .ok()
                .filter(|s| !s.is_informational())
                .ok_or_else(|| format!("has a bad Status: {value:?}"))?;
            status = Some(parsed);
            meaningful = true;
            continue;
        }
        if name.eq_ignore_ascii_case("location") && status.is_none() {
            status = Some(http::StatusCode::FOUND);
        }
        meaningful |=
            name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("location");
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        response = response.header(name, value);
    }
    if !meaningful {
        return Err("names none of Content-Type, Location or Status".into());
    }
    let body = Full::new(out.slice(body_at..))
        .map_err(|never| match never {})
        .boxed_unsync();
    response
        .status(status.unwrap_or(http::StatusCode::OK))
        .body(body)
        .map_err(|e| format!("has a bad header: {e}"))
}

/// Where the head ends and the body starts: at the first blank line
/// (`\r\n\r\n` or `\n\n`).
fn split_head(out: &[u8]) -> Option<(usize, usize)> {
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((at, at + len))
}

/// What a module wrote to stdout, up to [`MAX_CGI_OUTPUT`].
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Written>>);

#[derive(Default)]
struct Written {
    bytes: Vec<u8>,
}

impl Captured {
    fn output(&self) -> Output {
        let this = self.clone();
        Output::new(move || Box::new(this.clone()))
    }
}

impl AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut written = self.0.lock();
        if written.bytes.len() + buf.len() > MAX_CGI_OUTPUT {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "a CGI response may be at most {} bytes",
                MAX_CGI_OUTPUT
            ))));
        }
        written.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cgi_output_becomes_a_response() {
        let parse = |b: &'static [u8]| parse_response(Bytes::from_static(b));
        let response = parse(
            b"Content-Type: text/plain\r\nStatus: 201 Created\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\nhi",
        )
        .unwrap();
        assert!(response.headers().get("transfer-encoding").is_none());
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-a"], "b");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hi");

        let moved = parse(b"Location: /elsewhere\n\n").unwrap();
        assert_eq!(moved.status(), 302);
        assert!(parse(b"hello world").is_err());
        assert!(parse(b"X-Only: this\n\nbody").is_err());
        assert!(parse(b"Status: nope\n\n").is_err());
        assert!(parse(b"Status: 101 Switching\n\n").is_err());
    }

    #[test]
    fn requests_become_cgi_variables() {
        let request = http::Request::post("/path/to?x=1")
            .header("host", "www.example.com:8080")
            .header("content-type", "text/plain")
            .header("x-custom-thing", "yes")
            .body(())
            .unwrap();
        let (head, ()) = request.into_parts();
        let env: std::collections::HashMap<String, String> =
            cgi_env(&head, 5).into_iter().collect();
        assert_eq!(env["REQUEST_METHOD"], "POST");
        assert_eq!(env["PATH_INFO"], "/path/to");
        assert_eq!(env["QUERY_STRING"], "x=1");
        assert_eq!(env["SERVER_NAME"], "www.example.com");
        assert_eq!(env["SERVER_PORT"], "8080");
        assert_eq!(env["CONTENT_TYPE"], "text/plain");
        assert_eq!(env["CONTENT_LENGTH"], "5");
        assert_eq!(env["HTTP_X_CUSTOM_THING"], "yes");
        assert_eq!(env["X_FULL_URL"], "http://www.example.com:8080/path/to?x=1");
    }
}
