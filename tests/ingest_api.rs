//! The ingest API and replays (`meter collect file --rate`) against the real broker of the local
//! stack, each test on its own topics (TestEnv).
//!
//! - The API runs in this process on 127.0.0.1:0 (`ingest_api::serve`),
//!   called with reqwest: a single event and a batch of the three kinds are
//!   answered 200 with their ids and are then on their topics exactly (key =
//!   tenant, fields as sent, ingest time set); every refused request (no or
//!   unknown token 401, another tenant's event 403 also when mixed with valid
//!   ones, malformed JSON 400, one invalid event in a batch 400 with the
//!   per-event report, body too large 413, batch too long 413, wrong content
//!   type 415) leaves every topic empty; the metrics count requests by status.
//! - `meter ingest-api` as a process: the command serves the API and /metrics.
//! - Replay: files with duplicates (in a file and across files, one with
//!   other content), an id reused by another source, bad lines and a blank
//!   line, sent at 20 events/s: the summary counts sent, duplicates and
//!   rejections by reason, the run lasts at least what the rate implies, the
//!   topic holds exactly the unique valid events (first version) and the
//!   dead-letter topic the bad lines with their file and line; `meter
//!   collect file --rate` prints the same summary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use collector_runtime::CollectorMetrics;
use ingest_api::config::CollectorAccess;
use collector_file::ReplayOptions;
use ingest_api::{AppState, IngestApiConfig, IngestMetrics};
use meter_model::{DeadLetter, Event, EventCodec, EventKind};
use meter_tests::TestEnv;
use prometheus::Registry;
use serde_json::{json, Value};

const ACME_TOKEN: &str = "acme-collector-token-0001";
const OPS_TOKEN: &str = "operations-any-tenant-token-0002";
const SINGLE: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

fn api_config(max_body_bytes: usize, max_batch_events: usize) -> IngestApiConfig {
    let access = |name: &str, token: &str, tenants: &[&str], sources: &[&str]| CollectorAccess {
        name: name.into(),
        token: Some(token.into()),
        token_env: None,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        sources: sources.iter().map(|t| t.to_string()).collect(),
    };
    IngestApiConfig {
        max_body_bytes,
        max_batch_events,
        collectors: vec![
            access("acme-glpi", ACME_TOKEN, &["acme"], &["glpi-main"]),
            access("operations", OPS_TOKEN, &["*"], &["*"]),
        ],
        ..IngestApiConfig::default()
    }
}

struct Api {
    url: String,
    client: reqwest::Client,
    registry: Registry,
}

async fn start_api(env: &TestEnv, api: &IngestApiConfig) -> Api {
    let registry = Registry::new();
    let metrics = IngestMetrics::register(&registry).expect("metrics");
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    let state = AppState::new(&env.config, api, producer, metrics).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    tokio::spawn(async move { ingest_api::serve(listener, state).await.expect("serve") });
    Api { url: format!("http://{addr}/v1/events"), client: reqwest::Client::new(), registry }
}

impl Api {
    async fn post(&self, token: Option<&str>, content_type: &str, body: String) -> (u16, Value) {
        let mut request = self.client.post(&self.url).header("Content-Type", content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    fn requests(&self, status: &str) -> u64 {
        counter(&self.registry, "meter_ingest_requests_total", &[("status", status)])
    }
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

fn ticket_data(tenant: &str, task: &str, minutes: i64) -> Value {
    json!({
        "tenant": tenant, "subsidiary": format!("{tenant}-fr"), "domain": "infrastructure",
        "event_time": "2026-01-12T10:45:00Z", "ticket_id": "2026-001", "task_id": task,
        "ticket_type": "INCIDENT", "category_path": ["RUN", "MCO", "backups"], "requester": "marie.dupont",
        "technician": "bob", "technician_profile": "ENGINEER", "minutes_worked": minutes,
        "start_time": "2026-01-12T08:00:00Z"
    })
}

fn ticket(id: &str, tenant: &str, minutes: i64) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": "glpi-main", "type": "io.meter.ticket_time",
            "datacontenttype": "application/json", "data": ticket_data(tenant, id, minutes) })
}

fn vm(id: &str, tenant: &str) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": "vmware", "type": "io.meter.vm_usage", "time": "2026-01-12T10:00:00Z",
            "data": { "tenant": tenant, "subsidiary": format!("{tenant}-fr"), "domain": "hosting", "vm_id": "vm-1", "vcpu": 4,
                      "ram_mib": 8192, "storage_gb": 100, "bandwidth_mbps": 100, "sla_tier": "SLA_99_9",
                      "datacenter": "par1", "transition": "SAMPLE", "sample_interval_seconds": 3600 } })
}

fn check(id: &str, tenant: &str) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": "icinga", "type": "io.meter.check_result",
            "data": { "tenant": tenant, "subsidiary": format!("{tenant}-fr"), "domain": "supervision",
                      "event_time": "2026-01-12T10:00:00Z", "check_id": "backup", "check_name": "Backup",
                      "target": "srv-1", "frequency": "DAILY", "executed_time": "2026-01-12T10:00:00Z", "status": "OK" } })
}

fn topic_of(env: &TestEnv, kind: EventKind) -> &str {
    meter_kafka::event_topic(&env.config.topics, kind)
}

/// The events on the kind's topic: (key, event).
fn events_on(env: &TestEnv, kind: EventKind) -> Vec<(Option<String>, Event)> {
    env.read_topic(topic_of(env, kind))
        .into_iter()
        .map(|(key, payload, _)| (key, EventCodec::decode_event(kind, &payload).expect("event decodes")))
        .collect()
}

fn ids_on(env: &TestEnv, kind: EventKind) -> Vec<String> {
    let mut ids: Vec<String> = events_on(env, kind).into_iter().map(|(_, e)| e.header().event_id.clone()).collect();
    ids.sort();
    ids
}

fn assert_nothing_published(env: &TestEnv, after: &str) {
    for kind in EventKind::ALL {
        assert_eq!(ids_on(env, kind), Vec::<String>::new(), "{kind} topic after {after}");
    }
    assert!(env.read_topic(&env.config.topics.dead_letters).is_empty(), "dead letters after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_events_and_batches_are_on_their_topics_once_acknowledged() {
    let env = TestEnv::new("ingest_ok").await;
    let api = start_api(&env, &api_config(1024 * 1024, 1000)).await;

    let (status, body) = api.post(Some(ACME_TOKEN), SINGLE, ticket("task-7", "acme", 165).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "count": 1, "accepted": ["task-7"] }));
    // The answer came after the ack: the event is readable right away.
    let on_topic = events_on(&env, EventKind::TicketTime);
    assert_eq!(on_topic.len(), 1, "exactly the one event");
    let (key, Event::TicketTime(t)) = &on_topic[0] else { panic!("{:?}", on_topic[0]) };
    assert_eq!(key.as_deref(), Some("acme"), "keyed by tenant");
    let mut expected_line = ticket_data("acme", "task-7", 165);
    expected_line["event_id"] = json!("task-7");
    expected_line["source"] = json!("glpi-main");
    let mut expected = collector_file::parse_line(EventKind::TicketTime, &expected_line.to_string()).expect("valid line");
    assert!(t.header.ingest_time > chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, "ingest_time is set");
    expected.header_mut().ingest_time = t.header.ingest_time;
    assert_eq!(Event::TicketTime(t.clone()), expected, "the event as sent, field for field");

    // A batch of the three kinds, from a collector allowed any tenant.
    let batch = json!([ticket("task-8", "globex", 30), vm("vm-1-s1", "acme"), check("run-1", "initech"), ticket("task-9", "acme", 45)]);
    let (status, body) = api.post(Some(OPS_TOKEN), BATCH, batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "count": 4, "accepted": ["task-8", "vm-1-s1", "run-1", "task-9"] }));
    assert_eq!(ids_on(&env, EventKind::TicketTime), ["task-7", "task-8", "task-9"]);
    assert_eq!(ids_on(&env, EventKind::VmUsage), ["vm-1-s1"]);
    assert_eq!(ids_on(&env, EventKind::CheckResult), ["run-1"]);
    let keys: BTreeMap<String, Option<String>> = events_on(&env, EventKind::TicketTime)
        .into_iter()
        .map(|(key, e)| (e.header().event_id.clone(), key))
        .collect();
    assert_eq!(keys["task-8"].as_deref(), Some("globex"));
    let Event::VmUsage(v) = &events_on(&env, EventKind::VmUsage)[0].1 else { panic!("a VM event") };
    assert_eq!(v.header.event_time.to_rfc3339(), "2026-01-12T10:00:00+00:00", "time became event_time");
    assert_eq!(v.header.source, "vmware");

    assert_eq!(api.requests("200"), 2);
    assert_eq!(counter(&api.registry, "meter_collector_events_published_total", &[("kind", "ticket-time")]), 3);
    assert_eq!(counter(&api.registry, "meter_collector_events_published_total", &[("kind", "vm-usage")]), 1);
    assert!(env.read_topic(&env.config.topics.dead_letters).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_publish_nothing() {
    let env = TestEnv::new("ingest_refused").await;
    let api = start_api(&env, &api_config(8 * 1024, 5)).await;
    let one = ticket("task-1", "acme", 60).to_string();

    let (status, body) = api.post(None, SINGLE, one.clone()).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = api.post(Some("wrong-token-of-nobody-at-all"), SINGLE, one.clone()).await;
    assert_eq!(status, 401);
    assert_nothing_published(&env, "401");

    let (status, body) = api.post(Some(ACME_TOKEN), SINGLE, ticket("task-2", "globex", 60).to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["forbidden"], json!([{ "index": 0, "id": "task-2", "tenant": "globex" }]));
    let mixed = json!([ticket("task-3", "acme", 60), ticket("task-4", "globex", 60), vm("vm-2", "acme")]);
    let (status, body) = api.post(Some(ACME_TOKEN), BATCH, mixed.to_string()).await;
    assert_eq!(status, 403, "{body}");
    // task-4 is another tenant's; vm-2 is acme's but under a source this token is not bound to.
    assert_eq!(
        body["forbidden"],
        json!([{ "index": 1, "id": "task-4", "tenant": "globex" }, { "index": 2, "id": "vm-2", "source": "vmware" }])
    );
    assert!(body["error"].as_str().unwrap_or_default().contains("nothing was published"), "{body}");
    // The dedup key is (tenant, source, id): a token may not send under another collector's source.
    let mut shadow = ticket("task-9", "acme", 60);
    shadow["source"] = json!("glpi-other");
    let (status, body) = api.post(Some(ACME_TOKEN), SINGLE, shadow.to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["forbidden"], json!([{ "index": 0, "id": "task-9", "source": "glpi-other" }]));
    assert_nothing_published(&env, "403");

    let (status, body) = api.post(Some(ACME_TOKEN), SINGLE, "{\"specversion\": \"1.0\", ".into()).await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("malformed_json")), "{body}");
    let (status, body) = api.post(Some(ACME_TOKEN), BATCH, format!("[{one}, {one}")).await;
    assert_eq!(status, 400, "{body}");

    let one_bad = json!([ticket("task-5", "acme", 60), ticket("task-6", "acme", 2000), ticket("task-7", "acme", 60)]);
    let (status, body) = api.post(Some(ACME_TOKEN), BATCH, one_bad.to_string()).await;
    assert_eq!(status, 400, "{body}");
    let report = body["rejected"].as_array().expect("per-event report");
    assert_eq!(report.len(), 1, "{body}");
    assert_eq!((report[0]["index"].as_u64(), report[0]["id"].as_str()), (Some(1), Some("task-6")));
    assert_eq!(report[0]["reason"], "invalid_event");
    assert!(report[0]["error"].as_str().unwrap_or_default().contains("minutes_worked must be between 1 and 1440"), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("1 of 3 events are invalid"), "{body}");

    // The hostile corpus's cases through this intake: each refused with its
    // reason, nothing published.
    let mut hostile = Vec::new();
    for (i, (field, value)) in [
        ("event_time", json!("+262142-12-31T12:00:00Z")),
        ("event_time", json!("2099-01-01T00:00:00Z")),
        ("event_time", json!("1999-12-31T23:00:00Z")),
        ("requester", json!("r".repeat(5000))),
        ("category_path", json!(vec!["x"; 40])),
        ("minutes_worked", json!(99_999_999_999i64)),
        ("version", json!(-1)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = ticket(&format!("h{i}"), "acme", 60);
        e["data"][field] = value;
        if field == "event_time" {
            e["data"]["start_time"] = e["data"]["event_time"].clone();
        }
        hostile.push(e);
    }
    let hostile_requests = hostile.len() as u64;
    for e in hostile {
        let (status, body) = api.post(Some(ACME_TOKEN), SINGLE, e.to_string()).await;
        assert_eq!(status, 400, "{body} for {}", e["id"]);
        let reason = body["rejected"][0]["reason"].as_str().or(body["reason"].as_str()).or(body["error"].as_str()).unwrap_or_default();
        assert!(!reason.is_empty(), "{body}");
    }
    assert_nothing_published(&env, "hostile");

    let big = format!("[{}]", vec![one.as_str(); 20].join(","));
    assert!(big.len() > 8 * 1024);
    let (status, body) = api.post(Some(ACME_TOKEN), BATCH, big).await;
    assert_eq!((status, body["limit_bytes"].as_u64()), (413, Some(8 * 1024)), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("larger than 8192 bytes"), "{body}");

    let long: Vec<Value> = (0..6).map(|i| ticket(&format!("task-l{i}"), "acme", 10)).collect();
    let (status, body) = api.post(Some(ACME_TOKEN), BATCH, Value::from(long).to_string()).await;
    assert_eq!((status, body["limit_events"].as_u64()), (413, Some(5)), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("longer than the limit of 5 events"), "{body}");

    let (status, _) = api.post(Some(ACME_TOKEN), "application/json", one.clone()).await;
    assert_eq!(status, 415);
    assert_nothing_published(&env, "400, 413 and 415");

    // The same API publishes a valid request, and only that one.
    let (status, _) = api.post(Some(ACME_TOKEN), BATCH, json!([ticket("task-ok", "acme", 60)]).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(ids_on(&env, EventKind::TicketTime), ["task-ok"]);
    for (code, n) in [("401", 2), ("403", 3), ("400", 3 + hostile_requests), ("413", 2), ("415", 1), ("200", 1)] {
        assert_eq!(api.requests(code), n, "requests answered {code}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_ingest_api_command_serves_events_and_metrics() {
    let env = TestEnv::new("ingest_cmd").await;
    let (port, metrics_port) = (free_port(), free_port());
    let settings = env.dir.path().join("ingest-api.toml");
    std::fs::write(
        &settings,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n\
             [[collectors]]\nname = \"acme-glpi\"\ntoken = \"{ACME_TOKEN}\"\ntenants = [\"acme\"]\nsources = [\"glpi-main\"]\n"
        ),
    )
    .expect("write settings");
    let mut child = env.spawn_meter(&["ingest-api", "--api-config", settings.to_str().expect("utf-8 path")]);
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "meter ingest-api did not start");
        assert!(child.try_wait().expect("status").is_none(), "meter ingest-api exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = client
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .bearer_auth(ACME_TOKEN)
        .header("Content-Type", SINGLE)
        .body(ticket("task-cmd", "acme", 15).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
    let metrics = client.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let _ = child.kill();
    let _ = child.wait();
    assert!(metrics.contains("meter_ingest_requests_total{status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("meter_collector_events_published_total{kind=\"ticket-time\"} 1"), "{metrics}");
    assert!(metrics.contains("meter_build_info{service=\"ingest-api\""), "{metrics}");
    assert_eq!(ids_on(&env, EventKind::TicketTime), ["task-cmd"]);
}

/// A history line of the file collector's format.
fn history_line(source: &str, id: &str, tenant: &str, minutes: i64) -> String {
    let mut line = ticket_data(tenant, id, minutes);
    line["event_id"] = json!(id);
    line["source"] = json!(source);
    line["event_time"] = json!("2025-03-04T10:45:00Z");
    line["start_time"] = json!("2025-03-04T09:00:00Z");
    line.to_string()
}

/// Two files: 30 distinct events of source `history`, 5 repeats (two in the
/// first file, one with other content, two across files, one in the second),
/// `r-1` of another source (a distinct event), 3 bad lines and a blank line.
fn write_history(dir: &Path) -> (Vec<PathBuf>, BTreeSet<(String, String)>) {
    let tenant = |i: usize| ["acme", "globex"][i % 2];
    let mut first: Vec<String> = (0..20).map(|i| history_line("history", &format!("r-{i}"), tenant(i), 10 + i as i64)).collect();
    first.push(history_line("history", "r-3", tenant(3), 13));
    first.push(history_line("history", "r-7", tenant(7), 99)); // other content: still the same event
    first.push("{\"event_id\": \"r-broken\", ".into()); // line 23
    first.push(history_line("history", "r-typo", "acme", 10).replace("\"domain\"", "\"domian\"")); // line 24
    first.push(history_line("history", "r-neg", "acme", -5)); // line 25
    first.push(String::new());
    let mut second: Vec<String> = (20..30).map(|i| history_line("history", &format!("r-{i}"), tenant(i), 10 + i as i64)).collect();
    second.push(history_line("history", "r-0", tenant(0), 10));
    second.push(history_line("history", "r-12", tenant(12), 22));
    second.push(history_line("history", "r-25", tenant(25), 35));
    second.push(history_line("other-source", "r-1", "acme", 50));
    let paths = vec![dir.join("history-1.jsonl"), dir.join("history-2.jsonl")];
    std::fs::write(&paths[0], first.join("\n") + "\n").expect("write");
    std::fs::write(&paths[1], second.join("\n") + "\n").expect("write");
    let mut unique: BTreeSet<(String, String)> = (0..30).map(|i| ("history".to_string(), format!("r-{i}"))).collect();
    unique.insert(("other-source".into(), "r-1".into()));
    (paths, unique)
}

const SUMMARY: &str = "39 lines read in 2 files: 31 sent, 5 duplicates (sent once), 3 rejected (invalid_event: 1, malformed_json: 1, unknown_field: 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_each_valid_event_once_at_the_rate() {
    let env = TestEnv::new("replay").await;
    let (paths, unique) = write_history(env.dir.path());
    let registry = Registry::new();
    let metrics = CollectorMetrics::register(&registry).expect("metrics");
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    let rate = NonZeroU32::new(20).expect("non-zero");
    let summary = collector_file::replay(&env.config, &producer, &metrics, EventKind::TicketTime, &paths, &ReplayOptions::new(rate))
        .await
        .expect("replay");

    assert_eq!((summary.files, summary.lines_read, summary.sent, summary.duplicates), (2, 39, 31, 5), "{summary}");
    let by_reason: Vec<(&str, u64)> = summary.rejected_by_reason().into_iter().collect();
    assert_eq!(by_reason, [("invalid_event", 1), ("malformed_json", 1), ("unknown_field", 1)]);
    assert!(summary.to_string().starts_with(SUMMARY), "{summary}");
    // 31 events at 20/s with a burst of 2: at least (31 - 2) / 20 s.
    assert!(summary.elapsed >= Duration::from_millis(1400), "too fast for the rate: {:?}", summary.elapsed);
    assert!(summary.elapsed < Duration::from_secs(30), "{:?}", summary.elapsed);

    let on_topic = events_on(&env, EventKind::TicketTime);
    assert_eq!(on_topic.len(), 31, "exactly the unique valid events");
    let got: BTreeSet<(String, String)> =
        on_topic.iter().map(|(_, e)| (e.header().source.clone(), e.header().event_id.clone())).collect();
    assert_eq!(got, unique);
    for (key, event) in &on_topic {
        assert_eq!(key.as_deref(), Some(event.header().tenant.as_str()), "keyed by tenant");
        let Event::TicketTime(t) = event else { panic!("ticket events") };
        if t.header.source == "history" && t.header.event_id == "r-7" {
            assert_eq!(t.minutes_worked, 17, "the first version of a repeated event is the one sent");
        }
    }

    let letters: Vec<DeadLetter> = env
        .read_topic(&env.config.topics.dead_letters)
        .into_iter()
        .map(|(_, payload, _)| EventCodec::decode(&payload).expect("dead letter decodes"))
        .collect();
    let mut seen: Vec<(String, i64, String)> = letters
        .iter()
        .map(|l| {
            assert_eq!(l.component, "replay");
            assert_eq!(l.event_kind.as_deref(), Some("ticket-time"));
            let file = l.source_file.as_deref().unwrap_or_default();
            (Path::new(file).file_name().unwrap_or_default().to_string_lossy().to_string(), l.source_line.unwrap_or(0), l.error_kind.clone())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("history-1.jsonl".to_string(), 23, "malformed_json".to_string()),
            ("history-1.jsonl".to_string(), 24, "unknown_field".to_string()),
            ("history-1.jsonl".to_string(), 25, "invalid_event".to_string()),
        ]
    );
    let neg = letters.iter().find(|l| l.source_line == Some(25)).expect("line 25");
    assert!(String::from_utf8_lossy(&neg.original).contains("\"minutes_worked\":-5"), "original bytes kept");

    assert_eq!(counter(&registry, "meter_collector_events_published_total", &[("kind", "ticket-time")]), 31);
    assert_eq!(counter(&registry, "meter_collector_events_rejected_total", &[("reason", "unknown_field")]), 1);
    assert_eq!(counter(&registry, "meter_collector_events_read_total", &[]), 39);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collect_file_command_with_a_rate_prints_the_summary() {
    let env = TestEnv::new("replay_cmd").await;
    let (paths, unique) = write_history(env.dir.path());
    let mut args = vec!["collect", "file", "--kind", "ticket-time", "--rate", "1000"];
    args.extend(paths.iter().map(|p| p.to_str().expect("utf-8 path")));
    let output = env.meter(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with(SUMMARY), "{stdout}");
    assert!(stdout.contains("history-1.jsonl:24: unknown_field"), "{stdout}");
    assert_eq!(events_on(&env, EventKind::TicketTime).len(), unique.len());
}
