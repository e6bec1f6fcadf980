//! The sink loop: read a batch of aggregate revisions and raw events, insert
//! it (one INSERT per table, the four at once), and only then commit the
//! offsets. The next batch is read while one is inserted, at most one ahead.
//! While ClickHouse is down the batch is retried with exponential backoff and
//! the consumer does not move on past the batch after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use backon::Retryable;
use futures::FutureExt;
use meter_config::{MeterConfig, RetryConfig};
use meter_kafka::{DeadLetters, KafkaError};
use meter_model::aggregate_decode::decode_aggregate;
use meter_model::fast_decode::decode_event;
use meter_model::{Aggregate, DeadLetter, EventKind};
use meter_telemetry::InternalEvent;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::details::{Accounting, DetailBatch};
use crate::internal_events::{BatchInserted, InsertFailed};

fn header(message: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("Kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("aggregate {id}: {what} does not fit the ClickHouse column")]
    OutOfRange { id: String, what: &'static str },
    #[error("inserting into {table} gave up: {source}")]
    Insert { table: String, source: clickhouse::error::Error },
    #[error("the insert task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("idle for {waited:?} but partitions still have unread records: {behind:?} (is the broker answering? run the sink again)")]
    Behind { waited: Duration, behind: Vec<String> },
}

pub use crate::internal_events::SinkMetrics;

/// One row of `aggregates`, in RowBinary order. Decimal(18, 6) travels as
/// the unscaled Int64, DateTime as UInt32 seconds, Date as UInt16 days.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct AggregateRow {
    pub aggregate_id: String,
    pub revision: i64,
    pub is_final: u8,
    pub version: u64,
    pub kind: String,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub period: String,
    pub time_zone: String,
    pub window_start: u32,
    pub window_end: u32,
    pub window_date: u16,
    pub metric: String,
    pub unit: String,
    pub dimension_keys: Vec<String>,
    pub dimension_values: Vec<String>,
    pub quantity: i64,
    pub event_count: u64,
    pub incident_count: u64,
    pub request_count: u64,
    pub ok_count: u64,
    pub warning_count: u64,
    pub ko_count: u64,
    pub unknown_count: u64,
    pub missed_count: u64,
    pub cost: i64,
    pub currency: String,
    pub price_book_version: String,
    pub emitted_at: u32,
}

fn decimal18_6(d: Decimal) -> Option<i64> {
    let mut d = d;
    d.rescale(6);
    let m = d.mantissa();
    (d.scale() == 6 && m.abs() < 1_000_000_000_000_000_000).then_some(m as i64)
}

fn seconds(t: DateTime<Utc>) -> Option<u32> {
    u32::try_from(t.timestamp()).ok()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` label: the canonical form read
/// by hand (chrono's format parser is most of a row's cost), anything else
/// by the parser, so both answer alike.
fn label_days(label: &str) -> Option<i64> {
    let b = label.as_bytes();
    let number = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let day = match (b.len() == 10 && b[4] == b'-' && b[7] == b'-').then(|| (number(0, 4), number(5, 7), number(8, 10))) {
        Some((Some(y), Some(m), Some(d))) => NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?,
        _ => NaiveDate::parse_from_str(label, "%Y-%m-%d").ok()?,
    };
    Some((day - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days())
}

impl AggregateRow {
    pub fn from_aggregate(a: &Aggregate) -> Result<Self, SinkError> {
        Self::from_owned(a.clone())
    }

    /// The row of an aggregate, its strings moved, not copied.
    pub fn from_owned(a: Aggregate) -> Result<Self, SinkError> {
        let out = |what| SinkError::OutOfRange { id: a.aggregate_id.clone(), what };
        // In the original order, so the error names the same field.
        let days = label_days(&a.window_label).ok_or_else(|| out("window_label"))?;
        let revision = u64::try_from(a.revision).map_err(|_| out("revision"))?;
        let window_start = seconds(a.window_start).ok_or_else(|| out("window_start"))?;
        let window_end = seconds(a.window_end).ok_or_else(|| out("window_end"))?;
        let window_date = u16::try_from(days).map_err(|_| out("window_date"))?;
        let quantity = decimal18_6(a.quantity).ok_or_else(|| out("quantity"))?;
        let count = |v: i64, what| u64::try_from(v).map_err(|_| out(what));
        let counts = [
            count(a.event_count, "event_count")?,
            count(a.incident_count, "incident_count")?,
            count(a.request_count, "request_count")?,
            count(a.ok_count, "ok_count")?,
            count(a.warning_count, "warning_count")?,
            count(a.ko_count, "ko_count")?,
            count(a.unknown_count, "unknown_count")?,
            count(a.missed_count, "missed_count")?,
        ];
        let cost = decimal18_6(a.cost).ok_or_else(|| out("cost"))?;
        let emitted_at = seconds(a.emitted_at).ok_or_else(|| out("emitted_at"))?;
        let (dimension_keys, dimension_values) = a.dimensions.into_iter().unzip();
        Ok(AggregateRow {
            aggregate_id: a.aggregate_id,
            revision: a.revision,
            is_final: u8::from(a.is_final),
            version: revision * 2 + u64::from(a.is_final),
            kind: a.kind.symbol().to_string(),
            tenant: a.tenant,
            subsidiary: a.subsidiary,
            domain: a.domain,
            period: a.period.symbol().to_string(),
            time_zone: a.time_zone,
            window_start,
            window_end,
            window_date,
            metric: a.metric,
            unit: a.unit,
            dimension_keys,
            dimension_values,
            quantity,
            event_count: counts[0],
            incident_count: counts[1],
            request_count: counts[2],
            ok_count: counts[3],
            warning_count: counts[4],
            ko_count: counts[5],
            unknown_count: counts[6],
            missed_count: counts[7],
            cost,
            currency: a.currency,
            price_book_version: a.price_book_version,
            emitted_at,
        })
    }
}

async fn insert_rows<T>(client: &clickhouse::Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::Row + Serialize,
    for<'a> T: clickhouse::RowWrite<Value<'a> = T>,
{
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// Inserts `rows` into `table`, retrying with the configured backoff while
/// ClickHouse fails: the batch's offsets wait meanwhile.
async fn insert_with_retry<T>(client: &clickhouse::Client, table: &str, rows: &[T], metrics: &SinkMetrics, retry: &RetryConfig) -> Result<(), SinkError>
where
    T: clickhouse::Row + Serialize,
    for<'a> T: clickhouse::RowWrite<Value<'a> = T>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let attempt = || async move {
        let started = Instant::now();
        insert_rows(client, table, rows).await.map(|()| started.elapsed())
    };
    let duration = attempt
        .retry(retry.backoff())
        .notify(|error, retry_in| InsertFailed { table, rows: rows.len(), error, retry_in }.emit(metrics))
        .await
        // The backoff has no attempt limit: this cannot happen, but if it did
        // the offsets must not be committed.
        .map_err(|source| SinkError::Insert { table: table.to_string(), source })?;
    BatchInserted { table, rows: rows.len(), duration }.emit(metrics);
    Ok(())
}

/// Assigned partitions with records this sink has not read yet: its position
/// (else the group's committed offset, else the start) before the end.
fn partitions_behind(consumer: &StreamConsumer) -> Vec<String> {
    let timeout = Duration::from_secs(5);
    let Ok(assignment) = consumer.assignment() else {
        return vec!["assignment unknown".into()];
    };
    let positions = consumer.position().ok();
    let committed = consumer.committed_offsets(assignment.clone(), timeout).ok();
    let offset_in = |list: Option<&TopicPartitionList>, topic: &str, partition: i32| match list
        .and_then(|l| l.find_partition(topic, partition))
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    let mut behind = Vec::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, timeout) else {
            behind.push(format!("{topic}/{partition} (end unknown)"));
            continue;
        };
        let at = offset_in(positions.as_ref(), topic, partition)
            .or_else(|| offset_in(committed.as_ref(), topic, partition))
            .unwrap_or(low);
        if at < high {
            behind.push(format!("{topic}/{partition} (at {at}, end {high})"));
        }
    }
    behind
}

/// Inserts detail rows once (tools: reprocess, backfill); errors are the caller's.
pub async fn insert_details(client: &clickhouse::Client, details: &mut DetailBatch) -> Result<(), clickhouse::error::Error> {
    if !details.tickets.is_empty() {
        insert_rows(client, EventKind::TicketTime.spec().detail_table, &details.tickets).await?;
    }
    if !details.checks.is_empty() {
        insert_rows(client, EventKind::CheckResult.spec().detail_table, &details.checks).await?;
    }
    if !details.vms.is_empty() {
        insert_rows(client, EventKind::VmUsage.spec().detail_table, &details.vms).await?;
    }
    *details = DetailBatch::default();
    Ok(())
}

pub struct SinkOptions {
    pub until_idle: Option<Duration>,
}

const AGGREGATES_TABLE: &str = "aggregates";

/// Next offset to read per (topic, partition): what a batch commits once all
/// of its rows are in ClickHouse. A few partitions: a list beats a map.
#[derive(Debug, Default)]
struct Positions(Vec<(String, i32, i64)>);

impl Positions {
    fn record(&mut self, topic: &str, partition: i32, next: i64) {
        match self.0.iter_mut().find(|(t, p, _)| *p == partition && t == topic) {
            Some(entry) => entry.2 = next,
            None => self.0.push((topic.to_string(), partition, next)),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a batch's offsets go once it is in ClickHouse: the consumer group
/// (a test records them instead).
trait Committer: Send + Sync + 'static {
    fn commit(&self, positions: &Positions) -> Result<(), SinkError>;
}

impl Committer for StreamConsumer {
    fn commit(&self, positions: &Positions) -> Result<(), SinkError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in &positions.0 {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        Consumer::commit(self, &list, CommitMode::Sync)?;
        Ok(())
    }
}

/// What was read since the last flush: the rows of every table and the
/// offsets they come from.
#[derive(Default)]
struct Batch {
    aggregates: Vec<AggregateRow>,
    details: DetailBatch,
    positions: Positions,
}

impl Batch {
    fn rows(&self) -> usize {
        self.aggregates.len() + self.details.len()
    }

    /// Nothing read (a batch of control records or dead letters has no rows
    /// but offsets to commit).
    fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// Writes batches: the four inserts of one run at once, and the next batch
/// is read while they run. Offsets are committed only once every insert of
/// their batch succeeded, and batches commit in order: a flush waits for the
/// previous one, so the consumer reads at most one batch ahead of ClickHouse
/// (and, while ClickHouse is down, stops there and waits).
struct Writer<C: Committer> {
    client: clickhouse::Client,
    consumer: Arc<C>,
    metrics: SinkMetrics,
    retry: RetryConfig,
    in_flight: Option<tokio::task::JoinHandle<Result<(), SinkError>>>,
}

impl<C: Committer> Writer<C> {
    /// Waits for the batch in flight, then starts writing `batch`.
    async fn flush(&mut self, batch: Batch) -> Result<(), SinkError> {
        self.wait().await?;
        if batch.is_empty() {
            return Ok(());
        }
        let (client, consumer, metrics, retry) = (self.client.clone(), self.consumer.clone(), self.metrics.clone(), self.retry.clone());
        self.in_flight = Some(tokio::spawn(async move {
            insert_batch(&client, &metrics, &retry, &batch.aggregates, &batch.details).await?;
            // Every table has the batch: now, and only now, its offsets.
            tokio::task::block_in_place(|| consumer.commit(&batch.positions))
        }));
        Ok(())
    }

    /// Waits until the batch in flight is inserted and committed.
    async fn wait(&mut self) -> Result<(), SinkError> {
        match self.in_flight.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Collects a finished flush without waiting, so that its error stops the sink now.
    async fn reap(&mut self) -> Result<(), SinkError> {
        if self.in_flight.as_ref().is_some_and(|t| t.is_finished()) {
            self.wait().await?;
        }
        Ok(())
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Writes `batch` and waits until everything read is committed.
    async fn drain(&mut self, batch: Batch) -> Result<(), SinkError> {
        self.flush(batch).await?;
        self.wait().await
    }
}

/// One INSERT per table, the four at once; each retried alone until it
/// succeeds, so a table that took the batch does not take it twice.
async fn insert_batch(client: &clickhouse::Client, metrics: &SinkMetrics, retry: &RetryConfig, aggregates: &[AggregateRow], details: &DetailBatch) -> Result<(), SinkError> {
    let (a, t, c, v) = tokio::join!(
        insert_with_retry(client, AGGREGATES_TABLE, aggregates, metrics, retry),
        insert_with_retry(client, EventKind::TicketTime.spec().detail_table, &details.tickets, metrics, retry),
        insert_with_retry(client, EventKind::CheckResult.spec().detail_table, &details.checks, metrics, retry),
        insert_with_retry(client, EventKind::VmUsage.spec().detail_table, &details.vms, metrics, retry),
    );
    a.and(t).and(c).and(v)
}

/// How one message of the aggregate topic becomes a row, or a dead letter's reason.
fn aggregate_row(payload: &[u8]) -> Result<AggregateRow, (&'static str, String)> {
    let aggregate = decode_aggregate(payload).map_err(|e| ("avro_decode", e.to_string()))?;
    AggregateRow::from_owned(aggregate).map_err(|e| ("out_of_range", e.to_string()))
}

pub async fn run(config: &MeterConfig, metrics: SinkMetrics, options: SinkOptions) -> Result<(), SinkError> {
    let client = crate::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let consumer: Arc<StreamConsumer> = Arc::new(meter_kafka::consumer(&config.kafka, &config.sink.group_id, config.sink.fetch_wait_max_ms)?);
    let t = &config.topics;
    // Aggregates, late events, and every kind's events for the drill-down tables.
    let mut topics = vec![t.aggregates.as_str(), t.late_events.as_str()];
    topics.extend(EventKind::ALL.map(|kind| t.event(kind)));
    consumer.subscribe(&topics)?;
    // Some brokers (Tansu 0.6) keep a dead member's partitions: rejoin as the aggregator does.
    let mut stall = meter_kafka::StallWatch::new(Duration::from_secs(config.aggregator.stalled_partition_seconds.max(1)));
    let dead_letters = DeadLetters::new(config)?;
    let flush_every = Duration::from_millis(config.sink.flush_interval_ms.max(10));
    let calendar = config.calendar();
    // The aggregator's rule, so that a refused event never shows as counted.
    let limits = meter_model::Limits {
        max_clock_skew: chrono::Duration::seconds(i64::try_from(config.aggregator.max_clock_skew_seconds).unwrap_or(i64::MAX / 1000)),
    };
    let mut writer = Writer { client, consumer: consumer.clone(), metrics, retry: config.retry.clone(), in_flight: None };
    let mut batch = Batch::default();
    let mut batch_started = Instant::now();
    let mut last_input = Instant::now();
    let mut behind_since: Option<Instant> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    tracing::info!(database = %config.clickhouse.database, table = AGGREGATES_TABLE, topic = %config.topics.aggregates, "ClickHouse sink started");
    loop {
        writer.reap().await?;
        // A message already fetched is taken without arming a timer; the wait
        // (and Ctrl-C) only when none is there.
        let ready = consumer.recv().now_or_never();
        let stop = ready.is_some() && interrupted.as_mut().now_or_never().is_some();
        let received = match ready {
            _ if stop => None,
            Some(r) => Some(Ok(r)),
            None => {
                let wait = flush_every.saturating_sub(batch_started.elapsed()).max(Duration::from_millis(10));
                tokio::select! {
                    r = tokio::time::timeout(wait, consumer.recv()) => Some(r),
                    _ = &mut interrupted => None,
                }
            }
        };
        let Some(received) = received else {
            tracing::info!("interrupted: writing the last batch and stopping");
            return writer.drain(batch).await;
        };
        let got_message = matches!(received, Ok(Ok(_)));
        match received {
            Ok(Ok(message)) => {
                last_input = Instant::now();
                behind_since = None;
                if batch.is_empty() {
                    batch_started = Instant::now();
                }
                let payload = message.payload().unwrap_or_default();
                let topic = message.topic();
                if topic == config.topics.aggregates {
                    match aggregate_row(payload) {
                        Ok(row) => batch.aggregates.push(row),
                        Err((kind, error)) => {
                            dead_letters
                                .send(&DeadLetter::from_topic_position(
                                    "sink-clickhouse",
                                    topic,
                                    message.partition(),
                                    message.offset(),
                                    kind,
                                    error,
                                    payload,
                                ))
                                .await?;
                        }
                    }
                } else {
                    // Raw events for drill-down. Undecodable or invalid ones are
                    // the aggregator's dead letters, not rows (it decodes with
                    // the same decoder); control records are not events.
                    let (kind, accounting) = if topic == config.topics.late_events {
                        let source = header(&message, "meter.source_topic").unwrap_or_default();
                        (meter_kafka::kind_of_topic(&config.topics, &source), Accounting::Late)
                    } else {
                        (meter_kafka::kind_of_topic(&config.topics, topic), Accounting::Counted)
                    };
                    let control = meter_kafka::is_control(&message);
                    if let Some(event) = kind
                        .filter(|_| !control)
                        .and_then(|k| decode_event(k, payload).ok())
                        .filter(|e| e.validate_with(&limits).is_ok())
                    {
                        let tz = calendar.zone(&event.header().tenant);
                        batch.details.push_owned(event, tz, accounting);
                    }
                }
                batch.positions.record(topic, message.partition(), message.offset() + 1);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error; retrying"),
            Err(_elapsed) => {}
        }
        if batch.rows() >= config.sink.batch_rows || (!batch.is_empty() && batch_started.elapsed() >= flush_every) {
            writer.flush(std::mem::take(&mut batch)).await?;
            batch_started = Instant::now();
        }
        if stall.due() && tokio::task::block_in_place(|| stall.orphaned_partitions(&*consumer, &topics)) {
            tracing::warn!("rejoining the consumer group so the broker reassigns stalled partitions");
            writer.drain(std::mem::take(&mut batch)).await?;
            batch_started = Instant::now();
            consumer.unsubscribe();
            consumer.subscribe(&topics)?;
        }
        // While messages come, `last_input` is now: nothing below can hold.
        if let (Some(idle), false) = (options.until_idle, got_message) {
            let assigned = consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
            if !assigned {
                last_input = Instant::now(); // idle counts from the assignment on
            } else if batch.is_empty() && !writer.busy() && last_input.elapsed() >= idle {
                // Idle is not done: every assigned partition must be read to
                // its end (a slow fetch is not an empty topic).
                let behind = tokio::task::block_in_place(|| partitions_behind(&consumer));
                if behind.is_empty() {
                    tracing::info!("no input for {idle:?} and no lag: everything written, stopping");
                    return Ok(());
                }
                let since = *behind_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= idle.max(Duration::from_secs(60)) * 3 {
                    return Err(SinkError::Behind { waited: since.elapsed(), behind });
                }
                tracing::info!(?behind, "idle, but partitions still have unread records: waiting");
                last_input = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use meter_model::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    #[test]
    fn window_labels_read_by_hand_as_chrono_reads_them() {
        for label in ["2026-01-31", "1970-01-01", "2026-02-30", "2026-13-01", "0000-01-01", "2026-1-05", "+2026-01-05", "2026-01-5", "20260105", "", "2026-01-0x", "2026/01/05", "2179-06-06", "2179-06-07"] {
            let chrono = NaiveDate::parse_from_str(label, "%Y-%m-%d").ok().map(|d| (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days());
            assert_eq!(label_days(label), chrono, "{label:?}");
        }
    }

    #[test]
    fn positions_keep_the_next_offset_per_partition() {
        let mut p = Positions::default();
        p.record("a", 0, 5);
        p.record("b", 0, 7);
        p.record("a", 0, 6);
        p.record("a", 1, 1);
        assert_eq!(p.0, vec![("a".to_string(), 0, 6), ("b".to_string(), 0, 7), ("a".to_string(), 1, 1)]);
    }

    fn aggregate() -> Aggregate {
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        Aggregate {
            aggregate_id: "id-1".into(),
            revision: 3,
            is_final: true,
            kind: EventKind::TicketTime,
            tenant: "acme".into(),
            subsidiary: "acme-fr".into(),
            domain: "infrastructure".into(),
            period: Period::Day,
            time_zone: "Europe/Paris".into(),
            window_start: at,
            window_end: at + chrono::Duration::days(1),
            window_label: "2026-01-01".into(),
            metric: "ticket.time".into(),
            unit: "minute".into(),
            dimensions: BTreeMap::from([("category".into(), "RUN > MCO".into()), ("ticket_type".into(), "INCIDENT".into())]),
            quantity: Decimal::new(165_000_000, 6),
            event_count: 1,
            incident_count: 1,
            request_count: 0,
            ok_count: 0,
            warning_count: 0,
            ko_count: 0,
            unknown_count: 0,
            missed_count: 0,
            cost: Decimal::new(247_500_000, 6),
            currency: "EUR".into(),
            price_book_version: "2026-01".into(),
            emitted_at: at,
        }
    }

    #[test]
    fn an_aggregate_row_is_the_same_moved_or_copied_and_keeps_the_version_rule() {
        let a = aggregate();
        let (copied, moved) = (AggregateRow::from_aggregate(&a).unwrap(), AggregateRow::from_owned(a).unwrap());
        assert_eq!(format!("{copied:?}"), format!("{moved:?}"));
        assert_eq!((moved.version, moved.window_date, moved.quantity), (3 * 2 + 1, 20_454, 165_000_000));
        assert_eq!((moved.dimension_keys, moved.dimension_values), (vec!["category".to_string(), "ticket_type".into()], vec!["RUN > MCO".to_string(), "INCIDENT".into()]));
    }

    #[test]
    fn a_bad_aggregate_gets_its_dead_letter_reason() {
        assert_eq!(aggregate_row(b"not avro").err().map(|(reason, _)| reason), Some("avro_decode"));
        let mut a = aggregate();
        a.event_count = -1;
        let (reason, error) = aggregate_row(&EventCodec::encode(&a).unwrap()).err().unwrap();
        assert_eq!(reason, "out_of_range");
        assert!(error.contains("event_count"), "{error}");
        assert!(aggregate_row(&EventCodec::encode(&aggregate()).unwrap()).is_ok());
    }

    /// A stand-in ClickHouse on loopback: reads each request whole, answers
    /// the first `failures` INSERTs into `failing` with a 500 and every other
    /// with a 200, and logs (table, accepted) in arrival order.
    struct FakeClickHouse {
        url: String,
        log: Arc<Mutex<ServerLog>>,
    }

    impl FakeClickHouse {
        async fn start(failing: &'static str, failures: usize) -> FakeClickHouse {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let log = Arc::new(Mutex::new(Vec::new()));
            let failed = Arc::new(Mutex::new(0usize));
            let server_log = log.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let (log, failed) = (server_log.clone(), failed.clone());
                    tokio::spawn(async move {
                        let mut socket = BufReader::new(socket);
                        loop {
                            let mut request_line = String::new();
                            if socket.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let (mut chunked, mut length) = (false, 0usize);
                            loop {
                                let mut line = String::new();
                                socket.read_line(&mut line).await.unwrap();
                                let lower = line.to_ascii_lowercase();
                                chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
                                if let Some(v) = lower.strip_prefix("content-length:") {
                                    length = v.trim().parse().unwrap();
                                }
                                if line == "\r\n" {
                                    break;
                                }
                            }
                            if chunked {
                                loop {
                                    let mut size = String::new();
                                    socket.read_line(&mut size).await.unwrap();
                                    let size = usize::from_str_radix(size.trim(), 16).unwrap();
                                    let mut data = vec![0; size + 2];
                                    socket.read_exact(&mut data).await.unwrap();
                                    if size == 0 {
                                        break;
                                    }
                                }
                            } else {
                                let mut data = vec![0; length];
                                socket.read_exact(&mut data).await.unwrap();
                            }
                            let table = ["aggregates", "ticket_tasks", "check_runs", "vm_usage_events"]
                                .into_iter()
                                .find(|t| request_line.contains(&format!("INSERT+INTO+%60{t}%60")))
                                .unwrap_or("other");
                            let accept = table != failing || {
                                let mut n = failed.lock().unwrap();
                                *n += 1;
                                *n > failures
                            };
                            log.lock().unwrap().push((table.to_string(), accept));
                            let answer: &[u8] = if accept {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                            } else {
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 27\r\n\r\nCode: 210. DB::Exception: x"
                            };
                            socket.get_mut().write_all(answer).await.unwrap();
                        }
                    });
                }
            });
            FakeClickHouse { url, log }
        }

        fn log(&self) -> ServerLog {
            self.log.lock().unwrap().clone()
        }
    }

    /// (table, accepted), in arrival order.
    type ServerLog = Vec<(String, bool)>;

    /// Offsets committed, with the ClickHouse log as it was at that moment.
    type Commit = (Vec<(String, i32, i64)>, ServerLog);

    struct Recorder {
        server_log: Arc<Mutex<ServerLog>>,
        commits: Mutex<Vec<Commit>>,
    }

    impl Committer for Recorder {
        fn commit(&self, positions: &Positions) -> Result<(), SinkError> {
            let seen = self.server_log.lock().unwrap().clone();
            self.commits.lock().unwrap().push((positions.0.clone(), seen));
            Ok(())
        }
    }

    fn batch(offset: i64) -> Batch {
        let mut b = Batch::default();
        b.aggregates.push(AggregateRow::from_owned(aggregate()).unwrap());
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let header = EventHeader {
            event_id: "e1".into(),
            source: "glpi".into(),
            tenant: "acme".into(),
            subsidiary: "acme-fr".into(),
            domain: "infrastructure".into(),
            event_time: at,
            ingest_time: at,
            version: 0,
            deleted: false,
        };
        let ticket = TicketTime {
            header: header.clone(),
            ticket_id: "T1".into(),
            task_id: "1".into(),
            ticket_type: TicketType::Incident,
            category_path: vec!["RUN".into()],
            in_scope: true,
            requester: "marie".into(),
            technician: "bob".into(),
            technician_profile: TechnicianProfile::Engineer,
            application: None,
            country: None,
            minutes_worked: 12,
            start_time: at,
        };
        let check = CheckResult {
            header,
            check_id: "c1".into(),
            check_name: "Backup jobs".into(),
            target: "srv-01".into(),
            frequency: CheckFrequency::Daily,
            scheduled_time: None,
            executed_time: Some(at),
            status: CheckStatus::Ok,
            ticket_ref: None,
            time_spent_minutes: 5,
            output: None,
        };
        b.details.push_owned(Event::TicketTime(ticket), chrono_tz::Europe::Paris, Accounting::Counted);
        b.details.push_owned(Event::CheckResult(check), chrono_tz::Europe::Paris, Accounting::Counted);
        b.positions.record("aggregates-topic", 0, offset);
        b
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_are_committed_in_order_only_after_every_table_took_the_batch() {
        // ticket_tasks fails three times: the sink retries it alone, the others are inserted once.
        let server = FakeClickHouse::start("ticket_tasks", 3).await;
        let client = clickhouse::Client::default().with_url(&server.url).with_validation(false).with_compression(clickhouse::Compression::None);
        let recorder = Arc::new(Recorder { server_log: server.log.clone(), commits: Mutex::new(Vec::new()) });
        let metrics = SinkMetrics::register(&prometheus::Registry::new()).unwrap();
        let mut writer = Writer { client, consumer: recorder.clone(), metrics, retry: RetryConfig { min_delay_ms: 5, max_delay_ms: 20 }, in_flight: None };
        writer.flush(batch(11)).await.unwrap();
        // The second batch waits for the first: commits stay in order.
        writer.drain(batch(22)).await.unwrap();
        let commits = recorder.commits.lock().unwrap();
        assert_eq!(commits.iter().map(|(p, _)| p[0].2).collect::<Vec<_>>(), vec![11, 22]);
        let accepted = |log: &[(String, bool)], table: &str| log.iter().filter(|(t, ok)| t == table && *ok).count();
        for (n, (_, seen)) in commits.iter().enumerate() {
            for table in ["aggregates", "ticket_tasks", "check_runs"] {
                assert_eq!(accepted(seen, table), n + 1, "commit {n}: {table} took every batch so far, once ({seen:?})");
            }
        }
        let log = server.log();
        assert_eq!(log.iter().filter(|(t, ok)| t == "ticket_tasks" && !ok).count(), 3, "{log:?}");
        assert_eq!(accepted(&log, "aggregates"), 2, "{log:?}");
        assert!(!log.iter().any(|(t, _)| t == "vm_usage_events"), "an empty table gets no INSERT: {log:?}");
    }
}
