//! The collector counters. Every collector counts through these methods
//! only, so that what is counted, and under which names and labels
//! (dashboards and alerts read them), lives in this one place.

use chrono::Utc;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters of the collector, registered once per process.
#[derive(Clone)]
pub struct CollectorMetrics {
    read: IntCounterVec,
    published: IntCounterVec,
    rejected: IntCounterVec,
    /// `meter_collector_events_skipped_total{kind, reason}`: input records
    /// neither published nor dead-lettered, by a bounded reason (an Icinga
    /// stream result of a host or check that is not billed, a GLPI task
    /// without time): counted, so that nothing is dropped without a trace.
    skipped: IntCounterVec,
    last_success: IntGaugeVec,
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

    /// `count` input records of `kind` read.
    pub fn read(&self, kind: &str, count: u64) {
        self.read.with_label_values(&[kind]).inc_by(count);
    }

    /// `count` events of `kind` acknowledged by the broker.
    pub fn published(&self, kind: &str, count: u64) {
        self.published.with_label_values(&[kind]).inc_by(count);
    }

    /// `count` input records of `kind` refused for `reason`.
    pub fn rejected(&self, kind: &str, reason: &str, count: u64) {
        self.rejected.with_label_values(&[kind, reason]).inc_by(count);
    }

    /// `count` input records of `kind` neither published nor refused, for `reason`.
    pub fn skipped(&self, kind: &str, reason: &str, count: u64) {
        self.skipped.with_label_values(&[kind, reason]).inc_by(count);
    }

    /// `source` succeeded now.
    pub fn succeeded(&self, source: &str) {
        self.last_success.with_label_values(&[source]).set(Utc::now().timestamp());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_lands_under_its_labels() {
        let registry = Registry::new();
        let metrics = CollectorMetrics::register(&registry).unwrap();
        metrics.read("vm-usage", 3);
        metrics.published("vm-usage", 2);
        metrics.rejected("vm-usage", "invalid_event", 1);
        metrics.skipped("ticket-time", "no_time", 4);
        metrics.succeeded("file");
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
