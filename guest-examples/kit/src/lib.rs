//! What the HTTP guest examples share: reading a whole request body with a
//! size limit, and sending a complete response.

use std::io::{Read as _, Write as _};

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the limit given to [`read_body`].
    TooLarge,
    /// The stream failed.
    Unreadable(std::io::Error),
}

/// Reads the whole request body (empty if there is none), up to `max`
/// bytes.
pub fn read_body(request: &IncomingRequest, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    let Ok(body) = request.consume() else {
        return Ok(bytes);
    };
    let read = match body.stream() {
        // One byte more than allowed tells "exactly full" from "too large".
        Ok(stream) => stream
            .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes),
        Err(()) => Ok(0),
    };
    // The stream (a child of the body) is dropped by now.
    drop(IncomingBody::finish(body));
    match read {
        Err(e) => Err(BodyError::Unreadable(e)),
        Ok(_) if bytes.len() > max => Err(BodyError::TooLarge),
        Ok(_) => Ok(bytes),
    }
}

/// Sends a complete response: status, `content-type`, body.
pub fn respond(response_out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
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
