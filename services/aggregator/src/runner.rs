//! Drives the engine from Kafka.
//!
//! Per input partition, in this order: apply messages; at each flush, produce
//! the changed aggregates and wait for the broker's acks; then write the
//! partition's checkpoint (state + next offset); then commit that offset to
//! the group. A crash anywhere replays from the last checkpoint, which
//! re-emits identical revisions: nothing is lost, nothing counts twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use meter_config::MeterConfig;
use meter_kafka::{Deliveries, DeadLetters, KafkaError};
use meter_model::{Aggregate, DeadLetter, EventCodec, EventKind, PeriodAction, PeriodControl};
use meter_telemetry::InternalEvent;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::checkpoint::{CheckpointError, CheckpointStore, PartitionCheckpoint};
use crate::engine::{EngineSettings, Outcome, PartitionState};
use crate::internal_events::{
    AggregateEmitted, Change, CheckRunCounted, ClockRecordWritten, ControlRecordApplied, DeadLetterReason, DuplicateDropped, EventApplied,
    EventDeadLettered, EventLate, Position, ProduceFailed, RecordConsumed,
};
use crate::poison::{Attempt, InFlight};
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
    #[error(transparent)]
    Behind(#[from] StillBehind),
}

/// How often the consumer-lag gauge is refreshed (one request per partition).
const LAG_EVERY: Duration = Duration::from_secs(1);
/// A partition this many records behind its end (as of the last
/// statistics) means the aggregator is catching up: it then flushes every
/// `aggregator.catch_up_flush_interval_ms`, since each flush costs the same
/// whatever it carries, and nobody waits on a revision of a backlog.
const CATCH_UP_LAG: i64 = 20_000;

pub use crate::internal_events::AggregatorMetrics;

/// Collects revoked partitions so the loop drops their (now foreign) state.
#[derive(Clone, Default)]
struct RebalanceWatch {
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
    /// Set with `revoked`, read on every record (a lock per record is not free).
    any_revoked: Arc<AtomicBool>,
    /// Each partition's end offset, from librdkafka's statistics (no broker
    /// round trip: a slow ListOffsets must never stall the loop).
    ends: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl ClientContext for RebalanceWatch {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Ok(mut ends) = self.ends.lock() {
            for (name, topic) in statistics.topics {
                for (id, partition) in topic.partitions {
                    if id >= 0 && partition.hi_offset >= 0 {
                        ends.insert((name.clone(), id), partition.hi_offset);
                    }
                }
            }
        }
    }
}

impl RebalanceWatch {
    fn has_revocations(&self) -> bool {
        self.any_revoked.load(Ordering::Acquire)
    }

    fn take_revoked(&self) -> Vec<(String, i32)> {
        self.any_revoked.store(false, Ordering::Release);
        self.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }
}

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
                self.any_revoked.store(true, Ordering::Release);
            }
        }
    }
}

pub struct RunOptions {
    /// Stop after this long without input once everything is flushed and no
    /// partition of the input topics has lag (batch runs and tests); None
    /// runs until Ctrl-C.
    pub until_idle: Option<Duration>,
}

pub fn settings_from(config: &MeterConfig) -> EngineSettings {
    EngineSettings::from_config(config)
}

struct Partition {
    topic: String,
    id: i32,
    state: PartitionState,
    /// Offset already checkpointed and committed.
    saved_offset: i64,
    /// Offset last committed to the group by this instance.
    committed: Option<i64>,
    /// Set after a seek to the checkpoint: records before the expected
    /// offset are ignored until it arrives.
    sought_at: Option<Instant>,
    /// When this instance last wrote a clock record into the partition.
    clock_written: Option<Instant>,
    /// This instance's ownership epoch of the partition's checkpoint.
    epoch: u64,
    /// The record being processed, for the next start if this one dies on it.
    inflight: Option<InFlight>,
    /// Where the partition's state is saved.
    checkpoint: PartitionCheckpoint,
    /// The record being applied, decoded over the previous one (no
    /// allocation per event once its strings have grown).
    event: meter_model::Event,
}

/// Why the aggregator stopped without being asked to.
#[derive(Debug, thiserror::Error)]
#[error("partitions still behind after {waited:?} idle: {behind:?} (another member may still own them; run again, or check `meter stack status`)")]
pub struct StillBehind {
    pub waited: Duration,
    pub behind: Vec<String>,
}

/// Input partitions by (kind, partition number): no topic string is built
/// per record.
type Partitions = HashMap<(EventKind, i32), Partition>;

/// Records between two looks at the clock (flush, stalls, idleness).
const RECORDS_PER_CLOCK_CHECK: u32 = 64;

pub async fn run(config: &MeterConfig, book: PriceBook, metrics: AggregatorMetrics, options: RunOptions) -> Result<(), RunError> {
    let settings = settings_from(config);
    let store = CheckpointStore::new(&config.aggregator.state_dir)?;
    let watch = RebalanceWatch::default();
    let consumer: StreamConsumer<RebalanceWatch> =
        meter_kafka::consumer_with_context(&with_statistics(&config.kafka), &config.aggregator.group_id, config.aggregator.fetch_wait_max_ms, watch.clone())?;
    let topics: Vec<&str> = EventKind::ALL.iter().map(|k| config.topics.event(*k)).collect();
    consumer.subscribe(&topics)?;
    let producer = meter_kafka::producer(&config.kafka)?;
    let dead_letters = DeadLetters::with_producer(producer.clone(), config.topics.dead_letters.clone());
    let flush_every = Duration::from_millis(config.aggregator.flush_interval_ms.max(10));
    let catch_up_every = Duration::from_millis(config.aggregator.catch_up_flush_interval_ms).max(flush_every);
    // A start usually has a backlog; the first statistics (within a second) tell.
    let mut catching_up = true;
    let clock_every = Duration::from_secs(config.aggregator.clock_record_seconds.max(1));
    let mut partitions: Partitions = HashMap::new();
    // Late events and dead letters produced since the last flush: acknowledged before it checkpoints.
    let mut deliveries = Deliveries::default();
    let mut last_flush = Instant::now();
    let mut last_input = Instant::now();
    let mut last_lag = Instant::now();
    let mut behind_since: Option<Instant> = None;
    let mut stall = meter_kafka::StallWatch::new(Duration::from_secs(config.aggregator.stalled_partition_seconds.max(1)));
    // One future for the whole run (a signal listener per record costs more than the record).
    let mut shutdown = std::pin::pin!(tokio::signal::ctrl_c());
    // Wakes the loop when no record comes, so silent partitions still flush and close.
    let mut idle_tick = tokio::time::interval(flush_every);
    idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut records_since_check = 0u32;
    // One stream for the run: `recv()` registers and drops a waker slot (two
    // lock round trips) per record.
    let mut stream = consumer.stream();
    tracing::info!(group = %config.aggregator.group_id, ?topics, state_dir = %config.aggregator.state_dir.display(), "aggregator started");

    loop {
        let received = tokio::select! {
            biased;
            _ = &mut shutdown => {
                tracing::info!("interrupted: flushing and stopping");
                flush(config, &book, &consumer, &producer, &metrics, &mut partitions, &mut deliveries).await?;
                return finish_checkpoints(&mut partitions);
            }
            // The stream never ends (None would count as an idle tick).
            r = stream.next() => r,
            _ = idle_tick.tick() => None,
        };
        // Forget partitions this instance no longer owns: their next owner
        // resumes from the checkpoint, and unflushed work is redone there.
        if watch.has_revocations() {
            for (topic, partition) in watch.take_revoked() {
                let Some(kind) = config.topics.kind_of(&topic) else { continue };
                if partitions.remove(&(kind, partition)).is_some() {
                    tracing::info!(%topic, partition, "partition revoked");
                }
            }
        }
        let idle = received.is_none();
        match received {
            Some(Ok(message)) => {
                records_since_check += 1;
                let Some(kind) = config.topics.kind_of(message.topic()) else { continue };
                let partition_id = message.partition();
                if !partitions.contains_key(&(kind, partition_id)) {
                    take_partition(&store, &consumer, &mut partitions, kind, message.topic(), partition_id)?;
                }
                let Some(partition) = partitions.get_mut(&(kind, partition_id)) else { continue };
                apply_record(config, &settings, &book, &metrics, &dead_letters, &producer, &mut deliveries, &consumer, partition, kind, &message).await?;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error; retrying"),
            None => {}
        }
        if !idle && records_since_check < RECORDS_PER_CLOCK_CHECK {
            continue;
        }
        records_since_check = 0;
        metrics.flush_per_record();
        let now = Instant::now();
        if !idle {
            last_input = now;
        }
        if stall.due() && tokio::task::block_in_place(|| stall.orphaned_partitions(&consumer, &topics)) {
            tracing::warn!("rejoining the consumer group so the broker reassigns stalled partitions");
            flush(config, &book, &consumer, &producer, &metrics, &mut partitions, &mut deliveries).await?;
            partitions.clear();
            consumer.unsubscribe();
            consumer.subscribe(&topics)?;
        }
        if now.duration_since(last_flush) < if catching_up { catch_up_every } else { flush_every } {
            continue;
        }
        // Partitions assigned but silent still close their periods.
        if let Ok(assignment) = consumer.assignment() {
            for element in assignment.elements() {
                let Some(kind) = config.topics.kind_of(element.topic()) else { continue };
                if !partitions.contains_key(&(kind, element.partition())) {
                    take_partition(&store, &consumer, &mut partitions, kind, element.topic(), element.partition())?;
                }
            }
        }
        write_clock_records(&producer, &settings, clock_every, &metrics, &mut partitions).await?;
        flush(config, &book, &consumer, &producer, &metrics, &mut partitions, &mut deliveries).await?;
        last_flush = Instant::now();
        if last_lag.elapsed() >= LAG_EVERY {
            last_lag = Instant::now();
            if let Ok(ends) = watch.ends.lock() {
                let was_catching_up = std::mem::replace(&mut catching_up, false);
                for partition in partitions.values() {
                    if let Some(high) = ends.get(&(partition.topic.clone(), partition.id)) {
                        let lag = (high - partition.state.next_offset).max(0);
                        catching_up |= lag > CATCH_UP_LAG;
                        metrics.consumer_lag.with_label_values(&[&partition.topic, &partition.id.to_string()]).set(lag);
                    }
                }
                if catching_up != was_catching_up {
                    let flush_interval_ms = if catching_up { catch_up_every } else { flush_every }.as_millis() as u64;
                    tracing::info!(catching_up, flush_interval_ms, "flush interval changed (a partition is more than {CATCH_UP_LAG} records behind, or none is)");
                }
            }
        }
        if let Some(idle) = options.until_idle {
            let assigned = consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
            if !assigned {
                last_input = Instant::now(); // idle counts from the assignment on
            } else if last_input.elapsed() >= idle {
                // Idle here is not done: every partition of the input
                // topics must be consumed, by this instance or another.
                let behind = tokio::task::block_in_place(|| partitions_behind(&consumer, &topics, &partitions));
                if behind.is_empty() {
                    tracing::info!("no input for {idle:?} and no lag: everything flushed, stopping");
                    return finish_checkpoints(&mut partitions);
                }
                let since = *behind_since.get_or_insert_with(Instant::now);
                let patience = idle.max(Duration::from_secs(60)) * 3;
                if since.elapsed() >= patience {
                    return Err(RunError::Behind(StillBehind { waited: since.elapsed(), behind }));
                }
                tracing::info!(?behind, "idle, but partitions still have lag: waiting");
            } else {
                behind_since = None;
            }
        }
    }
}

/// Applies one input record to its partition's state, and reports it.
#[allow(clippy::too_many_arguments)]
async fn apply_record(
    config: &MeterConfig,
    settings: &EngineSettings,
    book: &PriceBook,
    metrics: &AggregatorMetrics,
    dead_letters: &DeadLetters,
    producer: &FutureProducer,
    deliveries: &mut Deliveries,
    consumer: &StreamConsumer<RebalanceWatch>,
    partition: &mut Partition,
    kind: EventKind,
    message: &BorrowedMessage<'_>,
) -> Result<(), RunError> {
    let offset = message.offset();
    let expected = partition.state.next_offset;
    if offset < expected {
        return Ok(()); // already in the checkpointed state
    }
    let topic = partition.topic.as_str();
    let partition_id = partition.id;
    if offset > expected {
        // Not the record the state continues from (the consumer's
        // position was ahead of the checkpoint): go back to it.
        if partition.sought_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            tracing::warn!(%topic, partition = partition_id, offset, expected, "record ahead of the checkpoint: seeking back");
            seek(consumer, topic, partition_id, expected);
            partition.sought_at = Some(Instant::now());
        }
        return Ok(());
    }
    partition.sought_at = None;
    let payload = message.payload().unwrap_or_default();
    let at = message.timestamp().to_millis().and_then(chrono::DateTime::from_timestamp_millis).unwrap_or_default();
    let control = meter_kafka::is_control(message);
    let position = Position { topic, partition: partition_id, offset };
    let letter = |reason: DeadLetterReason, error: &str| {
        DeadLetter::from_topic_position("aggregator", topic, partition_id, offset, reason.as_str(), error.to_string(), payload).of_kind(kind)
    };
    // A record that makes processing panic is dead-lettered, not
    // retried forever (the engine computes before it mutates).
    let attempt = partition.inflight.as_mut().map_or(Attempt::Process, |f| f.begin(offset));
    let processed = match attempt {
        Attempt::SetAside { attempts } => {
            partition.state.skip(offset);
            Processed::Refused(DeadLetterReason::ProcessingAborted, format!("processing this record ended the aggregator {attempts} times"))
        }
        Attempt::Process => {
            let (state, event) = (&mut partition.state, &mut partition.event);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(state, event, offset, at, kind, payload, control, settings, book)));
            result.unwrap_or_else(|_| {
                partition.state.skip(offset);
                Processed::Refused(DeadLetterReason::ProcessingPanic, "processing this record panicked".into())
            })
        }
    };
    if let Some(f) = partition.inflight.as_mut() {
        f.end(offset);
    }
    RecordConsumed { kind }.emit(metrics);
    match processed {
        Processed::Outcome(outcome) => {
            let event = &partition.event;
            let header = event.header();
            let (tenant, event_id) = (header.tenant.as_str(), header.event_id.as_str());
            let change = match outcome {
                Outcome::Counted => Some(Change::Counted),
                Outcome::Corrected => Some(Change::Corrected),
                Outcome::Retracted => Some(Change::Retracted),
                _ => None,
            };
            match outcome {
                Outcome::Counted | Outcome::Corrected | Outcome::Retracted => {
                    if let Some(change) = change {
                        EventApplied { kind, change, tenant, event_id }.emit(metrics);
                    }
                    if let meter_model::Event::CheckResult(c) = event {
                        let tenant_label = tenant_label(&settings.calendar, tenant);
                        CheckRunCounted { tenant_label, status: c.status.avro_symbol() }.emit(metrics);
                    }
                }
                Outcome::Duplicate => DuplicateDropped { kind, tenant, event_id }.emit(metrics),
                Outcome::Late(reason) => {
                    send_late(config, producer, deliveries, topic, partition_id, offset, reason.label(), tenant, payload).await?;
                    EventLate { kind, reason, tenant, at: position }.emit(metrics);
                }
                Outcome::Refused(refusal) => {
                    let (reason, error) = (DeadLetterReason::from(&refusal), refusal.to_string());
                    dead_letters.enqueue(&letter(reason, &error), deliveries).await?;
                    EventDeadLettered { kind, reason, error: &error, at: position }.emit(metrics);
                }
                Outcome::Control => {}
            }
        }
        Processed::Control => ControlRecordApplied { kind }.emit(metrics),
        Processed::Refused(reason, error) => {
            dead_letters.enqueue(&letter(reason, &error), deliveries).await?;
            EventDeadLettered { kind, reason, error: &error, at: position }.emit(metrics);
        }
    }
    Ok(())
}

/// The aggregator's consumer reports partition end offsets every second
/// (librdkafka statistics): the lag gauge needs no request per partition.
fn with_statistics(kafka: &meter_config::KafkaConfig) -> meter_config::KafkaConfig {
    let mut kafka = kafka.clone();
    kafka.properties.entry("statistics.interval.ms".into()).or_insert_with(|| "1000".into());
    kafka
}

/// A tenant as a metric label: configured tenants by name, any other as
/// "other", so that event data cannot grow the number of series.
pub fn tenant_label<'a>(calendar: &meter_config::TenantCalendar, tenant: &'a str) -> &'a str {
    if calendar.knows(tenant) {
        tenant
    } else {
        "other"
    }
}

/// What processing one record gave.
enum Processed {
    /// The event decoded is in the partition's `event`.
    Outcome(Outcome),
    Control,
    /// (reason, error) for the dead-letter topic.
    Refused(DeadLetterReason, String),
}

#[allow(clippy::too_many_arguments)]
fn process(
    state: &mut PartitionState,
    event: &mut meter_model::Event,
    offset: i64,
    at: chrono::DateTime<Utc>,
    kind: EventKind,
    payload: &[u8],
    control: bool,
    settings: &EngineSettings,
    book: &PriceBook,
) -> Processed {
    if control {
        return match EventCodec::decode::<PeriodControl>(payload) {
            Ok(c) => {
                state.apply_control(offset, &c, settings, book);
                Processed::Control
            }
            Err(e) => {
                state.skip(offset);
                Processed::Refused(DeadLetterReason::ControlDecode, e.to_string())
            }
        };
    }
    match meter_model::fast_decode::decode_event_into(kind, payload, event) {
        Ok(()) => Processed::Outcome(state.apply(offset, at, event, settings, book)),
        Err(e) => {
            state.skip(offset);
            Processed::Refused(DeadLetterReason::AvroDecode, e.to_string())
        }
    }
}

/// Loads a partition's checkpoint and moves the consumer to it: a missing
/// checkpoint rebuilds the partition from the topic's start, never from zero
/// state at the group's committed offset.
fn take_partition(
    store: &CheckpointStore,
    consumer: &StreamConsumer<RebalanceWatch>,
    partitions: &mut Partitions,
    kind: EventKind,
    topic: &str,
    partition_id: i32,
) -> Result<(), RunError> {
    let (state, checkpoint) = store.open(topic, partition_id)?;
    let epoch = store.claim(topic, partition_id)?;
    let inflight = match InFlight::open(store.dir(), topic, partition_id) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(%topic, partition = partition_id, error = %e, "no in-flight marker: a record that aborts the process would be retried forever");
            None
        }
    };
    tracing::info!(%topic, partition = partition_id, resume_offset = state.next_offset, epoch, open_events = state.open_events(), "partition taken");
    let saved_offset = state.next_offset;
    seek(consumer, topic, partition_id, saved_offset);
    partitions.insert(
        (kind, partition_id),
        Partition {
            topic: topic.to_string(),
            id: partition_id,
            state,
            saved_offset,
            committed: None,
            sought_at: Some(Instant::now()),
            clock_written: None,
            epoch,
            inflight,
            checkpoint,
            event: meter_model::fast_decode::blank_event(kind),
        },
    );
    Ok(())
}

fn seek(consumer: &StreamConsumer<RebalanceWatch>, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
        tracing::warn!(%topic, partition, offset, error = %e, "seek to the checkpoint failed; retrying on the next record");
    }
}

/// Waits for the checkpoint writes in flight (before the process stops).
fn finish_checkpoints(partitions: &mut Partitions) -> Result<(), RunError> {
    for partition in partitions.values_mut() {
        partition.checkpoint.finish()?;
    }
    Ok(())
}

/// Records the wall clock in every owned partition whose recorded clock is
/// older than `every`, or where it would close a month or a day now. The
/// records take effect when they are read back, in order with the events.
async fn write_clock_records(
    producer: &FutureProducer,
    settings: &EngineSettings,
    every: Duration,
    metrics: &AggregatorMetrics,
    partitions: &mut Partitions,
) -> Result<(), RunError> {
    let now = meter_model::codec::to_millis(Utc::now());
    for partition in partitions.values_mut() {
        let (topic, partition_id) = (&partition.topic, &partition.id);
        // One record in flight at a time per partition.
        if partition.clock_written.is_some_and(|at| at.elapsed() < every.min(Duration::from_secs(10)).max(Duration::from_secs(1))) {
            continue;
        }
        let stale = partition.state.clock.is_none_or(|c| (now - c).to_std().unwrap_or_default() >= every);
        if !stale && !partition.state.clock_record_due(now, settings) {
            continue;
        }
        let control = PeriodControl {
            action: PeriodAction::Clock,
            clock: now,
            tenant: String::new(),
            month: String::new(),
            requested_by: "aggregator".into(),
            reason: "wall clock".into(),
        };
        meter_kafka::publish_control(producer, topic, *partition_id, &control).await?;
        partition.clock_written = Some(Instant::now());
        ClockRecordWritten { topic, partition: *partition_id, clock: now }.emit(metrics);
    }
    Ok(())
}

/// Partitions of the input topics with records nobody has applied: for an
/// owned partition, past this instance's state; for another, past the
/// group's committed offset.
fn partitions_behind(consumer: &StreamConsumer<RebalanceWatch>, topics: &[&str], partitions: &Partitions) -> Vec<String> {
    let timeout = Duration::from_secs(5);
    let mut behind = Vec::new();
    let mut others = TopicPartitionList::new();
    for topic in topics {
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
            behind.push(format!("{topic} (metadata unavailable)"));
            continue;
        };
        for t in metadata.topics() {
            for p in t.partitions() {
                match partitions.values().find(|o| o.topic == *topic && o.id == p.id()) {
                    Some(owned) => match consumer.fetch_watermarks(topic, p.id(), timeout) {
                        Ok((_, high)) => {
                            if owned.state.next_offset < high || owned.saved_offset < owned.state.next_offset {
                                behind.push(format!("{topic}/{} (at {}, end {high})", p.id(), owned.state.next_offset));
                            }
                        }
                        // An end we cannot read is not an end we reached.
                        Err(e) => behind.push(format!("{topic}/{} (end unknown: {e})", p.id())),
                    },
                    None => {
                        others.add_partition(topic, p.id());
                    }
                }
            }
        }
    }
    if others.count() > 0 {
        let committed = consumer.committed_offsets(others.clone(), timeout).ok();
        for element in others.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, timeout) else { continue };
            let done = match committed.as_ref().and_then(|c| c.find_partition(topic, partition)).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            if done < high {
                behind.push(format!("{topic}/{partition} (committed {done}, end {high}, owned by another member)"));
            }
        }
    }
    behind
}

#[allow(clippy::too_many_arguments)]
async fn send_late(
    config: &MeterConfig,
    producer: &FutureProducer,
    deliveries: &mut Deliveries,
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
    deliveries.produce(producer, record).await
}

/// Emits every partition's changed aggregates, waits until the broker holds
/// them (and the late events and dead letters produced since the last
/// flush), then checkpoints each partition and commits its offset.
async fn flush(
    config: &MeterConfig,
    book: &PriceBook,
    consumer: &StreamConsumer<RebalanceWatch>,
    producer: &FutureProducer,
    metrics: &AggregatorMetrics,
    partitions: &mut Partitions,
    deliveries: &mut Deliveries,
) -> Result<(), RunError> {
    let mut commits = TopicPartitionList::new();
    let mut fenced = Vec::new();
    let mut emitted: Vec<((EventKind, i32), Vec<Aggregate>)> = Vec::new();
    for (key, partition) in partitions.iter_mut() {
        if let Some(clock) = partition.state.clock {
            metrics.watermark.with_label_values(&[&partition.topic, &partition.id.to_string()]).set(clock.timestamp());
        }
        let unchanged = partition.state.next_offset == partition.saved_offset && !partition.state.has_pending();
        if unchanged {
            // A partition taken over at its checkpoint still gets its offset
            // committed, so the group's lag reflects the checkpoint.
            if partition.committed != Some(partition.saved_offset) {
                commits.add_partition_offset(&partition.topic, partition.id, Offset::Offset(partition.saved_offset))?;
                partition.committed = Some(partition.saved_offset);
            }
            continue;
        }
        let emissions = partition.state.take_emissions(book);
        for aggregate in &emissions {
            let payload = EventCodec::encode(aggregate).map_err(KafkaError::from)?;
            let record = FutureRecord::to(&config.topics.aggregates).key(aggregate.aggregate_id.as_str()).payload(payload.as_slice());
            deliveries.produce(producer, record).await.inspect_err(|error| ProduceFailed { topic: &config.topics.aggregates, error }.emit(metrics))?;
        }
        emitted.push((*key, emissions));
    }
    // Nothing is checkpointed before the broker has everything it depends on.
    deliveries.acknowledged().await.inspect_err(|error| ProduceFailed { topic: &config.topics.aggregates, error }.emit(metrics))?;
    for (key, emissions) in emitted {
        let Some(partition) = partitions.get_mut(&key) else { continue };
        for a in &emissions {
            AggregateEmitted { kind: a.kind, is_final: a.is_final }.emit(metrics);
        }
        // The files are written while the next records are applied; the
        // next save waits for them (a crash before loses nothing: the
        // records after the last whole checkpoint are applied again and
        // emit the same revisions).
        match partition.checkpoint.begin_save_owned(&mut partition.state, partition.epoch) {
            Ok(()) => {}
            Err(e @ crate::checkpoint::CheckpointError::Fenced { .. }) => {
                // Another member owns it now: what was emitted is identical to
                // what the new owner emits (same revisions), nothing is saved.
                tracing::warn!(error = %e, "partition dropped");
                fenced.push(key);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        partition.saved_offset = partition.state.next_offset;
        commits.add_partition_offset(&partition.topic, partition.id, Offset::Offset(partition.state.next_offset))?;
        partition.committed = Some(partition.state.next_offset);
        let tenants: std::collections::BTreeSet<&str> = emissions.iter().map(|a| a.tenant.as_str()).collect();
        let finals = emissions.iter().filter(|a| a.is_final).count();
        tracing::info!(topic = %partition.topic, partition = partition.id, ?tenants, emitted = emissions.len(), finals, next_offset = partition.state.next_offset,
            open_aggregates = partition.state.open_aggregates(), open_events = partition.state.open_events(), "flushed");
    }
    for key in fenced {
        partitions.remove(&key);
    }
    if commits.count() > 0 {
        // Informational for lag monitoring: the checkpoint is the source of truth.
        if let Err(e) = consumer.commit(&commits, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; the checkpoint still holds the position");
        }
    }
    metrics.open_aggregates.set(partitions.values().map(|p| p.state.open_aggregates() as i64).sum());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_are_bounded_by_the_configuration() {
        let mut config = MeterConfig::default();
        config.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: "UTC".parse().expect("an IANA zone"), period_grace_days: None });
        let calendar = config.calendar();
        assert_eq!(tenant_label(&calendar, "acme"), "acme");
        let names: Vec<String> = (0..1000).map(|i| format!("tenant-{i}")).collect();
        let labels: std::collections::BTreeSet<&str> = names.iter().map(|t| tenant_label(&calendar, t)).collect();
        assert_eq!(labels.into_iter().collect::<Vec<_>>(), vec!["other"], "1000 unknown tenants, one series");
        assert_eq!(tenant_label(&calendar, "made-up-by-an-event"), "other");
    }
}
