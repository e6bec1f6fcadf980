//! The one publishing step of every collector: stamp the ingest time,
//! encode, key by tenant, publish, wait for the broker's acknowledgement,
//! dead-letter what is refused, count.

use crate::internal_events::{EventsPublished, RecordRejected, SourceSucceeded};
use meter_telemetry::InternalEvent;
use std::collections::BTreeMap;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use meter_config::{MeterConfig, TopicsConfig};
use meter_kafka::{event_key, event_topic, DeadLetters, KafkaError};
use meter_model::codec::to_millis;
use meter_model::{DeadLetter, Event, EventCodec, EventKind};
use rdkafka::producer::FutureProducer;

use crate::CollectorMetrics;

/// Publishes waiting for their acknowledgement at once, by default: the
/// broker's acks bound memory.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

/// Publishes the events and dead letters of one collector, and counts them.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: TopicsConfig,
    dead_letters: DeadLetters,
    metrics: CollectorMetrics,
    /// `source` label of `meter_collector_last_success_timestamp_seconds`.
    source: String,
    max_in_flight: usize,
}

/// An event that could not be encoded: nothing of its batch was published.
#[derive(Debug, thiserror::Error)]
#[error("encoding event {event_id} failed: {error}")]
pub struct EncodeFailure {
    pub event_id: String,
    pub error: KafkaError,
}

impl Publisher {
    /// `source` is the label of the last-success gauge (e.g. `file`, `glpi`).
    pub fn new(meter: &MeterConfig, producer: FutureProducer, metrics: CollectorMetrics, source: &str) -> Self {
        Publisher {
            dead_letters: DeadLetters::with_producer(producer.clone(), meter.topics.dead_letters.clone()),
            topics: meter.topics.clone(),
            producer,
            metrics,
            source: source.into(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Publishes waiting for their acknowledgement at once (at least one).
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    pub fn metrics(&self) -> &CollectorMetrics {
        &self.metrics
    }

    /// A batch of publishes, counted once all are acknowledged.
    pub fn batch(&self) -> Batch<'_> {
        Batch { publisher: self, in_flight: FuturesUnordered::new(), acknowledged: BTreeMap::new() }
    }

    /// Publishes `events` and waits for every acknowledgement; counts them
    /// published only then. Returns how many were published.
    pub async fn publish_all(&self, events: impl IntoIterator<Item = Event>) -> Result<u64, KafkaError> {
        let mut batch = self.batch();
        for event in events {
            batch.push(event).await?;
        }
        batch.finish().await
    }

    /// Publishes `events` together (one ingest time), after encoding every
    /// one (an event that cannot be encoded publishes nothing), and returns
    /// each one's acknowledgement in order; each acknowledged one is counted.
    pub async fn publish_each(&self, events: Vec<Event>) -> Result<Vec<Result<(), KafkaError>>, EncodeFailure> {
        let now = to_millis(Utc::now());
        let mut encoded = Vec::with_capacity(events.len());
        for mut event in events {
            event.header_mut().ingest_time = now;
            let payload = EventCodec::encode_event(&event)
                .map_err(|e| EncodeFailure { event_id: event.header().event_id.clone(), error: e.into() })?;
            encoded.push((event.kind(), event_key(&event.header().tenant).to_string(), payload));
        }
        let sends = encoded.iter().map(|(kind, key, payload)| async move {
            let result = meter_kafka::publish(&self.producer, event_topic(&self.topics, *kind), key, payload).await;
            if result.is_ok() {
                EventsPublished { kind: kind.slug(), count: 1 }.emit(&self.metrics);
            }
            result.map(|_| ())
        });
        Ok(futures::future::join_all(sends).await)
    }

    /// Dead-letters a refused input and counts it rejected under its kind
    /// and reason.
    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), KafkaError> {
        self.dead_letters.send(letter).await?;
        let kind = letter.event_kind.as_deref().unwrap_or("unknown");
        RecordRejected { kind, reason: &letter.error_kind }.emit(&self.metrics);
        Ok(())
    }

    /// The collector's source succeeded now (the last-success gauge).
    pub fn succeeded(&self) {
        SourceSucceeded { source: &self.source }.emit(&self.metrics);
    }
}

type Send<'a> = BoxFuture<'a, (EventKind, Result<(i32, i64), KafkaError>)>;

/// Publishes in flight, at most the publisher's bound at once.
pub struct Batch<'a> {
    publisher: &'a Publisher,
    in_flight: FuturesUnordered<Send<'a>>,
    acknowledged: BTreeMap<EventKind, u64>,
}

impl<'a> Batch<'a> {
    /// Stamps the ingest time, encodes, keys by tenant and publishes; waits
    /// for an earlier acknowledgement first when the bound is reached.
    pub async fn push(&mut self, mut event: Event) -> Result<(), KafkaError> {
        while self.in_flight.len() >= self.publisher.max_in_flight {
            self.acknowledge_next().await?;
        }
        event.header_mut().ingest_time = to_millis(Utc::now());
        let payload = EventCodec::encode_event(&event)?;
        let kind = event.kind();
        let key = event_key(&event.header().tenant).to_string();
        let publisher = self.publisher;
        self.in_flight.push(
            async move {
                let topic = event_topic(&publisher.topics, kind);
                (kind, meter_kafka::publish(&publisher.producer, topic, &key, &payload).await)
            }
            .boxed(),
        );
        Ok(())
    }

    /// Takes the acknowledgements already there, without waiting.
    pub fn take_ready(&mut self) -> Result<(), KafkaError> {
        while let Some(Some((kind, result))) = self.in_flight.next().now_or_never() {
            result?;
            *self.acknowledged.entry(kind).or_default() += 1;
        }
        Ok(())
    }

    /// Events acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.values().sum()
    }

    async fn acknowledge_next(&mut self) -> Result<(), KafkaError> {
        if let Some((kind, result)) = self.in_flight.next().await {
            result?;
            *self.acknowledged.entry(kind).or_default() += 1;
        }
        Ok(())
    }

    /// Waits for every acknowledgement, then counts the events published
    /// (nothing is counted when one failed) and returns how many.
    pub async fn finish(mut self) -> Result<u64, KafkaError> {
        while !self.in_flight.is_empty() {
            self.acknowledge_next().await?;
        }
        for (kind, count) in &self.acknowledged {
            EventsPublished { kind: kind.slug(), count: *count }.emit(&self.publisher.metrics);
        }
        Ok(self.acknowledged())
    }
}
