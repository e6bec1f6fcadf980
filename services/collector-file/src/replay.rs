//! `meter collect file --rate N`: sends history (for example a year of it)
//! from JSON-lines files of one kind at a bounded rate, so that a backfill
//! does not starve the live traffic of the broker and the aggregator.
//!
//! - Lines are read and checked as the file collector does
//!   ([`crate::parse_line`]); a bad line is reported with its file
//!   and number, dead-lettered with its original bytes (component
//!   `replay`), counted by reason, and skipped.
//! - An event whose `(source, event_id)` was already sent by this run (the
//!   same event twice in the files) is sent once and counted as a duplicate.
//!   The run remembers 16 bytes per distinct event (a SHA-256 prefix).
//! - Events are published in file order, keyed by tenant, at most `rate` a
//!   second (a GCRA limiter, `governor`, allowing bursts of a tenth of a
//!   second); the run ends once the broker has acknowledged every one.
//! - The aggregator treats replayed events like any other: an event older
//!   than the allowed lateness behind its partition's watermark goes to the
//!   late-events topic, and `meter reprocess` re-rates those periods.
//!   Replaying into a pipeline whose watermark is still behind the history
//!   (a new deployment) counts everything directly.

use collector_runtime::{InternalEvent, RecordsRead};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::BufReader;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use collector_runtime::{CollectorMetrics, Publisher};
use governor::{Quota, RateLimiter};
use indicatif::{ProgressBar, ProgressStyle};
use meter_config::MeterConfig;
use meter_model::EventKind;
use rdkafka::producer::FutureProducer;
use sha2::{Digest, Sha256};

use crate::{file_dead_letter, CollectError, JsonLine, JsonLines};

/// The dead-letter component of replayed lines.
pub const COMPONENT: &str = "replay";
/// `source` label of `meter_collector_last_success_timestamp_seconds`.
pub const METRIC_SOURCE: &str = "replay";

/// Options of one run.
pub struct ReplayOptions {
    /// Events sent per second at most.
    pub rate: NonZeroU32,
    pub show_progress: bool,
    /// Publishes waiting for their acknowledgement at once.
    pub max_in_flight: usize,
}

impl ReplayOptions {
    pub fn new(rate: NonZeroU32) -> Self {
        ReplayOptions { rate, show_progress: false, max_in_flight: collector_runtime::DEFAULT_MAX_IN_FLIGHT }
    }
}

/// A line that was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRejection {
    pub file: String,
    pub line: u64,
    pub reason: &'static str,
    pub error: String,
}

/// The outcome of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub files: usize,
    /// Non-empty lines read.
    pub lines_read: u64,
    /// Events acknowledged by the broker.
    pub sent: u64,
    /// Valid lines whose `(source, event_id)` had been sent already.
    pub duplicates: u64,
    pub rejections: Vec<ReplayRejection>,
    pub elapsed: Duration,
}

impl ReplaySummary {
    pub fn rejected_by_reason(&self) -> BTreeMap<&'static str, u64> {
        collector_runtime::count_by_reason(self.rejections.iter().map(|r| r.reason))
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} lines read in {} files: {} sent, {} duplicates (sent once), {} rejected",
            self.lines_read,
            self.files,
            self.sent,
            self.duplicates,
            self.rejections.len()
        )?;
        collector_runtime::write_reason_counts(f, &self.rejected_by_reason())?;
        write!(f, "; {seconds:.1} s")?;
        if seconds > 0.0 {
            write!(f, " ({:.0} events/s)", self.sent as f64 / seconds)?;
        }
        Ok(())
    }
}

fn identity(source: &str, event_id: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update((source.len() as u64).to_le_bytes());
    hasher.update(source.as_bytes());
    hasher.update(event_id.as_bytes());
    let digest = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The largest burst the limiter allows: a tenth of a second of events.
pub fn burst(rate: NonZeroU32) -> NonZeroU32 {
    NonZeroU32::new(rate.get() / 10).unwrap_or(NonZeroU32::MIN)
}

/// Replays `files` (events of `kind`, one JSON object a line).
pub async fn replay(
    config: &MeterConfig,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
    kind: EventKind,
    files: &[PathBuf],
    options: &ReplayOptions,
) -> Result<ReplaySummary, CollectError> {
    let started = Instant::now();
    let mut total_bytes = 0;
    let mut opened = Vec::with_capacity(files.len());
    for path in files {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| CollectError::Read { path: name.clone(), source })?;
        total_bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        opened.push((name, file));
    }
    let progress = if options.show_progress {
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let limiter = RateLimiter::direct(Quota::per_second(options.rate).allow_burst(burst(options.rate)));
    let publisher =
        Publisher::new(config, producer.clone(), metrics.clone(), METRIC_SOURCE).with_max_in_flight(options.max_in_flight);
    let kind_label = kind.slug();
    let mut summary = ReplaySummary { files: files.len(), ..ReplaySummary::default() };
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut batch = publisher.batch();
    let mut raw = Vec::new();
    for (file_name, file) in opened {
        let mut lines = JsonLines::new(BufReader::new(file), kind);
        while let Some(JsonLine { number: line_number, bytes_read, parsed }) =
            lines.next(&mut raw).map_err(|source| CollectError::Read { path: file_name.clone(), source })?
        {
            progress.inc(bytes_read as u64);
            summary.lines_read += 1;
            RecordsRead { kind: kind_label, count: 1 }.emit(&metrics);
            match parsed {
                Ok(event) => {
                    if !seen.insert(identity(&event.header().source, &event.header().event_id)) {
                        summary.duplicates += 1;
                        continue;
                    }
                    limiter.until_ready().await;
                    batch.push(event).await?;
                    // Collect acknowledgements as they come, without waiting.
                    batch.take_ready()?;
                    if summary.lines_read % 256 == 1 {
                        progress.set_message(format!("{kind_label} {file_name}: {} sent", batch.acknowledged()));
                    }
                }
                Err((reason, error)) => {
                    progress.suspend(|| tracing::warn!(file = %file_name, line = line_number, reason, %error, "rejected line"));
                    publisher.dead_letter(&file_dead_letter(COMPONENT, kind, &file_name, line_number, reason, &error, &raw)).await?;
                    summary.rejections.push(ReplayRejection { file: file_name.clone(), line: line_number, reason, error });
                }
            }
        }
    }
    summary.sent = batch.finish().await?;
    if summary.sent > 0 {
        publisher.succeeded();
    }
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    tracing::info!(kind = kind_label, files = summary.files, lines = summary.lines_read, sent = summary.sent,
        duplicates = summary.duplicates, rejected = summary.rejections.len(), "replay finished");
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_do_not_run_source_and_id_together() {
        assert_ne!(identity("ab", "c"), identity("a", "bc"));
        assert_eq!(identity("glpi", "1"), identity("glpi", "1"));
    }

    #[test]
    fn the_burst_is_a_tenth_of_a_second_at_least_one() {
        assert_eq!(burst(NonZeroU32::new(1).unwrap()).get(), 1);
        assert_eq!(burst(NonZeroU32::new(20).unwrap()).get(), 2);
        assert_eq!(burst(NonZeroU32::new(50_000).unwrap()).get(), 5_000);
    }

    #[tokio::test]
    async fn the_limiter_holds_the_rate() {
        // 30 permits at 100/s with a burst of 10: at least 0.2 s.
        let rate = NonZeroU32::new(100).unwrap();
        let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst(rate)));
        let started = Instant::now();
        for _ in 0..30 {
            limiter.until_ready().await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn the_summary_lists_reasons() {
        let summary = ReplaySummary {
            files: 2,
            lines_read: 10,
            sent: 6,
            duplicates: 2,
            rejections: vec![
                ReplayRejection { file: "a".into(), line: 1, reason: "malformed_json", error: String::new() },
                ReplayRejection { file: "a".into(), line: 2, reason: "malformed_json", error: String::new() },
            ],
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            summary.to_string(),
            "10 lines read in 2 files: 6 sent, 2 duplicates (sent once), 2 rejected (malformed_json: 2); 2.0 s (3 events/s)"
        );
    }
}
