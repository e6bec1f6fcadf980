//! The fast decoder as it was before `decode_event_into`: `serde_avro_fast`
//! into wire structs (one `String` a field), then the event. Kept as the
//! reference of the rules the fast decoder accepts messages by: the tests
//! check that the allocation-free decoder gives the same answer, message by
//! message, on every schema version and on damaged bytes.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use meter_model::codec::{self, MAX_ALLOCATION_BYTES};
use meter_model::*;
use serde::Deserialize;
use serde_avro_fast::de::read::SliceRead;
use serde_avro_fast::de::{DeserializerConfig, DeserializerState};

const MAX_SEQUENCE_LENGTH: usize = MAX_ALLOCATION_BYTES;

struct WriterSchema {
    record: &'static str,
    schema: serde_avro_fast::Schema,
}

fn writers() -> &'static HashMap<[u8; 8], WriterSchema> {
    static WRITERS: OnceLock<HashMap<[u8; 8], WriterSchema>> = OnceLock::new();
    WRITERS.get_or_init(|| {
        codec::accepted_fingerprints()
            .filter(|(_, record, _)| [VmUsage::RECORD, CheckResult::RECORD, TicketTime::RECORD].contains(record))
            .map(|(fingerprint, record, text)| {
                // The same texts apache-avro parsed (the codec tests parse every
                // one with both libraries); a failure is a build defect.
                let schema = text.parse().expect("embedded schema parses with serde_avro_fast (see fast_decode tests)");
                (fingerprint, WriterSchema { record, schema })
            })
            .collect()
    })
}

/// Decodes an event of the given kind as the fast decoder did, refusing what
/// [`EventCodec::decode_event`](meter_model::EventCodec::decode_event) refuses.
pub fn decode_event(kind: EventKind, bytes: &[u8]) -> Result<Event, CodecError> {
    Ok(match kind {
        EventKind::VmUsage => Event::VmUsage(decode::<VmUsageWire>(bytes, VmUsage::RECORD)?.into_event()?),
        EventKind::CheckResult => Event::CheckResult(decode::<CheckResultWire>(bytes, CheckResult::RECORD)?.into_event()?),
        EventKind::TicketTime => Event::TicketTime(decode::<TicketTimeWire>(bytes, TicketTime::RECORD)?.into_event()?),
    })
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], expected: &'static str) -> Result<T, CodecError> {
    if bytes.len() < 10 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[0] != 0xC3 || bytes[1] != 0x01 {
        return Err(CodecError::BadMarker(bytes[0], bytes[1]));
    }
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&bytes[2..10]);
    let writer = writers().get(&fingerprint).ok_or_else(|| unknown_or_other_record(fingerprint))?;
    if writer.record != expected {
        return Err(CodecError::WrongRecord { expected: expected.into(), found: writer.record.into() });
    }
    let mut config = DeserializerConfig::new(&writer.schema);
    config.max_seq_size = MAX_SEQUENCE_LENGTH;
    let mut state = DeserializerState::with_config(SliceRead::new(&bytes[10..]), config);
    let value = T::deserialize(state.deserializer()).map_err(|e| CodecError::Avro(e.to_string()))?;
    let mut rest = state.into_reader();
    let mut probe = [0u8; 1];
    if std::io::Read::read(&mut rest, &mut probe).map_err(|e| CodecError::Avro(e.to_string()))? != 0 {
        return Err(CodecError::Shape("trailing bytes after the datum".into()));
    }
    Ok(value)
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

/// The fields every event record carries, in the wire structs below (no
/// `#[serde(flatten)]`: it would buffer every field).
macro_rules! header {
    ($w:ident) => {
        EventHeader {
            event_id: $w.event_id,
            source: $w.source,
            tenant: $w.tenant,
            subsidiary: $w.subsidiary,
            domain: $w.domain,
            event_time: instant("event_time", $w.event_time)?,
            ingest_time: instant("ingest_time", $w.ingest_time)?,
            version: $w.version,
            deleted: $w.deleted,
        }
    };
}

/// `vm_usage.avsc` as serde reads it; `#[serde(default)]` on the fields an
/// older writer may lack, with the schema's defaults.
#[derive(Deserialize)]
struct VmUsageWire {
    event_id: String,
    source: String,
    tenant: String,
    subsidiary: String,
    domain: String,
    event_time: i64,
    ingest_time: i64,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    deleted: bool,
    vm_id: String,
    vcpu: i32,
    ram_mib: i64,
    storage_gb: i64,
    bandwidth_mbps: i32,
    guaranteed_bandwidth: bool,
    public_ips: i32,
    sla_tier: SlaTier,
    options: Vec<String>,
    datacenter: String,
    transition: VmTransition,
    sample_interval_seconds: i32,
}

impl VmUsageWire {
    fn into_event(self) -> Result<VmUsage, CodecError> {
        let w = self;
        Ok(VmUsage {
            header: header!(w),
            vm_id: w.vm_id,
            vcpu: w.vcpu,
            ram_mib: w.ram_mib,
            storage_gb: w.storage_gb,
            bandwidth_mbps: w.bandwidth_mbps,
            guaranteed_bandwidth: w.guaranteed_bandwidth,
            public_ips: w.public_ips,
            sla_tier: w.sla_tier,
            options: w.options,
            datacenter: w.datacenter,
            transition: w.transition,
            sample_interval_seconds: w.sample_interval_seconds,
        })
    }
}

#[derive(Deserialize)]
struct CheckResultWire {
    event_id: String,
    source: String,
    tenant: String,
    subsidiary: String,
    domain: String,
    event_time: i64,
    ingest_time: i64,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    deleted: bool,
    check_id: String,
    check_name: String,
    target: String,
    frequency: CheckFrequency,
    scheduled_time: Option<i64>,
    executed_time: Option<i64>,
    status: CheckStatus,
    ticket_ref: Option<String>,
    time_spent_minutes: i32,
    output: Option<String>,
}

impl CheckResultWire {
    fn into_event(self) -> Result<CheckResult, CodecError> {
        let w = self;
        Ok(CheckResult {
            header: header!(w),
            check_id: w.check_id,
            check_name: w.check_name,
            target: w.target,
            frequency: w.frequency,
            scheduled_time: opt_instant("scheduled_time", w.scheduled_time)?,
            executed_time: opt_instant("executed_time", w.executed_time)?,
            status: w.status,
            ticket_ref: w.ticket_ref,
            time_spent_minutes: w.time_spent_minutes,
            output: w.output,
        })
    }
}

#[derive(Deserialize)]
struct TicketTimeWire {
    event_id: String,
    source: String,
    tenant: String,
    subsidiary: String,
    domain: String,
    event_time: i64,
    ingest_time: i64,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    deleted: bool,
    ticket_id: String,
    task_id: String,
    ticket_type: TicketType,
    category_path: Vec<String>,
    in_scope: bool,
    requester: String,
    technician: String,
    technician_profile: TechnicianProfile,
    #[serde(default)]
    application: Option<String>,
    #[serde(default)]
    country: Option<String>,
    minutes_worked: i32,
    start_time: i64,
}

impl TicketTimeWire {
    fn into_event(self) -> Result<TicketTime, CodecError> {
        let w = self;
        Ok(TicketTime {
            header: header!(w),
            ticket_id: w.ticket_id,
            task_id: w.task_id,
            ticket_type: w.ticket_type,
            category_path: w.category_path,
            in_scope: w.in_scope,
            requester: w.requester,
            technician: w.technician,
            technician_profile: w.technician_profile,
            application: w.application,
            country: w.country,
            minutes_worked: w.minutes_worked,
            start_time: instant("start_time", w.start_time)?,
        })
    }
}
