//! Outgoing HTTP through `wasi:http/outgoing-handler`.
//!
//! Inside mesh, a request whose authority is `<stack>-<service>` (for
//! example `http://finance-payments/payments`) goes to that service's
//! instances in-process; any other authority goes to the network, subject
//! to the platform's outbound policy.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// Request bodies are written in chunks of at most this many bytes, the
/// most `blocking-write-and-flush` accepts at once.
const WRITE_CHUNK: usize = 4096;

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    /// The URL could not be used (not `http(s)://authority/...`).
    Url(String),
    /// The host refused or failed the request: the `wasi:http` error code.
    Http(ErrorCode),
    /// Something else went wrong on the way (a stream error, a resource
    /// taken twice).
    Other(String),
}

impl std::fmt::Display for Error {
    /// The error code's debug text, verbatim, so the caller sees exactly
    /// what the host said (e.g. `ErrorCode::HttpRequestDenied`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(message) => write!(f, "bad url: {message}"),
            Error::Http(code) => write!(f, "{code:?}"),
            Error::Other(message) => f.write_str(message),
        }
    }
}

/// A received response: status, `content-type` (if any) and the body read.
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A request to send.
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Reads at most this many bytes of the response body, then stops.
    pub max_body: usize,
}

impl<'a> Request<'a> {
    pub fn get(url: &'a str) -> Self {
        Request {
            method: Method::Get,
            url,
            headers: &[],
            body: &[],
            max_body: usize::MAX,
        }
    }

    pub fn post_json(url: &'a str, body: &'a [u8]) -> Self {
        Request {
            method: Method::Post,
            url,
            headers: &[("content-type", "application/json")],
            body,
            max_body: usize::MAX,
        }
    }

    pub fn max_body(self, max_body: usize) -> Self {
        Request { max_body, ..self }
    }
}

/// The parts of an absolute `http://` or `https://` URL.
#[derive(Debug, PartialEq)]
pub struct Url<'a> {
    pub https: bool,
    pub authority: &'a str,
    pub path_with_query: String,
}

/// Splits `scheme://authority/path?query`: the path defaults to `/`, a
/// fragment is dropped.
pub fn parse_url(url: &str) -> Result<Url<'_>, Error> {
    let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
        (true, rest)
    } else {
        return Err(Error::Url(format!(
            "{url:?} is not an http:// or https:// URL"
        )));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_with_query) = rest.split_at(end);
    if authority.is_empty() {
        return Err(Error::Url(format!("{url:?} has no host")));
    }
    let path_with_query = if path_with_query.starts_with('/') {
        path_with_query.to_string()
    } else {
        format!("/{path_with_query}")
    };
    Ok(Url {
        https,
        authority,
        path_with_query,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Sends `request` and waits for the whole response (up to
/// `request.max_body` bytes of its body).
pub fn send(request: &Request<'_>) -> Result<Response, Error> {
    let url = parse_url(request.url)?;

    let headers = Fields::new();
    for (name, value) in request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| Error::Other(format!("header {name}: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    outgoing
        .set_method(&request.method)
        .map_err(|()| Error::Other("invalid method".to_string()))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| Error::Other("invalid scheme".to_string()))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|()| Error::Url(format!("invalid authority {:?}", url.authority)))?;
    outgoing
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| Error::Url(format!("invalid path {:?}", url.path_with_query)))?;
    let body = outgoing
        .body()
        .map_err(|()| Error::Other("request body already taken".to_string()))?;

    // Hand the request over first, then stream the body: the host reads the
    // body while it sends, so a large body cannot fill a buffer nobody drains.
    let future = outgoing_handler::handle(outgoing, None).map_err(Error::Http)?;
    let sent = write_body(&body, request.body)
        .and_then(|()| OutgoingBody::finish(body, None).map_err(Error::Http));

    // A server may answer without reading the body (a refusal, say): then
    // the write fails, and its answer is still the answer.
    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => return Err(sent.err().unwrap_or(Error::Http(code))),
            Some(Err(())) => return Err(Error::Other("response taken twice".to_string())),
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .into_iter()
        .next()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let incoming = response
        .consume()
        .map_err(|()| Error::Other("response body already taken".to_string()))?;
    let body = read_body(&incoming, request.max_body)?;
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        content_type,
        body,
    })
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|()| Error::Other("request body stream already taken".to_string()))?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| stream_error("writing the request body", e))?;
    }
    // The stream is a child of the body: it is dropped here, before `finish`.
    Ok(())
}

/// Reads the body until it ends or `max` bytes have been read.
fn read_body(body: &IncomingBody, max: usize) -> Result<Vec<u8>, Error> {
    let stream = body
        .stream()
        .map_err(|()| Error::Other("response body stream already taken".to_string()))?;
    let mut bytes = Vec::new();
    while bytes.len() < max {
        let want = (max - bytes.len()).min(64 * 1024) as u64;
        match stream.blocking_read(want) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error("reading the response body", e)),
        }
    }
    Ok(bytes)
}

/// A stream error as text: the `wasi:http` error code behind it if there
/// is one, else the I/O error's own description.
fn stream_error(doing: &str, e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Other(format!("{doing}: stream closed")),
        StreamError::LastOperationFailed(io) => match wasip2::http::types::http_error_code(&io) {
            Some(code) => Error::Http(code),
            None => Error::Other(format!("{doing}: {}", io.to_debug_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let url = parse_url("http://finance-payments/payments").unwrap();
        assert_eq!(
            url,
            Url {
                https: false,
                authority: "finance-payments",
                path_with_query: "/payments".to_string()
            }
        );
        let url = parse_url("HTTPS://127.0.0.1:9000").unwrap();
        assert!(url.https);
        assert_eq!(url.authority, "127.0.0.1:9000");
        assert_eq!(url.path_with_query, "/");
        assert_eq!(
            parse_url("http://a/b?c=d#e").unwrap().path_with_query,
            "/b?c=d"
        );
        assert!(parse_url("ftp://a/").is_err());
        assert!(parse_url("http:///x").is_err());
        assert_eq!(parse_url("http://a?x").unwrap().path_with_query, "/?x");
    }
}
