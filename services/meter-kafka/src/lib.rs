//! Kafka plumbing: producers that wait for the broker's acknowledgement,
//! consumers that commit only what was fully handled, and the dead-letter
//! writer.

use std::time::Duration;

use meter_config::{KafkaConfig, MeterConfig, TopicsConfig};
use meter_model::{DeadLetter, EventCodec, EventKind};
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("Kafka client setup failed: {0} (check kafka.brokers and kafka.properties)")]
    Client(rdkafka::error::KafkaError),
    #[error("publishing to {topic} failed: {source} (is the broker up? `meter stack status`)")]
    Publish { topic: String, source: rdkafka::error::KafkaError },
    #[error("encoding: {0}")]
    Codec(#[from] meter_model::CodecError),
    #[error("reading {topic} to its end timed out (is the broker up?)")]
    Incomplete { topic: String },
}

fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in kafka.security_properties() {
        config.set(key, value);
    }
    config
}

/// `kafka.properties` win over the defaults set here.
fn with_user_properties(mut config: ClientConfig, kafka: &KafkaConfig) -> ClientConfig {
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// A producer that retries without duplicating (when idempotence is on) and
/// reports success only once all in-sync replicas have the message.
pub fn producer(kafka: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    let mut config = base_config(kafka);
    config
        .set("acks", "all")
        .set("enable.idempotence", if kafka.idempotence { "true" } else { "false" })
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000");
    with_user_properties(config, kafka).create().map_err(KafkaError::Client)
}

/// A consumer in `group` that never commits on its own: callers commit the
/// offsets of what they have fully handled. Its fetches wait at most
/// `fetch_wait_max_ms` for records (librdkafka `fetch.wait.max.ms`; a
/// broker that holds every fetch that long, as Tansu does, delays each
/// record by up to this much). `kafka.properties` win over it.
pub fn consumer(kafka: &KafkaConfig, group: &str, fetch_wait_max_ms: u64) -> Result<StreamConsumer, KafkaError> {
    consumer_with_context(kafka, group, fetch_wait_max_ms, rdkafka::consumer::DefaultConsumerContext)
}

/// Like [`consumer`], with a context that observes rebalances.
pub fn consumer_with_context<C: rdkafka::consumer::ConsumerContext + 'static>(
    kafka: &KafkaConfig,
    group: &str,
    fetch_wait_max_ms: u64,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    let mut config = base_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "range")
        // A consumer slower than its fetches fills librdkafka's queue; past
        // its thresholds the partition's next fetch waited a whole second
        // (the 1000 ms default) even after the queue had drained, so a
        // backlog was read in stalls: the aggregator sat idle a third of a
        // replay.
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string());
    with_user_properties(config, kafka).create_with_context(context).map_err(KafkaError::Client)
}

/// Publishes one message and waits for the broker's acknowledgement.
pub async fn publish(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Result<(i32, i64), KafkaError> {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    producer
        .send(record, Duration::from_secs(120))
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(source, _)| KafkaError::Publish { topic: topic.to_string(), source })
}

/// Records produced and not acknowledged yet. A caller that must not go on
/// before the broker holds them (a checkpoint) awaits them all at once,
/// instead of one round trip per record.
#[derive(Default)]
pub struct Deliveries {
    pending: Vec<(String, DeliveryFuture)>,
}

impl Deliveries {
    /// Produces `record`; when the producer's queue is full, waits for the
    /// oldest half of what is in flight first.
    pub async fn produce(&mut self, producer: &FutureProducer, record: FutureRecord<'_, str, [u8]>) -> Result<(), KafkaError> {
        let mut record = record;
        let topic = record.topic.to_string();
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push((topic, delivery));
                    return Ok(());
                }
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) if !self.pending.is_empty() => {
                    record = back;
                    let half = self.pending.len().div_ceil(2);
                    let oldest: Vec<_> = self.pending.drain(..half).collect();
                    Self::wait(oldest).await?;
                }
                Err((source, back)) => return Err(KafkaError::Publish { topic: back.topic.to_string(), source }),
            }
        }
    }

    /// Waits for every record in flight; the first failure is returned.
    pub async fn acknowledged(&mut self) -> Result<usize, KafkaError> {
        let pending = std::mem::take(&mut self.pending);
        let count = pending.len();
        Self::wait(pending).await?;
        Ok(count)
    }

    async fn wait(pending: Vec<(String, DeliveryFuture)>) -> Result<(), KafkaError> {
        for (topic, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => return Err(KafkaError::Publish { topic, source }),
                Err(_canceled) => return Err(KafkaError::Publish { topic, source: rdkafka::error::KafkaError::Canceled }),
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The topic carrying events of one kind.
pub fn event_topic(topics: &TopicsConfig, kind: EventKind) -> &str {
    topics.event(kind)
}

/// The event kind a topic carries, if it is one of the event topics.
pub fn kind_of_topic(topics: &TopicsConfig, topic: &str) -> Option<EventKind> {
    topics.kind_of(topic)
}

/// Events are keyed by tenant so that a tenant's events stay in one
/// partition: per-tenant order and windows then live in one place.
pub fn event_key(tenant: &str) -> &str {
    tenant
}

/// Writes dead letters, keyed by component so they stay ordered per source.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(config: &MeterConfig) -> Result<Self, KafkaError> {
        Ok(DeadLetters { producer: producer(&config.kafka)?, topic: config.topics.dead_letters.clone() })
    }

    pub fn with_producer(producer: FutureProducer, topic: String) -> Self {
        DeadLetters { producer, topic }
    }

    /// Produces a dead letter into `deliveries` (acknowledged with them).
    pub async fn enqueue(&self, letter: &DeadLetter, deliveries: &mut Deliveries) -> Result<(), KafkaError> {
        let bounded = bounded_letter(letter);
        let letter = &bounded;
        let payload = EventCodec::encode(letter)?;
        deliveries.produce(&self.producer, FutureRecord::to(&self.topic).key(letter.component.as_str()).payload(payload.as_slice())).await?;
        log_dead_letter(letter);
        Ok(())
    }

    pub async fn send(&self, letter: &DeadLetter) -> Result<(), KafkaError> {
        let bounded = bounded_letter(letter);
        let letter = &bounded;
        let payload = EventCodec::encode(letter)?;
        publish(&self.producer, &self.topic, &letter.component, &payload).await?;
        log_dead_letter(letter);
        Ok(())
    }
}

fn log_dead_letter(letter: &DeadLetter) {
    tracing::warn!(component = %letter.component, error_kind = %letter.error_kind, error = %letter.error,
        source_file = ?letter.source_file, source_line = ?letter.source_line,
        source_topic = ?letter.source_topic, source_partition = ?letter.source_partition,
        source_offset = ?letter.source_offset, "dead-lettered");
}

/// The original bytes a dead letter carries at most: a near-1 MB message
/// plus its fields must still fit the producer's limit.
pub const DEAD_LETTER_ORIGINAL_BYTES: usize = 64 * 1024;
/// The error text a dead letter carries at most.
pub const DEAD_LETTER_ERROR_BYTES: usize = 4 * 1024;

/// Truncates what a dead letter carries, and says so in its error.
pub fn bounded_letter(letter: &DeadLetter) -> DeadLetter {
    let mut out = letter.clone();
    if out.error.len() > DEAD_LETTER_ERROR_BYTES {
        let mut end = DEAD_LETTER_ERROR_BYTES;
        while !out.error.is_char_boundary(end) {
            end -= 1;
        }
        out.error.truncate(end);
        out.error.push_str(" [error text truncated]");
    }
    if out.original.len() > DEAD_LETTER_ORIGINAL_BYTES {
        let total = out.original.len();
        out.original.truncate(DEAD_LETTER_ORIGINAL_BYTES);
        out.error.push_str(&format!(" [original truncated to its first {DEAD_LETTER_ORIGINAL_BYTES} of {total} bytes]"));
    }
    out
}

/// Whether a message on an event topic is a control record, not an event:
/// a period-control payload marked with the control header. The payload's
/// fingerprint is looked at first: librdkafka parses a message's headers on
/// every call, which cost more than decoding the event, and events carry none.
pub fn is_control<M: rdkafka::message::Message>(message: &M) -> bool {
    use meter_model::codec::AvroRecord;
    use rdkafka::message::Headers;
    let payload = message.payload().unwrap_or_default();
    meter_model::codec::writer_record(payload) == Some(meter_model::PeriodControl::RECORD)
        && message.headers().is_some_and(|h| h.iter().any(|h| h.key == meter_model::CONTROL_HEADER))
}

/// Writes a control record into one partition of an event topic and waits
/// for the broker's acknowledgement.
pub async fn publish_control(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    control: &meter_model::PeriodControl,
) -> Result<(i32, i64), KafkaError> {
    use rdkafka::message::{Header, OwnedHeaders};
    let payload = EventCodec::encode(control)?;
    let action = match control.action {
        meter_model::PeriodAction::Clock => "clock",
        meter_model::PeriodAction::Close => "close",
    };
    let headers = OwnedHeaders::new().insert(Header { key: meter_model::CONTROL_HEADER, value: Some(action) });
    let key = if control.tenant.is_empty() { "control" } else { control.tenant.as_str() };
    let record = FutureRecord::to(topic).partition(partition).key(key).payload(&payload).headers(headers);
    producer
        .send(record, Duration::from_secs(120))
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(source, _)| KafkaError::Publish { topic: topic.to_string(), source })
}

/// The partition ids of a topic.
pub fn partitions_of(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Vec<i32>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = with_user_properties(base_config(kafka), kafka).create().map_err(KafkaError::Client)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(KafkaError::Client)?;
    Ok(metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect())
}

/// One message read back from a topic.
pub struct StoredMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The record's timestamp (CreateTime), if it has one.
    pub timestamp_ms: Option<i64>,
}

impl StoredMessage {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The rule of [`is_control`].
    pub fn is_control(&self) -> bool {
        use meter_model::codec::AvroRecord;
        meter_model::codec::writer_record(&self.payload) == Some(meter_model::PeriodControl::RECORD) && self.header(meter_model::CONTROL_HEADER).is_some()
    }
}

/// Reads every partition of `topic` from its start to its end as of now
/// (for replays and reprocessing; not for live consumption).
pub fn read_to_end(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Vec<StoredMessage>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut config = base_config(kafka);
    config
        .set("group.id", format!("meter-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = with_user_properties(config, kafka).create().map_err(KafkaError::Client)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(KafkaError::Client)?;
    let mut list = rdkafka::TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).map_err(KafkaError::Client)?;
            if high > low {
                list.add_partition_offset(topic, p.id(), rdkafka::Offset::Offset(low)).map_err(KafkaError::Client)?;
                remaining.insert(p.id(), high);
            }
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&list).map_err(KafkaError::Client)?;
    let deadline = std::time::Instant::now() + timeout;
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Incomplete { topic: topic.to_string() });
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string())).collect())
                    .unwrap_or_default();
                out.push(StoredMessage {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    timestamp_ms: m.timestamp().to_millis(),
                });
                if remaining.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    remaining.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(KafkaError::Client(e)),
            None => {}
        }
    }
    Ok(out)
}

/// Watches the partitions of the group's topics that this instance does not
/// own: lag that does not shrink for `threshold` means nobody processes them.
pub struct StallWatch {
    threshold: std::time::Duration,
    last_check: std::time::Instant,
    /// (topic, partition) -> (committed offset, end offset, since when unchanged)
    seen: std::collections::HashMap<(String, i32), (i64, i64, std::time::Instant)>,
}

impl StallWatch {
    pub fn new(threshold: std::time::Duration) -> Self {
        StallWatch { threshold, last_check: std::time::Instant::now(), seen: std::collections::HashMap::new() }
    }

    pub fn due(&mut self) -> bool {
        if self.last_check.elapsed() >= self.threshold / 2 {
            self.last_check = std::time::Instant::now();
            return true;
        }
        false
    }

    /// True when some partition not assigned here has had lag and no
    /// committed progress for the threshold. Blocking: broker round trips.
    pub fn orphaned_partitions<C: rdkafka::consumer::ConsumerContext, K: rdkafka::consumer::Consumer<C>>(&mut self, consumer: &K, topics: &[&str]) -> bool {
        let timeout = std::time::Duration::from_secs(5);
        let Ok(assigned) = consumer.assignment() else { return false };
        let mut list = rdkafka::TopicPartitionList::new();
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
        let now = std::time::Instant::now();
        let mut stalled = Vec::new();
        for element in list.elements() {
            let (topic, partition) = (element.topic().to_string(), element.partition());
            let Ok((low, high)) = consumer.fetch_watermarks(&topic, partition, timeout) else { continue };
            let done = match committed.find_partition(&topic, partition).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
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

