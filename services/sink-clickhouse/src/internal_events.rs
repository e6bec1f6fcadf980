//! What the ClickHouse sink reports (log line and metric together, see
//! `meter_telemetry::InternalEvent`), and the catalogue of its metric families.

use std::time::Duration;

use meter_telemetry::{InternalEvent, MetricFamily};
use prometheus::{Histogram, IntCounter, Registry};

pub const ROWS_INSERTED: MetricFamily = MetricFamily::counter("meter_sink_rows_inserted_total", "Rows acknowledged by ClickHouse.", &[]);
pub const BATCHES_INSERTED: MetricFamily =
    MetricFamily::counter("meter_sink_batches_inserted_total", "INSERT batches acknowledged by ClickHouse.", &[]);
pub const INSERT_ERRORS: MetricFamily =
    MetricFamily::counter("meter_sink_insert_errors_total", "Failed INSERT attempts (each is retried).", &[]);
pub const INSERT_DURATION: MetricFamily = MetricFamily::histogram("meter_sink_insert_duration_seconds", "Time to insert one batch.", &[]);

/// The sink's metric families (the contract gauges are in `contract_metrics`).
pub const METRICS: &[MetricFamily] = &[ROWS_INSERTED, BATCHES_INSERTED, INSERT_ERRORS, INSERT_DURATION];

#[derive(Clone)]
pub struct SinkMetrics {
    rows: IntCounter,
    batches: IntCounter,
    errors: IntCounter,
    latency: Histogram,
}

impl SinkMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        Ok(SinkMetrics {
            rows: ROWS_INSERTED.register_counter(registry)?,
            batches: BATCHES_INSERTED.register_counter(registry)?,
            errors: INSERT_ERRORS.register_counter(registry)?,
            latency: INSERT_DURATION.register_histogram(registry, buckets)?,
        })
    }
}

/// ClickHouse acknowledged one INSERT batch.
pub struct BatchInserted<'a> {
    pub table: &'a str,
    pub rows: usize,
    pub duration: Duration,
}

impl InternalEvent for BatchInserted<'_> {
    type Metrics = SinkMetrics;
    fn emit(self, m: &SinkMetrics) {
        tracing::info!(table = self.table, rows = self.rows, duration_ms = self.duration.as_millis() as u64, "batch inserted");
        m.latency.observe(self.duration.as_secs_f64());
        m.rows.inc_by(self.rows as u64);
        m.batches.inc();
    }
}

/// An INSERT failed; the sink holds its position and retries.
pub struct InsertFailed<'a> {
    pub table: &'a str,
    pub rows: usize,
    pub error: &'a dyn std::fmt::Display,
    pub retry_in: Duration,
}

impl InternalEvent for InsertFailed<'_> {
    type Metrics = SinkMetrics;
    fn emit(self, m: &SinkMetrics) {
        tracing::warn!(table = self.table, error = %self.error, retry_in_ms = self.retry_in.as_millis() as u64, rows = self.rows,
            "insert failed; holding position and retrying (is ClickHouse up? `meter stack status`)");
        m.errors.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_counts_its_rows_and_its_duration_and_a_failure_counts_once() {
        let registry = Registry::new();
        let m = SinkMetrics::register(&registry).unwrap();
        BatchInserted { table: "aggregates", rows: 12, duration: Duration::from_millis(30) }.emit(&m);
        InsertFailed { table: "aggregates", rows: 12, error: &"connection refused", retry_in: Duration::from_millis(100) }.emit(&m);
        let text = meter_telemetry::render(&registry);
        for line in ["meter_sink_rows_inserted_total 12", "meter_sink_batches_inserted_total 1", "meter_sink_insert_errors_total 1", "meter_sink_insert_duration_seconds_count 1"] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
