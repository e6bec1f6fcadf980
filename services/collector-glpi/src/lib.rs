//! The GLPI collector: polls GLPI's REST API for ticket tasks changed since
//! the last run and publishes each as a ticket-time event (Avro, keyed by
//! tenant), like the file collector does for JSON lines.
//!
//! One run ([`collect_once`]):
//! 1. opens a session (`initSession`, `Authorization: user_token ...`, optional
//!    `App-Token`), and opens it again once when GLPI answers
//!    `ERROR_SESSION_TOKEN_INVALID` (expired);
//! 2. pages through `GET TicketTask/?range=a-b&sort=date_mod&order=ASC`
//!    (200 or 206 with `Content-Range: a-b/total`) from the stored
//!    position (see [`state`]). GLPI's item list cannot filter on
//!    `date_mod >` (its `searchText` is a `LIKE`), so a run starts at the
//!    offset noted by the previous one, checks that the task found there is
//!    already handled (else steps back: tasks modified or purged since shift
//!    the list), and skips the tasks its position covers. Consecutive pages
//!    overlap by one task for the same check;
//! 3. for each new task, reads its ticket (`GET Ticket/id`: type, entity,
//!    category, requester) and the ticket's category (`GET ITILCategory/id`:
//!    `completename`), both cached for the run, and maps them with the
//!    mapping file ([`mapping`]): `event_id = glpi-task-<id>`, minutes =
//!    `actiontime` seconds rounded up to the minute, `start_time = date`,
//!    `event_time = date`, `version = date_mod` (epoch ms: an edited task
//!    replaces its earlier version), both read in the GLPI server's time zone;
//! 4. tasks without time are skipped; malformed tasks, tasks of unmapped
//!    entities and events failing [`meter_model::Event::validate`] are
//!    dead-lettered (component `collector-glpi`, the task's JSON exactly as
//!    GLPI sent it as the original) and counted, and the run goes on;
//! 5. once every event and dead letter of a page is acknowledged by the
//!    broker, the position is written (atomic rename). A failure before that
//!    (GLPI or broker down) ends the run with an error and nothing of the
//!    page counted as done: the next run does the page again. Task lookups
//!    happen before any publish of the page, so a GLPI failure in the middle
//!    of a page publishes nothing of it; only a broker failure in the middle
//!    of publishing can repeat events, which the aggregator counts once
//!    (same source and event id).
//!
//! A task edited in GLPI after it was collected comes again with the same
//! event id: within the aggregator's dedup horizon it counts once (its first
//! version).
//!
//! [`csv_import`] reads the same data from CSV files, for other ticketing tools.

mod client;
pub mod convert;
pub mod csv_import;
pub mod mapping;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use collector_file::CollectorMetrics;
use futures::stream::{FuturesUnordered, StreamExt};
use meter_config::MeterConfig;
use meter_kafka::{event_key, event_topic, DeadLetters, KafkaError};
use meter_model::codec::to_millis;
use meter_model::{DeadLetter, Event, EventCodec, EventHeader, EventKind, TicketTime, TicketType};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{GlpiClient, Item};
use crate::mapping::Mapping;
use crate::state::Position;

pub use csv_import::{publish_csv, read_csv, CsvImport, CsvRejection, CsvReport, CSV_COLUMNS};

/// The dead-letter component of GLPI tasks.
pub const COMPONENT: &str = "collector-glpi";
/// `source` label of `meter_collector_last_success_timestamp_seconds`.
pub const METRIC_SOURCE: &str = "glpi";
const KIND: EventKind = EventKind::TicketTime;
/// Upper bound of list requests in one run (a guard against a server that
/// ignores `range`).
const MAX_LIST_REQUESTS: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum GlpiError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid {path}: {message}")]
    Config { path: String, message: String },
    #[error("GLPI request {url} failed: {source} (is GLPI reachable? check `url`)")]
    Http { url: String, source: reqwest::Error },
    #[error("GLPI answered {status} to {url}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("GLPI session: {0}")]
    Session(String),
    #[error("unexpected answer from GLPI ({url}): {message}")]
    Protocol { url: String, message: String },
    #[error("cannot write the GLPI position file {path}: {source}")]
    State { path: String, source: std::io::Error },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Settings of the GLPI collector: a TOML file of its own
/// (`meter collect glpi --glpi-config FILE`; example with every key:
/// `services/collector-glpi/glpi.example.toml`). Unknown keys are refused.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlpiCollectorConfig {
    /// Base URL of the REST API, up to `apirest.php`
    /// (e.g. "https://glpi.example.com/apirest.php"). Required.
    pub url: String,
    /// App-Token of the API client declared in GLPI (Setup > General > API),
    /// when GLPI requires one. Default: none. `METER_GLPI_APP_TOKEN` wins.
    #[serde(default)]
    pub app_token: Option<String>,
    /// API token ("remote access key") of the GLPI user the collector logs in
    /// as. Required, here or in `METER_GLPI_USER_TOKEN` (which wins).
    #[serde(default)]
    pub user_token: String,
    /// `source` of the events (with the event id, what deduplication keys
    /// on: one name per GLPI instance, never changed). Default "glpi".
    #[serde(default = "default_source")]
    pub source: String,
    /// Tasks per request (2 to 1000; GLPI caps it at its own list limit). Default 50.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Where the position (last task published) is kept between runs.
    /// Default ".stack/glpi-position.json".
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// The mapping file (format: `config/glpi-mapping.example.toml`).
    /// Default "config/glpi-mapping.toml".
    #[serde(default = "default_mapping_file")]
    pub mapping_file: PathBuf,
    /// IANA time zone GLPI's datetimes (`date`, `date_mod`) are written in:
    /// the GLPI server's (or, with GLPI's time zone support, the API user's)
    /// zone. Default "UTC".
    #[serde(default = "default_server_time_zone")]
    pub server_time_zone: String,
    /// Timeout of one HTTP request, in seconds. Default 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
}

/// `reason` of `meter_collector_events_skipped_total` for GLPI tasks (and
/// CSV rows) with zero minutes: nothing to bill, so not dead-lettered.
pub const SKIP_NO_TIME: &str = "no_time";

/// `Debug` shows neither token.
impl std::fmt::Debug for GlpiCollectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |t: &str| if t.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("GlpiCollectorConfig")
            .field("url", &self.url)
            .field("app_token", &self.app_token.as_deref().map(hidden))
            .field("user_token", &hidden(&self.user_token))
            .field("source", &self.source)
            .field("page_size", &self.page_size)
            .field("state_file", &self.state_file)
            .field("mapping_file", &self.mapping_file)
            .field("server_time_zone", &self.server_time_zone)
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .finish()
    }
}

fn default_source() -> String {
    "glpi".into()
}
fn default_page_size() -> u32 {
    50
}
fn default_state_file() -> PathBuf {
    PathBuf::from(".stack/glpi-position.json")
}
fn default_mapping_file() -> PathBuf {
    PathBuf::from("config/glpi-mapping.toml")
}
fn default_server_time_zone() -> String {
    "UTC".into()
}
fn default_request_timeout() -> u64 {
    30
}

impl GlpiCollectorConfig {
    /// A configuration with the defaults.
    pub fn new(url: impl Into<String>, user_token: impl Into<String>) -> Self {
        GlpiCollectorConfig {
            url: url.into(),
            app_token: None,
            user_token: user_token.into(),
            source: default_source(),
            page_size: default_page_size(),
            state_file: default_state_file(),
            mapping_file: default_mapping_file(),
            server_time_zone: default_server_time_zone(),
            request_timeout_seconds: default_request_timeout(),
        }
    }

    /// Reads the file, applies `METER_GLPI_USER_TOKEN` / `METER_GLPI_APP_TOKEN`
    /// and checks the values.
    pub fn load(path: &Path) -> Result<Self, GlpiError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GlpiError::Read { path: shown.clone(), source })?;
        let mut config: GlpiCollectorConfig =
            toml::from_str(&text).map_err(|e| GlpiError::Config { path: shown.clone(), message: e.to_string() })?;
        if let Ok(token) = std::env::var("METER_GLPI_USER_TOKEN") {
            config.user_token = token;
        }
        if let Ok(token) = std::env::var("METER_GLPI_APP_TOKEN") {
            config.app_token = Some(token);
        }
        config.check().map_err(|message| GlpiError::Config { path: shown, message })?;
        Ok(config)
    }

    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("url must be an http(s) URL up to apirest.php, got {:?}", self.url));
        }
        if self.user_token.trim().is_empty() {
            return Err("user_token is required (or set METER_GLPI_USER_TOKEN)".into());
        }
        if self.source.trim().is_empty() {
            return Err("source must not be empty".into());
        }
        if !(2..=1000).contains(&self.page_size) {
            return Err(format!("page_size must be between 2 and 1000, got {}", self.page_size));
        }
        if self.request_timeout_seconds == 0 {
            return Err("request_timeout_seconds must be at least 1".into());
        }
        self.time_zone().map(|_| ())
    }

    pub fn time_zone(&self) -> Result<Tz, String> {
        self.server_time_zone.parse::<Tz>().map_err(|_| {
            format!("server_time_zone: unknown time zone {:?} (use an IANA name such as Europe/Paris)", self.server_time_zone)
        })
    }
}

/// A task that was not published, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRejection {
    pub task_id: Option<u64>,
    pub reason: &'static str,
    pub error: String,
}

/// The outcome of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GlpiReport {
    pub source: String,
    /// Pages fully handled (their position written).
    pub pages: u64,
    /// New tasks handled (published, skipped or rejected).
    pub tasks_read: u64,
    pub published: u64,
    /// Tasks without time (`actiontime` 0).
    pub skipped: u64,
    pub rejections: Vec<TaskRejection>,
    /// GLPI sessions opened (more than 1 when one expired during the run).
    pub sessions: u32,
    /// The position after the run.
    pub position: Option<Position>,
}

impl GlpiReport {
    pub fn rejected_by_reason(&self) -> BTreeMap<&'static str, u64> {
        let mut by = BTreeMap::new();
        for r in &self.rejections {
            *by.entry(r.reason).or_default() += 1;
        }
        by
    }
}

impl fmt::Display for GlpiReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} pages, {} tasks read, {} published, {} skipped (no time), {} rejected",
            self.source,
            self.pages,
            self.tasks_read,
            self.published,
            self.skipped,
            self.rejections.len()
        )?;
        let by = self.rejected_by_reason();
        if !by.is_empty() {
            let parts: Vec<String> = by.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// What becomes of one task.
enum Outcome {
    Publish(Box<Event>),
    Skip,
    Reject { reason: &'static str, error: String },
}

/// A task as listed, with what is needed to order it.
struct ListedTask {
    /// The task as GLPI sent it.
    original: Vec<u8>,
    value: Value,
    /// `(date_mod, id)` when both are readable.
    key: Option<(NaiveDateTime, u64)>,
    id: Option<u64>,
}

impl ListedTask {
    fn new(original: Vec<u8>, value: Value) -> Self {
        let id = uint(&value, "id").ok();
        let date_mod = text(&value, "date_mod").ok().and_then(|t| convert::parse_glpi_datetime(t).ok());
        let key = date_mod.zip(id);
        ListedTask { original, value, key, id }
    }
}

fn uint(item: &Value, field: &str) -> Result<u64, String> {
    match item.get(field) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("{field} must be a whole number >= 0, got {n}")),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| format!("{field} must be a whole number >= 0, got {s:?}")),
        None | Some(Value::Null) => Err(format!("{field} is missing")),
        Some(other) => Err(format!("{field} must be a whole number, got {other}")),
    }
}

/// A foreign key: absent, null or 0 mean none.
fn key_or_zero(item: &Value, field: &str) -> Result<u64, String> {
    match item.get(field) {
        None | Some(Value::Null) => Ok(0),
        _ => uint(item, field),
    }
}

fn int(item: &Value, field: &str) -> Result<i64, String> {
    match item.get(field) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("{field} must be a whole number, got {n}")),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| format!("{field} must be a whole number, got {s:?}")),
        None | Some(Value::Null) => Err(format!("{field} is missing")),
        Some(other) => Err(format!("{field} must be a whole number, got {other}")),
    }
}

fn text<'a>(item: &'a Value, field: &str) -> Result<&'a str, String> {
    match item.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("{field} is missing")),
        Some(other) => Err(format!("{field} must be a string, got {other}")),
    }
}

/// What one run needs while handling tasks.
struct Run<'a> {
    glpi: &'a GlpiCollectorConfig,
    mapping: &'a Mapping,
    zone: Tz,
    client: GlpiClient,
    tickets: HashMap<u64, Item>,
    categories: HashMap<u64, Option<Vec<String>>>,
}

impl Run<'_> {
    async fn ticket(&mut self, id: u64) -> Result<Item, GlpiError> {
        if let Some(t) = self.tickets.get(&id) {
            return Ok(t.clone());
        }
        let t = self.client.item("Ticket", id).await?;
        self.tickets.insert(id, t.clone());
        Ok(t)
    }

    async fn category(&mut self, id: u64) -> Result<Option<Vec<String>>, GlpiError> {
        if let Some(c) = self.categories.get(&id) {
            return Ok(c.clone());
        }
        let path = match self.client.item("ITILCategory", id).await? {
            Item::Found(c) => c.get("completename").and_then(Value::as_str).map(convert::category_levels),
            Item::Missing | Item::Forbidden => None,
        }
        .filter(|levels| !levels.is_empty());
        self.categories.insert(id, path.clone());
        Ok(path)
    }

    fn time(&self, task: &Value, field: &str) -> Result<DateTime<Utc>, String> {
        let t = text(task, field)?;
        convert::glpi_time_to_utc(t, self.zone).map_err(|e| format!("{field}: {e}"))
    }

    /// Maps one task to its event (or why not). Errors are GLPI failures
    /// that end the run.
    async fn handle(&mut self, task: &Value) -> Result<Outcome, GlpiError> {
        let malformed = |error: String| Ok(Outcome::Reject { reason: "malformed_task", error });
        let id = match uint(task, "id") {
            Ok(id) => id,
            Err(e) => return malformed(e),
        };
        let seconds = match int(task, "actiontime") {
            Ok(s) => s,
            Err(e) => return malformed(e),
        };
        let Some(minutes) = convert::minutes_billed(seconds) else {
            return malformed(format!("actiontime must not be negative, got {seconds}"));
        };
        if minutes == 0 {
            return Ok(Outcome::Skip);
        }
        // The work happened at `date`; `date_mod` only says which edit this is,
        // so an edited task replaces its earlier version in the same windows.
        let (start_time, event_time, modified) = match (self.time(task, "date"), self.time(task, "date_mod")) {
            (Ok(s), Ok(m)) => (s, s, m),
            (Err(e), _) | (_, Err(e)) => return malformed(e),
        };
        let ticket_id = match uint(task, "tickets_id") {
            Ok(t) => t,
            Err(e) => return malformed(e),
        };
        let technician_id = match (key_or_zero(task, "users_id_tech"), key_or_zero(task, "users_id")) {
            (Ok(tech), _) if tech > 0 => tech,
            (Ok(_), Ok(author)) => author,
            (Err(e), _) | (_, Err(e)) => return malformed(e),
        };
        let ticket = match self.ticket(ticket_id).await? {
            Item::Found(ticket) => ticket,
            Item::Missing => {
                return Ok(Outcome::Reject { reason: "missing_ticket", error: format!("ticket {ticket_id} of task {id} is not in GLPI") })
            }
            Item::Forbidden => {
                return Ok(Outcome::Reject {
                    reason: "ticket_not_readable",
                    error: format!("the GLPI API user may not read ticket {ticket_id} of task {id} (give it read access to the ticket's entity)"),
                })
            }
        };
        let fields = (|| -> Result<(i64, u64, u64, u64), String> {
            Ok((
                int(&ticket, "type")?,
                uint(&ticket, "entities_id")?,
                key_or_zero(&ticket, "itilcategories_id")?,
                key_or_zero(&ticket, "users_id_recipient")?,
            ))
        })();
        let (ticket_type, entity, category_id, recipient) = match fields {
            Ok(f) => f,
            Err(e) => return Ok(Outcome::Reject { reason: "malformed_ticket", error: format!("ticket {ticket_id}: {e}") }),
        };
        let Some(target) = self.mapping.entity(&entity.to_string()) else {
            return Ok(Outcome::Reject {
                reason: "unmapped_entity",
                error: format!(
                    "GLPI entity {entity} of ticket {ticket_id} is not in the mapping file {} (add it under [entities])",
                    self.glpi.mapping_file.display()
                ),
            });
        };
        let target = target.clone();
        let ticket_type = match ticket_type {
            1 => TicketType::Incident,
            2 => TicketType::Request,
            other => {
                return Ok(Outcome::Reject {
                    reason: "unknown_ticket_type",
                    error: format!("ticket {ticket_id} has type {other} (GLPI: 1 = incident, 2 = request)"),
                })
            }
        };
        let category_path = match category_id {
            0 => None,
            c => self.category(c).await?,
        }
        .unwrap_or_else(|| self.mapping.uncategorized());
        let (technician, technician_profile) = self.mapping.technician(&technician_id.to_string());
        let requester = if recipient == 0 { "unknown".to_string() } else { self.mapping.requester(&recipient.to_string()) };
        let event = Event::TicketTime(TicketTime {
            header: EventHeader {
                event_id: format!("glpi-task-{id}"),
                source: self.glpi.source.clone(),
                tenant: target.tenant,
                subsidiary: target.subsidiary,
                domain: self.mapping.domain(Some(category_id).filter(|c| *c > 0), &category_path),
                event_time: to_millis(event_time),
                ingest_time: DateTime::<Utc>::UNIX_EPOCH,
                version: modified.timestamp_millis(),
                deleted: false,
            },
            ticket_id: ticket_id.to_string(),
            task_id: id.to_string(),
            ticket_type,
            in_scope: self.mapping.in_scope(&category_path),
            application: self.mapping.application(&category_path),
            category_path,
            requester,
            technician,
            technician_profile,
            country: target.country,
            minutes_worked: i32::try_from(minutes).unwrap_or(i32::MAX),
            start_time: to_millis(start_time),
        });
        match event.validate() {
            Ok(()) => Ok(Outcome::Publish(Box::new(event))),
            Err(e) => Ok(Outcome::Reject { reason: "invalid_event", error: e.to_string() }),
        }
    }
}

/// Publishes every GLPI task changed since the last run (see the module
/// documentation), and returns what happened.
pub async fn collect_once(
    meter: &MeterConfig,
    glpi: &GlpiCollectorConfig,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
) -> Result<GlpiReport, GlpiError> {
    let config_error = |message: String| GlpiError::Config { path: "the GLPI collector configuration".into(), message };
    glpi.check().map_err(config_error)?;
    let zone = glpi.time_zone().map_err(config_error)?;
    let mapping = Mapping::load(&glpi.mapping_file)?;
    let position = state::load(&glpi.state_file)?;
    let mut run = Run {
        glpi,
        mapping: &mapping,
        zone,
        client: GlpiClient::new(glpi)?,
        tickets: HashMap::new(),
        categories: HashMap::new(),
    };
    let mut report = GlpiReport { source: glpi.source.clone(), position: position.clone(), ..Default::default() };
    let result = run_pages(meter, &mut run, producer, metrics, &mut report).await;
    run.client.kill_session().await;
    report.sessions = run.client.session_inits;
    match result {
        Ok(()) => {
            metrics.last_success.with_label_values(&[METRIC_SOURCE]).set(Utc::now().timestamp());
            tracing::info!(source = %glpi.source, pages = report.pages, tasks = report.tasks_read, published = report.published,
                skipped = report.skipped, rejected = report.rejections.len(), sessions = report.sessions,
                requests = run.client.requests, "GLPI collected");
            Ok(report)
        }
        Err(e) => {
            tracing::error!(source = %glpi.source, pages_done = report.pages, published = report.published, error = %e,
                "GLPI collection stopped; the next run resumes after the last complete page");
            Err(e)
        }
    }
}

async fn run_pages(
    meter: &MeterConfig,
    run: &mut Run<'_>,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
    report: &mut GlpiReport,
) -> Result<(), GlpiError> {
    let page_size = u64::from(run.glpi.page_size);
    let dead_letters = DeadLetters::with_producer(producer.clone(), meter.topics.dead_letters.clone());
    let topic = event_topic(&meter.topics, KIND).to_string();
    let kind_label = KIND.slug();
    let mut position = report.position.clone();
    let mut offset = position.as_ref().map_or(0, |p| p.next_offset);
    let mut step_back = 1u64;
    // Tasks without a readable (date_mod, id) cannot be positioned: remember
    // them for this run so that an overlap does not dead-letter them twice.
    let mut unpositioned_seen: HashSet<Vec<u8>> = HashSet::new();
    let mut list_requests = 0u64;
    loop {
        list_requests += 1;
        if list_requests > MAX_LIST_REQUESTS {
            return Err(GlpiError::Protocol { url: run.glpi.url.clone(), message: "too many task-list requests in one run".into() });
        }
        let page = run.client.tasks(offset, offset + page_size - 1).await?;
        let listed: Vec<ListedTask> = page.items.into_iter().map(|(original, value)| ListedTask::new(original, value)).collect();
        // Nothing before `offset` may be unhandled: the first positioned task
        // there must already be covered, else tasks left the handled prefix
        // since the offset was noted; step back (doubling) and look again.
        if offset > 0 {
            let first = listed.iter().find_map(|t| t.key);
            let verified = match (first, &position) {
                (Some((date_mod, id)), Some(p)) => p.covers(date_mod, id),
                (Some(_), None) => true,
                (None, _) => !listed.is_empty(),
            };
            if !verified {
                let back = offset.saturating_sub(step_back);
                tracing::debug!(offset, back, "tasks moved since the offset was noted; stepping back");
                offset = back;
                step_back = step_back.saturating_mul(2);
                continue;
            }
        }
        step_back = 1;
        let count = listed.len() as u64;

        // Map the new tasks of the page (GLPI lookups) before publishing any.
        let mut page_position = position.clone();
        let mut outcomes = Vec::new();
        for task in &listed {
            match task.key {
                Some((date_mod, id)) if page_position.as_ref().is_some_and(|p| p.covers(date_mod, id)) => continue,
                None if !unpositioned_seen.insert(task.original.clone()) => continue,
                _ => {}
            }
            let outcome = run.handle(&task.value).await?;
            if let Some((date_mod, id)) = task.key {
                match page_position.as_mut() {
                    Some(p) => p.advance(date_mod, id),
                    None => page_position = Some(Position::new(date_mod, id)),
                }
            }
            outcomes.push((task, outcome));
        }

        // Publish, and wait for every acknowledgement.
        let (mut published, mut skipped, mut rejected) = (0u64, 0u64, 0u64);
        let mut in_flight = FuturesUnordered::new();
        for (task, outcome) in outcomes {
            match outcome {
                Outcome::Publish(mut event) => {
                    event.header_mut().ingest_time = to_millis(Utc::now());
                    let payload = EventCodec::encode_event(&event).map_err(KafkaError::from)?;
                    let key = event_key(&event.header().tenant).to_string();
                    let (producer, topic) = (producer.clone(), topic.clone());
                    in_flight.push(async move { meter_kafka::publish(&producer, &topic, &key, &payload).await });
                }
                Outcome::Skip => skipped += 1,
                Outcome::Reject { reason, error } => {
                    rejected += 1;
                    let location = match task.id {
                        Some(id) => format!("{}/TicketTask/{id}", run.glpi.url.trim_end_matches('/')),
                        None => format!("{}/TicketTask/", run.glpi.url.trim_end_matches('/')),
                    };
                    dead_letters
                        .send(&DeadLetter {
                            component: COMPONENT.into(),
                            error_kind: reason.into(),
                            error: error.clone(),
                            original: task.original.clone(),
                            event_kind: Some(kind_label.into()),
                            source_file: Some(location),
                            source_line: None,
                            source_topic: None,
                            source_partition: None,
                            source_offset: None,
                            failed_at: to_millis(Utc::now()),
                        })
                        .await?;
                    metrics.rejected.with_label_values(&[kind_label, reason]).inc();
                    report.rejections.push(TaskRejection { task_id: task.id, reason, error });
                }
            }
        }
        while let Some(result) = in_flight.next().await {
            result?;
            published += 1;
        }
        let handled = published + skipped + rejected;
        metrics.read.with_label_values(&[kind_label]).inc_by(handled);
        metrics.published.with_label_values(&[kind_label]).inc_by(published);
        // Tasks without time bill nothing: not dead-lettered, counted.
        metrics.skipped.with_label_values(&[kind_label, SKIP_NO_TIME]).inc_by(skipped);

        // The page is done: note it durably.
        let end = offset + count;
        if let Some(p) = page_position.as_mut() {
            // The next look starts at this page's last task (one task of overlap).
            p.next_offset = end.saturating_sub(1);
            if count > 0 {
                state::save(&run.glpi.state_file, p)?;
            }
        }
        position = page_position;
        report.pages += 1;
        report.tasks_read += handled;
        report.published += published;
        report.skipped += skipped;
        report.position = position.clone();
        tracing::info!(source = %run.glpi.source, offset, tasks = count, new = handled, published, skipped, rejected,
            total = ?page.total, position = ?position.as_ref().map(|p| (p.date_mod, p.last_task_id)), "GLPI page collected");

        let done = match page.total {
            Some(total) => end >= total,
            None => count < page_size,
        };
        if done || count == 0 {
            return Ok(());
        }
        offset = end.saturating_sub(1).max(offset + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../glpi.example.toml");

    #[test]
    fn debug_output_hides_the_tokens() {
        let mut c = GlpiCollectorConfig::new("https://glpi.example.com/apirest.php", "user-token-secret-1");
        c.app_token = Some("app-token-secret-2".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("user-token-secret-1") && !shown.contains("app-token-secret-2"), "{shown}");
        assert!(shown.contains("glpi.example.com") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_example_config_parses_and_omitted_keys_take_the_documented_defaults() {
        let example: GlpiCollectorConfig = toml::from_str(EXAMPLE).unwrap();
        example.check().unwrap();
        let minimal: GlpiCollectorConfig =
            toml::from_str("url = \"https://glpi.example.com/apirest.php\"\nuser_token = \"t\"\n").unwrap();
        assert_eq!(minimal, GlpiCollectorConfig::new("https://glpi.example.com/apirest.php", "t"));
        let mut defaults = example.clone();
        defaults.app_token = None;
        defaults.user_token = "t".into();
        defaults.url = minimal.url.clone();
        defaults.source = default_source();
        defaults.server_time_zone = default_server_time_zone();
        assert_eq!(defaults, minimal, "the example shows the defaults except url, tokens, source and zone");
    }

    #[test]
    fn bad_configs_are_refused_with_the_key() {
        let ok = GlpiCollectorConfig::new("http://127.0.0.1/apirest.php", "t");
        assert!(ok.check().is_ok());
        let mut c = ok.clone();
        c.page_size = 1;
        assert!(c.check().unwrap_err().contains("page_size"));
        let mut c = ok.clone();
        c.server_time_zone = "Europe/Pariss".into();
        assert!(c.check().unwrap_err().contains("Europe/Pariss"));
        let mut c = ok.clone();
        c.user_token = " ".into();
        assert!(c.check().unwrap_err().contains("user_token"));
        let mut c = ok.clone();
        c.url = "glpi.example.com".into();
        assert!(c.check().unwrap_err().contains("url"));
        assert!(toml::from_str::<GlpiCollectorConfig>("url = \"http://x\"\nuser_token = \"t\"\npagesize = 3\n").is_err());
    }

    #[test]
    fn listed_tasks_are_keyed_by_date_mod_and_id_whatever_the_number_format() {
        let t = ListedTask::new(Vec::new(), serde_json::json!({"id": "7", "date_mod": "2026-01-12 11:45:00"}));
        assert_eq!(t.key.map(|k| k.1), Some(7));
        let t = ListedTask::new(Vec::new(), serde_json::json!({"id": 7, "date_mod": "yesterday"}));
        assert_eq!((t.key, t.id), (None, Some(7)));
        assert_eq!(key_or_zero(&serde_json::json!({"users_id_tech": null}), "users_id_tech"), Ok(0));
        assert!(int(&serde_json::json!({"actiontime": "lots"}), "actiontime").is_err());
    }

    #[test]
    fn the_report_line_lists_rejections_by_reason() {
        let report = GlpiReport {
            source: "glpi-main".into(),
            pages: 3,
            tasks_read: 10,
            published: 6,
            skipped: 1,
            rejections: vec![
                TaskRejection { task_id: Some(4), reason: "unmapped_entity", error: String::new() },
                TaskRejection { task_id: Some(6), reason: "malformed_task", error: String::new() },
                TaskRejection { task_id: Some(9), reason: "unmapped_entity", error: String::new() },
            ],
            sessions: 2,
            position: None,
        };
        assert_eq!(
            report.to_string(),
            "glpi-main: 3 pages, 10 tasks read, 6 published, 1 skipped (no time), 3 rejected (malformed_task: 1, unmapped_entity: 2)"
        );
    }
}
