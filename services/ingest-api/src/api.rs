//! `POST /v1/events`: the HTTP side of the ingest API.
//!
//! A request goes through these steps, in order, and the first that fails
//! answers (with a JSON body `{"error": ...}` and more fields per case):
//!
//! | step | failure |
//! |---|---|
//! | `Authorization: Bearer <token>` of a configured collector | 401 |
//! | `Content-Type` is `application/cloudevents+json` or `application/cloudevents-batch+json` | 415 |
//! | body at most `max_body_bytes` | 413 (`limit_bytes`) |
//! | body is JSON: one object, or an array for a batch | 400 (`reason: malformed_json`) |
//! | batch at most `max_batch_events` events | 413 (`limit_events`) |
//! | every event's tenant (`data.tenant`) is one the token may write for | 403 (`forbidden`: index, id, tenant) |
//! | every event's `source` is one the token may send as (`sources`) | 403 (`forbidden`: index, id, source) |
//! | every event is a valid CloudEvent of a known type with valid data | 400 (`rejected`: index, id, reason, error) |
//! | the broker acknowledges every event | 503: retry the whole request |
//!
//! Until the last step nothing is published: a request is all or nothing.
//! Success is 200 with `{"accepted": [ids...], "count": n}`, sent only once
//! the broker has acknowledged every event (idempotent producer, key =
//! tenant). A 503 may follow a partial publish: sending the request again is
//! safe, since an event counts once per `(source, id)`.
//!
//! The same event twice in a batch (same source and id, same content) is
//! published once; the same id with different content is refused
//! (`duplicate_id`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use collector_runtime::{CollectorMetrics, EncodeFailure, InternalEvent, Publisher, RecordRejected, RecordsRead};
use meter_config::MeterConfig;
use meter_model::{Event, EventKind};
use meter_telemetry::MetricFamily;
use prometheus::{IntCounterVec, Registry};
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};

use crate::cloudevents::{self, Mode};
use crate::config::{Access, IngestApiConfig, Tokens};
use crate::IngestError;

/// `source` label of `meter_collector_last_success_timestamp_seconds`.
pub const METRIC_SOURCE: &str = "ingest-api";

/// `meter_ingest_requests_total{status}`: the HTTP status code answered.
pub const REQUESTS: MetricFamily =
    MetricFamily::counter("meter_ingest_requests_total", "Requests to the ingest API, by HTTP status code answered.", &["status"]);

/// The ingest API's own families (it also reports the collector ones).
pub const METRICS: &[MetricFamily] = &[REQUESTS];

/// The API answered a request.
pub struct RequestAnswered {
    pub status: StatusCode,
}

impl InternalEvent for RequestAnswered {
    type Metrics = IngestMetrics;
    fn emit(self, m: &IngestMetrics) {
        tracing::debug!(status = self.status.as_u16(), "ingest request answered");
        m.requests.with_label_values(&[self.status.as_str()]).inc();
    }
}

/// The collector counters (`meter_collector_*`, by kind) and the API's own.
#[derive(Clone)]
pub struct IngestMetrics {
    pub collector: CollectorMetrics,
    /// `meter_ingest_requests_total{status}`: the HTTP status code answered.
    pub requests: IntCounterVec,
}

impl IngestMetrics {
    /// Registers the collector counters and the request counter (once per registry).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let collector = CollectorMetrics::register(registry)?;
        Self::with_collector_metrics(collector, registry)
    }

    /// Uses collector counters already registered, and registers only the
    /// request counter.
    pub fn with_collector_metrics(collector: CollectorMetrics, registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = REQUESTS.register_counter_vec(registry)?;
        Ok(IngestMetrics { collector, requests })
    }
}

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Publisher,
    tokens: Tokens,
    max_body_bytes: usize,
    max_batch_events: usize,
    request_timeout: std::time::Duration,
    max_concurrent_requests: usize,
    metrics: IngestMetrics,
}

impl AppState {
    pub fn new(
        config: &MeterConfig,
        api: &IngestApiConfig,
        producer: FutureProducer,
        metrics: IngestMetrics,
    ) -> Result<Self, IngestError> {
        let tokens = api.tokens().map_err(|message| IngestError::Config { path: "the ingest API settings".into(), message })?;
        Ok(AppState {
            inner: Arc::new(Inner {
                publisher: Publisher::new(config, producer, metrics.collector.clone(), METRIC_SOURCE),
                tokens,
                max_body_bytes: api.max_body_bytes,
                max_batch_events: api.max_batch_events,
                request_timeout: std::time::Duration::from_secs(api.request_timeout_seconds),
                max_concurrent_requests: api.max_concurrent_requests,
                metrics,
            }),
        })
    }
}

/// The API's routes: `POST /v1/events`, and `GET /healthz` (always 200),
/// at most `max_concurrent_requests` at once (the others wait), each
/// answered 408 when not done within `request_timeout_seconds` (a slow body
/// included).
pub fn router(state: AppState) -> Router {
    let (timeout, concurrency) = (state.inner.request_timeout, state.inner.max_concurrent_requests);
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(concurrency))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn post_events(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    let response = handle(&state.inner, &headers, request.into_body()).await;
    RequestAnswered { status: response.status() }.emit(&state.inner.metrics);
    response
}

/// One event of the request, once parsed.
struct Parsed {
    event: Event,
}

async fn handle(state: &Inner, headers: &HeaderMap, body: Body) -> Response {
    // 1. Who is calling.
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(access) = state.tokens.authorize(authorization) else {
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "missing or unknown bearer token: send `Authorization: Bearer <token>` with a collector's token" }),
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"meter\""));
        return response;
    };
    // 2. What is sent.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(mode) = cloudevents::mode_of_content_type(content_type) else {
        return json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({
                "error": format!(
                    "Content-Type must be {} (one CloudEvent) or {} (a JSON array of CloudEvents), got {content_type:?}; binary mode is not supported",
                    cloudevents::STRUCTURED, cloudevents::BATCH
                ),
                "accepted_content_types": [cloudevents::STRUCTURED, cloudevents::BATCH],
            }),
        );
    };
    // 3. The body, within the limit.
    let too_large = || {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({
                "error": format!("request body larger than {} bytes: send smaller batches", state.max_body_bytes),
                "limit_bytes": state.max_body_bytes,
            }),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return json_response(StatusCode::BAD_REQUEST, json!({ "error": format!("cannot read the request body: {inner}") }));
        }
    };
    // 4. JSON of the right shape.
    let document: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("the body is not valid JSON: {e}"), "reason": "malformed_json" }),
            )
        }
    };
    let raw_events = match (mode, document) {
        (Mode::Structured, v @ Value::Object(_)) => vec![v],
        (Mode::Batch, Value::Array(events)) => events,
        (Mode::Structured, _) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": format!("{} carries one CloudEvent, a JSON object; send arrays as {}", cloudevents::STRUCTURED, cloudevents::BATCH),
                    "reason": "malformed_json",
                }),
            )
        }
        (Mode::Batch, _) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": format!("{} carries a JSON array of CloudEvents", cloudevents::BATCH),
                    "reason": "malformed_json",
                }),
            )
        }
    };
    // 5. Batch length.
    if raw_events.len() > state.max_batch_events {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({
                "error": format!(
                    "batch of {} events is longer than the limit of {} events: split it; nothing was published",
                    raw_events.len(), state.max_batch_events
                ),
                "limit_events": state.max_batch_events,
            }),
        );
    }
    // 6. Rights (tenant, then source), then validity, of every event before anything is published.
    let metrics = &state.metrics.collector;
    let refusal = |raw: &Value| -> Option<(&'static str, &'static str, String)> {
        if let Some(tenant) = cloudevents::claimed_tenant(raw).filter(|t| !access.tenants.allows(t)) {
            return Some(("tenant", "forbidden_tenant", tenant.to_string()));
        }
        cloudevents::claimed_source(raw)
            .filter(|s| !access.sources.allows(s))
            .map(|source| ("source", "forbidden_source", source.to_string()))
    };
    let mut forbidden = Vec::new();
    for (index, raw) in raw_events.iter().enumerate() {
        if let Some((field, reason, value)) = refusal(raw) {
            let kind = raw.get("type").and_then(Value::as_str).and_then(cloudevents::kind_of_type);
            RecordRejected { kind: kind_label(kind), reason }.emit(&metrics);
            let mut entry = json!({ "index": index, "id": cloudevents::id_of(raw) });
            entry[field] = Value::from(value);
            forbidden.push(entry);
        }
    }
    if !forbidden.is_empty() {
        tracing::warn!(collector = %access.collector, events = raw_events.len(), forbidden = forbidden.len(), "request refused: tenant or source not allowed");
        return json_response(
            StatusCode::FORBIDDEN,
            json!({
                "error": format!(
                    "collector {:?} may not send events of {} of these tenants or sources; nothing was published",
                    access.collector,
                    if forbidden.len() == 1 { "one" } else { "some" }
                ),
                "forbidden": forbidden,
            }),
        );
    }
    let (parsed, rejected) = parse_all(&raw_events, metrics);
    if !rejected.is_empty() {
        tracing::info!(collector = %access.collector, events = raw_events.len(), rejected = rejected.len(), "request refused: invalid events");
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({
                "error": format!("{} of {} events are invalid; nothing was published", rejected.len(), raw_events.len()),
                "rejected": rejected,
            }),
        );
    }
    // 7. Publish, and answer once every event is acknowledged.
    publish_all(state, access, parsed).await
}

fn kind_label(kind: Option<EventKind>) -> &'static str {
    kind.map_or("unknown", EventKind::slug)
}

/// Parses every event; duplicates (same source and id) with the same content
/// are kept once, with other content refused.
fn parse_all(raw_events: &[Value], metrics: &CollectorMetrics) -> (Vec<Parsed>, Vec<Value>) {
    let mut parsed = Vec::new();
    let mut rejected = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (index, raw) in raw_events.iter().enumerate() {
        let result = cloudevents::to_event(raw);
        let kind = match &result {
            Ok(event) => Some(event.kind()),
            Err(e) => e.kind,
        };
        RecordsRead { kind: kind_label(kind), count: 1 }.emit(&metrics);
        match result {
            Ok(event) => {
                let identity = (event.header().source.clone(), event.header().event_id.clone());
                match seen.get(&identity) {
                    None => {
                        seen.insert(identity, parsed.len());
                        parsed.push(Parsed { event });
                    }
                    Some(&first) if parsed[first].event == event => {}
                    Some(_) => {
                        RecordRejected { kind: kind_label(kind), reason: "duplicate_id" }.emit(&metrics);
                        rejected.push(json!({
                            "index": index, "id": identity.1, "reason": "duplicate_id",
                            "error": "an earlier event of this batch has the same source and id but other content",
                        }));
                    }
                }
            }
            Err(e) => {
                RecordRejected { kind: kind_label(kind), reason: e.reason }.emit(&metrics);
                rejected.push(json!({ "index": index, "id": cloudevents::id_of(raw), "reason": e.reason, "error": e.error }));
            }
        }
    }
    (parsed, rejected)
}

async fn publish_all(state: &Inner, access: &Access, parsed: Vec<Parsed>) -> Response {
    let ids: Vec<String> = parsed.iter().map(|p| p.event.header().event_id.clone()).collect();
    let results = match state.publisher.publish_each(parsed.into_iter().map(|p| p.event).collect()).await {
        Ok(results) => results,
        Err(EncodeFailure { event_id, error }) => {
            tracing::error!(error = %error, "encoding a valid event failed");
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": format!("encoding event {event_id} failed: {error}; nothing was published") }),
            );
        }
    };
    let mut accepted = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    let mut first_error = None;
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(()) => accepted.push(id),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
                failed.push(id);
            }
        }
    }
    if let Some(error) = first_error {
        tracing::error!(collector = %access.collector, %error, acknowledged = accepted.len(), failed = failed.len(), "publishing failed");
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "error": format!("the broker did not acknowledge every event ({error}); send the whole request again (events count once per source and id)"),
                "acknowledged": accepted,
                "failed": failed,
            }),
        );
    }
    if !accepted.is_empty() {
        state.publisher.succeeded();
    }
    tracing::info!(collector = %access.collector, events = accepted.len(), "events published");
    json_response(StatusCode::OK, json!({ "count": accepted.len(), "accepted": accepted }))
}

#[cfg(test)]
mod tests {
    //! The request checks, without a broker: every refusal happens before
    //! anything is published (the producer points at a closed port).
    use super::*;
    use crate::config::CollectorAccess;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    const TOKEN: &str = "acme-collector-token-0001";

    fn app(max_body_bytes: usize, max_batch_events: usize) -> (Router, Registry) {
        let mut config = MeterConfig::default();
        config.kafka.brokers = "127.0.0.1:1".into();
        let api = IngestApiConfig {
            max_body_bytes,
            max_batch_events,
            collectors: vec![CollectorAccess {
                name: "acme-collector".into(),
                token: Some(TOKEN.into()),
                token_env: None,
                tenants: vec!["acme".into()],
                sources: vec!["glpi-main".into()],
            }],
            ..IngestApiConfig::default()
        };
        let registry = Registry::new();
        let metrics = IngestMetrics::register(&registry).unwrap();
        let producer = meter_kafka::producer(&config.kafka).unwrap();
        (router(AppState::new(&config, &api, producer, metrics).unwrap()), registry)
    }

    fn event(id: &str, tenant: &str, minutes: i64) -> Value {
        json!({
            "specversion": "1.0", "id": id, "source": "glpi-main", "type": "io.meter.ticket_time",
            "data": {
                "tenant": tenant, "subsidiary": "acme-fr", "domain": "infrastructure",
                "event_time": "2026-01-12T10:45:00Z", "ticket_id": "2026-001", "task_id": id,
                "ticket_type": "INCIDENT", "category_path": ["RUN"], "requester": "marie", "technician": "bob",
                "technician_profile": "ENGINEER", "minutes_worked": minutes, "start_time": "2026-01-12T08:00:00Z"
            }
        })
    }

    async fn send(app: &Router, token: Option<&str>, content_type: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let mut request = HttpRequest::post("/v1/events").header("content-type", content_type);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app.clone().oneshot(request.body(body.into()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v)))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[tokio::test]
    async fn refusals_answer_the_documented_status_and_json() {
        let (app, registry) = app(4096, 3);
        let one = event("t-1", "acme", 30).to_string();
        let (status, body) = send(&app, None, cloudevents::STRUCTURED, one.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].as_str().unwrap().contains("bearer token"), "{body}");
        assert_eq!(send(&app, Some("not-a-known-token-at-all"), cloudevents::STRUCTURED, one.clone()).await.0, StatusCode::UNAUTHORIZED);

        let (status, body) = send(&app, Some(TOKEN), "application/json", one.clone()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body["error"].as_str().unwrap().contains(cloudevents::BATCH), "{body}");

        let (status, body) = send(&app, Some(TOKEN), cloudevents::STRUCTURED, "{\"specversion\": ").await;
        assert_eq!((status, body["reason"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
        let (status, _) = send(&app, Some(TOKEN), cloudevents::STRUCTURED, format!("[{one}]")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "an array needs the batch content type");

        let (status, body) = send(&app, Some(TOKEN), cloudevents::STRUCTURED, " ".repeat(5000)).await;
        assert_eq!((status, body["limit_bytes"].as_u64()), (StatusCode::PAYLOAD_TOO_LARGE, Some(4096)));

        let batch: Vec<Value> = (0..4).map(|i| event(&format!("t-{i}"), "acme", 30)).collect();
        let (status, body) = send(&app, Some(TOKEN), cloudevents::BATCH, Value::from(batch).to_string()).await;
        assert_eq!((status, body["limit_events"].as_u64()), (StatusCode::PAYLOAD_TOO_LARGE, Some(3)));

        let batch = json!([event("t-1", "acme", 30), event("t-2", "globex", 30)]);
        let (status, body) = send(&app, Some(TOKEN), cloudevents::BATCH, batch.to_string()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["forbidden"], json!([{ "index": 1, "id": "t-2", "tenant": "globex" }]));

        // A source the token is not bound to: 403, nothing published (dedup keys on the source).
        let mut foreign = event("t-3", "acme", 30);
        foreign["source"] = json!("icinga");
        let batch = json!([event("t-1", "acme", 30), foreign]);
        let (status, body) = send(&app, Some(TOKEN), cloudevents::BATCH, batch.to_string()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["forbidden"], json!([{ "index": 1, "id": "t-3", "source": "icinga" }]));

        // Forbidden wins over invalid: the caller learns nothing of another tenant's validation.
        let batch = json!([event("t-1", "acme", -1), event("t-2", "globex", -1)]);
        assert_eq!(send(&app, Some(TOKEN), cloudevents::BATCH, batch.to_string()).await.0, StatusCode::FORBIDDEN);

        let batch = json!([event("t-1", "acme", 30), event("t-2", "acme", 5000), {"specversion": "1.0"}]);
        let (status, body) = send(&app, Some(TOKEN), cloudevents::BATCH, batch.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let rejected = body["rejected"].as_array().unwrap();
        assert_eq!(rejected.len(), 2, "{body}");
        assert_eq!((rejected[0]["index"].as_u64(), rejected[0]["id"].as_str()), (Some(1), Some("t-2")));
        assert_eq!(rejected[0]["reason"], "invalid_event");
        assert!(rejected[0]["error"].as_str().unwrap().contains("minutes_worked"));
        assert_eq!((rejected[1]["index"].as_u64(), &rejected[1]["id"]), (Some(2), &Value::Null));
        assert_eq!(rejected[1]["reason"], "malformed_cloudevent");

        let batch = json!([event("t-1", "acme", 30), event("t-1", "acme", 31)]);
        let (status, body) = send(&app, Some(TOKEN), cloudevents::BATCH, batch.to_string()).await;
        assert_eq!((status, body["rejected"][0]["reason"].as_str()), (StatusCode::BAD_REQUEST, Some("duplicate_id")));

        // Metrics: by status code, and the collector counters by kind and reason.
        assert_eq!(counter(&registry, "meter_ingest_requests_total", &[("status", "401")]), 2);
        assert_eq!(counter(&registry, "meter_ingest_requests_total", &[("status", "413")]), 2);
        assert_eq!(counter(&registry, "meter_ingest_requests_total", &[("status", "403")]), 3);
        assert_eq!(counter(&registry, "meter_ingest_requests_total", &[("status", "400")]), 4);
        assert_eq!(counter(&registry, "meter_ingest_requests_total", &[("status", "415")]), 1);
        let rejected = "meter_collector_events_rejected_total";
        assert_eq!(counter(&registry, rejected, &[("kind", "ticket-time"), ("reason", "forbidden_tenant")]), 2);
        assert_eq!(counter(&registry, rejected, &[("kind", "ticket-time"), ("reason", "forbidden_source")]), 1);
        assert_eq!(counter(&registry, rejected, &[("kind", "ticket-time"), ("reason", "invalid_event")]), 1);
        assert_eq!(counter(&registry, rejected, &[("kind", "unknown"), ("reason", "malformed_cloudevent")]), 1);
        assert_eq!(counter(&registry, "meter_collector_events_published_total", &[]), 0);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_is_answered_408_after_the_timeout() {
        let mut config = MeterConfig::default();
        config.kafka.brokers = "127.0.0.1:1".into();
        let api = IngestApiConfig {
            request_timeout_seconds: 1,
            collectors: vec![CollectorAccess {
                name: "acme-collector".into(),
                token: Some(TOKEN.into()),
                token_env: None,
                tenants: vec!["acme".into()],
                sources: vec!["*".into()],
            }],
            ..IngestApiConfig::default()
        };
        let metrics = IngestMetrics::register(&Registry::new()).unwrap();
        let app = router(AppState::new(&config, &api, meter_kafka::producer(&config.kafka).unwrap(), metrics).unwrap());
        let stalled = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let started = std::time::Instant::now();
        let (status, _) = send(&app, Some(TOKEN), cloudevents::BATCH, Body::from_stream(stalled)).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_body_without_length_is_cut_at_the_limit() {
        let (app, _) = app(4096, 3);
        let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
        let (status, _) = send(&app, Some(TOKEN), cloudevents::BATCH, Body::from_stream(chunks)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
