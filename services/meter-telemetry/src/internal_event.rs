//! What the pipeline reports about itself, in Vector's manner: each thing
//! that happens (an event dead-lettered, a duplicate dropped, a batch
//! inserted...) is one type whose `emit` writes its log line and changes its
//! metric together, so neither can be forgotten or drift from the other.
//!
//! Every metric family is declared once as a [`MetricFamily`]; each crate
//! lists its families in a `METRICS` catalogue, which the dashboards and
//! alert tests read instead of searching the source for names.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// One thing the pipeline reports: its log line and its metric, together.
pub trait InternalEvent {
    /// The metric handles of the component that reports it.
    type Metrics;
    fn emit(self, metrics: &Self::Metrics);
}

/// How a family's value behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

/// A label whose values are a closed set (a reason enum): dashboards and
/// alerts may only match those values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelValues {
    pub label: &'static str,
    pub values: &'static [&'static str],
}

/// A metric family: name (`meter_<noun>_<verb>_total` for counters), help,
/// bounded labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub metric_type: MetricType,
    /// The labels whose values are an enumeration.
    pub closed_labels: &'static [LabelValues],
}

impl MetricFamily {
    pub const fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        MetricFamily { name, help, labels, metric_type: MetricType::Counter, closed_labels: &[] }
    }

    pub const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        MetricFamily { name, help, labels, metric_type: MetricType::Gauge, closed_labels: &[] }
    }

    pub const fn histogram(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        MetricFamily { name, help, labels, metric_type: MetricType::Histogram, closed_labels: &[] }
    }

    /// The same family, with label values restricted to the given sets.
    pub const fn closed(self, closed_labels: &'static [LabelValues]) -> Self {
        MetricFamily { closed_labels, ..self }
    }

    /// The names a scrape shows for it (a histogram has three series).
    pub fn exported_names(&self) -> Vec<String> {
        match self.metric_type {
            MetricType::Histogram => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
            _ => vec![self.name.to_string()],
        }
    }

    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    pub fn register_counter_vec(&self, registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
        let metric = IntCounterVec::new(self.opts(), self.labels)?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn register_counter(&self, registry: &Registry) -> Result<IntCounter, prometheus::Error> {
        let metric = IntCounter::with_opts(self.opts())?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn register_gauge_vec(&self, registry: &Registry) -> Result<IntGaugeVec, prometheus::Error> {
        let metric = IntGaugeVec::new(self.opts(), self.labels)?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// A gauge of ratios and measured amounts (not money, not counts).
    pub fn register_float_gauge_vec(&self, registry: &Registry) -> Result<prometheus::GaugeVec, prometheus::Error> {
        let metric = prometheus::GaugeVec::new(self.opts(), self.labels)?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn register_gauge(&self, registry: &Registry) -> Result<IntGauge, prometheus::Error> {
        let metric = IntGauge::with_opts(self.opts())?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn register_histogram(&self, registry: &Registry, buckets: Vec<f64>) -> Result<Histogram, prometheus::Error> {
        let metric = Histogram::with_opts(HistogramOpts::new(self.name, self.help).buckets(buckets))?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn register_histogram_vec(&self, registry: &Registry, buckets: Vec<f64>) -> Result<HistogramVec, prometheus::Error> {
        let metric = HistogramVec::new(HistogramOpts::new(self.name, self.help).buckets(buckets), self.labels)?;
        registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }
}

/// The families of this crate: build information.
pub const BUILD_INFO: MetricFamily =
    MetricFamily::gauge("meter_build_info", "Build information of the running service (value is always 1).", &["service", "version"]);

pub const METRICS: &[MetricFamily] = &[BUILD_INFO];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_with_their_labels_and_histograms_export_three_series() {
        let registry = Registry::new();
        const F: MetricFamily = MetricFamily::counter("meter_things_done_total", "Things.", &["kind"]);
        let c = F.register_counter_vec(&registry).unwrap();
        c.with_label_values(&["x"]).inc();
        let text = crate::render(&registry);
        assert!(text.contains("meter_things_done_total{kind=\"x\"} 1"), "{text}");
        assert!(F.register_counter_vec(&registry).is_err(), "a family registers once per registry");
        const H: MetricFamily = MetricFamily::histogram("meter_x_seconds", "X.", &[]);
        assert_eq!(H.exported_names(), ["meter_x_seconds_bucket", "meter_x_seconds_sum", "meter_x_seconds_count"]);
    }
}
