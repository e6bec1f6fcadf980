//! The file collector: one JSON document per line, one event kind per file
//! (format: README, "Input files"). Each line is parsed, checked and
//! published as Avro keyed by tenant; a bad line is reported with its number
//! and reason, dead-lettered with its original bytes, and the rest goes on.

pub mod csv_table;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use meter_config::MeterConfig;
use meter_kafka::{event_key, event_topic, DeadLetters, KafkaError};
use meter_model::{codec::to_millis, DeadLetter, Event, EventCodec, EventKind};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::producer::FutureProducer;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Why an HTTP answer was not read.
#[derive(Debug, thiserror::Error)]
pub enum CappedBodyError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the answer is larger than {max} bytes: refused (never read whole)")]
    TooLarge { max: usize },
}

/// Reads an HTTP answer of a collected system (GLPI, a VM metrics endpoint)
/// up to `max` bytes: a declared or actual longer body is refused as soon as
/// it passes the limit, so a broken or hostile server cannot exhaust memory.
pub async fn read_body_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, CappedBodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(CappedBodyError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(CappedBodyError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Counters of the collector, registered once per process.
#[derive(Clone)]
pub struct CollectorMetrics {
    pub read: IntCounterVec,
    pub published: IntCounterVec,
    pub rejected: IntCounterVec,
    /// `meter_collector_events_skipped_total{kind, reason}`: input records
    /// neither published nor dead-lettered, by a bounded reason (an Icinga
    /// stream result of a host or check that is not billed, a GLPI task
    /// without time): counted, so that nothing is dropped without a trace.
    pub skipped: IntCounterVec,
    pub last_success: IntGaugeVec,
}

impl CollectorMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let read = IntCounterVec::new(Opts::new("meter_collector_events_read_total", "Input records read."), &["kind"])?;
        let published = IntCounterVec::new(
            Opts::new("meter_collector_events_published_total", "Events acknowledged by the broker."),
            &["kind"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new("meter_collector_events_rejected_total", "Input records refused and dead-lettered, by reason."),
            &["kind", "reason"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "meter_collector_events_skipped_total",
                "Input records neither published nor dead-lettered (not billed: unmapped stream results, tasks without time), by reason.",
            ),
            &["kind", "reason"],
        )?;
        let last_success = IntGaugeVec::new(
            Opts::new("meter_collector_last_success_timestamp_seconds", "Unix time of the last successful publish, by source."),
            &["source"],
        )?;
        registry.register(Box::new(read.clone()))?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(CollectorMetrics { read, published, rejected, skipped, last_success })
    }
}

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
        let mut by = BTreeMap::new();
        for r in &self.rejections {
            *by.entry(r.reason).or_default() += 1;
        }
        by
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
        CollectOptions { show_progress: false, max_in_flight: 10_000, keep_published: false }
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
    DeadLetter {
        component: component.into(),
        error_kind: reason.into(),
        error: error.into(),
        original: original.to_vec(),
        event_kind: Some(kind.slug().into()),
        source_file: Some(file.into()),
        source_line: Some(line as i64),
        source_topic: None,
        source_partition: None,
        source_offset: None,
        failed_at: to_millis(Utc::now()),
    }
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
        let kind_label = self.kind.slug();
        let dead_letters = DeadLetters::with_producer(producer.clone(), config.topics.dead_letters.clone());
        for r in rejections {
            tracing::warn!(file = %self.file_name, line = r.line, reason = r.reason, error = %r.error, "rejected row");
            dead_letters
                .send(&file_dead_letter(self.component, self.kind, self.file_name, r.line, r.reason, &r.error, &r.original))
                .await?;
            metrics.rejected.with_label_values(&[kind_label, r.reason]).inc();
        }
        let topic = event_topic(&config.topics, self.kind).to_string();
        let mut in_flight = FuturesUnordered::new();
        for mut event in events {
            event.header_mut().ingest_time = to_millis(Utc::now());
            let payload = EventCodec::encode_event(&event)?;
            let key = event_key(&event.header().tenant).to_string();
            let (producer, topic) = (producer.clone(), topic.clone());
            in_flight.push(async move { meter_kafka::publish(&producer, &topic, &key, &payload).await });
        }
        let mut published = 0u64;
        while let Some(result) = in_flight.next().await {
            result?;
            published += 1;
        }
        metrics.read.with_label_values(&[kind_label]).inc_by(self.rows);
        metrics.published.with_label_values(&[kind_label]).inc_by(published);
        if published > 0 {
            metrics.last_success.with_label_values(&[self.source_label]).set(Utc::now().timestamp());
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
    let dead_letters = DeadLetters::with_producer(producer.clone(), config.topics.dead_letters.clone());
    let topic = event_topic(&config.topics, kind).to_string();
    let kind_label = kind.slug();
    let mut report = CollectReport::default();
    let mut in_flight = FuturesUnordered::new();
    let mut lines = JsonLines::new(BufReader::new(file), kind);
    let mut raw = Vec::new();
    while let Some(JsonLine { number: line_number, bytes_read, parsed }) =
        lines.next(&mut raw).map_err(|source| CollectError::Read { path: file_name.clone(), source })?
    {
        progress.inc(bytes_read as u64);
        report.lines_read += 1;
        metrics.read.with_label_values(&[kind_label]).inc();
        match parsed {
            Ok(mut event) => {
                event.header_mut().ingest_time = to_millis(Utc::now());
                if options.keep_published {
                    report.published_events.push((event.header().tenant.clone(), event.header().event_time));
                }
                let payload = EventCodec::encode_event(&event).map_err(KafkaError::from)?;
                let key = event_key(&event.header().tenant).to_string();
                let producer = producer.clone();
                let topic = topic.clone();
                in_flight.push(async move { meter_kafka::publish(&producer, &topic, &key, &payload).await });
                if in_flight.len() >= options.max_in_flight {
                    if let Some(result) = in_flight.next().await {
                        result?;
                        report.published += 1;
                    }
                }
            }
            Err((reason, error)) => {
                progress.suspend(|| tracing::warn!(file = %file_name, line = line_number, reason, %error, "rejected line"));
                metrics.rejected.with_label_values(&[kind_label, reason]).inc();
                dead_letters
                    .send(&file_dead_letter("collector-file", kind, &file_name, line_number, reason, &error, &raw))
                    .await?;
                report.rejections.push(Rejection { line: line_number, reason, error });
            }
        }
    }
    while let Some(result) = in_flight.next().await {
        result?;
        report.published += 1;
    }
    metrics.published.with_label_values(&[kind_label]).inc_by(report.published);
    if report.published > 0 {
        metrics.last_success.with_label_values(&["file"]).set(Utc::now().timestamp());
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

    /// Serves one HTTP answer with a body of `size` bytes, chunked (no length) or not.
    async fn serve_once(size: usize, chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let chunk = vec![b'x'; 4096];
            if chunked {
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if socket.write_all(format!("{n:x}\r\n").as_bytes()).await.is_err()
                        || socket.write_all(&chunk[..n]).await.is_err()
                        || socket.write_all(b"\r\n").await.is_err()
                    {
                        return;
                    }
                    left -= n;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            } else {
                let _ = socket.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes()).await;
                let _ = socket.write_all(&vec![b'x'; size]).await;
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn http_answers_are_read_up_to_the_cap_only() {
        let client = reqwest::Client::new();
        for chunked in [false, true] {
            let url = serve_once(10_000, chunked).await;
            let body = read_body_capped(client.get(&url).send().await.unwrap(), 10_000).await.unwrap();
            assert_eq!(body.len(), 10_000);
            let url = serve_once(10_000_000, chunked).await;
            let err = read_body_capped(client.get(&url).send().await.unwrap(), 100_000).await.unwrap_err();
            assert!(matches!(err, CappedBodyError::TooLarge { max: 100_000 }), "chunked {chunked}: {err}");
        }
    }

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
