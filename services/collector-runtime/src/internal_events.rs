//! What collectors report (see `meter_telemetry::InternalEvent`): each
//! happening below writes its log line and changes its counter in one
//! `emit`, and `METRICS` is the catalogue of the collector families.
//! Every collector reports through these types only, so what is counted,
//! and under which names and labels (dashboards and alerts read them), lives
//! in this one place.

use chrono::Utc;
use meter_telemetry::{InternalEvent, MetricFamily};
use prometheus::{IntCounterVec, IntGaugeVec, Registry};

pub const READ: MetricFamily = MetricFamily::counter("meter_collector_events_read_total", "Input records read.", &["kind"]);
pub const PUBLISHED: MetricFamily =
    MetricFamily::counter("meter_collector_events_published_total", "Events acknowledged by the broker.", &["kind"]);
pub const REJECTED: MetricFamily = MetricFamily::counter(
    "meter_collector_events_rejected_total",
    "Input records refused and dead-lettered, by reason.",
    &["kind", "reason"],
);
pub const SKIPPED: MetricFamily = MetricFamily::counter(
    "meter_collector_events_skipped_total",
    "Input records neither published nor dead-lettered (not billed: unmapped stream results, tasks without time), by reason.",
    &["kind", "reason"],
);
pub const LAST_SUCCESS: MetricFamily = MetricFamily::gauge(
    "meter_collector_last_success_timestamp_seconds",
    "Unix time of the last successful publish, by source.",
    &["source"],
);

/// The collector families.
pub const METRICS: &[MetricFamily] = &[READ, PUBLISHED, REJECTED, SKIPPED, LAST_SUCCESS];

/// The collector's metric handles, registered once per process from [`METRICS`].
#[derive(Clone)]
pub struct CollectorMetrics {
    read: IntCounterVec,
    published: IntCounterVec,
    rejected: IntCounterVec,
    /// Input records neither published nor dead-lettered, by a bounded
    /// reason (an Icinga stream result of a host or check that is not
    /// billed, a GLPI task without time): counted, so that nothing is
    /// dropped without a trace.
    skipped: IntCounterVec,
    last_success: IntGaugeVec,
}

impl CollectorMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(CollectorMetrics {
            read: READ.register_counter_vec(registry)?,
            published: PUBLISHED.register_counter_vec(registry)?,
            rejected: REJECTED.register_counter_vec(registry)?,
            skipped: SKIPPED.register_counter_vec(registry)?,
            last_success: LAST_SUCCESS.register_gauge_vec(registry)?,
        })
    }

    pub fn read_count(&self, kind: &str) -> u64 {
        self.read.with_label_values(&[kind]).get()
    }

    pub fn published_count(&self, kind: &str) -> u64 {
        self.published.with_label_values(&[kind]).get()
    }

    pub fn rejected_count(&self, kind: &str, reason: &str) -> u64 {
        self.rejected.with_label_values(&[kind, reason]).get()
    }

    pub fn skipped_count(&self, kind: &str, reason: &str) -> u64 {
        self.skipped.with_label_values(&[kind, reason]).get()
    }

    /// Unix time of the last success of `source`, 0 before the first.
    pub fn last_success(&self, source: &str) -> i64 {
        self.last_success.with_label_values(&[source]).get()
    }
}

/// Input records of a kind were read.
pub struct RecordsRead<'a> {
    pub kind: &'a str,
    pub count: u64,
}

impl InternalEvent for RecordsRead<'_> {
    type Metrics = CollectorMetrics;
    fn emit(self, m: &CollectorMetrics) {
        tracing::trace!(kind = self.kind, count = self.count, "input records read");
        m.read.with_label_values(&[self.kind]).inc_by(self.count);
    }
}

/// Events were acknowledged by the broker.
pub struct EventsPublished<'a> {
    pub kind: &'a str,
    pub count: u64,
}

impl InternalEvent for EventsPublished<'_> {
    type Metrics = CollectorMetrics;
    fn emit(self, m: &CollectorMetrics) {
        tracing::trace!(kind = self.kind, count = self.count, "events published");
        m.published.with_label_values(&[self.kind]).inc_by(self.count);
    }
}

/// An input record was refused (and dead-lettered by the caller, or answered
/// with an error by the ingest API).
pub struct RecordRejected<'a> {
    pub kind: &'a str,
    /// A bounded reason code (`invalid_event`, `line_too_long`, `forbidden_tenant`...).
    pub reason: &'a str,
}

impl InternalEvent for RecordRejected<'_> {
    type Metrics = CollectorMetrics;
    fn emit(self, m: &CollectorMetrics) {
        tracing::debug!(kind = self.kind, reason = self.reason, "input record rejected");
        m.rejected.with_label_values(&[self.kind, self.reason]).inc();
    }
}

/// Input records were neither published nor refused (not billed).
pub struct RecordsSkipped<'a> {
    pub kind: &'a str,
    pub reason: &'a str,
    pub count: u64,
}

impl InternalEvent for RecordsSkipped<'_> {
    type Metrics = CollectorMetrics;
    fn emit(self, m: &CollectorMetrics) {
        if self.count > 0 {
            tracing::debug!(kind = self.kind, reason = self.reason, count = self.count, "input records skipped (not billed)");
        }
        m.skipped.with_label_values(&[self.kind, self.reason]).inc_by(self.count);
    }
}

/// A source's collection succeeded (the last-success gauge, which the
/// staleness alerts read).
pub struct SourceSucceeded<'a> {
    pub source: &'a str,
}

impl InternalEvent for SourceSucceeded<'_> {
    type Metrics = CollectorMetrics;
    fn emit(self, m: &CollectorMetrics) {
        tracing::debug!(source = self.source, "collection succeeded");
        m.last_success.with_label_values(&[self.source]).set(Utc::now().timestamp());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_lands_under_its_labels() {
        let registry = Registry::new();
        let metrics = CollectorMetrics::register(&registry).unwrap();
        RecordsRead { kind: "vm-usage", count: 3 }.emit(&metrics);
        EventsPublished { kind: "vm-usage", count: 2 }.emit(&metrics);
        RecordRejected { kind: "vm-usage", reason: "invalid_event" }.emit(&metrics);
        RecordsSkipped { kind: "ticket-time", reason: "no_time", count: 4 }.emit(&metrics);
        SourceSucceeded { source: "file" }.emit(&metrics);
        assert_eq!(metrics.read_count("vm-usage"), 3);
        assert_eq!(metrics.published_count("vm-usage"), 2);
        assert_eq!(metrics.published_count("ticket-time"), 0);
        assert_eq!(metrics.rejected_count("vm-usage", "invalid_event"), 1);
        assert_eq!(metrics.skipped_count("ticket-time", "no_time"), 4);
        assert!(metrics.last_success("file") > 0);
        assert_eq!(metrics.last_success("glpi"), 0);
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"meter_collector_events_rejected_total".to_string()), "{names:?}");
    }
}
