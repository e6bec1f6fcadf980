//! The GLPI collector against a GLPI REST API served inside this test,
//! answering as GLPI's `apirest.md` documents (initSession with user_token
//! and App-Token, Session-Token on every call, TicketTask pages of 200/206
//! with Content-Range, Ticket and ITILCategory items, 401
//! ERROR_SESSION_TOKEN_INVALID once the session expired, 400
//! ERROR_RANGE_EXCEED_TOTAL past the end), and the real broker of the local
//! stack: the ticket-time topic must hold exactly the expected events (ids,
//! minutes rounded up, tenant and subsidiary mapping, UTC times) and the
//! dead-letter topic the bad tasks; a run that fails in the middle of a page
//! followed by a second run must publish every task exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use collector_runtime::CollectorMetrics;
use collector_glpi::{collect_once, GlpiCollectorConfig};
use meter_model::{DeadLetter, Event, EventCodec, EventHeader, EventKind, TechnicianProfile, TicketTime, TicketType};
use meter_tests::{repo_root, TestEnv};
use serde_json::{json, Value};

const USER_TOKEN: &str = "user-token-of-the-meter-user";
const APP_TOKEN: &str = "app-token-of-the-meter-client";

/// The GLPI server's data and the faults to inject.
#[derive(Default)]
struct Glpi {
    tasks: BTreeMap<u64, Value>,
    tickets: HashMap<u64, Value>,
    categories: HashMap<u64, Value>,
    sessions: HashSet<String>,
    inits: u64,
    kills: u64,
    /// Authenticated requests answered so far.
    answered: u64,
    /// Expire every session when the request with this number arrives.
    expire_sessions_at: Option<u64>,
    /// Ticket lookups answered 500 (GLPI's database gone).
    failing_tickets: HashSet<u64>,
    /// `range` of each task-list request.
    ranges: Vec<String>,
}

type Shared = Arc<Mutex<Glpi>>;

fn reply(status: u16, body: &Value, headers: &[(&str, String)]) -> Response {
    let mut builder = Response::builder().status(status).header("Content-Type", "application/json; charset=UTF-8");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(body.to_string())).expect("response")
}

fn error(status: u16, code: &str, message: &str) -> Response {
    reply(status, &json!([code, message]), &[])
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Glpi {
    fn answer(&mut self, path: &str, query: &str, headers: &HeaderMap) -> Response {
        let Some(rest) = path.strip_prefix("/apirest.php/") else {
            return error(400, "ERROR_ITEMTYPE_NOT_FOUND_NOR_COMMONDBTM", "not an API path");
        };
        let rest = rest.trim_end_matches('/');
        if header(headers, "App-Token") != Some(APP_TOKEN) {
            return error(400, "ERROR_WRONG_APP_TOKEN_PARAMETER", "parameter app_token seems wrong");
        }
        if header(headers, "Content-Type") != Some("application/json") {
            return error(400, "ERROR_JSON_PAYLOAD_INVALID", "send Content-Type: application/json");
        }
        if rest == "initSession" {
            if header(headers, "Authorization") != Some(&format!("user_token {USER_TOKEN}")) {
                return error(401, "ERROR_GLPI_LOGIN_USER_TOKEN", "parameter user_token seems invalid");
            }
            self.inits += 1;
            let token = format!("session-{}", self.inits);
            self.sessions.insert(token.clone());
            return reply(200, &json!({ "session_token": token }), &[]);
        }
        let Some(session) = header(headers, "Session-Token") else {
            return error(400, "ERROR_SESSION_TOKEN_MISSING", "parameter session_token is missing or empty");
        };
        self.answered += 1;
        if self.expire_sessions_at == Some(self.answered) {
            self.sessions.clear();
        }
        if !self.sessions.contains(session) {
            return error(401, "ERROR_SESSION_TOKEN_INVALID", "session_token seems invalid");
        }
        if rest == "killSession" {
            self.sessions.remove(session);
            self.kills += 1;
            return reply(200, &json!({}), &[]);
        }
        let params: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["TicketTask"] => self.list(&params),
            ["Ticket", id] => {
                let id: u64 = id.parse().unwrap_or(0);
                if self.failing_tickets.contains(&id) {
                    return error(500, "ERROR_SQL", "Unexpected SQL Error : MySQL server has gone away");
                }
                item(self.tickets.get(&id))
            }
            ["ITILCategory", id] => item(self.categories.get(&id.parse().unwrap_or(0))),
            _ => error(400, "ERROR_ITEMTYPE_NOT_FOUND_NOR_COMMONDBTM", "resource not found"),
        }
    }

    /// `GET TicketTask/?range=a-b&sort=date_mod&order=ASC`, as GLPI's getItems.
    fn list(&mut self, params: &HashMap<&str, &str>) -> Response {
        assert_eq!(params.get("sort"), Some(&"date_mod"), "the collector lists tasks in date_mod order");
        assert_eq!(params.get("order"), Some(&"ASC"));
        let range = params.get("range").copied().unwrap_or("0-49");
        self.ranges.push(range.to_string());
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
        else {
            return error(400, "ERROR", "range must be in format : [start-end] with integers");
        };
        let mut sorted: Vec<&Value> = self.tasks.values().collect();
        sorted.sort_by_key(|t| (t["date_mod"].as_str().unwrap_or_default().to_string(), t["id"].as_u64()));
        let total = sorted.len() as i64;
        if start > total {
            return error(400, "ERROR_RANGE_EXCEED_TOTAL", &format!("Provided range exceed total count of data: {total}"));
        }
        let end = end.min(total - 1);
        let items: Vec<&Value> = if end >= start { sorted[start as usize..=end as usize].to_vec() } else { Vec::new() };
        let status = if end - start + 1 < total { 206 } else { 200 };
        let mut headers = vec![("Accept-Range", "TicketTask 990".to_string())];
        if total > 0 {
            headers.push(("Content-Range", format!("{start}-{end}/{total}")));
        }
        reply(status, &json!(items), &headers)
    }
}

fn item(found: Option<&Value>) -> Response {
    match found {
        Some(v) => reply(200, v, &[]),
        None => error(404, "ERROR_ITEM_NOT_FOUND", "Item not found"),
    }
}

async fn serve_glpi(glpi: Shared) -> String {
    async fn handler(State(glpi): State<Shared>, request: Request) -> Response {
        let mut glpi = glpi.lock().expect("glpi state");
        glpi.answer(request.uri().path(), request.uri().query().unwrap_or(""), request.headers())
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().fallback(handler).with_state(glpi);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("fake GLPI serves") });
    format!("http://{address}/apirest.php")
}

/// A TicketTask as GLPI returns it (get_hateoas=false).
fn task(id: u64, ticket: u64, date: &str, date_mod: &str, seconds: i64, tech: u64, author: u64) -> Value {
    json!({
        "id": id, "uuid": format!("3c7e-{id}"), "tickets_id": ticket, "taskcategories_id": 0,
        "date": date, "users_id": author, "users_id_editor": 0,
        "content": "&#60;p&#62;work&#60;/p&#62;", "is_private": 0, "actiontime": seconds,
        "begin": null, "end": null, "state": 2, "users_id_tech": tech, "groups_id_tech": 0,
        "date_mod": date_mod, "date_creation": date, "tasktemplates_id": 0, "timeline_position": 1,
        "sourceitems_id": 0, "sourceof_items_id": 0
    })
}

fn ticket(id: u64, kind: u64, entity: u64, category: u64, recipient: u64) -> Value {
    json!({
        "id": id, "entities_id": entity, "name": format!("ticket {id}"), "date": "2026-01-12 08:00:00",
        "closedate": null, "solvedate": null, "date_mod": "2026-01-12 08:00:00", "users_id_lastupdater": 7,
        "status": 2, "users_id_recipient": recipient, "requesttypes_id": 1, "content": "", "urgency": 3,
        "impact": 3, "priority": 3, "itilcategories_id": category, "type": kind, "global_validation": 1,
        "actiontime": 0, "is_deleted": 0, "locations_id": 0, "date_creation": "2026-01-12 08:00:00"
    })
}

fn category(id: u64, completename: &str) -> Value {
    let name = completename.rsplit(" > ").next().unwrap_or(completename);
    json!({ "id": id, "entities_id": 0, "is_recursive": 1, "name": name, "completename": completename, "level": 2, "comment": "" })
}

/// The GLPI of the scenario. Server time zone Europe/Paris (UTC+1 in
/// January, UTC+2 in July); tasks 11-14 exist from the start, 15-16 arrive
/// later.
fn scenario() -> Glpi {
    let mut g = Glpi::default();
    for (id, name) in [
        (10, "RUN > MCO > servers"),
        (11, "RUN > MCO > backups"),
        (12, "Hors périmètre > Déménagement"),
        (13, "RUN > Network > Firewall"),
        (14, "RUN > Workstations > laptops"),
    ] {
        g.categories.insert(id, category(id, name));
    }
    // (id, type: 1 incident / 2 request, entity, category, users_id_recipient); entity 99 is unmapped.
    for (id, kind, entity, cat, recipient) in
        [(101, 1, 1, 11, 12), (102, 2, 2, 12, 33), (103, 1, 99, 10, 12), (104, 1, 1, 13, 12), (105, 2, 1, 14, 12), (106, 1, 2, 0, 34)]
    {
        g.tickets.insert(id, ticket(id, kind, entity, cat, recipient));
    }
    let tasks = [
        // DOMAIN.md: 2.75 h.
        task(1, 101, "2026-01-12 09:00:00", "2026-01-12 11:45:00", 9900, 7, 7),
        // 0.08 h, a 5-minute answer (288 s, rounded up).
        task(2, 101, "2026-01-12 12:00:00", "2026-01-12 12:05:00", 288, 9, 9),
        // 1.83 h, out of scope, in the other subsidiary.
        task(3, 102, "2026-01-13 14:00:00", "2026-01-13 15:50:00", 6588, 8, 8),
        // Ticket of an unmapped entity.
        task(4, 103, "2026-01-14 08:00:00", "2026-01-14 09:00:00", 600, 7, 7),
        // No time logged.
        task(5, 101, "2026-01-14 09:30:00", "2026-01-14 10:00:00", 0, 7, 7),
        // Malformed: a date GLPI never writes.
        task(6, 104, "14/01/2026 10:00", "2026-01-14 11:00:00", 1200, 7, 7),
        // Two tasks modified in the same second, on both sides of a page boundary;
        // task 7 has no technician: its author is taken.
        task(7, 104, "2026-01-15 08:00:00", "2026-01-15 09:00:00", 3000, 0, 9),
        task(8, 101, "2026-01-15 08:30:00", "2026-01-15 09:00:00", 61, 7, 7),
        // 27.8 hours in one task: a unit mistake, refused by validation.
        task(9, 104, "2026-01-15 09:00:00", "2026-01-15 10:00:00", 100_000, 7, 7),
        task(10, 106, "2026-01-16 09:00:00", "2026-01-16 09:30:00", 1800, 7, 7),
        task(11, 101, "2026-02-02 09:00:00", "2026-02-02 09:20:00", 1200, 7, 7),
        task(12, 105, "2026-02-03 09:00:00", "2026-02-03 09:45:00", 2700, 9, 9),
        task(13, 101, "2026-02-04 09:00:00", "2026-02-04 09:10:00", 540, 7, 7),
        task(14, 104, "2026-07-01 10:00:00", "2026-07-01 10:30:00", 1800, 7, 7),
    ];
    for t in tasks {
        g.tasks.insert(t["id"].as_u64().unwrap(), t);
    }
    g
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The event expected for a task (ingest_time left at the epoch).
#[allow(clippy::too_many_arguments)]
fn expected(
    task: u64,
    ticket: u64,
    ticket_type: TicketType,
    subsidiary: &str,
    domain: &str,
    path: &[&str],
    requester: &str,
    technician: (&str, TechnicianProfile),
    minutes: i32,
    start: &str,
    modified: &str,
) -> TicketTime {
    TicketTime {
        header: EventHeader {
            event_id: format!("glpi-task-{task}"),
            source: "glpi-main".into(),
            tenant: "acme".into(),
            subsidiary: subsidiary.into(),
            domain: domain.into(),
            // The work's date; date_mod is the version (an edit replaces it).
            event_time: utc(start),
            ingest_time: DateTime::<Utc>::UNIX_EPOCH,
            version: utc(modified).timestamp_millis(),
            deleted: false,
        },
        ticket_id: ticket.to_string(),
        task_id: task.to_string(),
        ticket_type,
        category_path: path.iter().map(|s| s.to_string()).collect(),
        in_scope: path.first() != Some(&"Hors périmètre"),
        requester: requester.into(),
        technician: technician.0.into(),
        technician_profile: technician.1,
        application: None,
        country: Some(if subsidiary == "acme-fr" { "FR" } else { "DE" }.into()),
        minutes_worked: minutes,
        start_time: utc(start),
    }
}

/// Every ticket-time event on the topic, by event id (all of them, repeats included).
fn ticket_times(env: &TestEnv) -> Vec<TicketTime> {
    env.read_topic(&env.config.topics.ticket_time)
        .into_iter()
        .map(|(key, payload, _)| {
            let Event::TicketTime(t) = EventCodec::decode_event(EventKind::TicketTime, &payload).expect("event decodes") else {
                panic!("not a ticket-time event")
            };
            assert_eq!(key.as_deref(), Some(t.header.tenant.as_str()), "events are keyed by tenant");
            assert!(t.header.ingest_time > utc("2020-01-01T00:00:00Z"), "ingest_time is set on publish");
            t
        })
        .collect()
}

fn count_by_id(events: &[TicketTime]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for e in events {
        *by.entry(e.header.event_id.clone()).or_default() += 1;
    }
    by
}

fn ids(tasks: impl IntoIterator<Item = u64>) -> BTreeSet<String> {
    tasks.into_iter().map(|t| format!("glpi-task-{t}")).collect()
}

fn glpi_config(env: &TestEnv, url: &str) -> GlpiCollectorConfig {
    let mut c = GlpiCollectorConfig::new(url.parse().expect("the mock server URL"), USER_TOKEN);
    c.app_token = Some(APP_TOKEN.into());
    c.source = "glpi-main".into();
    c.page_size = 4;
    c.state_file = env.dir.path().join("glpi-position.json");
    c.mapping_file = repo_root().join("config/glpi-mapping.example.toml");
    c.server_time_zone = chrono_tz::Europe::Paris;
    c.request_timeout_seconds = 10;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn glpi_tasks_become_ticket_time_exactly_once_across_a_failed_run() {
    let env = TestEnv::new("glpi").await;
    let glpi: Shared = Arc::new(Mutex::new(scenario()));
    let url = serve_glpi(glpi.clone()).await;
    let config = glpi_config(&env, &url);
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    let metrics = CollectorMetrics::register(&prometheus::Registry::new()).expect("metrics");
    {
        let mut g = glpi.lock().unwrap();
        // The session expires in the middle of the first run (after a few lookups of page 2) ...
        g.expire_sessions_at = Some(6);
        // ... and GLPI fails on the ticket of task 12, the second new task of page 4.
        g.failing_tickets.insert(105);
    }

    // Run 1: pages 1-3 (tasks 1-10) published, then the failure in page 4.
    let err = collect_once(&env.config, &config, &producer, &metrics).await.expect_err("GLPI failed in page 4");
    assert!(err.to_string().contains("500"), "{err}");
    {
        let g = glpi.lock().unwrap();
        assert_eq!(g.inits, 2, "the expired session was opened again");
        assert_eq!(g.kills, 1, "the session is closed even after a failure");
        assert_eq!(g.ranges, vec!["0-3", "3-6", "6-9", "9-12"], "pages overlap by one task");
    }
    let events = ticket_times(&env);
    assert_eq!(count_by_id(&events).keys().cloned().collect::<BTreeSet<_>>(), ids([1, 2, 3, 7, 8, 10]));
    assert_eq!(events.len(), 6, "nothing of the failed page was published: {:?}", count_by_id(&events));
    let mut got: BTreeMap<String, TicketTime> = events
        .into_iter()
        .map(|mut e| {
            e.header.ingest_time = DateTime::<Utc>::UNIX_EPOCH;
            (e.header.event_id.clone(), e)
        })
        .collect();
    use TechnicianProfile::*;
    use TicketType::*;
    let bob = ("bob", Architect);
    let carla = ("carla", Administrator);
    let want = [
        expected(1, 101, Incident, "acme-fr", "infrastructure", &["RUN", "MCO", "backups"], "marie.dupont", bob, 165,
            "2026-01-12T08:00:00Z", "2026-01-12T10:45:00Z"),
        expected(2, 101, Incident, "acme-fr", "infrastructure", &["RUN", "MCO", "backups"], "marie.dupont", carla, 5,
            "2026-01-12T11:00:00Z", "2026-01-12T11:05:00Z"),
        expected(3, 102, Request, "acme-de", "infrastructure", &["Hors périmètre", "Déménagement"], "33", ("8", Engineer), 110,
            "2026-01-13T13:00:00Z", "2026-01-13T14:50:00Z"),
        expected(7, 104, Incident, "acme-fr", "network", &["RUN", "Network", "Firewall"], "marie.dupont", carla, 50,
            "2026-01-15T07:00:00Z", "2026-01-15T08:00:00Z"),
        expected(8, 101, Incident, "acme-fr", "infrastructure", &["RUN", "MCO", "backups"], "marie.dupont", bob, 2,
            "2026-01-15T07:30:00Z", "2026-01-15T08:00:00Z"),
        expected(10, 106, Incident, "acme-de", "infrastructure", &["Uncategorized"], "34", bob, 30,
            "2026-01-16T08:00:00Z", "2026-01-16T08:30:00Z"),
    ];
    for w in want {
        let g = got.remove(&w.header.event_id).unwrap_or_else(|| panic!("{} missing", w.header.event_id));
        assert_eq!(g, w);
    }
    assert!(got.is_empty(), "unexpected events: {got:?}");

    // Dead letters: the unmapped entity, the malformed task and the invalid event, with the task's JSON.
    let letters: Vec<DeadLetter> =
        env.read_topic(&env.config.topics.dead_letters).iter().map(|(_, p, _)| EventCodec::decode(p).expect("dead letter")).collect();
    let mut by_task: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for l in &letters {
        assert_eq!(l.component, "collector-glpi");
        assert_eq!(l.event_kind.as_deref(), Some("ticket-time"));
        let original: Value = serde_json::from_slice(&l.original).expect("the original is the task's JSON");
        let id = original["id"].as_u64().expect("task id");
        let sent = serde_json::to_vec(&glpi.lock().unwrap().tasks[&id]).unwrap();
        assert_eq!(l.original, sent, "the original is task {id} exactly as GLPI sent it");
        assert_eq!(l.source_file.as_deref(), Some(format!("{url}/TicketTask/{id}").as_str()));
        by_task.insert(id, (l.error_kind.clone(), l.error.clone()));
    }
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(by_task[&4].0, "unmapped_entity");
    assert!(by_task[&4].1.contains("entity 99"), "{:?}", by_task[&4]);
    assert_eq!(by_task[&6].0, "malformed_task");
    assert!(by_task[&6].1.contains("14/01/2026"), "{:?}", by_task[&6]);
    assert_eq!(by_task[&9].0, "invalid_event");
    assert!(by_task[&9].1.contains("1667"), "{:?}", by_task[&9]);
    let published = metrics.published_count("ticket-time");
    assert_eq!(published, 6);
    assert_eq!(metrics.rejected_count("ticket-time", "unmapped_entity"), 1);
    assert_eq!(metrics.read_count("ticket-time"), 10, "tasks 1-10, task 5 skipped included");
    // Nothing dropped without a trace: the zero-minute task is counted by its reason.
    assert_eq!(metrics.skipped_count("ticket-time", "no_time"), 1, "task 5 (0 minutes) is counted");

    // Run 2, GLPI healthy again: it resumes after page 3 and publishes tasks 11-14 only.
    glpi.lock().unwrap().failing_tickets.clear();
    let report = collect_once(&env.config, &config, &producer, &metrics).await.expect("second run");
    assert_eq!((report.pages, report.tasks_read, report.published, report.skipped), (2, 4, 4, 0), "{report}");
    assert!(report.rejections.is_empty(), "{report:?}");
    assert_eq!(report.sessions, 1);
    assert_eq!(glpi.lock().unwrap().ranges[4..], ["9-12".to_string(), "12-15".to_string()]);
    let position = report.position.expect("position");
    assert_eq!((position.last_task_id, position.next_offset), (14, 13), "the next run starts at the last task seen");
    let events = ticket_times(&env);
    let counts = count_by_id(&events);
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), ids([1, 2, 3, 7, 8, 10, 11, 12, 13, 14]));
    assert!(counts.values().all(|n| *n == 1), "a task was published twice: {counts:?}");
    let summer = events.iter().find(|e| e.task_id == "14").unwrap();
    // Summer time: GLPI's local 10:00 is 08:00 UTC; date_mod (10:30) is the version.
    assert_eq!((summer.start_time, summer.header.event_time), (utc("2026-07-01T08:00:00Z"), utc("2026-07-01T08:00:00Z")));
    assert_eq!(summer.header.version, utc("2026-07-01T08:30:00Z").timestamp_millis());
    let minutes: BTreeMap<&str, i32> = events.iter().map(|e| (e.task_id.as_str(), e.minutes_worked)).collect();
    assert_eq!((minutes["11"], minutes["12"], minutes["13"]), (20, 45, 9));
    assert_eq!(events.iter().find(|e| e.task_id == "12").unwrap().header.domain, "workstation");

    // Run 3, with the `meter` binary: tasks 1 and 2 were purged from GLPI and
    // two new ones arrived, so the noted offset overshoots: the run steps back
    // and publishes exactly the new ones.
    {
        let mut g = glpi.lock().unwrap();
        g.tasks.remove(&1);
        g.tasks.remove(&2);
        g.tasks.insert(15, task(15, 101, "2026-07-02 09:00:00", "2026-07-02 09:05:00", 300, 7, 7));
        g.tasks.insert(16, task(16, 104, "2026-07-02 10:00:00", "2026-07-02 11:50:00", 6588, 9, 9));
    }
    let config_path = env.dir.path().join("glpi.toml");
    std::fs::write(&config_path, toml::to_string(&config).expect("config serializes")).expect("write glpi config");
    let out = {
        let env_config = env.config_path.clone();
        let config_path: PathBuf = config_path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(meter_tests::meter_bin())
                .arg("--config")
                .arg(env_config)
                .args(["collect", "glpi", "--glpi-config"])
                .arg(config_path)
                .env("RUST_LOG", "warn")
                .current_dir(repo_root())
                .output()
                .expect("meter runs")
        })
        .await
        .expect("joined")
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("glpi-main: 1 pages, 2 tasks read, 2 published, 0 skipped (no time), 0 rejected"), "{stdout}");
    assert_eq!(
        glpi.lock().unwrap().ranges[6..],
        ["13-16".to_string(), "12-15".to_string(), "10-13".to_string()],
        "steps back (1, then 2) until the first task is one already handled"
    );
    let events = ticket_times(&env);
    let counts = count_by_id(&events);
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), ids([1, 2, 3, 7, 8, 10, 11, 12, 13, 14, 15, 16]));
    assert!(counts.values().all(|n| *n == 1), "a task was published twice: {counts:?}");
    let last = events.iter().find(|e| e.task_id == "16").unwrap();
    assert_eq!((last.minutes_worked, last.start_time), (110, utc("2026-07-02T08:00:00Z")));
    assert_eq!(env.read_topic(&env.config.topics.dead_letters).len(), 3, "no dead letter twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_files_are_published_and_bad_rows_reported_with_their_line() {
    let env = TestEnv::new("glpi_csv").await;
    let file = env.dir.path().join("tasks.csv");
    std::fs::write(
        &file,
        "ticket_id,task_id,ticket_type,category_path,entity,requester,technician,technician_profile,application,country,start_time,minutes_worked,modified_at\n\
         2026-001,1,INCIDENT,RUN > MCO > backups,1,12,bob,,,,2026-01-12T08:00:00Z,165,2026-01-12T10:45:00Z\n\
         2026-001,2,INCIDENT,RUN > MCO > backups,1,12,bob,,,,2026-01-12T08:00:00Z,five,2026-01-12T10:45:00Z\n\
         2026-002,1,REQUEST,RUN > Applications > Sage,2,12,carla,,,,2026-01-13 14:00:00,110,2026-01-13 15:50:00\n",
    )
    .expect("write csv");
    let out = env.meter(&[
        "collect",
        "csv",
        "--mapping",
        repo_root().join("config/glpi-mapping.example.toml").to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tasks.csv: 3 rows read, 2 published, 0 skipped, 1 rejected"), "{stdout}");
    assert!(stdout.contains("line 3: bad_field"), "{stdout}");
    let events = ticket_times(&env);
    let mut got: Vec<(String, String, i32, Option<String>)> = events
        .iter()
        .map(|e| (e.header.event_id.clone(), e.header.subsidiary.clone(), e.minutes_worked, e.application.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("csv-task-2026-001-1".into(), "acme-fr".into(), 165, None),
            ("csv-task-2026-002-1".into(), "acme-de".into(), 110, Some("Sage".into())),
        ]
    );
    let letters: Vec<DeadLetter> =
        env.read_topic(&env.config.topics.dead_letters).iter().map(|(_, p, _)| EventCodec::decode(p).expect("dead letter")).collect();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].error_kind.as_str(), letters[0].source_line), ("bad_field", Some(3)));
    assert!(String::from_utf8_lossy(&letters[0].original).starts_with("2026-001,2,INCIDENT"));
}
