//! The ClickHouse sink's aggregate decoder: an Avro single-object `Aggregate`
//! straight into the struct with `serde_avro_fast` (no generic `Value` tree,
//! no field map), as [`crate::fast_decode`] does for the events.
//!
//! It accepts exactly the fingerprints the codec accepts for the record (the
//! specification's and the legacy one, see the codec's migration rule) and
//! refuses what [`EventCodec::decode`](crate::EventCodec::decode) refuses; a
//! test checks both decoders agree, message by message, damaged ones too.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_avro_fast::de::read::SliceRead;
use serde_avro_fast::de::{DeserializerConfig, DeserializerState};

use crate::codec::{self, AvroRecord, CodecError, MAX_ALLOCATION_BYTES};
use crate::events::{Aggregate, EventKind, Period};

/// Writer schemas of the aggregate record by fingerprint.
fn writers() -> &'static HashMap<[u8; 8], serde_avro_fast::Schema> {
    static WRITERS: OnceLock<HashMap<[u8; 8], serde_avro_fast::Schema>> = OnceLock::new();
    WRITERS.get_or_init(|| {
        codec::accepted_fingerprints()
            .filter(|(_, record, _)| *record == Aggregate::RECORD)
            // The texts apache-avro parsed; the tests parse them with both libraries.
            .map(|(fingerprint, _, text)| (fingerprint, text.parse().expect("embedded schema parses with serde_avro_fast (see aggregate_decode tests)")))
            .collect()
    })
}

/// Decodes an aggregate revision, refusing what
/// [`EventCodec::decode::<Aggregate>`](crate::EventCodec::decode) refuses.
pub fn decode_aggregate(bytes: &[u8]) -> Result<Aggregate, CodecError> {
    if bytes.len() < 10 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[0] != 0xC3 || bytes[1] != 0x01 {
        return Err(CodecError::BadMarker(bytes[0], bytes[1]));
    }
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&bytes[2..10]);
    let Some(schema) = writers().get(&fingerprint) else {
        // The codec's answer: another record's fingerprint, or an unknown one.
        return Err(match codec::accepted_fingerprints().find(|(f, _, _)| *f == fingerprint) {
            Some((_, record, _)) => CodecError::WrongRecord { expected: Aggregate::RECORD.into(), found: record.into() },
            None => CodecError::UnknownFingerprint(hex::encode(fingerprint)),
        });
    };
    let mut config = DeserializerConfig::new(schema);
    // No legal aggregate has a map near this; a hostile count fails here.
    config.max_seq_size = MAX_ALLOCATION_BYTES;
    let mut state = DeserializerState::with_config(SliceRead::new(&bytes[10..]), config);
    let wire = AggregateWire::deserialize(state.deserializer()).map_err(|e| CodecError::Avro(e.to_string()))?;
    let mut rest = state.into_reader();
    let mut probe = [0u8; 1];
    if std::io::Read::read(&mut rest, &mut probe).map_err(|e| CodecError::Avro(e.to_string()))? != 0 {
        return Err(CodecError::Shape("trailing bytes after the datum".into()));
    }
    wire.into_aggregate()
}

fn instant(field: &'static str, millis: i64) -> Result<DateTime<Utc>, CodecError> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| CodecError::Shape(format!("{field}: {millis} ms is not a valid instant")))
}

/// `aggregate.avsc` as serde reads it. Decimals arrive through
/// `serde_avro_fast`'s exact `rust_decimal` (16 bytes at most, 96 bits, the
/// schema's scale), as the codec reads them.
#[derive(Deserialize)]
struct AggregateWire {
    aggregate_id: String,
    revision: i64,
    is_final: bool,
    kind: EventKind,
    tenant: String,
    subsidiary: String,
    domain: String,
    period: Period,
    time_zone: String,
    window_start: i64,
    window_end: i64,
    window_label: String,
    metric: String,
    unit: String,
    dimensions: BTreeMap<String, String>,
    quantity: Decimal,
    event_count: i64,
    incident_count: i64,
    request_count: i64,
    ok_count: i64,
    warning_count: i64,
    ko_count: i64,
    unknown_count: i64,
    missed_count: i64,
    cost: Decimal,
    currency: String,
    price_book_version: String,
    emitted_at: i64,
}

impl AggregateWire {
    fn into_aggregate(self) -> Result<Aggregate, CodecError> {
        let w = self;
        Ok(Aggregate {
            aggregate_id: w.aggregate_id,
            revision: w.revision,
            is_final: w.is_final,
            kind: w.kind,
            tenant: w.tenant,
            subsidiary: w.subsidiary,
            domain: w.domain,
            period: w.period,
            time_zone: w.time_zone,
            window_start: instant("window_start", w.window_start)?,
            window_end: instant("window_end", w.window_end)?,
            window_label: w.window_label,
            metric: w.metric,
            unit: w.unit,
            dimensions: w.dimensions,
            quantity: w.quantity,
            event_count: w.event_count,
            incident_count: w.incident_count,
            request_count: w.request_count,
            ok_count: w.ok_count,
            warning_count: w.warning_count,
            ko_count: w.ko_count,
            unknown_count: w.unknown_count,
            missed_count: w.missed_count,
            cost: w.cost,
            currency: w.currency,
            price_book_version: w.price_book_version,
            emitted_at: instant("emitted_at", w.emitted_at)?,
        })
    }
}
