//! Ticket time from CSV files, for ticketing tools other than GLPI (or GLPI
//! exports), mapped with the same mapping file.
//!
//! The first line is the header, with these columns in any order (RFC 4180
//! quoting, UTF-8):
//!
//! | column | content |
//! |---|---|
//! | `ticket_id` | ticket number in the tool |
//! | `task_id` | task number (unique within the ticket) |
//! | `ticket_type` | `INCIDENT` or `REQUEST` (any case; GLPI's `1` / `2` too) |
//! | `category_path` | category levels separated by `>` (`RUN > MCO > servers`) |
//! | `entity` | looked up in the mapping's `[entities]` (tenant, subsidiary, country) |
//! | `requester` | user of the client (a name, or an id looked up in `[requesters]`) |
//! | `technician` | name or id, looked up in `[technicians.users]` |
//! | `technician_profile` | `ADMINISTRATOR`, `ENGINEER`, `CONSULTANT`, `ARCHITECT`; empty: from the mapping |
//! | `application` | e.g. `Sage`; empty: from the mapping's `[applications]` or none |
//! | `country` | ISO code; empty: the entity's |
//! | `start_time` | when the work started: RFC 3339, or `YYYY-MM-DD HH:MM:SS` in the mapping's `csv.time_zone` |
//! | `minutes_worked` | whole minutes (already rounded up); `0` rows are skipped, counted in `meter_collector_events_skipped_total{reason="no_time"}` |
//! | `modified_at` | when the task was last written (the event time), same formats as `start_time` |
//!
//! Events get `event_id = csv-task-<ticket_id>-<task_id>` and
//! `source = csv.source` of the mapping. A bad row is reported with its line
//! number and reason (`malformed_row`, `bad_field`, `unmapped_entity`,
//! `invalid_event`), dead-lettered with its original bytes when published,
//! and the other rows go on.

use collector_runtime::{InternalEvent, RecordsSkipped};
use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use collector_runtime::CollectorMetrics;
use meter_config::MeterConfig;
use meter_model::codec::to_millis;
use meter_model::{Event, EventHeader, EventKind, TechnicianProfile, TicketTime, TicketType};
use rdkafka::producer::FutureProducer;

use crate::convert::local_to_utc;
use crate::mapping::{path_levels, Mapping};
use crate::GlpiError;

/// The columns a CSV file must have (in any order).
pub const CSV_COLUMNS: [&str; 13] = [
    "ticket_id",
    "task_id",
    "ticket_type",
    "category_path",
    "entity",
    "requester",
    "technician",
    "technician_profile",
    "application",
    "country",
    "start_time",
    "minutes_worked",
    "modified_at",
];

/// The dead-letter component of CSV rows.
pub const CSV_COMPONENT: &str = "collector-csv";

pub use collector_file::csv_table::CsvRejection;

/// What a file holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CsvImport {
    /// Data rows read (not counting the header and blank lines).
    pub rows: u64,
    /// The events, with the line each came from.
    pub events: Vec<(u64, TicketTime)>,
    /// Rows with no time (`minutes_worked` 0).
    pub skipped: u64,
    pub rejections: Vec<CsvRejection>,
}

/// The outcome of publishing one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CsvReport {
    pub rows: u64,
    pub published: u64,
    pub skipped: u64,
    pub rejections: Vec<CsvRejection>,
}

fn csv_time(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
        .map(|local| local_to_utc(local, zone))
        .map_err(|_| format!("{text:?} is not a time (RFC 3339, or YYYY-MM-DD HH:MM:SS)"))
}

fn ticket_type(text: &str) -> Result<TicketType, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        "INCIDENT" | "1" => Ok(TicketType::Incident),
        "REQUEST" | "2" => Ok(TicketType::Request),
        other => Err(format!("ticket_type must be INCIDENT or REQUEST, got {other:?}")),
    }
}

fn profile(text: &str) -> Result<TechnicianProfile, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        "ADMINISTRATOR" => Ok(TechnicianProfile::Administrator),
        "ENGINEER" => Ok(TechnicianProfile::Engineer),
        "CONSULTANT" => Ok(TechnicianProfile::Consultant),
        "ARCHITECT" => Ok(TechnicianProfile::Architect),
        other => Err(format!("technician_profile must be ADMINISTRATOR, ENGINEER, CONSULTANT or ARCHITECT, got {other:?}")),
    }
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim()).filter(|t| !t.is_empty()).map(str::to_string)
}

enum Row {
    Event(Box<TicketTime>),
    Skip,
}

/// The fields of one row, by column name.
struct Fields<'a> {
    index: &'a HashMap<String, usize>,
    values: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> &'a str {
        self.index.get(name).and_then(|i| self.values.get(*i).copied()).unwrap_or("")
    }
}

fn row_to_event(row: &Fields<'_>, mapping: &Mapping, zone: Tz) -> Result<Row, (&'static str, String)> {
    let get = |name: &str| row.get(name);
    let bad = |e: String| ("bad_field", e);
    let minutes: i64 = get("minutes_worked")
        .trim()
        .parse()
        .map_err(|_| bad(format!("minutes_worked must be a whole number of minutes, got {:?}", get("minutes_worked"))))?;
    if minutes == 0 {
        return Ok(Row::Skip);
    }
    let ticket_id = get("ticket_id").trim().to_string();
    let task_id = get("task_id").trim().to_string();
    let ticket_type = ticket_type(get("ticket_type")).map_err(bad)?;
    let start_time = csv_time(get("start_time"), zone).map_err(|e| bad(format!("start_time: {e}")))?;
    let event_time = csv_time(get("modified_at"), zone).map_err(|e| bad(format!("modified_at: {e}")))?;
    let entity = get("entity").trim();
    let target = mapping
        .entity(entity)
        .ok_or_else(|| ("unmapped_entity", format!("entity {entity:?} is not in the mapping file's [entities]")))?;
    let category_path = path_levels(get("category_path"));
    let (technician, mapped_profile) = mapping.technician(get("technician"));
    let technician_profile = match optional(get("technician_profile")) {
        Some(p) => profile(&p).map_err(bad)?,
        None => mapped_profile,
    };
    let event = TicketTime {
        header: EventHeader {
            event_id: format!("csv-task-{ticket_id}-{task_id}"),
            source: mapping.csv.source.clone(),
            tenant: target.tenant.clone(),
            subsidiary: target.subsidiary.clone(),
            domain: mapping.domain(None, &category_path),
            event_time: to_millis(event_time),
            ingest_time: DateTime::<Utc>::UNIX_EPOCH,
            version: 0,
            deleted: false,
        },
        ticket_id,
        task_id,
        ticket_type,
        in_scope: mapping.in_scope(&category_path),
        application: optional(get("application")).or_else(|| mapping.application(&category_path)),
        category_path,
        requester: mapping.requester(get("requester")),
        technician,
        technician_profile,
        country: optional(get("country")).or_else(|| target.country.clone()),
        minutes_worked: i32::try_from(minutes).unwrap_or(if minutes < 0 { i32::MIN } else { i32::MAX }),
        start_time: to_millis(start_time),
    };
    let event = Event::TicketTime(event);
    event.validate().map_err(|e| ("invalid_event", e.to_string()))?;
    match event {
        Event::TicketTime(t) => Ok(Row::Event(Box::new(t))),
        _ => Err(("invalid_event", "not a ticket-time event".into())),
    }
}

/// Reads a CSV file of ticket tasks (format: module documentation). A file
/// without the documented header is an error; a bad row is a rejection.
pub fn read_csv(path: &Path, mapping: &Mapping) -> Result<CsvImport, GlpiError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| GlpiError::Read { path: shown.clone(), source })?;
    let zone: Tz = mapping.csv.time_zone.parse().map_err(|_| GlpiError::Config {
        path: shown.clone(),
        message: format!("unknown csv.time_zone {:?}", mapping.csv.time_zone),
    })?;
    let header_error = |message: String| GlpiError::Config { path: shown.clone(), message };
    let table = collector_file::csv_table::read_csv_table(&data, &CSV_COLUMNS).map_err(header_error)?;
    let mut import = CsvImport { rows: table.rows.len() as u64, ..CsvImport::default() };
    for row in table.rows {
        let line = row.line;
        let reject = |reason: &'static str, error: String| CsvRejection { line, reason, error, original: row.original.clone() };
        let values: Vec<&str> = match &row.values {
            Ok(values) => values.iter().map(String::as_str).collect(),
            Err(error) => {
                import.rejections.push(reject("malformed_row", error.clone()));
                continue;
            }
        };
        match row_to_event(&Fields { index: &table.index, values }, mapping, zone) {
            Ok(Row::Event(event)) => import.events.push((line, *event)),
            Ok(Row::Skip) => import.skipped += 1,
            Err((reason, error)) => import.rejections.push(reject(reason, error)),
        }
    }
    Ok(import)
}

/// Reads `path` with [`read_csv`], publishes its events (acknowledged) and
/// dead-letters its bad rows (component `collector-csv`, file and line).
pub async fn publish_csv(
    meter: &MeterConfig,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
    mapping: &Mapping,
    path: &Path,
) -> Result<CsvReport, GlpiError> {
    let mut import = read_csv(path, mapping)?;
    let file_name = path.display().to_string();
    let import_target = collector_file::FileImport {
        component: CSV_COMPONENT,
        kind: EventKind::TicketTime,
        source_label: "csv",
        file_name: &file_name,
        rows: import.rows,
    };
    let events = std::mem::take(&mut import.events).into_iter().map(|(_, e)| Event::TicketTime(e)).collect();
    let published = import_target.publish(meter, producer, metrics, events, &import.rejections).await?;
    RecordsSkipped { kind: EventKind::TicketTime.slug(), reason: crate::SKIP_NO_TIME, count: import.skipped }.emit(&metrics);
    tracing::info!(file = %file_name, rows = import.rows, published, skipped = import.skipped,
        rejected = import.rejections.len(), "CSV collected");
    Ok(CsvReport { rows: import.rows, published, skipped: import.skipped, rejections: import.rejections })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPPING: &str = include_str!("../../../config/glpi-mapping.example.toml");
    const HEADER: &str =
        "ticket_id,task_id,ticket_type,category_path,entity,requester,technician,technician_profile,application,country,start_time,minutes_worked,modified_at";

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn read(text: &str, zone: &str) -> Result<CsvImport, GlpiError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.csv");
        std::fs::write(&path, text).unwrap();
        let mut mapping = Mapping::parse(MAPPING).unwrap();
        mapping.csv.time_zone = zone.into();
        read_csv(&path, &mapping)
    }

    #[test]
    fn rows_become_events_and_bad_rows_are_reported_with_their_line() {
        let text = [
            HEADER,
            "2026-001,1,INCIDENT,RUN > MCO > servers,1,12,bob,,,,2026-01-12 09:00:00,165,2026-01-12 11:45:00",
            // Line 3: a quoted field with a comma, an application and explicit profile/country.
            "2026-002,1,request,\"RUN > Applications > Sage > paie, bulletins\",2,marie.dupont,8,CONSULTANT,,AT,2026-01-13T14:00:00Z,110,2026-01-13T15:50:00Z",
            "2026-003,1,INCIDENT,RUN > MCO,1,12,bob,,,,2026-01-12 09:00:00,lots,2026-01-12 11:45:00",
            "2026-004,1,INCIDENT,RUN > MCO,99,12,bob,,,,2026-01-12 09:00:00,5,2026-01-12 11:45:00",
            "2026-005,1,INCIDENT,RUN > MCO,1,12,bob",
            "2026-006,1,INCIDENT,Hors périmètre > Déménagement,1,12,bob,,,,2026-01-12 09:00:00,0,2026-01-12 11:45:00",
            "2026-007,1,INCIDENT,RUN > MCO,1,12,bob,,,,2026-01-12 09:00:00,2000,2026-01-12 11:45:00",
            "",
            "2026-008,1,INCIDENT,Hors périmètre > Déménagement,1,12,carla,,Sage,,2026-07-01 10:00:00,5,2026-07-01 10:05:00",
        ]
        .join("\n")
            + "\n";
        let import = read(&text, "Europe/Paris").unwrap();
        assert_eq!(import.rows, 8);
        assert_eq!(import.skipped, 1);
        let lines: Vec<(u64, &str)> = import.rejections.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(lines, vec![(4, "bad_field"), (5, "unmapped_entity"), (6, "malformed_row"), (8, "invalid_event")]);
        assert_eq!(import.rejections[2].original, b"2026-005,1,INCIDENT,RUN > MCO,1,12,bob".to_vec());
        assert!(import.rejections[3].error.contains("minutes_worked"), "{:?}", import.rejections[3]);

        let events: Vec<(u64, &TicketTime)> = import.events.iter().map(|(l, e)| (*l, e)).collect();
        assert_eq!(events.len(), 3);
        let (line, a) = events[0];
        assert_eq!(line, 2);
        assert_eq!(a.header.event_id, "csv-task-2026-001-1");
        assert_eq!(a.header.source, "csv-import");
        assert_eq!((a.header.tenant.as_str(), a.header.subsidiary.as_str()), ("acme", "acme-fr"));
        assert_eq!(a.header.domain, "infrastructure");
        assert_eq!(a.start_time, utc("2026-01-12T08:00:00Z"), "naive times are read in csv.time_zone");
        assert_eq!(a.header.event_time, utc("2026-01-12T10:45:00Z"));
        assert_eq!(a.minutes_worked, 165);
        assert_eq!(a.requester, "marie.dupont");
        assert_eq!((a.technician.as_str(), a.technician_profile), ("bob", TechnicianProfile::Architect));
        assert_eq!(a.country.as_deref(), Some("FR"));
        assert!(a.in_scope);
        let (_, b) = events[1];
        assert_eq!(b.ticket_type, TicketType::Request);
        assert_eq!(b.category_path, vec!["RUN", "Applications", "Sage", "paie, bulletins"]);
        assert_eq!(b.application.as_deref(), Some("Sage"));
        assert_eq!(b.technician_profile, TechnicianProfile::Consultant);
        assert_eq!(b.country.as_deref(), Some("AT"));
        assert_eq!(b.start_time, utc("2026-01-13T14:00:00Z"));
        let (line, c) = events[2];
        assert_eq!(line, 10, "blank lines keep the numbering");
        assert!(!c.in_scope, "hors périmètre");
        assert_eq!(c.technician_profile, TechnicianProfile::Administrator);
        assert_eq!(c.start_time, utc("2026-07-01T08:00:00Z"), "summer time");
    }

    #[test]
    fn a_file_without_the_documented_header_is_refused() {
        let err = read("ticket,task\n1,2\n", "UTC").unwrap_err().to_string();
        assert!(err.contains("unknown column \"ticket\""), "{err}");
        let without_country = HEADER.replace(",country", "");
        let err = read(&format!("{without_country}\n"), "UTC").unwrap_err().to_string();
        assert!(err.contains("missing columns country"), "{err}");
        // Columns in another order are fine.
        let mut columns: Vec<&str> = HEADER.split(',').collect();
        columns.reverse();
        let import = read(&format!("{}\n", columns.join(",")), "UTC").unwrap();
        assert_eq!(import.rows, 0);
    }
}
