//! Re-rating a tenant's period from the raw events, on request.
//!
//! Reads the tenant's events from the event topics and the late-events topic
//! (so events that arrived too late are counted this time), deduplicates
//! them, applies them in event-time order with no lateness limit, and emits
//! every aggregate whose window lies inside [from, to) as final, with a
//! revision above any the live aggregator can produce. Consumers (billing,
//! ClickHouse) then keep the re-rated version.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use meter_config::MeterConfig;
use meter_kafka::{event_topic, kind_of_topic, KafkaError};
use meter_model::{Aggregate, Event, EventCodec, EventKind, Period};

use crate::engine::{EngineSettings, Outcome, PartitionState};
use crate::pricing::PriceBook;
use crate::windows::start_of_local_day;

/// Revisions of re-rated aggregates start here: live revisions are input
/// offsets + 1, far below.
pub const REPROCESS_REVISION_BASE: i64 = 1 << 48;

#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyPeriod { from: NaiveDate, to: NaiveDate },
}

pub struct ReprocessRequest {
    pub tenant: String,
    /// First local day re-rated.
    pub from: NaiveDate,
    /// First local day not re-rated.
    pub to: NaiveDate,
    pub requested_by: String,
    pub reason: String,
    pub show_progress: bool,
}

pub struct ReprocessOutcome {
    pub events_read: u64,
    pub aggregates: Vec<Aggregate>,
    pub revision: i64,
    pub requested_at: DateTime<Utc>,
}

/// Computes the re-rated aggregates (it publishes nothing).
pub fn reprocess(config: &MeterConfig, book: &PriceBook, request: &ReprocessRequest) -> Result<ReprocessOutcome, ReprocessError> {
    if request.from >= request.to {
        return Err(ReprocessError::EmptyPeriod { from: request.from, to: request.to });
    }
    let tz = config.time_zone_of(&request.tenant);
    let start = start_of_local_day(tz, request.from);
    let end = start_of_local_day(tz, request.to);
    let timeout = Duration::from_secs(300);
    let progress = if request.show_progress {
        let bar = ProgressBar::new(4);
        bar.set_style(ProgressStyle::with_template("{spinner} reading {msg} [{bar:20}] {pos}/{len} topics").unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut topics: Vec<String> = EventKind::ALL.iter().map(|k| event_topic(&config.topics, *k).to_string()).collect();
    topics.push(config.topics.late_events.clone());
    let mut events: Vec<Event> = Vec::new();
    let mut seen = HashSet::new();
    let mut events_read = 0u64;
    for topic in &topics {
        progress.set_message(topic.clone());
        for message in meter_kafka::read_to_end(&config.kafka, topic, timeout)? {
            let kind = if *topic == config.topics.late_events {
                message.headers.iter().find(|(k, _)| k == "meter.source_topic").and_then(|(_, v)| kind_of_topic(&config.topics, v))
            } else {
                kind_of_topic(&config.topics, topic)
            };
            let Some(event) = kind.and_then(|k| EventCodec::decode_event(k, &message.payload).ok()) else { continue };
            let h = event.header();
            // Everything of the tenant before the period's end: VM intervals
            // opened earlier still contribute inside the period.
            if h.tenant != request.tenant || h.event_time >= end || event.validate().is_err() {
                continue;
            }
            events_read += 1;
            if seen.insert((h.source.clone(), h.event_id.clone())) {
                events.push(event);
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    events.sort_by(|a, b| a.header().event_time.cmp(&b.header().event_time).then_with(|| a.header().event_id.cmp(&b.header().event_id)));

    let requested_at = meter_model::codec::to_millis(Utc::now());
    let settings = EngineSettings {
        periods: Period::ALL.to_vec(),
        allowed_lateness: chrono::Duration::days(365 * 100),
        dedup_horizon: chrono::Duration::days(365 * 100),
        zone_of: Box::new(move |_| tz),
    };
    let mut state = PartitionState::default();
    for (i, event) in events.iter().enumerate() {
        if let Outcome::Unrated(e) = state.apply(i as i64, event, &settings, book) {
            tracing::warn!(event_id = %event.header().event_id, error = %e, "event not rated during reprocessing");
        }
    }
    let revision = REPROCESS_REVISION_BASE + requested_at.timestamp();
    let aggregates = state
        .take_emissions(&settings, book, requested_at)
        .into_iter()
        .filter(|a| a.window_start >= start && a.window_end <= end)
        .map(|mut a| {
            a.revision = revision;
            a.is_final = true;
            a
        })
        .collect();
    Ok(ReprocessOutcome { events_read, aggregates, revision, requested_at })
}
