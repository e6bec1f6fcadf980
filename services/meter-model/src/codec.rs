//! Avro single-object encoding (spec 1.x: `C3 01` + 8-byte little-endian
//! CRC-64-AVRO fingerprint of the writer schema + binary datum).
//!
//! The fingerprint is the specification's: CRC-64-AVRO of the schema's
//! Parsing Canonical Form, computed by [`crate::fingerprint`] from the `.avsc`
//! text, so consumers in other languages (Java's `BinaryMessageDecoder`,
//! fastavro, Flink, Spark) find the writer schema by it.
//!
//! Decoding looks the fingerprint up among the current schemas and every
//! older version kept in `schemas/history/`, then resolves the datum to the
//! current schema, so consumers read messages written by older producers.
//!
//! **Migration rule (legacy fingerprints).** Until this change, writers put
//! apache-avro 0.21's fingerprint in the header
//! ([`crate::fingerprint::legacy_fingerprint`]), which differs from the
//! specification's for every schema with a logical type. Writers now only put
//! the specification's fingerprint; readers accept both, for every known
//! schema version (current and history): a message with the legacy
//! fingerprint of a schema decodes exactly as one with its specification
//! fingerprint. Keep accepting legacy fingerprints as long as topics or
//! replay files may hold messages written before the change.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Utc};

use crate::avro_value::{self as av, Fields};
use crate::events::*;
use crate::fingerprint;
use crate::kinds::KINDS;

pub use crate::error::CodecError;

/// The embedded `.avsc` texts of the records that are not events: (full
/// record name, text). The events' current schemas are in [`KINDS`].
const OTHER_RECORDS: [(&str, &str); 3] = [
    ("io.meter.aggregates.Aggregate", include_str!("../../../schemas/aggregate.avsc")),
    ("io.meter.errors.DeadLetter", include_str!("../../../schemas/dead_letter.avsc")),
    ("io.meter.control.PeriodControl", include_str!("../../../schemas/period_control.avsc")),
];

/// The current schema of every record: (full record name, text).
fn current_schemas() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS.iter().map(|k| (k.record, k.schema)).chain(OTHER_RECORDS)
}

const HISTORY: [(&str, &str); 4] = [
    ("io.meter.events.TicketTime", include_str!("../../../schemas/history/ticket_time.v1.avsc")),
    // Before `version` and `deleted` (corrections and retractions).
    ("io.meter.events.TicketTime", include_str!("../../../schemas/history/ticket_time.v2.avsc")),
    ("io.meter.events.VmUsage", include_str!("../../../schemas/history/vm_usage.v1.avsc")),
    ("io.meter.events.CheckResult", include_str!("../../../schemas/history/check_result.v1.avsc")),
];

struct KnownSchema {
    record: &'static str,
    schema: Schema,
    text: &'static str,
    /// The current version of `record` (no resolution needed).
    current: bool,
}

struct Registry {
    /// Current schema of each record and the header writers put before its datums.
    current: HashMap<&'static str, (Schema, Vec<u8>)>,
    /// Every fingerprint readers accept: the specification's and the legacy
    /// one of every known schema version (see the migration rule above).
    by_fingerprint: HashMap<[u8; 8], KnownSchema>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // A hostile length prefix (an array count of 2^29 in 30 bytes) must be
        // an error, not a reservation of gigabytes.
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let mut current = HashMap::new();
        let mut by_fingerprint = HashMap::new();
        // History first, so that if a history version had the same canonical
        // form as the current one (a test forbids it), the current one wins.
        for (is_current, (record, text)) in
            HISTORY.iter().copied().map(|s| (false, s)).chain(current_schemas().map(|s| (true, s)))
        {
            // The schemas are compiled in and parsed by a unit test; a failure
            // here is a build defect, not an input error.
            let schema = Schema::parse_str(text).expect("embedded schema parses (see codec tests)");
            let spec = fingerprint::fingerprint(text).expect("embedded schema has a canonical form (see fingerprint tests)");
            let legacy = fingerprint::legacy_fingerprint(&schema);
            if is_current {
                let mut header = vec![0xC3, 0x01];
                header.extend_from_slice(&spec);
                current.insert(record, (schema.clone(), header));
            }
            // The specification's fingerprint wins over another version's legacy one.
            by_fingerprint.entry(legacy).or_insert(KnownSchema { record, schema: schema.clone(), text, current: is_current });
            by_fingerprint.insert(spec, KnownSchema { record, schema, text, current: is_current });
        }
        Registry { current, by_fingerprint }
    })
}

/// The most one decoded value may allocate: above any legal message (the
/// producers' limit is 1 MB), far below what would hurt the process.
pub const MAX_ALLOCATION_BYTES: usize = 8 * 1024 * 1024;

/// A record with an Avro schema in `schemas/`.
pub trait AvroRecord: Sized {
    /// Full name of the record in its `.avsc`.
    const RECORD: &'static str;
    fn to_avro(&self) -> Result<Value, CodecError>;
    fn from_avro(value: Value) -> Result<Self, CodecError>;

    /// The current schema of this record.
    fn schema() -> &'static Schema {
        &registry().current[Self::RECORD].0
    }
}

/// Encodes and decodes records in Avro single-object encoding.
pub struct EventCodec;

impl EventCodec {
    pub fn encode<T: AvroRecord>(record: &T) -> Result<Vec<u8>, CodecError> {
        let (schema, header) = &registry().current[T::RECORD];
        let mut out = header.clone();
        out.extend(encode_datum(schema, record.to_avro()?)?);
        Ok(out)
    }

    pub fn decode<T: AvroRecord>(bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() < 10 {
            return Err(CodecError::TooShort(bytes.len()));
        }
        if bytes[0] != 0xC3 || bytes[1] != 0x01 {
            return Err(CodecError::BadMarker(bytes[0], bytes[1]));
        }
        let registry = registry();
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..10]);
        let known =
            registry.by_fingerprint.get(&fp).ok_or_else(|| CodecError::UnknownFingerprint(hex::encode(fp)))?;
        if known.record != T::RECORD {
            return Err(CodecError::WrongRecord { expected: T::RECORD.into(), found: known.record.into() });
        }
        let (reader_schema, _) = &registry.current[T::RECORD];
        let mut datum = &bytes[10..];
        // Resolution to the reader schema is only needed for older writers.
        let resolve_to = (!known.current).then_some(reader_schema);
        let value = apache_avro::from_avro_datum(&known.schema, &mut datum, resolve_to)?;
        if !datum.is_empty() {
            return Err(CodecError::Shape(format!("{} trailing bytes after the datum", datum.len())));
        }
        T::from_avro(value)
    }

    /// Decodes an event of the given kind.
    pub fn decode_event(kind: EventKind, bytes: &[u8]) -> Result<Event, CodecError> {
        Ok(match kind {
            EventKind::VmUsage => Event::VmUsage(Self::decode(bytes)?),
            EventKind::CheckResult => Event::CheckResult(Self::decode(bytes)?),
            EventKind::TicketTime => Event::TicketTime(Self::decode(bytes)?),
        })
    }

    pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
        match event {
            Event::VmUsage(e) => Self::encode(e),
            Event::CheckResult(e) => Self::encode(e),
            Event::TicketTime(e) => Self::encode(e),
        }
    }
}

/// Encodes a datum with its maps' entries in key order, so that the same
/// record always gives the same bytes (apache-avro writes a map in its
/// HashMap's order, which changes from one process to the next).
fn encode_datum(schema: &Schema, value: Value) -> Result<Vec<u8>, CodecError> {
    if let (Schema::Record(record), Value::Record(fields)) = (schema, &value) {
        let same_order = record.fields.len() == fields.len() && record.fields.iter().zip(fields).all(|(f, (name, _))| f.name == *name);
        if same_order && fields.iter().any(|(_, v)| matches!(v, Value::Map(_))) {
            let Value::Record(fields) = value else { return Err(CodecError::Shape("record expected".into())) };
            let mut out = Vec::new();
            for (field, (name, v)) in record.fields.iter().zip(fields) {
                match v {
                    Value::Map(map) => write_sorted_string_map(&mut out, &name, map)?,
                    v => out.extend(apache_avro::to_avro_datum(&field.schema, v)?),
                }
            }
            return Ok(out);
        }
    }
    Ok(apache_avro::to_avro_datum(schema, value)?)
}

fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// One block with every entry, then the end marker (Avro binary encoding).
fn write_sorted_string_map(out: &mut Vec<u8>, name: &str, map: HashMap<String, Value>) -> Result<(), CodecError> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if !entries.is_empty() {
        write_long(out, entries.len() as i64);
        for (k, v) in entries {
            let Value::String(s) = v else { return Err(CodecError::Shape(format!("{name}: map values must be strings"))) };
            write_long(out, k.len() as i64);
            out.extend(k.as_bytes());
            write_long(out, s.len() as i64);
            out.extend(s.as_bytes());
        }
    }
    out.push(0);
    Ok(())
}

/// Maps enum symbols both ways from one table, so the two directions cannot drift.
macro_rules! symbols {
    ($ty:ty, $field:literal, [$($variant:path => $sym:literal),+ $(,)?]) => {
        impl $ty {
            pub const SYMBOLS: &'static [&'static str] = &[$($sym),+];
            /// The variants in the order of [`Self::SYMBOLS`].
            pub const VARIANTS: &'static [Self] = &[$($variant),+];
            pub fn avro_symbol(self) -> &'static str {
                match self { $($variant => $sym),+ }
            }
            pub fn from_avro_symbol(s: String) -> Result<Self, CodecError> {
                match s.as_str() {
                    $($sym => Ok($variant),)+
                    _ => Err(CodecError::Symbol { field: $field, symbol: s }),
                }
            }
            fn avro(self) -> Value {
                av::enum_value(Self::SYMBOLS, self.avro_symbol())
            }
        }
    };
}

symbols!(SlaTier, "sla_tier", [SlaTier::Sla99_7 => "SLA_99_7", SlaTier::Sla99_9 => "SLA_99_9", SlaTier::Sla99_99 => "SLA_99_99"]);
symbols!(VmTransition, "transition", [
    VmTransition::Sample => "SAMPLE", VmTransition::Create => "CREATE", VmTransition::Start => "START",
    VmTransition::Resize => "RESIZE", VmTransition::Stop => "STOP", VmTransition::Delete => "DELETE"]);
symbols!(CheckFrequency, "frequency", [
    CheckFrequency::Daily => "DAILY", CheckFrequency::Weekly => "WEEKLY", CheckFrequency::Monthly => "MONTHLY",
    CheckFrequency::Semestrial => "SEMESTRIAL", CheckFrequency::Yearly => "YEARLY"]);
symbols!(CheckStatus, "status", [
    CheckStatus::Ok => "OK", CheckStatus::Warning => "WARNING", CheckStatus::Ko => "KO",
    CheckStatus::Unknown => "UNKNOWN", CheckStatus::Missed => "MISSED"]);
symbols!(TicketType, "ticket_type", [TicketType::Incident => "INCIDENT", TicketType::Request => "REQUEST"]);
symbols!(TechnicianProfile, "technician_profile", [
    TechnicianProfile::Administrator => "ADMINISTRATOR", TechnicianProfile::Engineer => "ENGINEER",
    TechnicianProfile::Consultant => "CONSULTANT", TechnicianProfile::Architect => "ARCHITECT"]);
symbols!(EventKind, "kind", [EventKind::VmUsage => "VM_USAGE", EventKind::CheckResult => "CHECK_RESULT", EventKind::TicketTime => "TICKET_TIME"]);
symbols!(PeriodAction, "action", [PeriodAction::Clock => "CLOCK", PeriodAction::Close => "CLOSE"]);
symbols!(Period, "period", [Period::Day => "DAY", Period::Week => "WEEK", Period::Month => "MONTH", Period::Year => "YEAR"]);

fn header_fields(h: &EventHeader) -> Vec<(&'static str, Value)> {
    vec![
        ("event_id", Value::String(h.event_id.clone())),
        ("source", Value::String(h.source.clone())),
        ("tenant", Value::String(h.tenant.clone())),
        ("subsidiary", Value::String(h.subsidiary.clone())),
        ("domain", Value::String(h.domain.clone())),
        ("event_time", av::ts(h.event_time)),
        ("ingest_time", av::ts(h.ingest_time)),
    ]
}

/// The header fields that close every event record (added in schema v2).
fn header_tail(h: &EventHeader) -> [(&'static str, Value); 2] {
    [("version", Value::Long(h.version)), ("deleted", Value::Boolean(h.deleted))]
}

fn read_header(f: &mut Fields) -> Result<EventHeader, CodecError> {
    Ok(EventHeader {
        version: f.long("version")?,
        deleted: f.boolean("deleted")?,
        event_id: f.string("event_id")?,
        source: f.string("source")?,
        tenant: f.string("tenant")?,
        subsidiary: f.string("subsidiary")?,
        domain: f.string("domain")?,
        event_time: f.timestamp("event_time")?,
        ingest_time: f.timestamp("ingest_time")?,
    })
}

impl AvroRecord for VmUsage {
    const RECORD: &'static str = "io.meter.events.VmUsage";

    fn to_avro(&self) -> Result<Value, CodecError> {
        let mut fields = header_fields(&self.header);
        fields.extend([
            ("vm_id", Value::String(self.vm_id.clone())),
            ("vcpu", Value::Int(self.vcpu)),
            ("ram_mib", Value::Long(self.ram_mib)),
            ("storage_gb", Value::Long(self.storage_gb)),
            ("bandwidth_mbps", Value::Int(self.bandwidth_mbps)),
            ("guaranteed_bandwidth", Value::Boolean(self.guaranteed_bandwidth)),
            ("public_ips", Value::Int(self.public_ips)),
            ("sla_tier", self.sla_tier.avro()),
            ("options", av::strings(&self.options)),
            ("datacenter", Value::String(self.datacenter.clone())),
            ("transition", self.transition.avro()),
            ("sample_interval_seconds", Value::Int(self.sample_interval_seconds)),
        ]);
        fields.extend(header_tail(&self.header));
        Ok(av::record(fields))
    }

    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::of(Self::RECORD, value)?;
        Ok(VmUsage {
            header: read_header(&mut f)?,
            vm_id: f.string("vm_id")?,
            vcpu: f.int("vcpu")?,
            ram_mib: f.long("ram_mib")?,
            storage_gb: f.long("storage_gb")?,
            bandwidth_mbps: f.int("bandwidth_mbps")?,
            guaranteed_bandwidth: f.boolean("guaranteed_bandwidth")?,
            public_ips: f.int("public_ips")?,
            sla_tier: SlaTier::from_avro_symbol(f.symbol("sla_tier")?)?,
            options: f.string_array("options")?,
            datacenter: f.string("datacenter")?,
            transition: VmTransition::from_avro_symbol(f.symbol("transition")?)?,
            sample_interval_seconds: f.int("sample_interval_seconds")?,
        })
    }
}

impl AvroRecord for CheckResult {
    const RECORD: &'static str = "io.meter.events.CheckResult";

    fn to_avro(&self) -> Result<Value, CodecError> {
        let mut fields = header_fields(&self.header);
        fields.extend([
            ("check_id", Value::String(self.check_id.clone())),
            ("check_name", Value::String(self.check_name.clone())),
            ("target", Value::String(self.target.clone())),
            ("frequency", self.frequency.avro()),
            ("scheduled_time", av::opt_ts(self.scheduled_time)),
            ("executed_time", av::opt_ts(self.executed_time)),
            ("status", self.status.avro()),
            ("ticket_ref", av::opt_string(&self.ticket_ref)),
            ("time_spent_minutes", Value::Int(self.time_spent_minutes)),
            ("output", av::opt_string(&self.output)),
        ]);
        fields.extend(header_tail(&self.header));
        Ok(av::record(fields))
    }

    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::of(Self::RECORD, value)?;
        Ok(CheckResult {
            header: read_header(&mut f)?,
            check_id: f.string("check_id")?,
            check_name: f.string("check_name")?,
            target: f.string("target")?,
            frequency: CheckFrequency::from_avro_symbol(f.symbol("frequency")?)?,
            scheduled_time: f.opt_timestamp("scheduled_time")?,
            executed_time: f.opt_timestamp("executed_time")?,
            status: CheckStatus::from_avro_symbol(f.symbol("status")?)?,
            ticket_ref: f.opt_string("ticket_ref")?,
            time_spent_minutes: f.int("time_spent_minutes")?,
            output: f.opt_string("output")?,
        })
    }
}

impl AvroRecord for TicketTime {
    const RECORD: &'static str = "io.meter.events.TicketTime";

    fn to_avro(&self) -> Result<Value, CodecError> {
        let mut fields = header_fields(&self.header);
        fields.extend([
            ("ticket_id", Value::String(self.ticket_id.clone())),
            ("task_id", Value::String(self.task_id.clone())),
            ("ticket_type", self.ticket_type.avro()),
            ("category_path", av::strings(&self.category_path)),
            ("in_scope", Value::Boolean(self.in_scope)),
            ("requester", Value::String(self.requester.clone())),
            ("technician", Value::String(self.technician.clone())),
            ("technician_profile", self.technician_profile.avro()),
            ("application", av::opt_string(&self.application)),
            ("country", av::opt_string(&self.country)),
            ("minutes_worked", Value::Int(self.minutes_worked)),
            ("start_time", av::ts(self.start_time)),
        ]);
        fields.extend(header_tail(&self.header));
        Ok(av::record(fields))
    }

    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::of(Self::RECORD, value)?;
        Ok(TicketTime {
            header: read_header(&mut f)?,
            ticket_id: f.string("ticket_id")?,
            task_id: f.string("task_id")?,
            ticket_type: TicketType::from_avro_symbol(f.symbol("ticket_type")?)?,
            category_path: f.string_array("category_path")?,
            in_scope: f.boolean("in_scope")?,
            requester: f.string("requester")?,
            technician: f.string("technician")?,
            technician_profile: TechnicianProfile::from_avro_symbol(f.symbol("technician_profile")?)?,
            application: f.opt_string("application")?,
            country: f.opt_string("country")?,
            minutes_worked: f.int("minutes_worked")?,
            start_time: f.timestamp("start_time")?,
        })
    }
}

impl AvroRecord for Aggregate {
    const RECORD: &'static str = "io.meter.aggregates.Aggregate";

    fn to_avro(&self) -> Result<Value, CodecError> {
        Ok(av::record(vec![
            ("aggregate_id", Value::String(self.aggregate_id.clone())),
            ("revision", Value::Long(self.revision)),
            ("is_final", Value::Boolean(self.is_final)),
            ("kind", self.kind.avro()),
            ("tenant", Value::String(self.tenant.clone())),
            ("subsidiary", Value::String(self.subsidiary.clone())),
            ("domain", Value::String(self.domain.clone())),
            ("period", self.period.avro()),
            ("time_zone", Value::String(self.time_zone.clone())),
            ("window_start", av::ts(self.window_start)),
            ("window_end", av::ts(self.window_end)),
            ("window_label", Value::String(self.window_label.clone())),
            ("metric", Value::String(self.metric.clone())),
            ("unit", Value::String(self.unit.clone())),
            (
                "dimensions",
                Value::Map(self.dimensions.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
            ),
            ("quantity", av::decimal(self.quantity)?),
            ("event_count", Value::Long(self.event_count)),
            ("incident_count", Value::Long(self.incident_count)),
            ("request_count", Value::Long(self.request_count)),
            ("ok_count", Value::Long(self.ok_count)),
            ("warning_count", Value::Long(self.warning_count)),
            ("ko_count", Value::Long(self.ko_count)),
            ("unknown_count", Value::Long(self.unknown_count)),
            ("missed_count", Value::Long(self.missed_count)),
            ("cost", av::decimal(self.cost)?),
            ("currency", Value::String(self.currency.clone())),
            ("price_book_version", Value::String(self.price_book_version.clone())),
            ("emitted_at", av::ts(self.emitted_at)),
        ]))
    }

    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::of(Self::RECORD, value)?;
        Ok(Aggregate {
            aggregate_id: f.string("aggregate_id")?,
            revision: f.long("revision")?,
            is_final: f.boolean("is_final")?,
            kind: EventKind::from_avro_symbol(f.symbol("kind")?)?,
            tenant: f.string("tenant")?,
            subsidiary: f.string("subsidiary")?,
            domain: f.string("domain")?,
            period: Period::from_avro_symbol(f.symbol("period")?)?,
            time_zone: f.string("time_zone")?,
            window_start: f.timestamp("window_start")?,
            window_end: f.timestamp("window_end")?,
            window_label: f.string("window_label")?,
            metric: f.string("metric")?,
            unit: f.string("unit")?,
            dimensions: f.string_map("dimensions")?.into_iter().collect(),
            quantity: f.decimal("quantity")?,
            event_count: f.long("event_count")?,
            incident_count: f.long("incident_count")?,
            request_count: f.long("request_count")?,
            ok_count: f.long("ok_count")?,
            warning_count: f.long("warning_count")?,
            ko_count: f.long("ko_count")?,
            unknown_count: f.long("unknown_count")?,
            missed_count: f.long("missed_count")?,
            cost: f.decimal("cost")?,
            currency: f.string("currency")?,
            price_book_version: f.string("price_book_version")?,
            emitted_at: f.timestamp("emitted_at")?,
        })
    }
}

impl AvroRecord for DeadLetter {
    const RECORD: &'static str = "io.meter.errors.DeadLetter";

    fn to_avro(&self) -> Result<Value, CodecError> {
        Ok(av::record(vec![
            ("component", Value::String(self.component.clone())),
            ("error_kind", Value::String(self.error_kind.clone())),
            ("error", Value::String(self.error.clone())),
            ("original", Value::Bytes(self.original.clone())),
            ("event_kind", av::opt_string(&self.event_kind)),
            ("source_file", av::opt_string(&self.source_file)),
            ("source_line", av::opt_long(self.source_line)),
            ("source_topic", av::opt_string(&self.source_topic)),
            ("source_partition", av::opt_int(self.source_partition)),
            ("source_offset", av::opt_long(self.source_offset)),
            ("failed_at", av::ts(self.failed_at)),
        ]))
    }

    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::of(Self::RECORD, value)?;
        Ok(DeadLetter {
            component: f.string("component")?,
            error_kind: f.string("error_kind")?,
            error: f.string("error")?,
            original: f.bytes("original")?,
            event_kind: f.opt_string("event_kind")?,
            source_file: f.opt_string("source_file")?,
            source_line: f.opt_long("source_line")?,
            source_topic: f.opt_string("source_topic")?,
            source_partition: f.opt_int("source_partition")?,
            source_offset: f.opt_long("source_offset")?,
            failed_at: f.timestamp("failed_at")?,
        })
    }
}

impl AvroRecord for PeriodControl {
    const RECORD: &'static str = "io.meter.control.PeriodControl";

    fn to_avro(&self) -> Result<Value, CodecError> {
        Ok(av::record(vec![
            ("action", self.action.avro()),
            ("clock", av::ts(self.clock)),
            ("tenant", Value::String(self.tenant.clone())),
            ("month", Value::String(self.month.clone())),
            ("requested_by", Value::String(self.requested_by.clone())),
            ("reason", Value::String(self.reason.clone())),
        ]))
    }

    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::of(Self::RECORD, value)?;
        Ok(PeriodControl {
            action: PeriodAction::from_avro_symbol(f.symbol("action")?)?,
            clock: f.timestamp("clock")?,
            tenant: f.string("tenant")?,
            month: f.string("month")?,
            requested_by: f.string("requested_by")?,
            reason: f.string("reason")?,
        })
    }
}

/// The record a single-object message says it holds (its fingerprint's),
/// if the marker is there and the fingerprint known; nothing is decoded.
pub fn writer_record(bytes: &[u8]) -> Option<&'static str> {
    let fingerprint: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    if bytes[..2] != [0xC3, 0x01] {
        return None;
    }
    registry().by_fingerprint.get(&fingerprint).map(|known| known.record)
}

/// Every fingerprint readers accept, with its record and the writer
/// schema's text (for the fast event decoder, [`crate::fast_decode`]).
pub fn accepted_fingerprints() -> impl Iterator<Item = ([u8; 8], &'static str, &'static str)> {
    registry().by_fingerprint.iter().map(|(fingerprint, known)| (*fingerprint, known.record, known.text))
}

/// Every schema text this build knows, for tools and tests: (record, text, is_current).
pub fn schema_texts() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    current_schemas().map(|(r, t)| (r, t, true)).chain(HISTORY.iter().map(|(r, t)| (*r, *t, false)))
}

/// Truncates an instant to the millisecond precision Avro keeps.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}
