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
pub mod config;
pub mod convert;
pub mod csv_import;
pub mod mapping;
mod paging;
mod publish;
pub mod report;
pub mod state;
mod tasks;

use meter_kafka::KafkaError;
use meter_model::EventKind;

pub use config::GlpiCollectorConfig;
pub use csv_import::{publish_csv, read_csv, CsvImport, CsvRejection, CsvReport, CSV_COLUMNS};
pub use paging::collect_once;
pub use report::{GlpiReport, TaskRejection};

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

/// `reason` of `meter_collector_events_skipped_total` for GLPI tasks (and
/// CSV rows) with zero minutes: nothing to bill, so not dead-lettered.
pub const SKIP_NO_TIME: &str = "no_time";

