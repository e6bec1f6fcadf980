//! The file collector: one JSON document per line, one event kind per file
//! (format: README, "Input files"). Each line is parsed, checked and
//! published as Avro keyed by tenant; a bad line is reported with its number
//! and reason, dead-lettered with its original bytes, and the rest goes on.

pub mod csv_table;
pub mod replay;

use collector_runtime::{InternalEvent, RecordsRead};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::Utc;
use collector_runtime::{CollectorMetrics, Publisher};
use indicatif::{ProgressBar, ProgressStyle};
use meter_config::MeterConfig;
use meter_kafka::KafkaError;
use meter_model::{DeadLetter, Event, EventKind};
use rdkafka::producer::FutureProducer;

pub use replay::{replay, ReplayOptions, ReplaySummary};

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// `source` label of `meter_collector_last_success_timestamp_seconds` for files.
pub const METRIC_SOURCE: &str = "file";

/// What happened to one bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    pub reason: &'static str,
    pub error: String,
}

/// The outcome of one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CollectReport {
    pub lines_read: u64,
    pub published: u64,
    pub rejections: Vec<Rejection>,
    /// (tenant, event_time) of every published event, when
    /// [`CollectOptions::keep_published`] asks for them (backfills).
    pub published_events: Vec<(String, chrono::DateTime<Utc>)>,
}

impl CollectReport {
    pub fn rejected_by_reason(&self) -> BTreeMap<&'static str, u64> {
        collector_runtime::count_by_reason(self.rejections.iter().map(|r| r.reason))
    }
}

/// Options of one run.
pub struct CollectOptions {
    pub show_progress: bool,
    /// Publishes in flight at once; the broker's acks bound memory.
    pub max_in_flight: usize,
    /// Keep (tenant, event_time) of what was published in the report.
    pub keep_published: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions { show_progress: false, max_in_flight: collector_runtime::DEFAULT_MAX_IN_FLIGHT, keep_published: false }
    }
}

/// The longest line a JSON-lines file may have: longer ones are refused
/// (reason `line_too_long`) and the rest of the file is still read.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One non-blank line of a JSON-lines file.
pub struct JsonLine {
    /// Line number in the file (blank lines counted).
    pub number: u64,
    /// Bytes read for it, line end and skipped blank lines included (for progress bars).
    pub bytes_read: usize,
    /// The parsed and checked event, or a bounded reason code and the error.
    pub parsed: Result<Event, (&'static str, String)>,
}

/// Reads a JSON-lines file of one kind, line by line, skipping blank lines;
/// the line's original bytes stay in the buffer passed to [`JsonLines::next`].
pub struct JsonLines<R> {
    reader: R,
    kind: EventKind,
    number: u64,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(reader: R, kind: EventKind) -> Self {
        JsonLines { reader, kind, number: 0 }
    }

    /// The next non-blank line, with its bytes in `raw`; None at the end.
    pub fn next(&mut self, raw: &mut Vec<u8>) -> std::io::Result<Option<JsonLine>> {
        let mut bytes_read = 0;
        loop {
            raw.clear();
            let n = (&mut self.reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', raw)?;
            if n == 0 {
                return Ok(None);
            }
            bytes_read += n;
            self.number += 1;
            if raw.len() > MAX_LINE_BYTES && raw.last() != Some(&b'\n') {
                // Skip the rest of the line without holding it.
                let mut rest = 0usize;
                loop {
                    let buf = self.reader.fill_buf()?;
                    if buf.is_empty() {
                        break;
                    }
                    match buf.iter().position(|b| *b == b'\n') {
                        Some(i) => {
                            self.reader.consume(i + 1);
                            rest += i + 1;
                            break;
                        }
                        None => {
                            let len = buf.len();
                            self.reader.consume(len);
                            rest += len;
                        }
                    }
                }
                bytes_read += rest;
                let total = raw.len() + rest;
                raw.truncate(MAX_LINE_BYTES);
                let error = format!("line is {total} bytes long, more than the {MAX_LINE_BYTES} allowed");
                return Ok(Some(JsonLine { number: self.number, bytes_read, parsed: Err(("line_too_long", error)) }));
            }
            let parsed = match std::str::from_utf8(raw) {
                Err(e) => Err(("not_utf8", format!("line is not UTF-8: {e}"))),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(self.kind, text.trim_end()),
            };
            return Ok(Some(JsonLine { number: self.number, bytes_read, parsed }));
        }
    }
}

/// The dead letter of a refused line or row of a file.
pub fn file_dead_letter(component: &str, kind: EventKind, file: &str, line: u64, reason: &str, error: &str, original: &[u8]) -> DeadLetter {
    DeadLetter::from_file_line(component, file, line, reason, error, original).of_kind(kind)
}

/// What a whole-file import publishes: dead-letters the refused rows (with
/// file and line) and publishes the events, each acknowledged, keyed by
/// tenant; counts them in the collector metrics. Returns the events published.
pub struct FileImport<'a> {
    pub component: &'a str,
    pub kind: EventKind,
    /// `source` label of the last-success gauge, e.g. "vm-csv".
    pub source_label: &'a str,
    pub file_name: &'a str,
    /// Data rows read.
    pub rows: u64,
}

impl FileImport<'_> {
    pub async fn publish(
        &self,
        config: &MeterConfig,
        producer: &FutureProducer,
        metrics: &CollectorMetrics,
        events: Vec<Event>,
        rejections: &[csv_table::CsvRejection],
    ) -> Result<u64, KafkaError> {
        let publisher = Publisher::new(config, producer.clone(), metrics.clone(), self.source_label);
        for r in rejections {
            tracing::warn!(file = %self.file_name, line = r.line, reason = r.reason, error = %r.error, "rejected row");
            publisher
                .dead_letter(&file_dead_letter(self.component, self.kind, self.file_name, r.line, r.reason, &r.error, &r.original))
                .await?;
        }
        let published = publisher.publish_all(events).await?;
        RecordsRead { kind: self.kind.slug(), count: self.rows }.emit(&metrics);
        if published > 0 {
            publisher.succeeded();
        }
        Ok(published)
    }
}

/// Parses and checks one line. Errors carry a bounded reason code.
pub fn parse_line(kind: EventKind, line: &str) -> Result<Event, (&'static str, String)> {
    let event = Event::from_json(kind, line).map_err(|e| {
        let reason = if e.to_string().starts_with("unknown field") { "unknown_field" } else { "malformed_json" };
        (reason, e.to_string())
    })?;
    event.validate().map_err(|e| ("invalid_event", e.to_string()))?;
    Ok(event)
}

/// Publishes every valid line of `path` and dead-letters the others.
pub async fn collect_file(
    config: &MeterConfig,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
    kind: EventKind,
    path: &Path,
    options: &CollectOptions,
) -> Result<CollectReport, CollectError> {
    let file_name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| CollectError::Read { path: file_name.clone(), source })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = if options.show_progress {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{kind} {file_name}"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let publisher =
        Publisher::new(config, producer.clone(), metrics.clone(), METRIC_SOURCE).with_max_in_flight(options.max_in_flight);
    let kind_label = kind.slug();
    let mut report = CollectReport::default();
    let mut batch = publisher.batch();
    let mut lines = JsonLines::new(BufReader::new(file), kind);
    let mut raw = Vec::new();
    while let Some(JsonLine { number: line_number, bytes_read, parsed }) =
        lines.next(&mut raw).map_err(|source| CollectError::Read { path: file_name.clone(), source })?
    {
        progress.inc(bytes_read as u64);
        report.lines_read += 1;
        RecordsRead { kind: kind_label, count: 1 }.emit(&metrics);
        match parsed {
            Ok(event) => {
                if options.keep_published {
                    report.published_events.push((event.header().tenant.clone(), event.header().event_time));
                }
                batch.push(event).await?;
            }
            Err((reason, error)) => {
                progress.suspend(|| tracing::warn!(file = %file_name, line = line_number, reason, %error, "rejected line"));
                publisher.dead_letter(&file_dead_letter("collector-file", kind, &file_name, line_number, reason, &error, &raw)).await?;
                report.rejections.push(Rejection { line: line_number, reason, error });
            }
        }
    }
    report.published = batch.finish().await?;
    if report.published > 0 {
        publisher.succeeded();
    }
    progress.finish_and_clear();
    tracing::info!(file = %file_name, kind = kind_label, lines = report.lines_read, published = report.published,
        rejected = report.rejections.len(), "file collected");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"glpi-1","source":"glpi","tenant":"acme","subsidiary":"acme-fr","domain":"infrastructure","event_time":"2024-01-08T10:00:00Z","ticket_id":"T1","task_id":"1","ticket_type":"INCIDENT","category_path":["RUN","MCO","servers"],"requester":"alice","technician":"bob","technician_profile":"ENGINEER","minutes_worked":165,"start_time":"2024-01-08T07:15:00Z"}"#;

    #[test]
    fn good_line_parses() {
        let e = parse_line(EventKind::TicketTime, GOOD).unwrap();
        assert_eq!(e.header().tenant, "acme");
    }

    #[test]
    fn each_kind_of_bad_line_gets_its_reason() {
        assert_eq!(parse_line(EventKind::TicketTime, "{not json").unwrap_err().0, "malformed_json");
        assert_eq!(parse_line(EventKind::TicketTime, &GOOD.replace("\"domain\"", "\"domian\"")).unwrap_err().0, "unknown_field");
        assert_eq!(
            parse_line(EventKind::TicketTime, &GOOD.replace("\"minutes_worked\":165", "\"minutes_worked\":-3")).unwrap_err().0,
            "invalid_event"
        );
        // A ticket line is not a VM line.
        assert_eq!(parse_line(EventKind::VmUsage, GOOD).unwrap_err().0, "unknown_field");
        // Year 2099 and signed years are refused.
        let far = GOOD.replace("2024-01-08T10:00:00Z", "2099-01-08T10:00:00Z");
        assert_eq!(parse_line(EventKind::TicketTime, &far).unwrap_err().0, "invalid_event");
        let huge = GOOD.replace("\"event_time\":\"2024-01-08T10:00:00Z\"", "\"event_time\":\"+262142-12-31T12:00:00Z\"");
        assert!(parse_line(EventKind::TicketTime, &huge).is_err());
    }

    #[test]
    fn a_huge_line_is_refused_and_the_next_lines_are_read() {
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_LINE_BYTES * 3));
        let data = format!("{GOOD}\n{big}\n\n{GOOD}\n");
        let mut lines = JsonLines::new(std::io::BufReader::with_capacity(8192, data.as_bytes()), EventKind::TicketTime);
        let mut raw = Vec::new();
        let first = lines.next(&mut raw).unwrap().unwrap();
        assert!(first.parsed.is_ok());
        let second = lines.next(&mut raw).unwrap().unwrap();
        assert_eq!(second.parsed.unwrap_err().0, "line_too_long");
        assert!(raw.len() <= MAX_LINE_BYTES);
        let third = lines.next(&mut raw).unwrap().unwrap();
        assert_eq!(third.number, 4);
        assert!(third.parsed.is_ok());
        assert!(lines.next(&mut raw).unwrap().is_none());
    }
}
