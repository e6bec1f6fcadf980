//! The VM collector (issue 4, "VM usage"), two inputs:
//!
//! - [`scrape`]: `meter collect vm-scrape --vm-config FILE [--once]` reads a
//!   Prometheus exposition endpoint (the libvirt exporter's, or a node-level
//!   exporter's) every `interval_seconds` and publishes one `SAMPLE` per
//!   running, mapped VM per scrape. A SAMPLE covers
//!   `[event_time - sample_interval_seconds, event_time)`: the interval is
//!   the time since the scrape that last saw the VM (first time: the
//!   configured interval), so a stopped VM (no sample while stopped) and a
//!   failed scrape are time-weighted correctly. `event_id =
//!   <source>:<vm>:<scrape unix time>`: a retried publish counts once.
//!   Settings: [`config`], example with every key: `services/collector-vm/vm.example.toml`.
//! - [`csv_import`]: `meter collect vm-csv FILE...` reads lifecycle events
//!   and samples from CSV files (header in the module documentation); a bad
//!   row is reported with its line number, dead-lettered, and skipped.

pub mod config;
pub mod csv_import;
pub mod scrape;

use meter_kafka::KafkaError;

pub use config::{MetricNames, Settings, VmCollectorConfig, VmRule};
pub use csv_import::{publish_csv, read_csv, CsvImport, CsvRejection, CsvReport, CSV_COLUMNS};
pub use scrape::{parse_exposition, plan_scrape, run, scrape_once, ScrapePlan, ScrapeReport, ScrapeState, VmObservation};

/// `source` label of `meter_collector_last_success_timestamp_seconds` for scrapes.
pub const METRIC_SOURCE: &str = "vm-scrape";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid {path}: {message}")]
    Config { path: String, message: String },
    #[error("scraping {url} failed: {source} (is the exporter up? check `url`)")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} did not return the Prometheus text format: {message}")]
    Exposition { url: String, message: String },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}
