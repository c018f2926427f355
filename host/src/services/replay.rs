//! A request that can be served a second time, on another instance, as
//! long as the first instance did not read its body.
//!
//! The body is lent to the first instance: it is taken from a shared place
//! only when the instance first reads it. If the instance failed without
//! reading it, the pool takes it back and sends the same request to a
//! fresh instance; if it was read, the request cannot be replayed.
//! Only methods RFC 9110 calls idempotent are ever sent again (a `POST`
//! may have done its work before the instance failed to answer), and the
//! pool sends none whose first server called out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use parking_lot::Mutex;
use wasmtime_wasi_http::WasiBody;

type BodyError = <WasiBody as Body>::Error;

/// What is kept of a request to serve it again.
pub struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    body: Arc<Mutex<Option<WasiBody>>>,
    /// The request came with no body at all.
    empty: bool,
}

impl Replay {
    /// Whether the request may be sent again at all (RFC 9110 §9.2.2).
    pub fn idempotent(&self) -> bool {
        self.method.is_idempotent()
    }

    /// Keeps what is needed to serve `request` again, and gives the
    /// request to serve first, its body lent.
    pub fn keep(request: http::Request<WasiBody>) -> (Replay, http::Request<WasiBody>) {
        let (parts, body) = request.into_parts();
        let empty = body.is_end_stream();
        let replay = Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: Arc::new(Mutex::new(Some(body))),
            empty,
        };
        let lent = Lent {
            shared: replay.body.clone(),
            taken: None,
        };
        (
            replay,
            http::Request::from_parts(parts, lent.boxed_unsync()),
        )
    }

    /// The same request again, when its method is idempotent and its
    /// first server read none of its body (or it has none).
    pub fn again(self) -> Option<http::Request<WasiBody>> {
        if !self.method.is_idempotent() {
            return None;
        }
        let unread = self.body.lock().take();
        let body = match unread {
            Some(body) => body,
            None if self.empty => http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
            None => return None,
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        Some(request)
    }
}

/// A body taken from its shared place on its first read.
struct Lent {
    shared: Arc<Mutex<Option<WasiBody>>>,
    taken: Option<WasiBody>,
}

impl Body for Lent {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            // Once taken it is never given back: a body only partly read
            // cannot be sent again.
            this.taken = this.shared.lock().take();
        }
        match &mut this.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.shared.lock().as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self
                .shared
                .lock()
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Empty, Full};

    use super::*;

    fn request(body: &'static [u8]) -> http::Request<WasiBody> {
        let body = if body.is_empty() {
            Empty::new().map_err(|never| match never {}).boxed_unsync()
        } else {
            Full::new(Bytes::from_static(body))
                .map_err(|never| match never {})
                .boxed_unsync()
        };
        request_with(http::Method::PUT, body)
    }

    fn request_with(method: http::Method, body: WasiBody) -> http::Request<WasiBody> {
        http::Request::builder()
            .method(method)
            .uri("http://x/path?q=1")
            .header("x-test", "1")
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn an_unread_body_is_served_again_whole() {
        let (replay, first) = Replay::keep(request(b"payload"));
        drop(first);
        let again = replay.again().expect("unread: can be replayed");
        assert_eq!(again.uri(), "http://x/path?q=1");
        assert_eq!(again.headers()["x-test"], "1");
        let body = again.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"payload");
    }

    #[tokio::test]
    async fn a_read_body_cannot_be_replayed_but_an_empty_one_can() {
        let (replay, first) = Replay::keep(request(b"payload"));
        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"payload");
        assert!(replay.again().is_none());

        let (replay, first) = Replay::keep(request(b""));
        let _ = first.into_body().collect().await.unwrap();
        assert!(replay.again().is_some(), "nothing was lost");
    }

    #[tokio::test]
    async fn a_request_that_is_not_idempotent_is_never_sent_again() {
        let empty = || Empty::new().map_err(|never| match never {}).boxed_unsync();
        let (replay, first) = Replay::keep(request_with(http::Method::POST, empty()));
        drop(first);
        assert!(!replay.idempotent());
        assert!(replay.again().is_none(), "a POST was sent again");
        let (replay, first) = Replay::keep(request_with(http::Method::DELETE, empty()));
        drop(first);
        assert!(replay.again().is_some(), "DELETE is idempotent");
    }
}
