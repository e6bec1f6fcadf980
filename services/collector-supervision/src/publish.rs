//! The supervision collector's use of the shared publisher: check results
//! published on their topic, refused inputs dead-lettered with where they
//! came from (component `collector-supervision`).

use collector_runtime::CollectorMetrics;
use meter_config::MeterConfig;
use meter_kafka::KafkaError;
use meter_model::{CheckResult, DeadLetter, Event, EventKind};
use rdkafka::producer::FutureProducer;

use crate::{COMPONENT, METRIC_SOURCE};

pub(crate) const KIND: EventKind = EventKind::CheckResult;

/// Where an input came from, for dead letters (`source_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

impl Location {
    pub fn new(text: impl Into<String>) -> Self {
        Location(text.into())
    }
}

/// Publishes check results and dead letters, and counts them.
pub struct Publisher(collector_runtime::Publisher);

impl Publisher {
    pub fn new(meter: &MeterConfig, producer: FutureProducer, metrics: CollectorMetrics) -> Self {
        Publisher(collector_runtime::Publisher::new(meter, producer, metrics, METRIC_SOURCE))
    }

    pub fn metrics(&self) -> &CollectorMetrics {
        self.0.metrics()
    }

    /// Publishes check results (keyed by tenant) and waits for every acknowledgement.
    pub async fn publish(&self, events: Vec<CheckResult>) -> Result<(), KafkaError> {
        if events.is_empty() {
            return Ok(());
        }
        self.0.publish_all(events.into_iter().map(Event::CheckResult)).await?;
        self.0.succeeded();
        Ok(())
    }

    /// Dead-letters an input with its original bytes.
    pub async fn dead_letter(
        &self,
        reason: &'static str,
        error: &str,
        original: &[u8],
        location: &Location,
        line: Option<i64>,
    ) -> Result<(), KafkaError> {
        self.0.dead_letter(&DeadLetter::from_request(COMPONENT, &location.0, line, reason, error, original).of_kind(KIND)).await
    }
}
