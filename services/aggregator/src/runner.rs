//! Drives the engine from Kafka.
//!
//! Per input partition, in this order: apply messages; at each flush, produce
//! the changed aggregates and wait for the broker's acks; then write the
//! partition's checkpoint (state + next offset); then commit that offset to
//! the group. A crash anywhere replays from the last checkpoint, which
//! re-emits identical revisions: nothing is lost, nothing counts twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::try_join_all;
use meter_config::MeterConfig;
use meter_kafka::{kind_of_topic, DeadLetters, KafkaError};
use meter_model::{DeadLetter, EventCodec, EventKind, Period};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::engine::{EngineSettings, Outcome, PartitionState};
use crate::pricing::PriceBook;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("Kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// How often the consumer-lag gauge is refreshed (one request per partition).
const LAG_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AggregatorMetrics {
    consumed: IntCounterVec,
    duplicates: IntCounterVec,
    late: IntCounterVec,
    dead_lettered: IntCounterVec,
    emitted: IntCounterVec,
    produce_errors: IntCounterVec,
    open_aggregates: IntGauge,
    watermark: IntGaugeVec,
    /// Business metric: check runs counted, per tenant and status (OK, KO,
    /// MISSED...). Tenants are a bounded, configured set.
    tenant_check_runs: IntCounterVec,
    consumer_lag: IntGaugeVec,
}

impl AggregatorMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let open_aggregates = IntGauge::new("meter_aggregator_window_state_aggregates", "Open aggregates held in memory.")?;
        registry.register(Box::new(open_aggregates.clone()))?;
        let watermark = IntGaugeVec::new(
            Opts::new("meter_aggregator_watermark_timestamp_seconds", "Watermark (highest event time) per input partition."),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(watermark.clone()))?;
        Ok(AggregatorMetrics {
            consumed: counter("meter_aggregator_events_consumed_total", "Input messages consumed.", &["kind"])?,
            duplicates: counter("meter_aggregator_duplicates_dropped_total", "Events dropped as duplicates.", &["kind"])?,
            late: counter("meter_aggregator_events_late_total", "Events past the allowed lateness, sent to the late-events topic.", &["kind", "reason"])?,
            dead_lettered: counter("meter_aggregator_events_dead_lettered_total", "Events sent to the dead-letter topic.", &["kind", "reason"])?,
            emitted: counter("meter_aggregator_aggregates_emitted_total", "Aggregate revisions acknowledged on the aggregate topic.", &["kind"])?,
            produce_errors: counter("meter_aggregator_produce_errors_total", "Failed produce attempts to output topics.", &["topic"])?,
            open_aggregates,
            watermark,
            tenant_check_runs: counter(
                "meter_tenant_check_runs_total",
                "Supervision check runs counted, per tenant and status (OK, WARNING, KO, UNKNOWN, MISSED).",
                &["tenant", "status"],
            )?,
            consumer_lag: {
                let g = IntGaugeVec::new(
                    Opts::new("meter_aggregator_consumer_lag_messages", "Messages between the partition's end and the next offset to apply."),
                    &["topic", "partition"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
        })
    }
}

/// Collects revoked partitions so the loop drops their (now foreign) state.
#[derive(Clone, Default)]
struct RebalanceWatch {
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
}

impl ClientContext for RebalanceWatch {}

impl ConsumerContext for RebalanceWatch {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let parts: Vec<String> = list.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            tracing::info!(count = list.count(), "partitions revoked");
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(list.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
            }
        }
    }
}

pub struct RunOptions {
    /// Stop after this long without input once everything is flushed (batch
    /// runs and tests); None runs until Ctrl-C.
    pub until_idle: Option<Duration>,
}

pub fn settings_from(config: &MeterConfig) -> EngineSettings {
    let zones = config.clone();
    EngineSettings {
        periods: Period::ALL.to_vec(),
        allowed_lateness: chrono::Duration::seconds(config.aggregator.allowed_lateness_seconds as i64),
        dedup_horizon: chrono::Duration::days(i64::from(config.aggregator.dedup_horizon_days)),
        zone_of: Box::new(move |tenant| zones.time_zone_of(tenant)),
    }
}

struct Partition {
    state: PartitionState,
    /// Offset already checkpointed and committed.
    saved_offset: i64,
    last_input: Instant,
    /// The watermark moved since the last checkpoint (idle rule).
    watermark_moved: bool,
    /// Offset last committed to the group by this instance.
    committed: Option<i64>,
}

pub async fn run(config: &MeterConfig, book: PriceBook, metrics: AggregatorMetrics, options: RunOptions) -> Result<(), RunError> {
    let settings = settings_from(config);
    let store = CheckpointStore::new(&config.aggregator.state_dir)?;
    let watch = RebalanceWatch::default();
    let consumer: StreamConsumer<RebalanceWatch> =
        meter_kafka::consumer_with_context(&config.kafka, &config.aggregator.group_id, watch.clone())?;
    let topics: Vec<&str> = EventKind::ALL.iter().map(|k| meter_kafka::event_topic(&config.topics, *k)).collect();
    consumer.subscribe(&topics)?;
    let producer = meter_kafka::producer(&config.kafka)?;
    let dead_letters = DeadLetters::with_producer(producer.clone(), config.topics.dead_letters.clone());
    let flush_every = Duration::from_millis(config.aggregator.flush_interval_ms.max(10));
    let mut partitions: HashMap<(String, i32), Partition> = HashMap::new();
    let mut last_flush = Instant::now();
    let mut last_input = Instant::now();
    let mut last_lag = Instant::now();
    let mut stall = StallWatch::new(Duration::from_secs(config.aggregator.stalled_partition_seconds.max(1)));
    tracing::info!(group = %config.aggregator.group_id, ?topics, state_dir = %config.aggregator.state_dir.display(), "aggregator started");

    loop {
        let received = tokio::select! {
            r = tokio::time::timeout(flush_every, consumer.recv()) => r,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: flushing and stopping");
                flush(config, &book, &settings, &store, &consumer, &producer, &metrics, &mut partitions).await?;
                return Ok(());
            }
        };
        // Forget partitions this instance no longer owns: their next owner
        // resumes from the checkpoint, and unflushed work is redone there.
        if let Ok(mut revoked) = watch.revoked.lock() {
            for key in revoked.drain(..) {
                if partitions.remove(&key).is_some() {
                    tracing::info!(topic = %key.0, partition = key.1, "partition revoked");
                }
            }
        }
        match received {
            Ok(Ok(message)) => {
                last_input = Instant::now();
                let topic = message.topic().to_string();
                let partition_id = message.partition();
                let offset = message.offset();
                let key = (topic.clone(), partition_id);
                if !partitions.contains_key(&key) {
                    let state = store.load(&topic, partition_id)?;
                    tracing::info!(%topic, partition = partition_id, resume_offset = state.next_offset, "partition assigned");
                    let saved_offset = state.next_offset;
                    partitions.insert(key.clone(), Partition { state, saved_offset, last_input: Instant::now(), watermark_moved: false, committed: None });
                }
                let Some(partition) = partitions.get_mut(&key) else { continue };
                partition.last_input = Instant::now();
                if offset < partition.state.next_offset {
                    continue; // already in the checkpointed state
                }
                let Some(kind) = kind_of_topic(&config.topics, &topic) else { continue };
                metrics.consumed.with_label_values(&[kind.slug()]).inc();
                let payload = message.payload().unwrap_or_default();
                let letter = |error_kind: &str, error: String| DeadLetter {
                    component: "aggregator".into(),
                    error_kind: error_kind.into(),
                    error,
                    original: payload.to_vec(),
                    event_kind: Some(kind.slug().into()),
                    source_file: None,
                    source_line: None,
                    source_topic: Some(topic.clone()),
                    source_partition: Some(partition_id),
                    source_offset: Some(offset),
                    failed_at: meter_model::codec::to_millis(Utc::now()),
                };
                let event = match EventCodec::decode_event(kind, payload) {
                    Ok(event) => event,
                    Err(e) => {
                        dead_letters.send(&letter("avro_decode", e.to_string())).await?;
                        metrics.dead_lettered.with_label_values(&[kind.slug(), "avro_decode"]).inc();
                        partition.state.skip(offset);
                        continue;
                    }
                };
                if let Err(e) = event.validate() {
                    dead_letters.send(&letter("invalid_event", e.to_string())).await?;
                    metrics.dead_lettered.with_label_values(&[kind.slug(), "invalid_event"]).inc();
                    partition.state.skip(offset);
                    continue;
                }
                match partition.state.apply(offset, &event, &settings, &book) {
                    Outcome::Counted => {
                        if let meter_model::Event::CheckResult(c) = &event {
                            metrics.tenant_check_runs.with_label_values(&[&c.header.tenant, c.status.avro_symbol()]).inc();
                        }
                    }
                    Outcome::Duplicate => metrics.duplicates.with_label_values(&[kind.slug()]).inc(),
                    Outcome::Late { reason } => {
                        send_late(config, &producer, &topic, partition_id, offset, reason, &event.header().tenant, payload).await?;
                        metrics.late.with_label_values(&[kind.slug(), reason]).inc();
                    }
                    Outcome::Unrated(e) => {
                        dead_letters.send(&letter("unrated", e.to_string())).await?;
                        metrics.dead_lettered.with_label_values(&[kind.slug(), "unrated"]).inc();
                    }
                }
                if let Some(w) = partition.state.watermark {
                    metrics.watermark.with_label_values(&[&topic, &partition_id.to_string()]).set(w.timestamp());
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error; retrying"),
            Err(_elapsed) => {}
        }
        if stall.due() && tokio::task::block_in_place(|| stall.orphaned_partitions(&consumer, &topics)) {
            tracing::warn!("rejoining the consumer group so the broker reassigns stalled partitions");
            flush(config, &book, &settings, &store, &consumer, &producer, &metrics, &mut partitions).await?;
            partitions.clear();
            consumer.unsubscribe();
            consumer.subscribe(&topics)?;
        }
        if last_flush.elapsed() >= flush_every {
            flush(config, &book, &settings, &store, &consumer, &producer, &metrics, &mut partitions).await?;
            last_flush = Instant::now();
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                tokio::task::block_in_place(|| {
                    for ((topic, partition_id), partition) in &partitions {
                        if let Ok((_, high)) = consumer.fetch_watermarks(topic, *partition_id, Duration::from_secs(1)) {
                            let lag = (high - partition.state.next_offset).max(0);
                            metrics.consumer_lag.with_label_values(&[topic, &partition_id.to_string()]).set(lag);
                        }
                    }
                });
            }
            if let Some(idle) = options.until_idle {
                let assigned = consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
                if !assigned {
                    last_input = Instant::now(); // idle counts from the assignment on
                } else if last_input.elapsed() >= idle {
                    tracing::info!("no input for {idle:?}: everything flushed, stopping");
                    return Ok(());
                }
            }
        }
    }
}

/// Watches the partitions of the group's topics that this instance does not
/// own: lag that does not shrink for `threshold` means nobody processes them.
struct StallWatch {
    threshold: Duration,
    last_check: Instant,
    /// (topic, partition) -> (committed offset, end offset, since when unchanged)
    seen: HashMap<(String, i32), (i64, i64, Instant)>,
}

impl StallWatch {
    fn new(threshold: Duration) -> Self {
        StallWatch { threshold, last_check: Instant::now(), seen: HashMap::new() }
    }

    fn due(&mut self) -> bool {
        if self.last_check.elapsed() >= self.threshold / 2 {
            self.last_check = Instant::now();
            return true;
        }
        false
    }

    /// True when some partition not assigned here has had lag and no
    /// committed progress for the threshold. Blocking: broker round trips.
    fn orphaned_partitions(&mut self, consumer: &StreamConsumer<RebalanceWatch>, topics: &[&str]) -> bool {
        let timeout = Duration::from_secs(5);
        let Ok(assigned) = consumer.assignment() else { return false };
        let mut list = TopicPartitionList::new();
        for topic in topics {
            let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else { return false };
            for t in metadata.topics() {
                for p in t.partitions() {
                    if assigned.find_partition(topic, p.id()).is_none() {
                        list.add_partition(topic, p.id());
                    }
                }
            }
        }
        if list.count() == 0 {
            self.seen.clear();
            return false;
        }
        let Ok(committed) = consumer.committed_offsets(list.clone(), timeout) else { return false };
        let now = Instant::now();
        let mut stalled = Vec::new();
        for element in list.elements() {
            let (topic, partition) = (element.topic().to_string(), element.partition());
            let Ok((low, high)) = consumer.fetch_watermarks(&topic, partition, timeout) else { continue };
            let done = match committed.find_partition(&topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            if done >= high {
                self.seen.remove(&(topic, partition));
                continue;
            }
            let entry = self.seen.entry((topic.clone(), partition)).or_insert((done, high, now));
            if entry.0 != done {
                *entry = (done, high, now);
            } else if now.duration_since(entry.2) >= self.threshold {
                stalled.push(format!("{topic}/{partition} (committed {done}, end {high})"));
            }
        }
        if stalled.is_empty() {
            return false;
        }
        tracing::warn!(partitions = ?stalled, "partitions with lag and no progress, owned by no live instance");
        self.seen.clear();
        true
    }
}

async fn send_late(
    config: &MeterConfig,
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    offset: i64,
    reason: &str,
    tenant: &str,
    payload: &[u8],
) -> Result<(), KafkaError> {
    // The original Avro bytes, so `meter reprocess` can decode them as events;
    // where they came from and why rides in the headers.
    let partition_text = partition.to_string();
    let offset_text = offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "meter.reason", value: Some(reason) })
        .insert(Header { key: "meter.source_topic", value: Some(topic) })
        .insert(Header { key: "meter.source_partition", value: Some(&partition_text) })
        .insert(Header { key: "meter.source_offset", value: Some(&offset_text) });
    let record = FutureRecord::to(&config.topics.late_events).key(tenant).payload(payload).headers(headers);
    producer
        .send(record, Duration::from_secs(120))
        .await
        .map(|_| ())
        .map_err(|(source, _)| KafkaError::Publish { topic: config.topics.late_events.clone(), source })
}

#[allow(clippy::too_many_arguments)]
async fn flush(
    config: &MeterConfig,
    book: &PriceBook,
    settings: &EngineSettings,
    store: &CheckpointStore,
    consumer: &StreamConsumer<RebalanceWatch>,
    producer: &FutureProducer,
    metrics: &AggregatorMetrics,
    partitions: &mut HashMap<(String, i32), Partition>,
) -> Result<(), RunError> {
    let now = Utc::now();
    let idle = Duration::from_secs(config.aggregator.idle_partition_seconds);
    let mut commits = TopicPartitionList::new();
    for ((topic, partition_id), partition) in partitions.iter_mut() {
        if partition.last_input.elapsed() >= idle {
            let to = now - chrono::Duration::from_std(idle).unwrap_or_default();
            if partition.state.advance_watermark(to) {
                partition.watermark_moved = true;
                tracing::info!(%topic, partition = partition_id, watermark = %to, "idle partition: watermark moved");
            }
        }
        let unchanged =
            partition.state.next_offset == partition.saved_offset && !partition.state.has_pending() && !partition.watermark_moved;
        if unchanged {
            // A partition taken over at its checkpoint still gets its offset
            // committed, so the group's lag reflects the checkpoint.
            if partition.committed != Some(partition.saved_offset) {
                commits.add_partition_offset(topic, *partition_id, Offset::Offset(partition.saved_offset))?;
                partition.committed = Some(partition.saved_offset);
            }
            continue;
        }
        let emissions = partition.state.take_emissions(settings, book, now);
        let mut sends = Vec::with_capacity(emissions.len());
        for aggregate in &emissions {
            let payload = EventCodec::encode(aggregate).map_err(KafkaError::from)?;
            let key = aggregate.aggregate_id.clone();
            let topic = config.topics.aggregates.clone();
            let kind = aggregate.kind;
            sends.push(async move {
                let result = meter_kafka::publish(producer, &topic, &key, &payload).await;
                if result.is_err() {
                    metrics.produce_errors.with_label_values(&[&topic]).inc();
                }
                result.map(|_| kind)
            });
        }
        for kind in try_join_all(sends).await? {
            metrics.emitted.with_label_values(&[kind.slug()]).inc();
        }
        store.save(topic, *partition_id, &partition.state)?;
        partition.saved_offset = partition.state.next_offset;
        partition.watermark_moved = false;
        commits.add_partition_offset(topic, *partition_id, Offset::Offset(partition.state.next_offset))?;
        partition.committed = Some(partition.state.next_offset);
        let tenants: std::collections::BTreeSet<&str> = emissions.iter().map(|a| a.tenant.as_str()).collect();
        tracing::info!(%topic, partition = partition_id, ?tenants, emitted = emissions.len(), next_offset = partition.state.next_offset,
            open_aggregates = partition.state.aggregates.len(), "flushed");
    }
    if commits.count() > 0 {
        // Informational for lag monitoring: the checkpoint is the source of truth.
        if let Err(e) = consumer.commit(&commits, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; the checkpoint still holds the position");
        }
    }
    metrics.open_aggregates.set(partitions.values().map(|p| p.state.aggregates.len() as i64).sum());
    Ok(())
}
