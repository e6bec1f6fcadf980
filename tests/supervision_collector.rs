//! The supervision collector against the real broker of the local stack:
//! its HTTP endpoint runs in this process on 127.0.0.1:0 and is sent
//! Icinga 2 process-check-result and NRDP (XML and JSON) submissions, good
//! and bad; the check-result topic must then hold exactly the expected
//! events (a retried POST twice with one event id), and the dead-letter
//! topic the unmappable results with their original bytes. The missed-run
//! publishing runs through the `meter` binary (`--once-missed --now`),
//! twice, to show a missed run is published once. When Icinga 2 is
//! installed, a last test follows the real local Icinga's event stream.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use collector_runtime::CollectorMetrics;
use collector_supervision::results::run_event_id;
use collector_supervision::schedule::missed_event_id;
use collector_supervision::{AppState, Publisher, Settings, SupervisionConfig};
use meter_model::{CheckFrequency, CheckResult, CheckStatus, DeadLetter, Event, EventCodec, EventHeader, EventKind};
use meter_tests::{repo_root, TestEnv};
use serde_json::{json, Value};

const SOURCE: &str = "icinga-test";
const ACME_TOKEN: &str = "acme-token-0000000123";
const GLOBEX_TOKEN: &str = "globex-token-000000456";

fn mapping() -> String {
    format!(
        r#"
source = "{SOURCE}"

[missed]
lookback_hours = 72

[[tokens]]
name = "acme"
token = "{ACME_TOKEN}"
tenants = ["acme"]

[[tokens]]
name = "globex"
token = "{GLOBEX_TOKEN}"
tenants = ["globex"]

[hosts."dc01.acme.local"]
tenant = "acme"
subsidiary = "acme-fr"
domain = "infrastructure"

[hosts."web01.globex.local"]
tenant = "globex"
subsidiary = "globex-fr"
domain = "software"

[checks.backup]
check_id = "acme-backup"
check_name = "Backup jobs"
frequency = "DAILY"

[checks.ad-health]
check_id = "acme-ad"
check_name = "Active Directory"
frequency = "WEEKLY"
time_spent_minutes = 15

[checks._host]
check_id = "host-alive"
check_name = "Host alive"
frequency = "DAILY"

[[schedule]]
check_id = "acme-backup"
host = "dc01.acme.local"
frequency = "DAILY"
due_time = "08:00"
grace_minutes = 60
time_zone = "Europe/Paris"

[[schedule]]
check_id = "acme-ad"
host = "dc01.acme.local"
frequency = "WEEKLY"
due_time = "10:00"
due_weekday = "MON"
grace_minutes = 120
time_zone = "Europe/Paris"
"#
    )
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&Utc)
}

/// Starts the endpoint in this process; returns its base URL.
async fn start_endpoint(env: &TestEnv, settings_text: &str) -> String {
    let config: SupervisionConfig = toml::from_str(settings_text).expect("settings parse");
    let settings = Settings::resolve(config, &env.config).expect("settings resolve");
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    let metrics = CollectorMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let state = AppState::new(settings, Publisher::new(&env.config, producer, metrics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        if let Err(e) = collector_supervision::serve(listener, state).await {
            panic!("endpoint stopped: {e}");
        }
    });
    format!("http://{addr}")
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn icinga(&self, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/actions/process-check-result", self.base))
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("POST process-check-result");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn nrdp(&self, body: &str) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}/nrdp/", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .expect("POST nrdp");
        let status = response.status().as_u16();
        (status, response.text().await.expect("answer"))
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    object: &str,
    check: (&str, &str, CheckFrequency),
    executed: &str,
    status: CheckStatus,
    scheduled: Option<&str>,
    ticket: Option<&str>,
    minutes: i32,
    output: &str,
) -> CheckResult {
    let (host, _) = object.split_once('!').unwrap_or((object, ""));
    let executed = utc(executed);
    CheckResult {
        header: EventHeader {
            event_id: run_event_id(SOURCE, object, executed),
            source: SOURCE.into(),
            tenant: "acme".into(),
            subsidiary: "acme-fr".into(),
            domain: "infrastructure".into(),
            event_time: executed,
            ingest_time: DateTime::<Utc>::UNIX_EPOCH,
            version: 0,
            deleted: false,
        },
        check_id: check.0.into(),
        check_name: check.1.into(),
        target: host.into(),
        frequency: check.2,
        scheduled_time: scheduled.map(utc),
        executed_time: Some(executed),
        status,
        ticket_ref: ticket.map(str::to_string),
        time_spent_minutes: minutes,
        output: Some(output.to_string()),
    }
}

/// The check results on the topic, keyed-by-tenant checked, ingest time reset.
fn check_results(env: &TestEnv, since: DateTime<Utc>) -> Vec<CheckResult> {
    env.read_topic(&env.config.topics.check_result)
        .into_iter()
        .map(|(key, payload, _)| {
            let Event::CheckResult(mut c) = EventCodec::decode_event(EventKind::CheckResult, &payload).expect("check result decodes") else {
                panic!("not a check result");
            };
            assert_eq!(key.as_deref(), Some(c.header.tenant.as_str()), "keyed by tenant");
            assert!(c.header.ingest_time >= since - chrono::Duration::seconds(1), "ingest_time set when published");
            c.header.ingest_time = DateTime::<Utc>::UNIX_EPOCH;
            c
        })
        .collect()
}

fn dead_letters(env: &TestEnv) -> Vec<DeadLetter> {
    env.read_topic(&env.config.topics.dead_letters)
        .into_iter()
        .map(|(key, payload, _)| {
            let d: DeadLetter = EventCodec::decode(&payload).expect("dead letter decodes");
            assert_eq!(key.as_deref(), Some("collector-supervision"));
            d
        })
        .collect()
}

const BACKUP: (&str, &str, CheckFrequency) = ("acme-backup", "Backup jobs", CheckFrequency::Daily);
const AD: (&str, &str, CheckFrequency) = ("acme-ad", "Active Directory", CheckFrequency::Weekly);
const HOST: (&str, &str, CheckFrequency) = ("host-alive", "Host alive", CheckFrequency::Daily);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icinga_and_nrdp_results_are_published_once_and_bad_ones_refused() {
    let env = TestEnv::new("supervision_http").await;
    let started = Utc::now();
    let client = Client { http: reqwest::Client::new(), base: start_endpoint(&env, &mapping()).await };

    // 1. Icinga-style, filter + perfdata list + ticket in the output; then retried.
    let first = r#"{"type":"Service","filter":"host.name==\"dc01.acme.local\" && service.name==\"backup\"","exit_status":2,
        "plugin_output":"CRITICAL - 2 jobs failed, ticket #12345","performance_data":["'jobs failed'=2;;1;0","time=3.25s"],
        "check_source":"sat1","execution_start":1768197600,"execution_end":1768197603.25}"#;
    for attempt in 0..2 {
        let (status, answer) = client.icinga(Some(ACME_TOKEN), first).await;
        assert_eq!(status, 200, "attempt {attempt}: {answer}");
        assert_eq!(answer["results"][0]["status"], "Successfully processed check result for object 'dc01.acme.local!backup'.");
    }
    // 2. Naming the service, explicit ticket, output with perfdata after '|'.
    let second = r#"{"type":"Service","service":"dc01.acme.local!ad-health","exit_status":0,"plugin_output":"OK - replication fine | lag=0s;60;300",
        "execution_end":1768204800,"ticket":4711}"#;
    assert_eq!(client.icinga(Some(ACME_TOKEN), second).await.0, 200);

    // 3. NRDP XML: a host result and a service result.
    let xml = "<?xml version='1.0'?>
<checkresults>
  <checkresult type='host' checktype='1'><hostname>dc01.acme.local</hostname><state>0</state>
    <output>PING OK - rta 0.4ms|rta=0.4ms;100;500;0</output><checktime>1768201200</checktime></checkresult>
  <checkresult type='service' checktype='1'><hostname>dc01.acme.local</hostname><servicename>backup</servicename>
    <state>1</state><output>WARNING - slow [TICKET:2026-007]|time=95s;60;120</output><checktime>1768201260</checktime></checkresult>
</checkresults>";
    let (status, answer) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("XMLDATA", xml)])).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("<status>0</status><message>OK</message><meta><output>2 checks processed.</output>"), "{answer}");

    // 4. NRDP JSON.
    let jsondata = json!({"checkresults": [{"checkresult": {"type": "service", "checktype": "1"}, "hostname": "dc01.acme.local",
        "servicename": "ad-health", "state": "3", "output": "UNKNOWN - DC unreachable", "checktime": "1768212000"}]})
    .to_string();
    let (status, answer) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("JSONDATA", &jsondata)])).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON answer to JSONDATA");
    assert_eq!(answer["result"]["meta"]["output"], "1 checks processed.");

    // 5. Wrong or missing tokens: 401.
    assert_eq!(client.icinga(None, first).await.0, 401);
    assert_eq!(client.icinga(Some("not-a-token"), first).await.0, 401);
    let (status, answer) = client.nrdp(&form_encode(&[("token", "not-a-token"), ("cmd", "submitcheck"), ("XMLDATA", xml)])).await;
    assert_eq!((status, answer.contains("BAD TOKEN")), (401, true), "{answer}");
    let (status, answer) = client.nrdp(&form_encode(&[("cmd", "submitcheck"), ("XMLDATA", xml)])).await;
    assert_eq!((status, answer.contains("NO TOKEN")), (401, true), "{answer}");

    // 6. Another tenant's host: 403, and nothing of the request published
    //    (the acme result beside it, at 1768208400, must not appear).
    let globex = r#"{"type":"Service","service":"web01.globex.local!backup","exit_status":0,"plugin_output":"OK","execution_end":1768208400}"#;
    let (status, answer) = client.icinga(Some(ACME_TOKEN), globex).await;
    assert_eq!(status, 403, "{answer}");
    let mixed = "<checkresults>
  <checkresult type='service'><hostname>dc01.acme.local</hostname><servicename>backup</servicename><state>0</state><output>OK</output><checktime>1768208400</checktime></checkresult>
  <checkresult type='service'><hostname>web01.globex.local</hostname><servicename>backup</servicename><state>0</state><output>OK</output><checktime>1768208400</checktime></checkresult>
</checkresults>";
    let (status, answer) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("XMLDATA", mixed)])).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("web01.globex.local!backup") && !answer.contains("globex-fr"), "names the object, not the tenant: {answer}");

    // 7. Malformed: 400, nothing published.
    for body in [
        "{not json",
        r#"{"type":"Service","service":"dc01.acme.local!backup","exit_status":9,"plugin_output":"x"}"#,
        r#"{"type":"Service","service":"dc01.acme.local!backup","exit_status":0,"plugin_output":"x","exitstatus":0}"#,
    ] {
        let (status, answer) = client.icinga(Some(ACME_TOKEN), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    for data in ["<checkresults><checkresult type='service'>", "<checkresults></checkresults>"] {
        let (status, answer) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("XMLDATA", data)])).await;
        assert_eq!(status, 400, "{data}: {answer}");
    }
    let (status, _) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck")])).await;
    assert_eq!(status, 400);

    // 8. Unknown host / check: 422 and dead-lettered with the original bytes.
    let unknown_host = r#"{"type":"Service","service":"nas9.acme.local!backup","exit_status":0,"plugin_output":"OK","execution_end":1768208400}"#;
    let (status, answer) = client.icinga(Some(ACME_TOKEN), unknown_host).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["status"].as_str().is_some_and(|s| s.contains("nas9.acme.local") && s.contains("[hosts]")), "{answer}");
    let unknown_check = r#"{"type":"Service","service":"dc01.acme.local!ssh","exit_status":0,"plugin_output":"SSH OK","execution_end":1768208400}"#;
    assert_eq!(client.icinga(Some(ACME_TOKEN), unknown_check).await.0, 422);
    // A batch with an unknown host: the known result is published, the other dead-lettered.
    let batch = json!({"checkresults": [
        {"checkresult": {"type": "service"}, "hostname": "nas9.acme.local", "servicename": "backup", "state": 0, "output": "OK", "checktime": 1768208400},
        {"checkresult": {"type": "service"}, "hostname": "dc01.acme.local", "servicename": "backup", "state": 0, "output": "OK - 3 jobs", "checktime": 1768212600}
    ]})
    .to_string();
    let batch_body = form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("JSONDATA", &batch)]);
    let (status, answer) = client.nrdp(&batch_body).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("1 of 2 checks processed") && answer.contains("nas9.acme.local"), "{answer}");

    // The topic holds exactly the accepted results, the retried one twice with one id.
    let mut expected = vec![
        run("dc01.acme.local!backup", BACKUP, "2026-01-12T06:00:03.250Z", CheckStatus::Ko, Some("2026-01-12T07:00:00Z"), Some("12345"), 0,
            "CRITICAL - 2 jobs failed, ticket #12345"),
        run("dc01.acme.local!ad-health", AD, "2026-01-12T08:00:00Z", CheckStatus::Ok, Some("2026-01-12T09:00:00Z"), Some("4711"), 15,
            "OK - replication fine"),
        run("dc01.acme.local", HOST, "2026-01-12T07:00:00Z", CheckStatus::Ok, None, None, 0, "PING OK - rta 0.4ms"),
        run("dc01.acme.local!backup", BACKUP, "2026-01-12T07:01:00Z", CheckStatus::Warning, Some("2026-01-12T07:00:00Z"), Some("2026-007"), 0,
            "WARNING - slow [TICKET:2026-007]"),
        run("dc01.acme.local!ad-health", AD, "2026-01-12T10:00:00Z", CheckStatus::Unknown, Some("2026-01-12T09:00:00Z"), None, 15,
            "UNKNOWN - DC unreachable"),
        run("dc01.acme.local!backup", BACKUP, "2026-01-12T10:10:00Z", CheckStatus::Ok, Some("2026-01-13T07:00:00Z"), None, 0, "OK - 3 jobs"),
    ];
    let mut got = check_results(&env, started);
    assert_eq!(got.len(), expected.len() + 1, "the retried POST is published again: {got:#?}");
    let retried: Vec<&CheckResult> = got.iter().filter(|c| c.header.event_id == expected[0].header.event_id).collect();
    assert_eq!(retried.len(), 2, "same event id both times, so the aggregator counts it once");
    assert_eq!(retried[0], retried[1]);
    got.sort_by(|a, b| a.header.event_id.cmp(&b.header.event_id));
    got.dedup();
    expected.sort_by(|a, b| a.header.event_id.cmp(&b.header.event_id));
    assert_eq!(got, expected);

    // The dead letters: the two single results and the batch's first.
    let letters = dead_letters(&env);
    type Letter = (String, Option<String>, Option<i64>, Vec<u8>);
    let summary: Vec<Letter> =
        letters.iter().map(|d| (d.error_kind.clone(), d.source_file.clone(), d.source_line, d.original.clone())).collect();
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert_eq!(
        summary[..2],
        vec![
            ("unknown_host".into(), Some("POST /v1/actions/process-check-result".into()), None, unknown_host.as_bytes().to_vec()),
            ("unknown_check".into(), Some("POST /v1/actions/process-check-result".into()), None, unknown_check.as_bytes().to_vec()),
        ]
    );
    // NRDP: the offending result alone, never the request (its token, the other results).
    assert_eq!((summary[2].0.as_str(), summary[2].1.as_deref(), summary[2].2), ("unknown_host", Some("POST /nrdp/"), Some(1)));
    let original: Value = serde_json::from_slice(&summary[2].3).expect("the result as JSON");
    assert_eq!((original["host"].as_str(), original["service"].as_str()), (Some("nas9.acme.local"), Some("backup")));
    let text = String::from_utf8_lossy(&summary[2].3);
    assert!(!text.contains(ACME_TOKEN) && !text.contains("dc01.acme.local"), "{text}");
    assert!(summary[2].3.len() < batch_body.len());
    for d in &letters {
        assert_eq!((d.component.as_str(), d.event_kind.as_deref()), ("collector-supervision", Some("check-result")));
    }
    assert!(letters[1].error.contains("[checks.\"ssh\"]"), "{}", letters[1].error);
}

fn missed(check: (&str, &str, CheckFrequency), deadline: &str, window: (&str, &str)) -> CheckResult {
    let deadline = utc(deadline);
    CheckResult {
        header: EventHeader {
            event_id: missed_event_id(SOURCE, check.0, "dc01.acme.local", deadline),
            source: SOURCE.into(),
            tenant: "acme".into(),
            subsidiary: "acme-fr".into(),
            domain: "infrastructure".into(),
            event_time: deadline,
            ingest_time: DateTime::<Utc>::UNIX_EPOCH,
            version: 0,
            deleted: false,
        },
        check_id: check.0.into(),
        check_name: check.1.into(),
        target: "dc01.acme.local".into(),
        frequency: check.2,
        scheduled_time: Some(deadline),
        executed_time: None,
        status: CheckStatus::Missed,
        ticket_ref: None,
        time_spent_minutes: 0,
        output: Some(format!(
            "MISSED: no result of {} on dc01.acme.local between {} and {}",
            check.0,
            utc(window.0).to_rfc3339(),
            utc(window.1).to_rfc3339()
        )),
    }
}

fn once_missed(env: &TestEnv, settings: &Path, now: &str) -> String {
    let output = env.meter(&[
        "collect",
        "supervision",
        "--supervision-config",
        settings.to_str().expect("UTF-8 path"),
        "--once-missed",
        "--now",
        now,
    ]);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_runs_are_published_once_by_the_cli() {
    let env = TestEnv::new("supervision_missed").await;
    let started = Utc::now();
    let settings_path = env.dir.path().join("supervision.toml");
    std::fs::write(&settings_path, mapping()).expect("write settings");
    let client = Client { http: reqwest::Client::new(), base: start_endpoint(&env, &mapping()).await };
    // The backup ran on Monday 12 January at 07:30 Paris (06:30Z), before its 08:00 deadline.
    let done = r#"{"type":"Service","service":"dc01.acme.local!backup","exit_status":0,"plugin_output":"OK","execution_end":1768199400}"#;
    assert_eq!(client.icinga(Some(ACME_TOKEN), done).await.0, 200);
    // Another tenant (any source may publish check results) reports an OK run of
    // acme's check id on acme's host for the 13th: it must not hide acme's missed run.
    let mut spoofed = run("dc01.acme.local!backup", BACKUP, "2026-01-13T06:30:00Z", CheckStatus::Ok, None, None, 0, "OK");
    spoofed.header.tenant = "globex".into();
    spoofed.header.subsidiary = "globex-fr".into();
    spoofed.header.source = "globex-files".into();
    spoofed.header.ingest_time = Utc::now();
    let payload = EventCodec::encode_event(&Event::CheckResult(spoofed)).expect("encode");
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    meter_kafka::publish(&producer, &env.config.topics.check_result, "globex", &payload).await.expect("publish the spoofed run");

    // Wednesday 14 January 12:00Z, 72 h back: backup deadlines 12th (done),
    // 13th, 14th (missed); AD Monday 12th 10:00 Paris + 2 h (missed).
    let report = once_missed(&env, &settings_path, "2026-01-14T12:00:00Z");
    assert!(report.ends_with("3 missed runs, 3 published now, 0 already published"), "{report}");
    let report = once_missed(&env, &settings_path, "2026-01-14T12:00:00Z");
    assert!(report.ends_with("3 missed runs, 0 published now, 3 already published"), "{report}");
    // A day later, only the 15th is new.
    let report = once_missed(&env, &settings_path, "2026-01-15T12:00:00Z");
    assert!(report.ends_with("3 missed runs, 1 published now, 2 already published"), "{report}");

    let got: Vec<CheckResult> = check_results(&env, started).into_iter().filter(|c| c.status == CheckStatus::Missed).collect();
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|c| (c.header.event_time, c.check_id.clone()));
    assert_eq!(got.len(), 4, "each missed run published once: {got:#?}");
    assert_eq!(
        got_sorted,
        vec![
            missed(AD, "2026-01-12T09:00:00Z", ("2026-01-05T11:00:00Z", "2026-01-12T11:00:00Z")),
            missed(BACKUP, "2026-01-13T07:00:00Z", ("2026-01-12T08:00:00Z", "2026-01-13T08:00:00Z")),
            missed(BACKUP, "2026-01-14T07:00:00Z", ("2026-01-13T08:00:00Z", "2026-01-14T08:00:00Z")),
            missed(BACKUP, "2026-01-15T07:00:00Z", ("2026-01-14T08:00:00Z", "2026-01-15T08:00:00Z")),
        ]
    );
    for m in &got {
        assert!(Event::CheckResult(m.clone()).validate().is_ok());
    }
    assert!(dead_letters(&env).is_empty());
}

/// Sends raw bytes to the endpoint and reads the answer's status line, or
/// `None` when nothing came back within `wait`.
async fn raw_status(base: &str, request: &str, wait: std::time::Duration) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(wait, socket.read(&mut answer)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&answer[..n]).to_string();
    text.split_whitespace().nth(1).and_then(|code| code.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_authenticates_first_bounds_requests_and_keeps_tokens_out_of_urls_and_dead_letters() {
    let env = TestEnv::new("supervision_limits").await;
    let started = Utc::now();
    let settings = format!("max_results_per_request = 2\nrequest_timeout_seconds = 3\nmax_concurrent_requests = 4\n{}", mapping());
    let base = start_endpoint(&env, &settings).await;
    let client = Client { http: reqwest::Client::new(), base: base.clone() };
    let wait = std::time::Duration::from_secs(2);

    // A bad token is answered from the header, before (and without) the announced 900 KB body.
    for path in ["/v1/actions/process-check-result", "/nrdp/"] {
        let request = format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-token-at-all\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 900000\r\n\r\n");
        assert_eq!(raw_status(&base, &request, wait).await, Some(401), "{path}");
    }
    // A known token with a body that never comes: 408 after request_timeout_seconds, not a hung task.
    let request = format!("POST /v1/actions/process-check-result HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_TOKEN}\r\nContent-Length: 1000\r\n\r\n{{");
    assert_eq!(raw_status(&base, &request, std::time::Duration::from_secs(10)).await, Some(408));

    // NRDP: a token in the query string is refused (URLs end up in proxy logs), even a good one.
    let xml = "<checkresults><checkresult type='service'><hostname>dc01.acme.local</hostname><servicename>backup</servicename><state>0</state><output>OK</output><checktime>1768208400</checktime></checkresult></checkresults>";
    let response = client
        .http
        .post(format!("{base}/nrdp/?token={ACME_TOKEN}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_encode(&[("cmd", "submitcheck"), ("XMLDATA", xml)]))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.expect("answer").contains("TOKEN IN URL"));
    // The header works for NRDP too.
    let response = client
        .http
        .post(format!("{base}/nrdp/"))
        .bearer_auth(ACME_TOKEN)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_encode(&[("cmd", "submitcheck"), ("XMLDATA", xml)]))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 200);

    // Over max_results_per_request: 413, nothing published, nothing dead-lettered.
    let many: String = (0..3)
        .map(|i| format!("<checkresult type='service'><hostname>unknown{i}.example</hostname><servicename>backup</servicename><state>0</state><output>OK</output></checkresult>"))
        .collect();
    let (status, answer) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("XMLDATA", &format!("<checkresults>{many}</checkresults>"))])).await;
    assert_eq!(status, 413, "{answer}");

    // A host name with a newline is refused and dead-lettered alone: the letter is the result, without the token.
    let forged = "<checkresults><checkresult type='service'><hostname>nas9\nINFO forged</hostname><servicename>backup</servicename><state>0</state><output>OK</output></checkresult></checkresults>";
    let (status, _) = client.nrdp(&form_encode(&[("token", ACME_TOKEN), ("cmd", "submitcheck"), ("XMLDATA", forged)])).await;
    assert_eq!(status, 422);

    let results = check_results(&env, started);
    assert_eq!(results.len(), 1, "only the header-authenticated NRDP result: {results:#?}");
    let letters = dead_letters(&env);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(!String::from_utf8_lossy(&letters[0].original).contains(ACME_TOKEN));
    let original: Value = serde_json::from_slice(&letters[0].original).expect("the result as JSON");
    assert_eq!(original["host"], "nas9\nINFO forged");
}

/// Writes to the test's stderr without the harness capturing it, so a skip is visible.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_icinga_event_stream_publishes_the_heartbeat() {
    let installed = ["/usr/sbin/icinga2", "/usr/bin/icinga2"].iter().any(|p| Path::new(p).exists());
    if !installed {
        say("SKIPPED the_local_icinga_event_stream_publishes_the_heartbeat: Icinga 2 is not installed on this machine \
             (`bash scripts/icinga.sh up` installs and starts it)");
        return;
    }
    let up = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/icinga.sh"))
        .arg("up")
        .output()
        .expect("bash runs scripts/icinga.sh");
    assert!(
        up.status.success(),
        "scripts/icinga.sh up failed:\n{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let env = TestEnv::new("supervision_icinga").await;
    let password = std::env::var("METER_ICINGA_PASSWORD").unwrap_or_else(|_| "meter-local".into());
    let icinga_table = format!(
        "[icinga]\nurl = \"https://127.0.0.1:{}\"\nuser = \"meter\"\npassword = \"{password}\"\nqueue = \"{}\"\n\
         ca_file = \"/var/lib/icinga2/certs/ca.crt\"\nverify_hostname = false\n",
        std::env::var("METER_ICINGA_PORT").unwrap_or_else(|_| "5665".into()),
        env.name
    );
    let icinga: collector_supervision::config::IcingaConfig =
        toml::from_str(&icinga_table.replace("[icinga]\n", "")).expect("icinga table parses");
    let node = collector_supervision::icinga::node_name(&icinga).await.expect("the Icinga API answers with its node name");
    let settings_text = format!(
        "source = \"{SOURCE}\"\n{icinga_table}\n[hosts.\"{node}\"]\ntenant = \"acme\"\nsubsidiary = \"acme-fr\"\ndomain = \"infrastructure\"\n\n\
         [checks.meter-heartbeat]\ncheck_id = \"icinga-heartbeat\"\ncheck_name = \"Icinga heartbeat\"\nfrequency = \"DAILY\"\n"
    );
    let config: SupervisionConfig = toml::from_str(&settings_text).expect("settings parse");
    let settings = Settings::resolve(config, &env.config).expect("settings resolve");
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    let metrics = CollectorMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let state = AppState::new(settings, Publisher::new(&env.config, producer, metrics));
    let report = collector_supervision::icinga::follow(state, tokio::time::sleep(Duration::from_secs(15))).await;
    say(&format!("Icinga event stream for 15 s: {report:?}"));
    assert_eq!(report.connections, 1, "one session, no reconnection: {report:?}");
    assert!(report.published >= 1, "the heartbeat runs every 10 s: {report:?}");
    assert_eq!(report.dead_lettered, 0);

    let events = check_results(&env, Utc::now() - chrono::Duration::minutes(1));
    assert_eq!(events.len() as u64, report.published);
    let mut by_check: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *by_check.entry(e.check_id.clone()).or_default() += 1;
        assert_eq!((e.check_id.as_str(), e.check_name.as_str()), ("icinga-heartbeat", "Icinga heartbeat"), "meter-load is not mapped");
        assert_eq!((e.header.tenant.as_str(), e.header.subsidiary.as_str(), e.target.as_str()), ("acme", "acme-fr", node.as_str()));
        assert_eq!((e.status, e.output.as_deref()), (CheckStatus::Ok, Some("meter local heartbeat")));
        let executed = e.executed_time.expect("executed");
        assert!((Utc::now() - executed).num_seconds() < 120, "a fresh run: {executed}");
        assert_eq!(e.header.event_id, run_event_id(SOURCE, &format!("{node}!meter-heartbeat"), executed));
    }
    assert!(by_check.get("icinga-heartbeat").is_some_and(|n| *n >= 1));
    assert!(dead_letters(&env).is_empty());
}
