//! What every collector shares (the file, GLPI, supervision and VM
//! collectors, the ingest API and replays):
//!
//! - [`Publisher`]: stamps the ingest time, encodes, keys by tenant,
//!   publishes and waits for the broker's acknowledgement (a bounded number
//!   in flight), dead-letters refused inputs with a reason, and counts.
//! - [`internal_events`]: what collectors report (log line and counter
//!   together) and the catalogue of their metric families.
//! - [`read_body_capped`]: an HTTP answer of a collected system, read up to
//!   a size limit.

mod http;
pub mod internal_events;
mod publisher;

pub use http::{http_client, read_body_capped, CappedBodyError, HttpClientError, HttpClientOptions};
pub use internal_events::{CollectorMetrics, EventsPublished, RecordRejected, RecordsRead, RecordsSkipped, SourceSucceeded};
pub use meter_telemetry::InternalEvent;
pub use publisher::{Batch, EncodeFailure, Publisher, DEFAULT_MAX_IN_FLIGHT};

/// How many rejections of each reason a run had (the collectors' summaries).
pub fn count_by_reason(reasons: impl IntoIterator<Item = &'static str>) -> std::collections::BTreeMap<&'static str, u64> {
    let mut by = std::collections::BTreeMap::new();
    for reason in reasons {
        *by.entry(reason).or_default() += 1;
    }
    by
}

/// Writes ` (reason: n, ...)` after a summary line, nothing when there was no rejection.
pub fn write_reason_counts(f: &mut std::fmt::Formatter<'_>, by: &std::collections::BTreeMap<&'static str, u64>) -> std::fmt::Result {
    if by.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = by.iter().map(|(reason, n)| format!("{reason}: {n}")).collect();
    write!(f, " ({})", parts.join(", "))
}
