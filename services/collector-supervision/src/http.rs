//! The HTTP endpoint: `POST /v1/actions/process-check-result` (Icinga 2
//! style, `Authorization: Bearer TOKEN`) and `POST /nrdp/` (NRDP: the same
//! header, or the form field `token` of the body; never the query string).
//!
//! At most `max_concurrent_requests` requests are handled at once (the others
//! wait), and a request not answered within `request_timeout_seconds` (a slow
//! body included) is answered 408.
//!
//! A request is handled as a whole, in this order:
//!
//! | answer | when | published |
//! |---|---|---|
//! | 401 | no token, or not a configured one; checked from the header before the body is read | nothing |
//! | 400 | NRDP: a `token` in the query string (URLs end up in proxy logs) | nothing |
//! | 413 | the body is over `max_body_bytes`, or NRDP holds over `max_results_per_request` results | nothing |
//! | 400 | the body is not readable (JSON, XML, form, fields, states, times) | nothing |
//! | 403 | a result is for a host of a tenant the token may not write for | nothing |
//! | 422 | a result's host or check is not in the mapping (or the event is invalid): that result alone is dead-lettered (component `collector-supervision`, the result as JSON, line = its position in the request; never the token nor the rest of the request), the other results are published | the others |
//! | 503 | the broker did not acknowledge (retry: the same results count once) | maybe some |
//! | 200 | every result published, acknowledged by the broker | all |

use collector_runtime::{InternalEvent, RecordsRead};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use meter_kafka::KafkaError;
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::config::Token;
use crate::publish::{Location, KIND};
use crate::results::{loggable, to_event, Incoming};
use crate::{icinga, nrdp};

/// The routes, with the request timeout and the concurrency limit.
pub fn router(state: AppState) -> Router {
    let settings = state.settings();
    let (limit, timeout, concurrency) = (settings.max_body_bytes, settings.request_timeout, settings.max_concurrent_requests);
    Router::new()
        .route("/v1/actions/process-check-result", post(process_check_result))
        .route("/nrdp/", post(nrdp_submit))
        .route("/nrdp", post(nrdp_submit))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(concurrency))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads a body up to `limit` bytes (after the caller was authenticated, or
/// for NRDP's form token, within the timeout and concurrency limit).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.to_string().contains("length limit exceeded") || inner.is::<http_body_util::LengthLimitError>() {
            BodyError::TooLarge
        } else {
            BodyError::Broken(inner.to_string())
        }
    })
}

/// Serves the endpoint on `listener` until the listener fails.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// A result that was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based position in the request.
    pub position: usize,
    pub object: String,
    pub reason: &'static str,
    pub message: String,
}

/// What became of the results of one request.
#[derive(Debug)]
pub enum Outcome {
    Done { published: usize, rejected: Vec<Rejected> },
    Forbidden(String),
    Unavailable(KafkaError),
}

/// Maps, authorizes, publishes and dead-letters the results of one request.
/// A rejected result is dead-lettered alone: `original` when given (the body
/// of a one-result request, which holds no token), else the result as JSON
/// ([`Incoming::to_json`]).
pub async fn accept(
    state: &AppState,
    token: &Token,
    results: Vec<Incoming>,
    original: Option<&[u8]>,
    location: &Location,
) -> Outcome {
    let settings = state.settings();
    let publisher = state.publisher();
    RecordsRead { kind: KIND.slug(), count: results.len() as u64 }.emit(&publisher.metrics());
    let received = Utc::now();
    let (mut events, mut rejected, mut forbidden) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r.perfdata_items() {
            tracing::warn!(object = %loggable(&r.object_name()), error = %loggable(&e.to_string()), "performance data not readable; the result is kept");
        }
        match to_event(settings, r, received) {
            Ok(e) if !token.allows(&e.header.tenant) => forbidden.push(loggable(&r.object_name())),
            Ok(e) => events.push(e),
            Err(e) => rejected.push(Rejected { position: i + 1, object: r.object_name(), reason: e.reason(), message: e.to_string() }),
        }
    }
    if !forbidden.is_empty() {
        tracing::warn!(token = %token.name, objects = ?forbidden, "results for another tenant's hosts refused");
        return Outcome::Forbidden(format!(
            "token {:?} may not write results for {}: nothing was published",
            token.name,
            forbidden.join(", ")
        ));
    }
    let published = events.len();
    if let Err(e) = publisher.publish(events).await {
        return Outcome::Unavailable(e);
    }
    let line = |r: &Rejected| (results.len() > 1).then_some(r.position as i64);
    for r in &rejected {
        tracing::warn!(object = %loggable(&r.object), reason = r.reason, error = %loggable(&r.message), "result rejected");
        let bytes = match original {
            Some(o) => o.to_vec(),
            None => results[r.position - 1].to_json(),
        };
        if let Err(e) = publisher.dead_letter(r.reason, &r.message, &bytes, location, line(r)).await {
            return Outcome::Unavailable(e);
        }
    }
    Outcome::Done { published, rejected }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn icinga_error(status: StatusCode, message: &str) -> Response {
    let mut r = respond(status, "application/json", json!({"error": status.as_u16(), "status": message}).to_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

async fn process_check_result(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    // The token first, from the header: an unknown caller's body is never read.
    let Some(token) = state.settings().bearer_token(authorization(&headers)).cloned() else {
        return icinga_error(StatusCode::UNAUTHORIZED, "Unauthorized: send Authorization: Bearer TOKEN with a configured token");
    };
    let limit = state.settings().max_body_bytes;
    let body = match read_body(&headers, request.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return icinga_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body larger than {limit} bytes"))
        }
        Err(BodyError::Broken(e)) => return icinga_error(StatusCode::BAD_REQUEST, &format!("cannot read the request body: {e}")),
    };
    let (incoming, notes) = match icinga::parse_action(&body) {
        Ok(parsed) => parsed,
        Err(e) => return icinga_error(StatusCode::BAD_REQUEST, &e),
    };
    for note in notes {
        tracing::warn!(object = %loggable(&incoming.object_name()), note = %loggable(&note), "performance data");
    }
    let object = incoming.object_name();
    let location = Location::new("POST /v1/actions/process-check-result");
    match accept(&state, &token, vec![incoming], Some(&body[..]), &location).await {
        Outcome::Done { rejected, .. } if rejected.is_empty() => respond(
            StatusCode::OK,
            "application/json",
            json!({"results": [{"code": 200, "status": format!("Successfully processed check result for object '{object}'.")}]})
                .to_string(),
        ),
        Outcome::Done { rejected, .. } => icinga_error(StatusCode::UNPROCESSABLE_ENTITY, &rejected[0].message),
        Outcome::Forbidden(message) => icinga_error(StatusCode::FORBIDDEN, &message),
        Outcome::Unavailable(e) => {
            tracing::error!(error = %e, "publishing failed");
            icinga_error(StatusCode::SERVICE_UNAVAILABLE, &format!("not published, retry later: {e}"))
        }
    }
}

async fn nrdp_submit(State(state): State<AppState>, uri: Uri, headers: HeaderMap, request: Request) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let reply_as = |json: bool, status: StatusCode, code: i32, message: &str, output: Option<&str>| {
        let (text, ct) = nrdp::answer(json, code, message, output);
        respond(status, ct, text)
    };
    if nrdp::parse_form(uri.query(), b"").token_in_query {
        return reply_as(
            false,
            StatusCode::BAD_REQUEST,
            -1,
            "TOKEN IN URL REFUSED: send it in the form body or as Authorization: Bearer TOKEN (URLs end up in logs)",
            None,
        );
    }
    // A token in the header is checked before the body is read.
    let header_token = match authorization(&headers) {
        None => None,
        Some(value) => match state.settings().bearer_token(Some(value)) {
            Some(t) => Some(t.clone()),
            None => return reply_as(false, StatusCode::UNAUTHORIZED, -1, "BAD TOKEN", None),
        },
    };
    let limit = state.settings().max_body_bytes;
    let body = match read_body(&headers, request.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return reply_as(false, StatusCode::PAYLOAD_TOO_LARGE, -1, &format!("BAD REQUEST: body larger than {limit} bytes"), None)
        }
        Err(BodyError::Broken(e)) => return reply_as(false, StatusCode::BAD_REQUEST, -1, &format!("BAD REQUEST: {e}"), None),
    };
    let form = nrdp::parse_form(uri.query(), &body);
    let json = form.json.is_some() && form.xml.is_none();
    let reply = |status: StatusCode, code: i32, message: &str, output: Option<&str>| reply_as(json, status, code, message, output);
    let token = match (header_token, form.token.as_deref()) {
        (Some(t), _) => t,
        (None, None | Some("")) => return reply(StatusCode::UNAUTHORIZED, -1, "NO TOKEN", None),
        (None, Some(t)) => match state.settings().token(t) {
            Some(token) => token.clone(),
            None => return reply(StatusCode::UNAUTHORIZED, -1, "BAD TOKEN", None),
        },
    };
    if content_type.starts_with("multipart/") {
        return reply(StatusCode::BAD_REQUEST, -1, "BAD REQUEST: send the form as application/x-www-form-urlencoded", None);
    }
    match form.cmd.as_deref() {
        Some("submitcheck") => {}
        None => return reply(StatusCode::BAD_REQUEST, -1, "NO COMMAND", None),
        Some(other) => {
            return reply(StatusCode::BAD_REQUEST, -1, &format!("BAD COMMAND {:?}: only submitcheck is supported", loggable(other)), None)
        }
    }
    let parsed = match (&form.xml, &form.json) {
        (Some(xml), _) => nrdp::parse_xml(xml),
        (None, Some(j)) => nrdp::parse_json(j),
        (None, None) => return reply(StatusCode::BAD_REQUEST, -1, "NO DATA: send XMLDATA or JSONDATA", None),
    };
    let results = match parsed {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, -1, &format!("BAD DATA: {e}"), None),
    };
    let total = results.len();
    let max = state.settings().max_results_per_request;
    if total > max {
        tracing::warn!(token = %token.name, results = total, limit = max, "NRDP request over the result limit refused");
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            -1,
            &format!("TOO MANY RESULTS: {total} in one request, the limit is {max}; split it (nothing was published)"),
            None,
        );
    }
    let location = Location::new("POST /nrdp/");
    match accept(&state, &token, results, None, &location).await {
        Outcome::Done { published, rejected } if rejected.is_empty() => {
            reply(StatusCode::OK, 0, "OK", Some(&format!("{published} checks processed.")))
        }
        Outcome::Done { published, rejected } => {
            let details: Vec<String> = rejected.iter().map(|r| format!("result {}: {}", r.position, r.message)).collect();
            reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                -1,
                &format!("{published} of {total} checks processed; {} rejected: {}", rejected.len(), details.join("; ")),
                None,
            )
        }
        Outcome::Forbidden(message) => reply(StatusCode::FORBIDDEN, -1, &format!("FORBIDDEN: {message}"), None),
        Outcome::Unavailable(e) => {
            tracing::error!(error = %e, "publishing failed");
            reply(StatusCode::SERVICE_UNAVAILABLE, -1, &format!("NOT PUBLISHED, retry later: {e}"), None)
        }
    }
}
