//! The sink loop: read a batch of aggregate revisions, insert it, and only
//! then commit the offsets. While ClickHouse is down the batch is retried
//! with exponential backoff and the consumer does not move on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use backon::Retryable;
use meter_config::{MeterConfig, RetryConfig};
use meter_kafka::{DeadLetters, KafkaError};
use meter_model::{Aggregate, DeadLetter, EventCodec, EventKind};
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

impl AggregateRow {
    pub fn from_aggregate(a: &Aggregate) -> Result<Self, SinkError> {
        let out = |what| SinkError::OutOfRange { id: a.aggregate_id.clone(), what };
        let day = NaiveDate::parse_from_str(&a.window_label, "%Y-%m-%d").map_err(|_| out("window_label"))?;
        let days = (day - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days();
        let count = |v: i64, what| u64::try_from(v).map_err(|_| out(what));
        Ok(AggregateRow {
            aggregate_id: a.aggregate_id.clone(),
            revision: a.revision,
            is_final: u8::from(a.is_final),
            version: u64::try_from(a.revision).map_err(|_| out("revision"))? * 2 + u64::from(a.is_final),
            kind: a.kind.symbol().to_string(),
            tenant: a.tenant.clone(),
            subsidiary: a.subsidiary.clone(),
            domain: a.domain.clone(),
            period: a.period.symbol().to_string(),
            time_zone: a.time_zone.clone(),
            window_start: seconds(a.window_start).ok_or_else(|| out("window_start"))?,
            window_end: seconds(a.window_end).ok_or_else(|| out("window_end"))?,
            window_date: u16::try_from(days).map_err(|_| out("window_date"))?,
            metric: a.metric.clone(),
            unit: a.unit.clone(),
            dimension_keys: a.dimensions.keys().cloned().collect(),
            dimension_values: a.dimensions.values().cloned().collect(),
            quantity: decimal18_6(a.quantity).ok_or_else(|| out("quantity"))?,
            event_count: count(a.event_count, "event_count")?,
            incident_count: count(a.incident_count, "incident_count")?,
            request_count: count(a.request_count, "request_count")?,
            ok_count: count(a.ok_count, "ok_count")?,
            warning_count: count(a.warning_count, "warning_count")?,
            ko_count: count(a.ko_count, "ko_count")?,
            unknown_count: count(a.unknown_count, "unknown_count")?,
            missed_count: count(a.missed_count, "missed_count")?,
            cost: decimal18_6(a.cost).ok_or_else(|| out("cost"))?,
            currency: a.currency.clone(),
            price_book_version: a.price_book_version.clone(),
            emitted_at: seconds(a.emitted_at).ok_or_else(|| out("emitted_at"))?,
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
/// ClickHouse fails: the caller's consumer position does not move meanwhile.
async fn insert_with_retry<T>(client: &clickhouse::Client, table: &str, rows: &mut Vec<T>, metrics: &SinkMetrics, retry: &RetryConfig)
where
    T: clickhouse::Row + Serialize,
    for<'a> T: clickhouse::RowWrite<Value<'a> = T>,
{
    if rows.is_empty() {
        return;
    }
    let batch: &Vec<T> = rows;
    let attempt = || async move {
        let started = Instant::now();
        insert_rows(client, table, batch).await.map(|()| started.elapsed())
    };
    let inserted = attempt
        .retry(retry.backoff())
        .notify(|error, retry_in| InsertFailed { table, rows: batch.len(), error, retry_in }.emit(metrics))
        .await;
    // The backoff has no attempt limit: an error here cannot happen, but it
    // must not drop rows either, so they stay for the next flush.
    if let Ok(duration) = inserted {
        BatchInserted { table, rows: rows.len(), duration }.emit(metrics);
        rows.clear();
    }
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

pub async fn run(config: &MeterConfig, metrics: SinkMetrics, options: SinkOptions) -> Result<(), SinkError> {
    let client = crate::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let table = "aggregates";
    let consumer: StreamConsumer = meter_kafka::consumer(&config.kafka, &config.sink.group_id)?;
    let t = &config.topics;
    // Aggregates, late events, and every kind's events for the drill-down tables.
    let mut topics = vec![t.aggregates.as_str(), t.late_events.as_str()];
    topics.extend(EventKind::ALL.map(|kind| t.event(kind)));
    consumer.subscribe(&topics)?;
    // Some brokers (Tansu 0.6) keep a dead member's partitions: rejoin as the aggregator does.
    let mut stall = meter_kafka::StallWatch::new(Duration::from_secs(config.aggregator.stalled_partition_seconds.max(1)));
    let mut details = DetailBatch::default();
    let dead_letters = DeadLetters::new(config)?;
    let flush_every = Duration::from_millis(config.sink.flush_interval_ms.max(10));
    let calendar = config.calendar();
    // The aggregator's rule, so that a refused event never shows as counted.
    let limits = meter_model::Limits {
        max_clock_skew: chrono::Duration::seconds(i64::try_from(config.aggregator.max_clock_skew_seconds).unwrap_or(i64::MAX / 1000)),
    };
    let retry = &config.retry;
    let mut batch: Vec<AggregateRow> = Vec::new();
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    let mut batch_started = Instant::now();
    let mut last_input = Instant::now();
    let mut behind_since: Option<Instant> = None;
    tracing::info!(database = %config.clickhouse.database, table, topic = %config.topics.aggregates, "ClickHouse sink started");
    loop {
        let wait = flush_every.saturating_sub(batch_started.elapsed()).max(Duration::from_millis(10));
        let received = tokio::select! {
            r = tokio::time::timeout(wait, consumer.recv()) => r,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: writing the last batch and stopping");
                write_and_commit(&client, table, &consumer, &metrics, &mut batch, &mut details, &mut positions, retry).await?;
                return Ok(());
            }
        };
        match received {
            Ok(Ok(message)) => {
                last_input = Instant::now();
                behind_since = None;
                if batch.is_empty() && positions.is_empty() {
                    batch_started = Instant::now();
                }
                let payload = message.payload().unwrap_or_default();
                let topic = message.topic();
                if topic == config.topics.aggregates {
                    let row = EventCodec::decode::<Aggregate>(payload)
                        .map_err(|e| ("avro_decode", e.to_string()))
                        .and_then(|a| AggregateRow::from_aggregate(&a).map_err(|e| ("out_of_range", e.to_string())));
                    match row {
                        Ok(row) => batch.push(row),
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
                    // the aggregator's dead letters, not rows; control records
                    // are not events.
                    let (kind, accounting) = if topic == config.topics.late_events {
                        let source = header(&message, "meter.source_topic").unwrap_or_default();
                        (meter_kafka::kind_of_topic(&config.topics, &source), Accounting::Late)
                    } else {
                        (meter_kafka::kind_of_topic(&config.topics, topic), Accounting::Counted)
                    };
                    let control = meter_kafka::is_control(&message);
                    if let Some(event) =
                        kind.filter(|_| !control).and_then(|k| EventCodec::decode_event(k, payload).ok()).filter(|e| e.validate_with(&limits).is_ok())
                    {
                        details.push(&event, calendar.zone(&event.header().tenant), accounting);
                    }
                }
                positions.insert((message.topic().to_string(), message.partition()), message.offset() + 1);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error; retrying"),
            Err(_elapsed) => {}
        }
        if batch.len() + details.len() >= config.sink.batch_rows || (!positions.is_empty() && batch_started.elapsed() >= flush_every) {
            write_and_commit(&client, table, &consumer, &metrics, &mut batch, &mut details, &mut positions, retry).await?;
            batch_started = Instant::now();
        }
        if stall.due() && tokio::task::block_in_place(|| stall.orphaned_partitions(&consumer, &topics)) {
            tracing::warn!("rejoining the consumer group so the broker reassigns stalled partitions");
            write_and_commit(&client, table, &consumer, &metrics, &mut batch, &mut details, &mut positions, retry).await?;
            batch_started = Instant::now();
            consumer.unsubscribe();
            consumer.subscribe(&topics)?;
        }
        if let Some(idle) = options.until_idle {
            let assigned = consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
            if !assigned {
                last_input = Instant::now(); // idle counts from the assignment on
            } else if positions.is_empty() && last_input.elapsed() >= idle {
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

#[allow(clippy::too_many_arguments)]
async fn write_and_commit(
    client: &clickhouse::Client,
    table: &str,
    consumer: &StreamConsumer,
    metrics: &SinkMetrics,
    batch: &mut Vec<AggregateRow>,
    details: &mut DetailBatch,
    positions: &mut HashMap<(String, i32), i64>,
    retry: &RetryConfig,
) -> Result<(), SinkError> {
    insert_with_retry(client, table, batch, metrics, retry).await;
    insert_with_retry(client, EventKind::TicketTime.spec().detail_table, &mut details.tickets, metrics, retry).await;
    insert_with_retry(client, EventKind::CheckResult.spec().detail_table, &mut details.checks, metrics, retry).await;
    insert_with_retry(client, EventKind::VmUsage.spec().detail_table, &mut details.vms, metrics, retry).await;
    if !positions.is_empty() {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in positions.iter() {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        consumer.commit(&list, CommitMode::Sync)?;
        positions.clear();
    }
    Ok(())
}
