//! What the aggregator reports: each event below writes its log line and
//! changes its metric in one `emit` (see `meter_telemetry::InternalEvent`).
//! `METRICS` is the catalogue of its metric families.

use meter_model::EventKind;
use meter_telemetry::{InternalEvent, LabelValues, MetricFamily};
use prometheus::local::LocalIntCounter;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use crate::engine::{LateReason, Refusal};

/// Why a record went to the dead-letter topic (the `reason` label and the
/// dead letter's `error_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not an Avro message of a schema this build knows.
    AvroDecode,
    /// A control record that does not decode.
    ControlDecode,
    /// Processing it panicked.
    ProcessingPanic,
    /// It ended the process three times (in-flight marker).
    ProcessingAborted,
    /// The engine refused it (see [`Refusal`]).
    InvalidEvent,
    UnstampedEvent,
    Unrated,
    Overflow,
    TenantAggregateLimit,
    VmModeConflict,
    VmTransitionCorrection,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 11] = [
        DeadLetterReason::AvroDecode,
        DeadLetterReason::ControlDecode,
        DeadLetterReason::ProcessingPanic,
        DeadLetterReason::ProcessingAborted,
        DeadLetterReason::InvalidEvent,
        DeadLetterReason::UnstampedEvent,
        DeadLetterReason::Unrated,
        DeadLetterReason::Overflow,
        DeadLetterReason::TenantAggregateLimit,
        DeadLetterReason::VmModeConflict,
        DeadLetterReason::VmTransitionCorrection,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::AvroDecode => "avro_decode",
            DeadLetterReason::ControlDecode => "control_decode",
            DeadLetterReason::ProcessingPanic => "processing_panic",
            DeadLetterReason::ProcessingAborted => "processing_aborted",
            DeadLetterReason::InvalidEvent => "invalid_event",
            DeadLetterReason::UnstampedEvent => "unstamped_event",
            DeadLetterReason::Unrated => "unrated",
            DeadLetterReason::Overflow => "overflow",
            DeadLetterReason::TenantAggregateLimit => "tenant_aggregate_limit",
            DeadLetterReason::VmModeConflict => "vm_mode_conflict",
            DeadLetterReason::VmTransitionCorrection => "vm_transition_correction",
        }
    }
}

impl From<&Refusal> for DeadLetterReason {
    fn from(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::Invalid(_) => DeadLetterReason::InvalidEvent,
            Refusal::Unstamped => DeadLetterReason::UnstampedEvent,
            Refusal::Unrated(crate::pricing::RatingError::Overflow) | Refusal::Overflow => DeadLetterReason::Overflow,
            Refusal::Unrated(_) => DeadLetterReason::Unrated,
            Refusal::TenantAggregateLimit { .. } => DeadLetterReason::TenantAggregateLimit,
            Refusal::VmModeConflict { .. } => DeadLetterReason::VmModeConflict,
            Refusal::VmTransitionCorrection => DeadLetterReason::VmTransitionCorrection,
        }
    }
}

/// What an applied event changed in its windows (the `change` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Counted,
    Corrected,
    Retracted,
}

impl Change {
    pub const fn as_str(self) -> &'static str {
        match self {
            Change::Counted => "counted",
            Change::Corrected => "corrected",
            Change::Retracted => "retracted",
        }
    }
}

const KINDS: LabelValues = LabelValues { label: "kind", values: &["vm-usage", "check-result", "ticket-time"] };

pub const CONSUMED: MetricFamily = MetricFamily::counter("meter_aggregator_events_consumed_total", "Input messages consumed.", &["kind"]);
pub const APPLIED: MetricFamily = MetricFamily::counter(
    "meter_aggregator_events_applied_total",
    "Events applied to their windows: counted (new), corrected (a higher version replaced the earlier one), retracted (deleted).",
    &["kind", "change"],
)
.closed(&[KINDS, LabelValues { label: "change", values: &["counted", "corrected", "retracted"] }]);
pub const CONTROL_RECORDS: MetricFamily = MetricFamily::counter(
    "meter_aggregator_control_records_applied_total",
    "Control records (recorded clock, explicit closes) applied.",
    &["kind"],
);
pub const CLOCK_RECORDS: MetricFamily =
    MetricFamily::counter("meter_aggregator_clock_records_written_total", "Clock records written into owned partitions.", &[]);
pub const DUPLICATES: MetricFamily =
    MetricFamily::counter("meter_aggregator_duplicates_dropped_total", "Events dropped as duplicates.", &["kind"]);
pub const LATE: MetricFamily = MetricFamily::counter(
    "meter_aggregator_events_late_total",
    "Events of a closed billing month, sent to the late-events topic.",
    &["kind", "reason"],
)
.closed(&[KINDS, LabelValues { label: "reason", values: &["period_closed", "closed_event_resent"] }]);
pub const DEAD_LETTERED: MetricFamily =
    MetricFamily::counter("meter_aggregator_events_dead_lettered_total", "Events sent to the dead-letter topic.", &["kind", "reason"]).closed(&[
        KINDS,
        LabelValues {
            label: "reason",
            values: &[
                DeadLetterReason::AvroDecode.as_str(),
                DeadLetterReason::ControlDecode.as_str(),
                DeadLetterReason::ProcessingPanic.as_str(),
                DeadLetterReason::ProcessingAborted.as_str(),
                DeadLetterReason::InvalidEvent.as_str(),
                DeadLetterReason::UnstampedEvent.as_str(),
                DeadLetterReason::Unrated.as_str(),
                DeadLetterReason::Overflow.as_str(),
                DeadLetterReason::TenantAggregateLimit.as_str(),
                DeadLetterReason::VmModeConflict.as_str(),
                DeadLetterReason::VmTransitionCorrection.as_str(),
            ],
        },
    ]);
pub const EMITTED: MetricFamily = MetricFamily::counter(
    "meter_aggregator_aggregates_emitted_total",
    "Aggregate revisions acknowledged on the aggregate topic (state: revision or final).",
    &["kind", "state"],
)
.closed(&[LabelValues { label: "state", values: &["revision", "final"] }]);
pub const PRODUCE_ERRORS: MetricFamily =
    MetricFamily::counter("meter_aggregator_produce_errors_total", "Failed produce attempts to output topics.", &["topic"]);
pub const OPEN_AGGREGATES: MetricFamily =
    MetricFamily::gauge("meter_aggregator_window_state_aggregates", "Open aggregates held in memory.", &[]);
pub const WATERMARK: MetricFamily = MetricFamily::gauge(
    "meter_aggregator_watermark_timestamp_seconds",
    "Recorded wall clock per input partition (the latest clock record applied).",
    &["topic", "partition"],
);
pub const TENANT_CHECK_RUNS: MetricFamily = MetricFamily::counter(
    "meter_tenant_check_runs_total",
    "Supervision check runs counted, per tenant and status (OK, WARNING, KO, UNKNOWN, MISSED).",
    &["tenant", "status"],
)
.closed(&[LabelValues { label: "status", values: &["OK", "WARNING", "KO", "UNKNOWN", "MISSED"] }]);
pub const CONSUMER_LAG: MetricFamily = MetricFamily::gauge(
    "meter_aggregator_consumer_lag_messages",
    "Messages between the partition's end and the next offset to apply.",
    &["topic", "partition"],
);

/// The aggregator's metric families.
pub const METRICS: &[MetricFamily] = &[
    CONSUMED,
    APPLIED,
    CONTROL_RECORDS,
    CLOCK_RECORDS,
    DUPLICATES,
    LATE,
    DEAD_LETTERED,
    EMITTED,
    PRODUCE_ERRORS,
    OPEN_AGGREGATES,
    WATERMARK,
    TENANT_CHECK_RUNS,
    CONSUMER_LAG,
];

/// The aggregator's metric handles, registered from [`METRICS`].
#[derive(Clone)]
pub struct AggregatorMetrics {
    control_records: IntCounterVec,
    clock_records: IntCounter,
    duplicates: IntCounterVec,
    late: IntCounterVec,
    dead_lettered: IntCounterVec,
    emitted: IntCounterVec,
    produce_errors: IntCounterVec,
    /// Open aggregates across owned partitions (a state, not an event).
    pub open_aggregates: IntGauge,
    /// Recorded wall clock per input partition (a state).
    pub watermark: IntGaugeVec,
    tenant_check_runs: IntCounterVec,
    /// Lag per input partition (a state).
    pub consumer_lag: IntGaugeVec,
    /// The counters every record moves, resolved once (a labelled look-up
    /// hashes its label values, on every record).
    per_record: PerRecord,
}

/// Counted in this thread and added to the registry's counters by
/// [`AggregatorMetrics::flush_per_record`]: an atomic add per record made
/// the loop wait for its pending stores, a twentieth of the end-to-end rate
/// (perf). A clone starts at zero; a drop flushes.
#[derive(Clone)]
struct PerRecord {
    consumed: [LocalIntCounter; 3],
    /// By kind, then change.
    applied: [[LocalIntCounter; 3]; 3],
}

impl PerRecord {
    fn flush(&self) {
        self.consumed.iter().for_each(LocalIntCounter::flush);
        self.applied.iter().flatten().for_each(LocalIntCounter::flush);
    }
}

impl Drop for PerRecord {
    fn drop(&mut self) {
        self.flush();
    }
}

const CHANGES: [Change; 3] = [Change::Counted, Change::Corrected, Change::Retracted];

/// The index of a kind in [`EventKind::ALL`].
fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::VmUsage => 0,
        EventKind::CheckResult => 1,
        EventKind::TicketTime => 2,
    }
}

impl PerRecord {
    fn resolve(consumed: &IntCounterVec, applied: &IntCounterVec) -> PerRecord {
        PerRecord {
            consumed: EventKind::ALL.map(|k| consumed.with_label_values(&[k.slug()]).local()),
            applied: EventKind::ALL.map(|k| CHANGES.map(|c| applied.with_label_values(&[k.slug(), c.as_str()]).local())),
        }
    }
}

impl AggregatorMetrics {
    /// Publishes the per-record counts kept since the last call (the run
    /// loop calls it every few dozen records and when idle).
    pub fn flush_per_record(&self) {
        self.per_record.flush();
    }

    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let consumed = CONSUMED.register_counter_vec(registry)?;
        let applied = APPLIED.register_counter_vec(registry)?;
        Ok(AggregatorMetrics {
            per_record: PerRecord::resolve(&consumed, &applied),
            control_records: CONTROL_RECORDS.register_counter_vec(registry)?,
            clock_records: CLOCK_RECORDS.register_counter(registry)?,
            duplicates: DUPLICATES.register_counter_vec(registry)?,
            late: LATE.register_counter_vec(registry)?,
            dead_lettered: DEAD_LETTERED.register_counter_vec(registry)?,
            emitted: EMITTED.register_counter_vec(registry)?,
            produce_errors: PRODUCE_ERRORS.register_counter_vec(registry)?,
            open_aggregates: OPEN_AGGREGATES.register_gauge(registry)?,
            watermark: WATERMARK.register_gauge_vec(registry)?,
            tenant_check_runs: TENANT_CHECK_RUNS.register_counter_vec(registry)?,
            consumer_lag: CONSUMER_LAG.register_gauge_vec(registry)?,
        })
    }
}

/// Where an input record sits (for log lines).
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A record was read from an input topic.
pub struct RecordConsumed {
    pub kind: EventKind,
}

impl InternalEvent for RecordConsumed {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        m.per_record.consumed[kind_index(self.kind)].inc();
    }
}

/// An event changed its windows.
pub struct EventApplied<'a> {
    pub kind: EventKind,
    pub change: Change,
    pub tenant: &'a str,
    pub event_id: &'a str,
}

impl InternalEvent for EventApplied<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::trace!(kind = %self.kind, change = self.change.as_str(), tenant = self.tenant, event_id = self.event_id, "event applied");
        let change = CHANGES.iter().position(|c| *c == self.change).unwrap_or(0);
        m.per_record.applied[kind_index(self.kind)][change].inc();
    }
}

/// A supervision check run was counted (the business metric per tenant).
pub struct CheckRunCounted<'a> {
    /// The tenant, or `other` when it is not configured (bounded labels).
    pub tenant_label: &'a str,
    pub status: &'static str,
}

impl InternalEvent for CheckRunCounted<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        m.tenant_check_runs.with_label_values(&[self.tenant_label, self.status]).inc();
    }
}

/// The same (or an older) version of a counted event came again.
pub struct DuplicateDropped<'a> {
    pub kind: EventKind,
    pub tenant: &'a str,
    pub event_id: &'a str,
}

impl InternalEvent for DuplicateDropped<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::debug!(kind = %self.kind, tenant = self.tenant, event_id = self.event_id, "duplicate dropped");
        m.duplicates.with_label_values(&[self.kind.slug()]).inc();
    }
}

/// An event of a closed billing month went to the late-events topic.
pub struct EventLate<'a> {
    pub kind: EventKind,
    pub reason: LateReason,
    pub tenant: &'a str,
    pub at: Position<'a>,
}

impl InternalEvent for EventLate<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::info!(kind = %self.kind, reason = self.reason.label(), tenant = self.tenant, topic = self.at.topic,
            partition = self.at.partition, offset = self.at.offset, "late event set aside (its month is closed): see the late-events topic");
        m.late.with_label_values(&[self.kind.slug(), self.reason.label()]).inc();
    }
}

/// A record went to the dead-letter topic.
pub struct EventDeadLettered<'a> {
    pub kind: EventKind,
    pub reason: DeadLetterReason,
    pub error: &'a str,
    pub at: Position<'a>,
}

impl InternalEvent for EventDeadLettered<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::warn!(kind = %self.kind, reason = self.reason.as_str(), error = self.error, topic = self.at.topic,
            partition = self.at.partition, offset = self.at.offset, "record dead-lettered");
        m.dead_lettered.with_label_values(&[self.kind.slug(), self.reason.as_str()]).inc();
    }
}

/// A control record (recorded clock, explicit close) was applied.
pub struct ControlRecordApplied {
    pub kind: EventKind,
}

impl InternalEvent for ControlRecordApplied {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::trace!(kind = %self.kind, "control record applied");
        m.control_records.with_label_values(&[self.kind.slug()]).inc();
    }
}

/// The aggregator recorded its wall clock into a partition it owns.
pub struct ClockRecordWritten<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub clock: chrono::DateTime<chrono::Utc>,
}

impl InternalEvent for ClockRecordWritten<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::debug!(topic = self.topic, partition = self.partition, clock = %self.clock, "clock record written");
        m.clock_records.inc();
    }
}

/// An aggregate revision was acknowledged on the aggregate topic.
pub struct AggregateEmitted {
    pub kind: EventKind,
    pub is_final: bool,
}

impl InternalEvent for AggregateEmitted {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        m.emitted.with_label_values(&[self.kind.slug(), if self.is_final { "final" } else { "revision" }]).inc();
    }
}

/// A produce to an output topic failed (the flush is retried).
pub struct ProduceFailed<'a> {
    pub topic: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for ProduceFailed<'_> {
    type Metrics = AggregatorMetrics;
    fn emit(self, m: &AggregatorMetrics) {
        tracing::warn!(topic = self.topic, error = %self.error, "produce failed");
        m.produce_errors.with_label_values(&[self.topic]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_in_the_catalogue_and_refusals_map_to_their_old_labels() {
        let closed = DEAD_LETTERED.closed_labels.iter().find(|l| l.label == "reason").unwrap();
        for reason in DeadLetterReason::ALL {
            assert!(closed.values.contains(&reason.as_str()), "{reason:?}");
        }
        assert_eq!(closed.values.len(), DeadLetterReason::ALL.len());
        let refusal = Refusal::VmModeConflict { vm_id: "vm-1".into(), mode: "samples" };
        assert_eq!(DeadLetterReason::from(&refusal).as_str(), "vm_mode_conflict");
        assert_eq!(DeadLetterReason::from(&Refusal::Overflow).as_str(), "overflow");
    }

    #[test]
    fn events_change_their_metric() {
        let registry = Registry::new();
        let m = AggregatorMetrics::register(&registry).unwrap();
        let at = Position { topic: "t", partition: 0, offset: 7 };
        EventDeadLettered { kind: EventKind::TicketTime, reason: DeadLetterReason::Unrated, error: "no price", at }.emit(&m);
        EventLate { kind: EventKind::TicketTime, reason: LateReason::PeriodClosed, tenant: "acme", at }.emit(&m);
        let text = meter_telemetry::render(&registry);
        assert!(text.contains(r#"meter_aggregator_events_dead_lettered_total{kind="ticket-time",reason="unrated"} 1"#), "{text}");
        assert!(text.contains(r#"meter_aggregator_events_late_total{kind="ticket-time",reason="period_closed"} 1"#), "{text}");
    }
}
