//! The HTTP endpoint: `POST /v1/actions/process-check-result` (Icinga 2
//! style, `Authorization: Bearer TOKEN`) and `POST /nrdp/` (NRDP, form field
//! `token`).
//!
//! A request is handled as a whole, in this order:
//!
//! | answer | when | published |
//! |---|---|---|
//! | 401 | no token, or not a configured one | nothing |
//! | 400 | the body is not readable (JSON, XML, form, fields, states, times) | nothing |
//! | 403 | a result is for a host of a tenant the token may not write for | nothing |
//! | 422 | a result's host or check is not in the mapping (or the event is invalid): it is dead-lettered with the request's bytes (component `collector-supervision`, line = its position in the request), the other results are published | the others |
//! | 503 | the broker did not acknowledge (retry: the same results count once) | maybe some |
//! | 200 | every result published, acknowledged by the broker | all |

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use collector_file::CollectorMetrics;
use futures::future::join_all;
use meter_config::MeterConfig;
use meter_kafka::{event_key, DeadLetters, KafkaError};
use meter_model::codec::to_millis;
use meter_model::{CheckResult, DeadLetter, Event, EventCodec, EventKind};
use rdkafka::producer::FutureProducer;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Settings, Token};
use crate::results::{to_event, Incoming};
use crate::{icinga, nrdp, COMPONENT, METRIC_SOURCE};

const KIND: EventKind = EventKind::CheckResult;

/// Where an input came from, for dead letters (`source_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

impl Location {
    pub fn new(text: impl Into<String>) -> Self {
        Location(text.into())
    }
}

/// Publishes events and dead letters, and counts them.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    dead_letters: DeadLetters,
    metrics: CollectorMetrics,
}

impl Publisher {
    pub fn new(meter: &MeterConfig, producer: FutureProducer, metrics: CollectorMetrics) -> Self {
        Publisher {
            dead_letters: DeadLetters::with_producer(producer.clone(), meter.topics.dead_letters.clone()),
            topic: meter_kafka::event_topic(&meter.topics, KIND).to_string(),
            producer,
            metrics,
        }
    }

    pub fn metrics(&self) -> &CollectorMetrics {
        &self.metrics
    }

    /// Publishes check results (keyed by tenant) and waits for every acknowledgement.
    pub async fn publish(&self, events: Vec<CheckResult>) -> Result<(), KafkaError> {
        if events.is_empty() {
            return Ok(());
        }
        let now = to_millis(Utc::now());
        let mut payloads = Vec::new();
        for mut e in events {
            e.header.ingest_time = now;
            let key = event_key(&e.header.tenant).to_string();
            payloads.push((key, EventCodec::encode_event(&Event::CheckResult(e))?));
        }
        let count = payloads.len() as u64;
        let sends = payloads.iter().map(|(key, payload)| meter_kafka::publish(&self.producer, &self.topic, key, payload));
        for result in join_all(sends).await {
            result?;
        }
        self.metrics.published.with_label_values(&[KIND.slug()]).inc_by(count);
        self.metrics.last_success.with_label_values(&[METRIC_SOURCE]).set(Utc::now().timestamp());
        Ok(())
    }

    /// Dead-letters an input with its original bytes.
    pub async fn dead_letter(
        &self,
        reason: &'static str,
        error: &str,
        original: &[u8],
        location: &Location,
        line: Option<i64>,
    ) -> Result<(), KafkaError> {
        self.dead_letters
            .send(&DeadLetter {
                component: COMPONENT.into(),
                error_kind: reason.into(),
                error: error.to_string(),
                original: original.to_vec(),
                event_kind: Some(KIND.slug().into()),
                source_file: Some(location.0.clone()),
                source_line: line,
                source_topic: None,
                source_partition: None,
                source_offset: None,
                failed_at: to_millis(Utc::now()),
            })
            .await?;
        self.metrics.rejected.with_label_values(&[KIND.slug(), reason]).inc();
        Ok(())
    }
}

struct Inner {
    settings: Settings,
    publisher: Publisher,
}

/// What the endpoint needs: the settings and the publisher.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(settings: Settings, publisher: Publisher) -> Self {
        AppState(Arc::new(Inner { settings, publisher }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn publisher(&self) -> &Publisher {
        &self.0.publisher
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let limit = state.settings().max_body_bytes;
    Router::new()
        .route("/v1/actions/process-check-result", post(process_check_result))
        .route("/nrdp/", post(nrdp_submit))
        .route("/nrdp", post(nrdp_submit))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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
pub async fn accept(state: &AppState, token: &Token, results: Vec<Incoming>, original: &[u8], location: &Location) -> Outcome {
    let settings = state.settings();
    let publisher = state.publisher();
    publisher.metrics.read.with_label_values(&[KIND.slug()]).inc_by(results.len() as u64);
    let received = Utc::now();
    let (mut events, mut rejected, mut forbidden) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r.perfdata_items() {
            tracing::warn!(object = %r.object_name(), error = %e, "performance data not readable; the result is kept");
        }
        match to_event(settings, r, received) {
            Ok(e) if !token.allows(&e.header.tenant) => forbidden.push(r.object_name()),
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
        tracing::warn!(object = %r.object, reason = r.reason, error = %r.message, "result rejected");
        if let Err(e) = publisher.dead_letter(r.reason, &r.message, original, location, line(r)).await {
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

async fn process_check_result(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = bearer(&headers).and_then(|t| state.settings().token(t)).cloned() else {
        return icinga_error(StatusCode::UNAUTHORIZED, "Unauthorized: send Authorization: Bearer TOKEN with a configured token");
    };
    let (incoming, notes) = match icinga::parse_action(&body) {
        Ok(parsed) => parsed,
        Err(e) => return icinga_error(StatusCode::BAD_REQUEST, &e),
    };
    for note in notes {
        tracing::warn!(object = %incoming.object_name(), note, "performance data");
    }
    let object = incoming.object_name();
    let location = Location::new("POST /v1/actions/process-check-result");
    match accept(&state, &token, vec![incoming], &body, &location).await {
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

async fn nrdp_submit(State(state): State<AppState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let form = nrdp::parse_form(uri.query(), &body);
    let json = form.json.is_some() && form.xml.is_none();
    let reply = |status: StatusCode, code: i32, message: &str, output: Option<&str>| {
        let (text, ct) = nrdp::answer(json, code, message, output);
        respond(status, ct, text)
    };
    let token = match form.token.as_deref() {
        None | Some("") => return reply(StatusCode::UNAUTHORIZED, -1, "NO TOKEN", None),
        Some(t) => match state.settings().token(t) {
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
        Some(other) => return reply(StatusCode::BAD_REQUEST, -1, &format!("BAD COMMAND {other:?}: only submitcheck is supported"), None),
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
    let location = Location::new("POST /nrdp/");
    match accept(&state, &token, results, &body, &location).await {
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
