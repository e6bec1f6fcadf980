//! Typed records. Field names and meanings follow `schemas/*.avsc`; the JSON
//! form (collector input) uses the same snake_case names, RFC 3339 instants
//! and enum symbols in upper case.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub use crate::kinds::EventKind;

/// Fields every event carries: identity for deduplication, ownership for
/// windowing, and the two instants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHeader {
    pub event_id: String,
    pub source: String,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub event_time: DateTime<Utc>,
    /// Set by the collector when it publishes; absent in input files.
    #[serde(default = "unix_epoch")]
    pub ingest_time: DateTime<Utc>,
    /// Revision at the source (GLPI: `date_mod`): a higher version of the same
    /// (tenant, source, event_id) replaces the earlier one.
    #[serde(default)]
    pub version: i64,
    /// Retracts the event (its contribution leaves every window).
    #[serde(default)]
    pub deleted: bool,
}

impl EventHeader {
    /// The event's identity: no tenant can shadow another's events.
    pub fn key(&self) -> EventKey {
        EventKey { tenant: self.tenant.clone(), source: self.source.clone(), event_id: self.event_id.clone() }
    }
}

/// What deduplication and corrections key on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventKey {
    pub tenant: String,
    pub source: String,
    pub event_id: String,
}

fn unix_epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SlaTier {
    #[serde(rename = "SLA_99_7")]
    Sla99_7,
    #[serde(rename = "SLA_99_9")]
    Sla99_9,
    #[serde(rename = "SLA_99_99")]
    Sla99_99,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VmTransition {
    Sample,
    Create,
    Start,
    Resize,
    Stop,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmUsage {
    #[serde(flatten)]
    pub header: EventHeader,
    pub vm_id: String,
    pub vcpu: i32,
    pub ram_mib: i64,
    pub storage_gb: i64,
    pub bandwidth_mbps: i32,
    #[serde(default)]
    pub guaranteed_bandwidth: bool,
    #[serde(default)]
    pub public_ips: i32,
    pub sla_tier: SlaTier,
    #[serde(default)]
    pub options: Vec<String>,
    pub datacenter: String,
    pub transition: VmTransition,
    #[serde(default)]
    pub sample_interval_seconds: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckFrequency {
    Daily,
    Weekly,
    Monthly,
    Semestrial,
    Yearly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckStatus {
    Ok,
    Warning,
    Ko,
    Unknown,
    Missed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    #[serde(flatten)]
    pub header: EventHeader,
    pub check_id: String,
    pub check_name: String,
    pub target: String,
    pub frequency: CheckFrequency,
    #[serde(default)]
    pub scheduled_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub executed_time: Option<DateTime<Utc>>,
    pub status: CheckStatus,
    #[serde(default)]
    pub ticket_ref: Option<String>,
    #[serde(default)]
    pub time_spent_minutes: i32,
    #[serde(default)]
    pub output: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketType {
    Incident,
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TechnicianProfile {
    Administrator,
    Engineer,
    Consultant,
    Architect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketTime {
    #[serde(flatten)]
    pub header: EventHeader,
    pub ticket_id: String,
    pub task_id: String,
    pub ticket_type: TicketType,
    pub category_path: Vec<String>,
    #[serde(default = "default_true")]
    pub in_scope: bool,
    pub requester: String,
    pub technician: String,
    pub technician_profile: TechnicianProfile,
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    pub minutes_worked: i32,
    pub start_time: DateTime<Utc>,
}

fn default_true() -> bool {
    true
}

/// Any of the three events, as read from a topic or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    VmUsage(VmUsage),
    CheckResult(CheckResult),
    TicketTime(TicketTime),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::VmUsage(e) => &e.header,
            Event::CheckResult(e) => &e.header,
            Event::TicketTime(e) => &e.header,
        }
    }

    pub fn header_mut(&mut self) -> &mut EventHeader {
        match self {
            Event::VmUsage(e) => &mut e.header,
            Event::CheckResult(e) => &mut e.header,
            Event::TicketTime(e) => &mut e.header,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::VmUsage(_) => EventKind::VmUsage,
            Event::CheckResult(_) => EventKind::CheckResult,
            Event::TicketTime(_) => EventKind::TicketTime,
        }
    }

    /// Parses one JSON document of the given kind. Unknown fields are refused
    /// so that a typo in a collector feed is an error, not a silent default.
    /// The allowed names are the fields of the kind's Avro schema (serde's own
    /// check does not work through the flattened header).
    pub fn from_json(kind: EventKind, json: &str) -> Result<Event, serde_json::Error> {
        use serde::de::Error as _;
        let value: serde_json::Value = serde_json::from_str(json)?;
        let Some(object) = value.as_object() else {
            return Err(serde_json::Error::custom("expected a JSON object"));
        };
        let allowed = kind.field_names();
        if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(serde_json::Error::custom(format!(
                "unknown field `{unknown}`, expected one of: {}",
                allowed.join(", ")
            )));
        }
        Ok(match kind {
            EventKind::VmUsage => Event::VmUsage(serde_json::from_value(value)?),
            EventKind::CheckResult => Event::CheckResult(serde_json::from_value(value)?),
            EventKind::TicketTime => Event::TicketTime(serde_json::from_value(value)?),
        })
    }

    /// Checks the business rules the schema cannot express, with the default
    /// clock skew ([`Limits::default`]). Returns every problem found, so a
    /// user fixes a line once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_with(&Limits::default())
    }

    /// [`Event::validate`] with explicit limits. An event stamped by a
    /// collector (`ingest_time` set) is checked against its own stamp, so the
    /// result never depends on when it is checked; an unstamped one (a file
    /// line before publishing) against the current time.
    ///
    /// A valid event costs no allocation (the aggregator validates every
    /// record): the problems' list and texts are made only when a rule fails.
    pub fn validate_with(&self, limits: &Limits) -> Result<(), ValidationError> {
        // `Vec::new` does not allocate: only a first problem does.
        let mut problems = Vec::new();
        let h = self.header();
        for (name, value) in [
            ("event_id", &h.event_id),
            ("source", &h.source),
            ("tenant", &h.tenant),
            ("subsidiary", &h.subsidiary),
            ("domain", &h.domain),
        ] {
            if is_blank(value) {
                problems.push(format!("{name} must not be empty"));
            }
        }
        self.for_each_text_field(|name, value| {
            if value.len() > limits::MAX_TEXT_BYTES {
                problems.push(format!("{name} is {} bytes, more than the {} allowed", value.len(), limits::MAX_TEXT_BYTES));
            }
        });
        const ALLOWED: std::ops::Range<DateTime<Utc>> = limits::earliest()..limits::latest();
        let in_range = |t: DateTime<Utc>| ALLOWED.contains(&t);
        if !in_range(h.event_time) {
            problems.push(format!("event_time {} is outside [{}, {})", h.event_time, limits::earliest(), limits::latest()));
        }
        let stamped = h.ingest_time != DateTime::<Utc>::UNIX_EPOCH;
        if stamped && !in_range(h.ingest_time) {
            problems.push(format!("ingest_time {} is outside [{}, {})", h.ingest_time, limits::earliest(), limits::latest()));
        }
        let reference = if stamped { h.ingest_time } else { Utc::now() };
        // A difference, not `reference + skew`: that sum panics for a stamp
        // near the last instant chrono represents (a hostile message can carry one).
        if h.event_time.signed_duration_since(reference) > limits.max_clock_skew {
            problems.push(format!(
                "event_time {} is more than {} s ahead of {} {} (a wrong clock, or a unit mistake)",
                h.event_time,
                limits.max_clock_skew.num_seconds(),
                if stamped { "its ingest_time" } else { "now" },
                reference
            ));
        }
        if h.version < 0 {
            problems.push(format!("version must not be negative, got {}", h.version));
        }
        match self {
            Event::VmUsage(v) => {
                if is_blank(&v.vm_id) {
                    problems.push("vm_id must not be empty".into());
                }
                if v.vcpu < 0 || v.ram_mib < 0 || v.storage_gb < 0 || v.bandwidth_mbps < 0 || v.public_ips < 0 {
                    problems.push("resources (vcpu, ram_mib, storage_gb, bandwidth_mbps, public_ips) must not be negative".into());
                }
                for (name, value, max) in [
                    ("vcpu", i64::from(v.vcpu), limits::MAX_VCPU),
                    ("ram_mib", v.ram_mib, limits::MAX_RAM_MIB),
                    ("storage_gb", v.storage_gb, limits::MAX_STORAGE_GB),
                    ("bandwidth_mbps", i64::from(v.bandwidth_mbps), limits::MAX_BANDWIDTH_MBPS),
                    ("public_ips", i64::from(v.public_ips), limits::MAX_PUBLIC_IPS),
                    ("sample_interval_seconds", i64::from(v.sample_interval_seconds), limits::MAX_SAMPLE_INTERVAL_SECONDS),
                ] {
                    if value > max {
                        problems.push(format!("{name} {value} is above the maximum {max}"));
                    }
                }
                if v.options.len() > limits::MAX_LIST_ITEMS {
                    problems.push(format!("options has {} items, more than the {} allowed", v.options.len(), limits::MAX_LIST_ITEMS));
                }
                match v.transition {
                    VmTransition::Sample if v.sample_interval_seconds <= 0 => {
                        problems.push("a SAMPLE needs sample_interval_seconds > 0".into())
                    }
                    VmTransition::Sample => {}
                    _ if v.sample_interval_seconds != 0 => {
                        problems.push("a lifecycle transition must have sample_interval_seconds = 0".into())
                    }
                    _ => {}
                }
            }
            Event::CheckResult(c) => {
                if is_blank(&c.check_id) || is_blank(&c.check_name) {
                    problems.push("check_id and check_name must not be empty".into());
                }
                if c.time_spent_minutes < 0 {
                    problems.push("time_spent_minutes must not be negative".into());
                }
                if c.status == CheckStatus::Missed && c.executed_time.is_some() {
                    problems.push("a MISSED run must not have an executed_time".into());
                }
                if c.status != CheckStatus::Missed && c.executed_time.is_none() {
                    problems.push("a run that is not MISSED needs an executed_time".into());
                }
            }
            Event::TicketTime(t) => {
                if is_blank(&t.ticket_id) || is_blank(&t.task_id) {
                    problems.push("ticket_id and task_id must not be empty".into());
                }
                if t.category_path.is_empty() || t.category_path.iter().any(|c| is_blank(c)) {
                    problems.push("category_path needs at least one non-empty level".into());
                }
                if t.category_path.len() > limits::MAX_LIST_ITEMS {
                    problems.push(format!("category_path has {} levels, more than the {} allowed", t.category_path.len(), limits::MAX_LIST_ITEMS));
                }
                // A task longer than a day is a unit mistake (seconds sent as minutes), not work.
                if !(1..=24 * 60).contains(&t.minutes_worked) {
                    problems.push(format!("minutes_worked must be between 1 and 1440, got {}", t.minutes_worked));
                }
                if t.start_time > t.header.event_time {
                    problems.push("start_time must not be after event_time".into());
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { problems })
        }
    }
}

impl Event {
    /// Calls `visit` with every free-text field (name, value), for the size
    /// limit; lists give one call per item. A callback, not a list, so that
    /// validating a valid event allocates nothing.
    fn for_each_text_field(&self, mut visit: impl FnMut(&'static str, &str)) {
        let h = self.header();
        for (name, value) in [
            ("event_id", &h.event_id),
            ("source", &h.source),
            ("tenant", &h.tenant),
            ("subsidiary", &h.subsidiary),
            ("domain", &h.domain),
        ] {
            visit(name, value);
        }
        match self {
            Event::VmUsage(v) => {
                visit("vm_id", &v.vm_id);
                visit("datacenter", &v.datacenter);
                v.options.iter().for_each(|o| visit("options[]", o));
            }
            Event::CheckResult(c) => {
                visit("check_id", &c.check_id);
                visit("check_name", &c.check_name);
                visit("target", &c.target);
                if let Some(t) = c.ticket_ref.as_deref() {
                    visit("ticket_ref", t);
                }
                // Plugin output is drill-down text, longer but still bounded.
                if let Some(o) = c.output.as_deref().filter(|o| o.len() > limits::MAX_OUTPUT_BYTES) {
                    visit("output", o);
                }
            }
            Event::TicketTime(t) => {
                visit("ticket_id", &t.ticket_id);
                visit("task_id", &t.task_id);
                visit("requester", &t.requester);
                visit("technician", &t.technician);
                t.category_path.iter().for_each(|c| visit("category_path[]", c));
                if let Some(a) = t.application.as_deref() {
                    visit("application", a);
                }
                if let Some(c) = t.country.as_deref() {
                    visit("country", c);
                }
            }
        }
    }
}

/// Whether a text is empty or only whitespace (`trim().is_empty()`), without
/// trimming when it starts with a visible ASCII character: ids and names.
fn is_blank(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(&first) if first.is_ascii() && !char::from(first).is_whitespace() => false,
        _ => text.trim().is_empty(),
    }
}

/// The documented bounds of every event field. Anything outside is refused
/// with its reason at every intake and by the aggregator.
pub mod limits {
    use chrono::{DateTime, Utc};

    /// Ids, names, dimensions: bytes at most.
    pub const MAX_TEXT_BYTES: usize = 256;
    /// A check's plugin output: bytes at most.
    pub const MAX_OUTPUT_BYTES: usize = 4096;
    /// Items of `category_path` and `options`.
    pub const MAX_LIST_ITEMS: usize = 16;
    pub const MAX_VCPU: i64 = 4096;
    /// 64 TiB.
    pub const MAX_RAM_MIB: i64 = 64 * 1024 * 1024;
    /// 1 PB.
    pub const MAX_STORAGE_GB: i64 = 1_000_000;
    /// 1 Tbit/s.
    pub const MAX_BANDWIDTH_MBPS: i64 = 1_000_000;
    pub const MAX_PUBLIC_IPS: i64 = 65_536;
    /// One sample covers a month at most.
    pub const MAX_SAMPLE_INTERVAL_SECONDS: i64 = 31 * 86_400;
    /// Default allowed advance of `event_time` over `ingest_time`.
    pub const DEFAULT_MAX_CLOCK_SKEW_SECONDS: i64 = 3600;

    /// Event and ingest times are in [2000-01-01, 2100-01-01) UTC.
    /// (Constants, not calendar arithmetic: validation compares every event.)
    pub const fn earliest() -> DateTime<Utc> {
        match DateTime::from_timestamp(946_684_800, 0) {
            Some(t) => t,
            None => DateTime::<Utc>::MIN_UTC,
        }
    }

    pub const fn latest() -> DateTime<Utc> {
        match DateTime::from_timestamp(4_102_444_800, 0) {
            Some(t) => t,
            None => DateTime::<Utc>::MAX_UTC,
        }
    }
}

/// Limits that are configuration, not schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How far `event_time` may be ahead of `ingest_time`.
    pub max_clock_skew: chrono::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_clock_skew: chrono::Duration::seconds(limits::DEFAULT_MAX_CLOCK_SKEW_SECONDS) }
    }
}

/// A wall-clock decision recorded in an event partition (see
/// `schemas/period_control.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeriodAction {
    Clock,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodControl {
    pub action: PeriodAction,
    pub clock: DateTime<Utc>,
    pub tenant: String,
    pub month: String,
    pub requested_by: String,
    pub reason: String,
}

/// The Kafka header that marks a control record on an event topic.
pub const CONTROL_HEADER: &str = "meter.control";

/// Business-rule violations of one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {}", problems.join("; "))]
pub struct ValidationError {
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Period {
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    pub const ALL: [Period; 4] = [Period::Day, Period::Week, Period::Month, Period::Year];

    pub fn symbol(self) -> &'static str {
        match self {
            Period::Day => "DAY",
            Period::Week => "WEEK",
            Period::Month => "MONTH",
            Period::Year => "YEAR",
        }
    }
}

/// One revision of a windowed total (see `schemas/aggregate.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    pub aggregate_id: String,
    pub revision: i64,
    pub is_final: bool,
    pub kind: EventKind,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub period: Period,
    pub time_zone: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub window_label: String,
    pub metric: String,
    pub unit: String,
    pub dimensions: BTreeMap<String, String>,
    pub quantity: Decimal,
    pub event_count: i64,
    pub incident_count: i64,
    pub request_count: i64,
    pub ok_count: i64,
    pub warning_count: i64,
    pub ko_count: i64,
    pub unknown_count: i64,
    pub missed_count: i64,
    pub cost: Decimal,
    pub currency: String,
    pub price_book_version: String,
    pub emitted_at: DateTime<Utc>,
}

/// The identity fields of an aggregate, hashed into `aggregate_id`.
#[allow(clippy::too_many_arguments)]
pub fn aggregate_id(
    kind: EventKind,
    tenant: &str,
    subsidiary: &str,
    domain: &str,
    period: Period,
    window_start: DateTime<Utc>,
    metric: &str,
    dimensions: &BTreeMap<String, String>,
) -> String {
    let dimensions = EncodedDimensions::new(dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    AggregateScope::new(kind, tenant, subsidiary, domain).id(period, window_start, metric, &dimensions)
}

/// Length-prefixed parts so that ("ab","c") and ("a","bc") differ.
fn length_prefixed(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// An aggregate's dimensions in key order, encoded once as `aggregate_id`
/// hashes them (length-prefixed key, value, key, value...): one buffer an
/// event hashes for each of its windows, and reads back into a map only when
/// it opens an aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedDimensions(Vec<u8>);

impl EncodedDimensions {
    /// `pairs` in strictly increasing key order (as a `BTreeMap` iterates).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut encoded = EncodedDimensions(Vec::with_capacity(256));
        let mut previous: Option<&str> = None;
        for (k, v) in pairs {
            debug_assert!(previous.is_none_or(|p| p < k), "dimension keys out of order: {previous:?} then {k}");
            previous = Some(k);
            encoded.push(k, v);
        }
        encoded
    }

    /// Appends one pair; the caller pushes keys in strictly increasing order.
    fn push(&mut self, key: &str, value: &str) {
        length_prefixed(&mut self.0, key.as_bytes());
        length_prefixed(&mut self.0, value.as_bytes());
    }

    /// The (key, value) pairs, in key order.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let mut rest = self.0.as_slice();
        let mut next = || -> Option<String> {
            let (len, tail) = rest.split_first_chunk::<8>()?;
            let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
            let (text, tail) = tail.split_at_checked(len)?;
            rest = tail;
            // Built from `&str`s only, so always UTF-8.
            Some(String::from_utf8_lossy(text).into_owned())
        };
        while let (Some(k), Some(v)) = (next(), next()) {
            map.insert(k, v);
        }
        map
    }
}

/// A dimension value as an event holds it: a text, or parts joined by a
/// separator (a category path), compared and encoded without building it.
#[derive(Debug, Clone, Copy)]
pub enum DimensionValue<'a> {
    Text(&'a str),
    Joined(&'a [String], &'static str),
}

impl DimensionValue<'_> {
    /// Length of the value's text, in bytes.
    pub fn len(&self) -> usize {
        match self {
            DimensionValue::Text(t) => t.len(),
            DimensionValue::Joined(parts, sep) => parts.iter().map(String::len).sum::<usize>() + sep.len() * parts.len().saturating_sub(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the value's text.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            DimensionValue::Text(t) => out.extend_from_slice(t.as_bytes()),
            DimensionValue::Joined(parts, sep) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(sep.as_bytes());
                    }
                    out.extend_from_slice(part.as_bytes());
                }
            }
        }
    }
}

impl EncodedDimensions {
    /// The encoding of `pairs` (in strictly increasing key order).
    pub fn from_pairs(pairs: &[(&str, DimensionValue<'_>)]) -> Self {
        let mut out = Vec::with_capacity(pairs.iter().map(|(k, v)| 16 + k.len() + v.len()).sum());
        for (key, value) in pairs {
            length_prefixed(&mut out, key.as_bytes());
            out.extend((value.len() as u64).to_le_bytes());
            value.write_to(&mut out);
        }
        EncodedDimensions(out)
    }

    /// The (key, value) pairs, in key order, as bytes.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || Some((take_prefixed(&mut rest)?, take_prefixed(&mut rest)?)))
    }
}

/// The next length-prefixed part of `rest`.
fn take_prefixed<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    let (part, tail) = tail.split_at_checked(len)?;
    *rest = tail;
    Some(part)
}

/// The part of `aggregate_id` shared by every window of one event (kind,
/// tenant, subsidiary, domain), hashed once.
#[derive(Clone)]
pub struct AggregateScope(sha2::Sha256);

impl fmt::Debug for AggregateScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AggregateScope(SHA-256 state)")
    }
}

impl AggregateScope {
    pub fn new(kind: EventKind, tenant: &str, subsidiary: &str, domain: &str) -> Self {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for part in [kind.symbol(), tenant, subsidiary, domain] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        AggregateScope(hasher)
    }

    /// The id of the aggregate of this scope for one window, metric and dimensions.
    pub fn id(&self, period: Period, window_start: DateTime<Utc>, metric: &str, dimensions: &EncodedDimensions) -> String {
        use sha2::Digest;
        let mut hasher = self.0.clone();
        // The window start in decimal milliseconds, without a String.
        let mut digits = [0u8; 24];
        let written = {
            use std::io::Write;
            let mut cursor = &mut digits[..];
            let _ = write!(cursor, "{}", window_start.timestamp_millis());
            24 - cursor.len()
        };
        // sha2 buffers small updates into its block, so part by part is cheap.
        for part in [period.symbol().as_bytes(), &digits[..written], metric.as_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(&dimensions.0);
        hex::encode(&hasher.finalize()[..16])
    }
}

/// An input that could not be processed (see `schemas/dead_letter.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub component: String,
    pub error_kind: String,
    pub error: String,
    pub original: Vec<u8>,
    pub event_kind: Option<String>,
    pub source_file: Option<String>,
    pub source_line: Option<i64>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub failed_at: DateTime<Utc>,
}

/// One constructor per origin of a dead letter, so that no writer fills
/// the eleven fields by hand (and leaves a location out).
impl DeadLetter {
    /// A refused line (or CSV row) of a file.
    pub fn from_file_line(
        component: &str,
        file: &str,
        line: u64,
        reason: &str,
        error: impl Into<String>,
        original: impl Into<Vec<u8>>,
    ) -> Self {
        let mut letter = Self::refused(component, reason, error, original);
        letter.source_file = Some(file.into());
        letter.source_line = Some(i64::try_from(line).unwrap_or(i64::MAX));
        letter
    }

    /// A refused record of a topic (the aggregator, a sink).
    pub fn from_topic_position(
        component: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        reason: &str,
        error: impl Into<String>,
        original: impl Into<Vec<u8>>,
    ) -> Self {
        let mut letter = Self::refused(component, reason, error, original);
        letter.source_topic = Some(topic.into());
        letter.source_partition = Some(partition);
        letter.source_offset = Some(offset);
        letter
    }

    /// A refused input of a request or an answer: `location` names where it
    /// came from (an endpoint, a URL), `position` its place in the request
    /// when it holds several.
    pub fn from_request(
        component: &str,
        location: &str,
        position: Option<i64>,
        reason: &str,
        error: impl Into<String>,
        original: impl Into<Vec<u8>>,
    ) -> Self {
        let mut letter = Self::refused(component, reason, error, original);
        letter.source_file = Some(location.into());
        letter.source_line = position;
        letter
    }

    /// The event kind the input was meant to be.
    pub fn of_kind(mut self, kind: EventKind) -> Self {
        self.event_kind = Some(kind.slug().into());
        self
    }

    fn refused(component: &str, reason: &str, error: impl Into<String>, original: impl Into<Vec<u8>>) -> Self {
        let now = Utc::now();
        DeadLetter {
            component: component.into(),
            error_kind: reason.into(),
            error: error.into(),
            original: original.into(),
            event_kind: None,
            source_file: None,
            source_line: None,
            source_topic: None,
            source_partition: None,
            source_offset: None,
            // Millisecond precision, as Avro keeps it.
            failed_at: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// `aggregate_id` as first written (one SHA-256 over every part): the ids
    /// are keys in ClickHouse, so the stepwise hashing must give the same ones.
    fn reference_id(kind: EventKind, parts: [&str; 3], period: Period, start: DateTime<Utc>, metric: &str, dims: &BTreeMap<String, String>) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut part = |s: &str| {
            hasher.update((s.len() as u64).to_le_bytes());
            hasher.update(s.as_bytes());
        };
        part(kind.symbol());
        for p in parts {
            part(p);
        }
        part(period.symbol());
        part(&start.timestamp_millis().to_string());
        part(metric);
        for (k, v) in dims {
            part(k);
            part(v);
        }
        hex::encode(&hasher.finalize()[..16])
    }

    proptest! {
        #[test]
        fn blank_is_what_trim_leaves_empty(text in "[ \t\n\x0b\x0c\r\u{85}\u{a0}\u{3000}a-zé_.-]{0,6}") {
            prop_assert_eq!(is_blank(&text), text.trim().is_empty(), "{:?}", text);
        }

        #[test]
        fn stepwise_ids_are_the_same_ids(tenant in ".{0,80}", subsidiary in ".{0,12}", domain in ".{0,12}", metric in "[a-z.]{1,20}",
                                         ms in -62_000_000_000_000i64..250_000_000_000_000i64,
                                         dims in prop::collection::btree_map(".{0,10}", ".{0,70}", 0..9)) {
            let start = Utc.timestamp_millis_opt(ms).unwrap();
            let encoded = EncodedDimensions::new(dims.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            prop_assert_eq!(encoded.to_map(), dims.clone());
            let scope = AggregateScope::new(EventKind::TicketTime, &tenant, &subsidiary, &domain);
            for period in Period::ALL {
                let expected = reference_id(EventKind::TicketTime, [&tenant, &subsidiary, &domain], period, start, &metric, &dims);
                prop_assert_eq!(scope.id(period, start, &metric, &encoded), expected.clone());
                prop_assert_eq!(aggregate_id(EventKind::TicketTime, &tenant, &subsidiary, &domain, period, start, &metric, &dims), expected);
            }
        }
    }
}
