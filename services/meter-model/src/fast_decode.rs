//! The aggregator's event decoder: Avro single-object messages straight into
//! the event structs (no generic `Value` tree, no intermediate struct), over
//! twenty times the throughput of
//! [`EventCodec::decode_event`](crate::EventCodec::decode_event).
//! [`decode_event_into`] writes into an event the caller keeps, reusing its
//! strings and lists, so that decoding a stream allocates nothing.
//!
//! It accepts exactly the fingerprints the codec accepts (the specification's
//! and the legacy one of every current and `schemas/history/` version, see the
//! codec's migration rule) and decodes with the *writer's* schema: fields the
//! writer did not have (`version`, `deleted`, `application`, `country` in older
//! versions) take their schema defaults, as Avro schema resolution gives them.
//! apache-avro stays the codec for encoding, schema parsing and every other
//! record; tests check that both decoders agree, message by message.
//!
//! How: each writer schema (parsed by `serde_avro_fast`) is matched field by
//! field to the event once, its types checked (`FieldPlan`); a message's
//! values are then read in the writer's order by `DatumReader`, with the
//! rules `serde_avro_fast` read them by before (`tests/fast_decode.rs`
//! compares both on damaged messages), and written into the target: strings
//! borrowed from the message are copied into the target's `String`s.

use std::cell::RefCell;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_avro_fast::schema::{LogicalType, RegularType, SchemaMut, SchemaNode};

use crate::codec::{self, AvroRecord, CodecError, MAX_ALLOCATION_BYTES};
use crate::datum_reader::{DatumReader, ReadError};
use crate::events::limits::{MAX_LIST_ITEMS, MAX_OUTPUT_BYTES};
use crate::events::*;

/// Longest array a message may declare: no legal event comes near it, and a
/// hostile count fails here instead of spinning.
const MAX_SEQUENCE_LENGTH: usize = MAX_ALLOCATION_BYTES;

/// Decodes an event of the given kind, refusing what
/// [`EventCodec::decode_event`](crate::EventCodec::decode_event) refuses.
/// Allocates the event's strings: a loop over messages should use
/// [`decode_event_into`].
pub fn decode_event(kind: EventKind, bytes: &[u8]) -> Result<Event, CodecError> {
    let mut event = blank_event(kind);
    decode_event_into(kind, bytes, &mut event)?;
    Ok(event)
}

/// Decodes an event of the given kind into `target`, with exactly the rules
/// and errors of [`decode_event`], reusing `target`'s strings and lists:
/// decoding a stream of messages of one kind into one target allocates nothing
/// once its buffers have grown to the stream's sizes. (Optional fields that
/// come and go, and lists that shrink and grow, leave their buffers in a small
/// per-thread reserve for the next message.)
///
/// A target of another kind is replaced by an event of `kind` (its buffers are
/// not reused): keep one target per kind.
///
/// **On an error** `target` still holds a valid event, but its content is
/// unspecified: the previous event, or (a datum is written into the target as
/// it is read) a mix of it and the message's first fields, or a blank event
/// of `kind`. Do not use it; the next successful call overwrites every field.
pub fn decode_event_into(kind: EventKind, bytes: &[u8], target: &mut Event) -> Result<(), CodecError> {
    let (writer, datum) = writer_of(bytes, kind.spec().record)?;
    let plan = writer.plan.as_ref().map_err(|reason| CodecError::Shape(format!("writer schema of {}: {reason}", writer.record)))?;
    if target.kind() != kind {
        *target = blank_event(kind);
    }
    let mut reader = DatumReader::new(datum);
    match (plan, target) {
        (Plan::VmUsage(plan), Event::VmUsage(event)) => {
            let times = read_vm_usage(&mut reader, plan, event)?;
            end_of_datum(&reader)?;
            (event.header.event_time, event.header.ingest_time) = times.instants()?;
        }
        (Plan::CheckResult(plan), Event::CheckResult(event)) => {
            let times = read_check_result(&mut reader, plan, event)?;
            end_of_datum(&reader)?;
            let (event_time, ingest_time) = times.header.instants()?;
            let scheduled_time = opt_instant("scheduled_time", times.scheduled_time)?;
            let executed_time = opt_instant("executed_time", times.executed_time)?;
            (event.header.event_time, event.header.ingest_time) = (event_time, ingest_time);
            (event.scheduled_time, event.executed_time) = (scheduled_time, executed_time);
        }
        (Plan::TicketTime(plan), Event::TicketTime(event)) => {
            let times = read_ticket_time(&mut reader, plan, event)?;
            end_of_datum(&reader)?;
            let (event_time, ingest_time) = times.header.instants()?;
            let start_time = instant("start_time", times.start_time)?;
            (event.header.event_time, event.header.ingest_time) = (event_time, ingest_time);
            event.start_time = start_time;
        }
        // `writer_of` checked the record, and a plan is its record's.
        (_, target) => {
            return Err(CodecError::WrongRecord { expected: target.kind().spec().record.into(), found: writer.record.into() })
        }
    }
    Ok(())
}

fn end_of_datum(reader: &DatumReader) -> Result<(), CodecError> {
    if reader.is_at_end() {
        Ok(())
    } else {
        Err(CodecError::Shape("trailing bytes after the datum".into()))
    }
}

/// An event writer schema this build reads, and how its fields map to the event's.
struct WriterSchema {
    /// The 8 fingerprint bytes after `C3 01`, read as one integer.
    fingerprint: u64,
    record: &'static str,
    /// Why its messages cannot be read, if so (a test keeps every embedded
    /// schema readable).
    plan: Result<Plan, String>,
}

enum Plan {
    VmUsage(FieldPlan<VmField>),
    CheckResult(FieldPlan<CheckField>),
    TicketTime(FieldPlan<TicketField>),
}

/// The event writer schemas: a dozen entries, where a scan of integers beats
/// hashing the fingerprint.
fn writers() -> &'static [WriterSchema] {
    static WRITERS: OnceLock<Vec<WriterSchema>> = OnceLock::new();
    WRITERS.get_or_init(|| {
        codec::accepted_fingerprints()
            .filter(|(_, record, _)| [VmUsage::RECORD, CheckResult::RECORD, TicketTime::RECORD].contains(record))
            .map(|(fingerprint, record, text)| {
                let plan = text.parse::<SchemaMut>().map_err(|e| e.to_string()).and_then(|schema| match record {
                    VmUsage::RECORD => FieldPlan::new(&schema).map(Plan::VmUsage),
                    CheckResult::RECORD => FieldPlan::new(&schema).map(Plan::CheckResult),
                    _ => FieldPlan::new(&schema).map(Plan::TicketTime),
                });
                WriterSchema { fingerprint: u64::from_le_bytes(fingerprint), record, plan }
            })
            .collect()
    })
}

/// The writer schema of a message of the `expected` record, and its datum.
fn writer_of<'a>(bytes: &'a [u8], expected: &'static str) -> Result<(&'static WriterSchema, &'a [u8]), CodecError> {
    let Some((header, datum)) = bytes.split_first_chunk::<10>() else {
        return Err(CodecError::TooShort(bytes.len()));
    };
    let [marker_0, marker_1, fingerprint @ ..] = *header;
    if [marker_0, marker_1] != [0xC3, 0x01] {
        return Err(CodecError::BadMarker(marker_0, marker_1));
    }
    let wanted = u64::from_le_bytes(fingerprint);
    let writer =
        writers().iter().find(|w| w.fingerprint == wanted).ok_or_else(|| unknown_or_other_record(fingerprint))?;
    if writer.record != expected {
        return Err(CodecError::WrongRecord { expected: expected.into(), found: writer.record.into() });
    }
    Ok((writer, datum))
}

/// A fingerprint of a record that is not an event gets the codec's error.
fn unknown_or_other_record(fingerprint: [u8; 8]) -> CodecError {
    match codec::accepted_fingerprints().find(|(f, _, _)| *f == fingerprint) {
        Some((_, record, _)) => CodecError::WrongRecord { expected: "an event record".into(), found: record.into() },
        None => CodecError::UnknownFingerprint(hex::encode(fingerprint)),
    }
}

fn instant(field: &'static str, millis: i64) -> Result<DateTime<Utc>, CodecError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| CodecError::Shape(format!("{field}: {millis} ms is not a valid instant")))
}

fn opt_instant(field: &'static str, millis: Option<i64>) -> Result<Option<DateTime<Utc>>, CodecError> {
    millis.map(|m| instant(field, m)).transpose()
}

/// An Avro error, named by its field.
fn field_error(field: &'static str, error: ReadError) -> CodecError {
    CodecError::Avro(format!("{field}: {error}"))
}

/// What a field of the event holds, as read from a writer's datum.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Text,
    Long,
    Int,
    Boolean,
    /// A union of null and a string.
    OptionalText,
    /// A union of null and a long (an instant).
    OptionalLong,
    /// One of these symbols (the Rust enum's, in its order).
    Symbol(&'static [&'static str]),
    /// An array of strings.
    TextList,
}

/// How one writer field is read, checked against the writer's schema once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Plain,
    /// A union of null and a value: the position of null in the writer's union.
    Optional { null_branch: usize },
    /// For each symbol of the writer's enum, its position in the Rust enum's.
    Symbol(Box<[Option<usize>]>),
}

impl Read {
    /// How to read a field of this shape written with `node`, if it can be.
    fn of(shape: Shape, schema: &SchemaMut, node: &SchemaNode) -> Result<Read, String> {
        let plain = |expected: &[RegularType]| {
            let same = expected.iter().any(|e| std::mem::discriminant(e) == std::mem::discriminant(&node.type_));
            // Only `timestamp-millis` annotates a long here; any other would mean another unit.
            let logical_ok = match &node.logical_type {
                None => true,
                Some(LogicalType::TimestampMillis) => matches!(node.type_, RegularType::Long),
                Some(_) => false,
            };
            if same && logical_ok {
                Ok(Read::Plain)
            } else {
                Err(format!("expected {expected:?}, the writer has {:?} ({:?})", node.type_, node.logical_type))
            }
        };
        match shape {
            Shape::Text => plain(&[RegularType::String]),
            Shape::Long => plain(&[RegularType::Long]),
            Shape::Int => plain(&[RegularType::Int]),
            Shape::Boolean => plain(&[RegularType::Boolean]),
            Shape::OptionalText | Shape::OptionalLong => {
                let RegularType::Union(union) = &node.type_ else {
                    return Err(format!("expected a union with null, the writer has {:?}", node.type_));
                };
                let value = if matches!(shape, Shape::OptionalText) { Shape::Text } else { Shape::Long };
                let branches: Vec<&SchemaNode> = union.variants.iter().map(|&key| &schema[key]).collect();
                match branches.as_slice() {
                    [null, other] | [other, null] if matches!(null.type_, RegularType::Null) => {
                        Read::of(value, schema, other)?;
                        let null_branch = usize::from(!matches!(branches[0].type_, RegularType::Null));
                        Ok(Read::Optional { null_branch })
                    }
                    _ => Err(format!("expected a union of null and one value, the writer's has {} branches", branches.len())),
                }
            }
            Shape::Symbol(ours) => match &node.type_ {
                RegularType::Enum(e) => Ok(Read::Symbol(
                    e.symbols.iter().map(|writer_symbol| ours.iter().position(|s| s == writer_symbol)).collect(),
                )),
                other => Err(format!("expected an enum, the writer has {other:?}")),
            },
            Shape::TextList => match &node.type_ {
                RegularType::Array(array) => {
                    Read::of(Shape::Text, schema, &schema[array.items])?;
                    Ok(Read::Plain)
                }
                other => Err(format!("expected an array of strings, the writer has {other:?}")),
            },
        }
    }
}

/// The fields of one event record.
trait RecordFields: Copy + PartialEq + 'static {
    /// Every field: its schema name, how the event holds it, and whether an
    /// older writer may lack it (it then takes the schema's default).
    const FIELDS: &'static [(&'static str, Self, Shape, Presence)];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Defaulted,
}

/// One writer schema's fields in its order, each matched to the event's and
/// checked against its type once.
struct FieldPlan<F> {
    steps: Vec<Step<F>>,
    /// Fields the writer lacks that take their default.
    defaulted: Vec<F>,
}

struct Step<F> {
    field: F,
    name: &'static str,
    read: Read,
}

impl<F: RecordFields> FieldPlan<F> {
    fn new(schema: &SchemaMut) -> Result<Self, String> {
        let RegularType::Record(record) = &schema.root().type_ else {
            return Err("not a record".into());
        };
        let mut steps = Vec::with_capacity(record.fields.len());
        for writer_field in &record.fields {
            let Some(&(name, field, shape, _)) = F::FIELDS.iter().find(|(name, ..)| *name == writer_field.name) else {
                // serde would skip it; reading it needs its type, which no event has.
                return Err(format!("field {} is not one of the event's", writer_field.name));
            };
            let read = Read::of(shape, schema, &schema[writer_field.type_]).map_err(|e| format!("field {name}: {e}"))?;
            steps.push(Step { field, name, read });
        }
        let mut defaulted = Vec::new();
        for &(name, field, _, presence) in F::FIELDS {
            if steps.iter().any(|s| s.field == field) {
                continue;
            }
            match presence {
                Presence::Defaulted => defaulted.push(field),
                Presence::Required => return Err(format!("missing field `{name}`")),
            }
        }
        Ok(FieldPlan { steps, defaulted })
    }
}

/// Reads an optional value: `Ok(false)` for null.
fn is_present(reader: &mut DatumReader, read: &Read) -> Result<bool, ReadError> {
    let branch = reader.index()?;
    match read {
        Read::Optional { null_branch } if branch == *null_branch => Ok(false),
        Read::Optional { .. } if branch < 2 => Ok(true),
        _ => Err(ReadError::UnknownBranch(branch)),
    }
}

fn optional_text<'a>(reader: &mut DatumReader<'a>, read: &Read) -> Result<Option<&'a str>, ReadError> {
    Ok(if is_present(reader, read)? { Some(reader.text()?) } else { None })
}

fn optional_long(reader: &mut DatumReader, read: &Read) -> Result<Option<i64>, ReadError> {
    Ok(if is_present(reader, read)? { Some(reader.long()?) } else { None })
}

/// An enum value, by the position of the writer's symbol.
fn symbol<T: Copy>(reader: &mut DatumReader, read: &Read, variants: &[T]) -> Result<T, ReadError> {
    let index = reader.index()?;
    let Read::Symbol(ours) = read else {
        return Err(ReadError::UnknownSymbolIndex(index));
    };
    match ours.get(index) {
        None => Err(ReadError::UnknownSymbolIndex(index)),
        Some(None) => Err(ReadError::UnknownSymbol(index)),
        Some(Some(ours)) => variants.get(*ours).copied().ok_or(ReadError::UnknownSymbol(index)),
    }
}

/// Reads an array of strings into an existing list, item by item: the first
/// items reuse the list's strings, the others come from the reserve, and
/// surplus strings go to it.
fn text_list(reader: &mut DatumReader, list: &mut Vec<String>) -> Result<(), ReadError> {
    let mut len: usize = 0;
    loop {
        let block = reader.block_len()?;
        if block == 0 {
            break;
        }
        if len.saturating_add(block) > MAX_SEQUENCE_LENGTH {
            return Err(ReadError::TooManyItems(MAX_SEQUENCE_LENGTH));
        }
        for _ in 0..block {
            let item = reader.text()?;
            match list.get_mut(len) {
                Some(text) => set_text(text, item),
                None => list.push(new_text(item)),
            }
            len += 1;
        }
    }
    while list.len() > len {
        if let Some(text) = list.pop() {
            keep_spare(text);
        }
    }
    Ok(())
}

/// The fields every event record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderField {
    EventId,
    Source,
    Tenant,
    Subsidiary,
    Domain,
    EventTime,
    IngestTime,
    Version,
    Deleted,
}

/// A record's [`RecordFields::FIELDS`]: the header's fields, then its own.
macro_rules! record_fields {
    ($header:path; $($own:expr),+ $(,)?) => {
        &[
            ("event_id", $header(HeaderField::EventId), Shape::Text, Presence::Required),
            ("source", $header(HeaderField::Source), Shape::Text, Presence::Required),
            ("tenant", $header(HeaderField::Tenant), Shape::Text, Presence::Required),
            ("subsidiary", $header(HeaderField::Subsidiary), Shape::Text, Presence::Required),
            ("domain", $header(HeaderField::Domain), Shape::Text, Presence::Required),
            ("event_time", $header(HeaderField::EventTime), Shape::Long, Presence::Required),
            ("ingest_time", $header(HeaderField::IngestTime), Shape::Long, Presence::Required),
            // Added in the second schema versions (corrections and retractions).
            ("version", $header(HeaderField::Version), Shape::Long, Presence::Defaulted),
            ("deleted", $header(HeaderField::Deleted), Shape::Boolean, Presence::Defaulted),
            $($own),+
        ]
    };
}

/// Instants as read, converted (and refused if out of range) once the whole
/// datum is read, as before.
#[derive(Default)]
struct HeaderTimes {
    event_time: i64,
    ingest_time: i64,
}

impl HeaderTimes {
    fn instants(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), CodecError> {
        Ok((instant("event_time", self.event_time)?, instant("ingest_time", self.ingest_time)?))
    }
}

fn read_header_field(
    reader: &mut DatumReader,
    field: HeaderField,
    header: &mut EventHeader,
    times: &mut HeaderTimes,
) -> Result<(), ReadError> {
    match field {
        HeaderField::EventId => set_text(&mut header.event_id, reader.text()?),
        HeaderField::Source => set_text(&mut header.source, reader.text()?),
        HeaderField::Tenant => set_text(&mut header.tenant, reader.text()?),
        HeaderField::Subsidiary => set_text(&mut header.subsidiary, reader.text()?),
        HeaderField::Domain => set_text(&mut header.domain, reader.text()?),
        HeaderField::EventTime => times.event_time = reader.long()?,
        HeaderField::IngestTime => times.ingest_time = reader.long()?,
        HeaderField::Version => header.version = reader.long()?,
        HeaderField::Deleted => header.deleted = reader.boolean()?,
    }
    Ok(())
}

/// The schema default of a header field an older writer lacks.
fn default_header_field(field: HeaderField, header: &mut EventHeader) {
    match field {
        HeaderField::Version => header.version = 0,
        HeaderField::Deleted => header.deleted = false,
        // Required: a writer without them has no plan.
        HeaderField::EventId
        | HeaderField::Source
        | HeaderField::Tenant
        | HeaderField::Subsidiary
        | HeaderField::Domain
        | HeaderField::EventTime
        | HeaderField::IngestTime => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmField {
    Header(HeaderField),
    VmId,
    Vcpu,
    RamMib,
    StorageGb,
    BandwidthMbps,
    GuaranteedBandwidth,
    PublicIps,
    SlaTier,
    Options,
    Datacenter,
    Transition,
    SampleIntervalSeconds,
}

impl RecordFields for VmField {
    const FIELDS: &'static [(&'static str, Self, Shape, Presence)] = record_fields!(VmField::Header;
        ("vm_id", VmField::VmId, Shape::Text, Presence::Required),
        ("vcpu", VmField::Vcpu, Shape::Int, Presence::Required),
        ("ram_mib", VmField::RamMib, Shape::Long, Presence::Required),
        ("storage_gb", VmField::StorageGb, Shape::Long, Presence::Required),
        ("bandwidth_mbps", VmField::BandwidthMbps, Shape::Int, Presence::Required),
        ("guaranteed_bandwidth", VmField::GuaranteedBandwidth, Shape::Boolean, Presence::Required),
        ("public_ips", VmField::PublicIps, Shape::Int, Presence::Required),
        ("sla_tier", VmField::SlaTier, Shape::Symbol(SlaTier::SYMBOLS), Presence::Required),
        ("options", VmField::Options, Shape::TextList, Presence::Required),
        ("datacenter", VmField::Datacenter, Shape::Text, Presence::Required),
        ("transition", VmField::Transition, Shape::Symbol(VmTransition::SYMBOLS), Presence::Required),
        ("sample_interval_seconds", VmField::SampleIntervalSeconds, Shape::Int, Presence::Required),
    );
}

fn read_vm_usage(reader: &mut DatumReader, plan: &FieldPlan<VmField>, v: &mut VmUsage) -> Result<HeaderTimes, CodecError> {
    let mut times = HeaderTimes::default();
    for field in &plan.defaulted {
        if let VmField::Header(h) = *field {
            default_header_field(h, &mut v.header);
        }
    }
    for step in &plan.steps {
        let r = &step.read;
        let read = match step.field {
            VmField::Header(h) => read_header_field(reader, h, &mut v.header, &mut times),
            VmField::VmId => reader.text().map(|x| set_text(&mut v.vm_id, x)),
            VmField::Vcpu => reader.int().map(|x| v.vcpu = x),
            VmField::RamMib => reader.long().map(|x| v.ram_mib = x),
            VmField::StorageGb => reader.long().map(|x| v.storage_gb = x),
            VmField::BandwidthMbps => reader.int().map(|x| v.bandwidth_mbps = x),
            VmField::GuaranteedBandwidth => reader.boolean().map(|x| v.guaranteed_bandwidth = x),
            VmField::PublicIps => reader.int().map(|x| v.public_ips = x),
            VmField::SlaTier => symbol(reader, r, SlaTier::VARIANTS).map(|x| v.sla_tier = x),
            VmField::Options => text_list(reader, &mut v.options),
            VmField::Datacenter => reader.text().map(|x| set_text(&mut v.datacenter, x)),
            VmField::Transition => symbol(reader, r, VmTransition::VARIANTS).map(|x| v.transition = x),
            VmField::SampleIntervalSeconds => reader.int().map(|x| v.sample_interval_seconds = x),
        };
        read.map_err(|e| field_error(step.name, e))?;
    }
    Ok(times)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckField {
    Header(HeaderField),
    CheckId,
    CheckName,
    Target,
    Frequency,
    ScheduledTime,
    ExecutedTime,
    Status,
    TicketRef,
    TimeSpentMinutes,
    Output,
}

impl RecordFields for CheckField {
    const FIELDS: &'static [(&'static str, Self, Shape, Presence)] = record_fields!(CheckField::Header;
        ("check_id", CheckField::CheckId, Shape::Text, Presence::Required),
        ("check_name", CheckField::CheckName, Shape::Text, Presence::Required),
        ("target", CheckField::Target, Shape::Text, Presence::Required),
        ("frequency", CheckField::Frequency, Shape::Symbol(CheckFrequency::SYMBOLS), Presence::Required),
        ("scheduled_time", CheckField::ScheduledTime, Shape::OptionalLong, Presence::Required),
        ("executed_time", CheckField::ExecutedTime, Shape::OptionalLong, Presence::Required),
        ("status", CheckField::Status, Shape::Symbol(CheckStatus::SYMBOLS), Presence::Required),
        // Required although the schema has defaults: every version has them.
        ("ticket_ref", CheckField::TicketRef, Shape::OptionalText, Presence::Required),
        ("time_spent_minutes", CheckField::TimeSpentMinutes, Shape::Int, Presence::Required),
        ("output", CheckField::Output, Shape::OptionalText, Presence::Required),
    );
}

#[derive(Default)]
struct CheckTimes {
    header: HeaderTimes,
    scheduled_time: Option<i64>,
    executed_time: Option<i64>,
}

fn read_check_result(reader: &mut DatumReader, plan: &FieldPlan<CheckField>, c: &mut CheckResult) -> Result<CheckTimes, CodecError> {
    let mut times = CheckTimes::default();
    for field in &plan.defaulted {
        if let CheckField::Header(h) = *field {
            default_header_field(h, &mut c.header);
        }
    }
    for step in &plan.steps {
        let r = &step.read;
        let read = match step.field {
            CheckField::Header(h) => read_header_field(reader, h, &mut c.header, &mut times.header),
            CheckField::CheckId => reader.text().map(|x| set_text(&mut c.check_id, x)),
            CheckField::CheckName => reader.text().map(|x| set_text(&mut c.check_name, x)),
            CheckField::Target => reader.text().map(|x| set_text(&mut c.target, x)),
            CheckField::Frequency => symbol(reader, r, CheckFrequency::VARIANTS).map(|x| c.frequency = x),
            CheckField::ScheduledTime => optional_long(reader, r).map(|x| times.scheduled_time = x),
            CheckField::ExecutedTime => optional_long(reader, r).map(|x| times.executed_time = x),
            CheckField::Status => symbol(reader, r, CheckStatus::VARIANTS).map(|x| c.status = x),
            CheckField::TicketRef => optional_text(reader, r).map(|x| set_optional_text(&mut c.ticket_ref, x)),
            CheckField::TimeSpentMinutes => reader.int().map(|x| c.time_spent_minutes = x),
            CheckField::Output => optional_text(reader, r).map(|x| set_optional_text(&mut c.output, x)),
        };
        read.map_err(|e| field_error(step.name, e))?;
    }
    Ok(times)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TicketField {
    Header(HeaderField),
    TicketId,
    TaskId,
    TicketType,
    CategoryPath,
    InScope,
    Requester,
    Technician,
    TechnicianProfile,
    Application,
    Country,
    MinutesWorked,
    StartTime,
}

impl RecordFields for TicketField {
    const FIELDS: &'static [(&'static str, Self, Shape, Presence)] = record_fields!(TicketField::Header;
        ("ticket_id", TicketField::TicketId, Shape::Text, Presence::Required),
        ("task_id", TicketField::TaskId, Shape::Text, Presence::Required),
        ("ticket_type", TicketField::TicketType, Shape::Symbol(TicketType::SYMBOLS), Presence::Required),
        ("category_path", TicketField::CategoryPath, Shape::TextList, Presence::Required),
        ("in_scope", TicketField::InScope, Shape::Boolean, Presence::Required),
        ("requester", TicketField::Requester, Shape::Text, Presence::Required),
        ("technician", TicketField::Technician, Shape::Text, Presence::Required),
        ("technician_profile", TicketField::TechnicianProfile, Shape::Symbol(TechnicianProfile::SYMBOLS), Presence::Required),
        // Added in ticket_time v2.
        ("application", TicketField::Application, Shape::OptionalText, Presence::Defaulted),
        ("country", TicketField::Country, Shape::OptionalText, Presence::Defaulted),
        ("minutes_worked", TicketField::MinutesWorked, Shape::Int, Presence::Required),
        ("start_time", TicketField::StartTime, Shape::Long, Presence::Required),
    );
}

#[derive(Default)]
struct TicketTimes {
    header: HeaderTimes,
    start_time: i64,
}

fn read_ticket_time(reader: &mut DatumReader, plan: &FieldPlan<TicketField>, t: &mut TicketTime) -> Result<TicketTimes, CodecError> {
    let mut times = TicketTimes::default();
    for field in &plan.defaulted {
        match *field {
            TicketField::Header(h) => default_header_field(h, &mut t.header),
            TicketField::Application => set_optional_text(&mut t.application, None),
            TicketField::Country => set_optional_text(&mut t.country, None),
            _ => {}
        }
    }
    for step in &plan.steps {
        let r = &step.read;
        let read = match step.field {
            TicketField::Header(h) => read_header_field(reader, h, &mut t.header, &mut times.header),
            TicketField::TicketId => reader.text().map(|x| set_text(&mut t.ticket_id, x)),
            TicketField::TaskId => reader.text().map(|x| set_text(&mut t.task_id, x)),
            TicketField::TicketType => symbol(reader, r, TicketType::VARIANTS).map(|x| t.ticket_type = x),
            TicketField::CategoryPath => text_list(reader, &mut t.category_path),
            TicketField::InScope => reader.boolean().map(|x| t.in_scope = x),
            TicketField::Requester => reader.text().map(|x| set_text(&mut t.requester, x)),
            TicketField::Technician => reader.text().map(|x| set_text(&mut t.technician, x)),
            TicketField::TechnicianProfile => symbol(reader, r, TechnicianProfile::VARIANTS).map(|x| t.technician_profile = x),
            TicketField::Application => optional_text(reader, r).map(|x| set_optional_text(&mut t.application, x)),
            TicketField::Country => optional_text(reader, r).map(|x| set_optional_text(&mut t.country, x)),
            TicketField::MinutesWorked => reader.int().map(|x| t.minutes_worked = x),
            TicketField::StartTime => reader.long().map(|x| times.start_time = x),
        };
        read.map_err(|e| field_error(step.name, e))?;
    }
    Ok(times)
}

// String buffers that optional fields set to null and shrinking lists let go,
// for the next message that needs one: without them a stream whose optional
// fields come and go would allocate at every return. Bounded in count and
// size, so a burst of long values is not kept.
thread_local! {
    static SPARE_BUFFERS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Enough for a list of the most items allowed and an event's optional texts
/// to empty and fill again.
const MAX_SPARE_BUFFERS: usize = MAX_LIST_ITEMS + 4;

fn spare_buffer() -> String {
    SPARE_BUFFERS.with(|spare| spare.borrow_mut().pop()).unwrap_or_default()
}

fn keep_spare(mut buffer: String) {
    // Twice the longest text allowed: a buffer grown by doubling to hold one.
    if buffer.capacity() == 0 || buffer.capacity() > 2 * MAX_OUTPUT_BYTES {
        return;
    }
    buffer.clear();
    SPARE_BUFFERS.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buffer);
        }
    });
}

fn set_text(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

fn new_text(value: &str) -> String {
    let mut text = spare_buffer();
    text.push_str(value);
    text
}

fn set_optional_text(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(text), Some(value)) => set_text(text, value),
        (None, Some(value)) => *slot = Some(new_text(value)),
        (Some(_), None) => {
            if let Some(text) = slot.take() {
                keep_spare(text);
            }
        }
        (None, None) => {}
    }
}

fn blank_header() -> EventHeader {
    EventHeader {
        event_id: String::new(),
        source: String::new(),
        tenant: String::new(),
        subsidiary: String::new(),
        domain: String::new(),
        event_time: DateTime::<Utc>::UNIX_EPOCH,
        ingest_time: DateTime::<Utc>::UNIX_EPOCH,
        version: 0,
        deleted: false,
    }
}

/// An event of `kind` for [`decode_event_into`] to write over (empty strings
/// and lists: no allocation).
pub fn blank_event(kind: EventKind) -> Event {
    match kind {
        EventKind::VmUsage => Event::VmUsage(VmUsage {
            header: blank_header(),
            vm_id: String::new(),
            vcpu: 0,
            ram_mib: 0,
            storage_gb: 0,
            bandwidth_mbps: 0,
            guaranteed_bandwidth: false,
            public_ips: 0,
            sla_tier: SlaTier::Sla99_7,
            options: Vec::new(),
            datacenter: String::new(),
            transition: VmTransition::Sample,
            sample_interval_seconds: 0,
        }),
        EventKind::CheckResult => Event::CheckResult(CheckResult {
            header: blank_header(),
            check_id: String::new(),
            check_name: String::new(),
            target: String::new(),
            frequency: CheckFrequency::Daily,
            scheduled_time: None,
            executed_time: None,
            status: CheckStatus::Ok,
            ticket_ref: None,
            time_spent_minutes: 0,
            output: None,
        }),
        EventKind::TicketTime => Event::TicketTime(TicketTime {
            header: blank_header(),
            ticket_id: String::new(),
            task_id: String::new(),
            ticket_type: TicketType::Incident,
            category_path: Vec::new(),
            in_scope: false,
            requester: String::new(),
            technician: String::new(),
            technician_profile: TechnicianProfile::Administrator,
            application: None,
            country: None,
            minutes_worked: 0,
            start_time: DateTime::<Utc>::UNIX_EPOCH,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event schema (current and older, both fingerprints) has a plan
    /// that reads each of its fields; the decoder's fields are the current
    /// schema's.
    #[test]
    fn every_writer_schema_is_readable() {
        assert_eq!(writers().len(), 14, "7 event schema versions, 2 fingerprints each");
        for writer in writers() {
            if let Err(reason) = &writer.plan {
                panic!("{}: {reason}", writer.record);
            }
        }
        fn names<F: RecordFields>() -> Vec<&'static str> {
            let mut names: Vec<&str> = F::FIELDS.iter().map(|(name, ..)| *name).collect();
            names.sort_unstable();
            names
        }
        for kind in EventKind::ALL {
            let mut current = kind.field_names().to_vec();
            current.sort_unstable();
            let ours = match kind {
                EventKind::VmUsage => names::<VmField>(),
                EventKind::CheckResult => names::<CheckField>(),
                EventKind::TicketTime => names::<TicketField>(),
            };
            assert_eq!(current, ours, "{kind}");
        }
    }

    fn plan_of(text: &str) -> Result<FieldPlan<TicketField>, String> {
        FieldPlan::new(&text.parse::<SchemaMut>().unwrap())
    }

    #[test]
    fn a_writer_the_event_cannot_hold_has_no_plan() {
        let current = crate::KINDS[2].schema;
        let without_tenant = current.replace(r#"{"name": "tenant", "type": "string"},"#, "");
        assert_ne!(without_tenant, current);
        assert_eq!(plan_of(&without_tenant).err().as_deref(), Some("missing field `tenant`"));
        let renamed = current.replace(r#""name": "requester""#, r#""name": "requestor""#);
        assert_eq!(plan_of(&renamed).err().as_deref(), Some("field requestor is not one of the event's"));
        let minutes_as_text = current.replace(r#"{"name": "minutes_worked", "type": "int""#, r#"{"name": "minutes_worked", "type": "string""#);
        assert!(plan_of(&minutes_as_text).err().unwrap_or_default().starts_with("field minutes_worked: expected [Int]"));
        // Older writers lack application and country: they take null.
        let v1 = codec::schema_texts().find(|(r, t, current)| *r == TicketTime::RECORD && !current && !t.contains("application"));
        let plan = plan_of(v1.map(|(_, t, _)| t).unwrap()).unwrap();
        assert!(plan.defaulted.contains(&TicketField::Application) && plan.defaulted.contains(&TicketField::Country));
    }

    #[test]
    fn an_array_longer_than_the_limit_is_refused_before_its_items_are_read() {
        // A block count of the limit + 1 (zigzag varint), then nothing.
        let count = (MAX_SEQUENCE_LENGTH as u64 + 1) * 2;
        let mut bytes = Vec::new();
        let mut rest = count;
        while rest >= 0x80 {
            bytes.push((rest as u8 & 0x7f) | 0x80);
            rest >>= 7;
        }
        bytes.push(rest as u8);
        let mut list = vec!["kept".to_string()];
        assert_eq!(text_list(&mut DatumReader::new(&bytes), &mut list), Err(ReadError::TooManyItems(MAX_SEQUENCE_LENGTH)));
        // Two blocks are one array: the limit is on their sum.
        let mut two_blocks = vec![0x04, 0x02, b'a', 0x02, b'b'];
        two_blocks.extend([0x02, 0x02, b'c', 0x00]);
        assert_eq!(text_list(&mut DatumReader::new(&two_blocks), &mut list), Ok(()));
        assert_eq!(list, ["a", "b", "c"]);
    }

    #[test]
    fn the_enums_symbols_are_serdes_names() {
        // The previous decoder matched writer symbols to the serde names.
        fn check<T: serde::Serialize + Copy + std::fmt::Debug>(symbols: &[&str], variants: &[T]) {
            assert_eq!(symbols.len(), variants.len());
            for (symbol, variant) in symbols.iter().zip(variants) {
                assert_eq!(serde_json::to_value(variant).unwrap(), serde_json::json!(symbol), "{variant:?}");
            }
        }
        check(SlaTier::SYMBOLS, SlaTier::VARIANTS);
        check(VmTransition::SYMBOLS, VmTransition::VARIANTS);
        check(CheckFrequency::SYMBOLS, CheckFrequency::VARIANTS);
        check(CheckStatus::SYMBOLS, CheckStatus::VARIANTS);
        check(TicketType::SYMBOLS, TicketType::VARIANTS);
        check(TechnicianProfile::SYMBOLS, TechnicianProfile::VARIANTS);
    }
}
