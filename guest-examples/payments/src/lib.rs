//! `payments`: a handler-only component that other services call by name.
//!
//! Deployed as service `payments` in stack `finance`, it is reachable from
//! any other component as `http://finance-payments/...`: the platform routes
//! an outgoing `wasi:http` request whose authority is `<stack>-<service>` to
//! one of the service's instances, in-process.
//!
//! - `POST /payments`         `{"amount": 1250, "currency": "EUR"}` → 201 JSON receipt
//!   (`id`, `amount`, `currency`, `status`, `instance`, `service`, `caller`,
//!   `greeting`); a missing or invalid `amount` (or `currency`) → 400
//!   `{"error": "..."}`
//! - `GET /payments/health`   200 `ok`
//! - anything else            404

mod json;

use std::sync::atomic::{AtomicU64, Ordering};

use kit::{respond, BodyError};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

use json::{escape, Json};

wasip2::http::proxy::export!(Payments);

struct Payments;

/// Payments accepted by this instance: receipt ids are `pay_1`, `pay_2`, ...
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// Request bodies larger than this are refused with 413.
const MAX_BODY: usize = 64 * 1024;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

impl wasip2::exports::http::incoming_handler::Guest for Payments {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let path = path_with_query.split('?').next().unwrap_or("/");
        let method = request.method();

        let (status, content_type, body) = match (path, &method) {
            ("/payments", Method::Post) => pay(&request),
            ("/payments/health", Method::Get | Method::Head) => (200, TEXT, "ok".to_string()),
            _ => (404, TEXT, format!("not found: {path}\n")),
        };
        respond(response_out, status, content_type, body.as_bytes());
    }
}

/// `POST /payments`: validates the body and answers with a receipt.
fn pay(request: &IncomingRequest) -> (u16, &'static str, String) {
    let body = match kit::read_body(request, MAX_BODY) {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return error(413, &format!("body larger than {MAX_BODY} bytes"));
        }
        Err(BodyError::Unreadable(e)) => return error(400, &format!("cannot read body: {e}")),
    };
    let Some(fields) = json::parse_object(&body) else {
        return error(400, "body must be a JSON object");
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    let amount = match field("amount") {
        None | Some(Json::Null) => return error(400, "amount is required"),
        Some(Json::Number(raw)) => match raw.parse::<u64>() {
            Ok(amount) if amount > 0 => amount,
            _ => {
                return error(
                    400,
                    "amount must be a positive whole number (in minor units)",
                )
            }
        },
        Some(_) => return error(400, "amount must be a number"),
    };
    let currency = match field("currency") {
        None | Some(Json::Null) => "EUR".to_string(),
        Some(Json::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            c.to_ascii_uppercase()
        }
        Some(_) => return error(400, "currency must be a 3-letter code such as \"EUR\""),
    };

    let n = ACCEPTED.fetch_add(1, Ordering::SeqCst) + 1;
    let instance = env_or("MESH_INSTANCE", "?");
    let service = format!(
        "{}-{}",
        env_or("MESH_STACK", "?"),
        env_or("MESH_SERVICE", "?")
    );
    let caller = request
        .headers()
        .get("x-mesh-caller")
        .into_iter()
        .next()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let greeting = std::env::var("GREETING").ok();

    let receipt = format!(
        "{{\"id\":\"pay_{n}\",\"amount\":{amount},\"currency\":{},\"status\":\"accepted\",\
         \"instance\":{},\"service\":{},\"caller\":{},\"greeting\":{}}}",
        escape(&currency),
        escape(&instance),
        escape(&service),
        string_or_null(caller.as_deref()),
        string_or_null(greeting.as_deref()),
    );
    (201, JSON, receipt)
}

fn error(status: u16, message: &str) -> (u16, &'static str, String) {
    (status, JSON, format!("{{\"error\":{}}}", escape(message)))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn string_or_null(value: Option<&str>) -> String {
    value.map_or_else(|| "null".to_string(), escape)
}
