//! The fast event decoder (`meter_model::fast_decode`) reads exactly what the
//! codec reads: every event, every schema version in `schemas/history/`, both
//! fingerprints of each, and refuses (never panics on) what the codec refuses.
//! `decode_event_into`, into a target reused from message to message (of the
//! same kind or not, after errors too), gives the answers of the decoder it
//! replaced (`reference/serde_decoder.rs`: `serde_avro_fast` into wire
//! structs), message by message.

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, TimeZone, Utc};
use meter_model::codec::schema_texts;
use meter_model::fast_decode;
use meter_model::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

#[path = "reference/serde_decoder.rs"]
mod serde_decoder;

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_546_300_800_000i64..1_924_992_000_000i64).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9éà _./-]{0,24}"
}

fn header() -> impl Strategy<Value = EventHeader> {
    (text(), text(), text(), text(), text(), instant(), instant(), 0i64..i64::MAX, any::<bool>()).prop_map(
        |(event_id, source, tenant, subsidiary, domain, event_time, ingest_time, version, deleted)| EventHeader {
            event_id,
            source,
            tenant,
            subsidiary,
            domain,
            event_time,
            ingest_time,
            version,
            deleted,
        },
    )
}

fn vm_usage() -> impl Strategy<Value = Event> {
    (
        header(),
        0i32..512,
        0i64..1 << 40,
        prop::collection::vec(text(), 0..4),
        prop::sample::select(vec![SlaTier::Sla99_7, SlaTier::Sla99_9, SlaTier::Sla99_99]),
        prop::sample::select(vec![VmTransition::Sample, VmTransition::Create, VmTransition::Start, VmTransition::Resize, VmTransition::Stop, VmTransition::Delete]),
        any::<bool>(),
    )
        .prop_map(|(header, vcpu, ram_mib, options, sla_tier, transition, guaranteed_bandwidth)| {
            Event::VmUsage(VmUsage {
                header,
                vm_id: "vm-1".into(),
                vcpu,
                ram_mib,
                storage_gb: 100,
                bandwidth_mbps: 200,
                guaranteed_bandwidth,
                public_ips: 2,
                sla_tier,
                options,
                datacenter: "PAR1".into(),
                transition,
                sample_interval_seconds: 300,
            })
        })
}

fn check_result() -> impl Strategy<Value = Event> {
    (
        header(),
        proptest::option::of(instant()),
        proptest::option::of(instant()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        prop::sample::select(vec![CheckStatus::Ok, CheckStatus::Warning, CheckStatus::Ko, CheckStatus::Unknown, CheckStatus::Missed]),
        prop::sample::select(vec![CheckFrequency::Daily, CheckFrequency::Weekly, CheckFrequency::Monthly, CheckFrequency::Semestrial, CheckFrequency::Yearly]),
    )
        .prop_map(|(header, scheduled_time, executed_time, ticket_ref, output, status, frequency)| {
            Event::CheckResult(CheckResult {
                header,
                check_id: "c1".into(),
                check_name: "Backup jobs".into(),
                target: "srv-01".into(),
                frequency,
                scheduled_time,
                executed_time,
                status,
                ticket_ref,
                time_spent_minutes: 15,
                output,
            })
        })
}

fn ticket_time() -> impl Strategy<Value = Event> {
    (
        header(),
        instant(),
        1i32..1440,
        prop::collection::vec(text(), 0..4),
        proptest::option::of(text()),
        proptest::option::of("[A-Z]{2}"),
        prop::sample::select(vec![TechnicianProfile::Administrator, TechnicianProfile::Engineer, TechnicianProfile::Consultant, TechnicianProfile::Architect]),
        any::<bool>(),
    )
        .prop_map(|(header, start_time, minutes_worked, category_path, application, country, technician_profile, incident)| {
            Event::TicketTime(TicketTime {
                header,
                ticket_id: "T-42".into(),
                task_id: "7".into(),
                ticket_type: if incident { TicketType::Incident } else { TicketType::Request },
                category_path,
                in_scope: !incident,
                requester: "alice".into(),
                technician: "bob".into(),
                technician_profile,
                application,
                country,
                minutes_worked,
                start_time,
            })
        })
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![vm_usage(), check_result(), ticket_time()]
}

fn to_avro(event: &Event) -> Value {
    match event {
        Event::VmUsage(e) => e.to_avro(),
        Event::CheckResult(e) => e.to_avro(),
        Event::TicketTime(e) => e.to_avro(),
    }
    .unwrap()
}

/// The fast decoder accepts nothing the codec refuses, and reads what both
/// accept the same. It may refuse more: apache-avro wraps a varint longer
/// than 64 bits (to 0, see `an_overflowing_varint_is_refused`), it does not.
fn same_answer(kind: EventKind, bytes: &[u8]) -> Result<Option<Event>, String> {
    let reference = EventCodec::decode_event(kind, bytes);
    let fast = fast_decode::decode_event(kind, bytes);
    match (reference, fast) {
        (Ok(a), Ok(b)) if a == b => Ok(Some(a)),
        (_, Err(_)) => Ok(None),
        (a, b) => Err(format!("codec: {a:?}\nfast: {b:?}")),
    }
}

/// Two errors for the same message are the same error: the same words, but
/// for Avro's own (each reader words its own).
fn same_error(a: &CodecError, b: &CodecError) -> bool {
    match (a, b) {
        (CodecError::Avro(_), CodecError::Avro(_)) => true,
        _ => a.to_string() == b.to_string(),
    }
}

/// `decode_event_into` into `target` gives the previous decoder's answer, and
/// accepts only what the codec reads the same.
fn into_agrees(kind: EventKind, bytes: &[u8], target: &mut Event) -> Result<(), String> {
    let before = format!("{target:?}");
    let reference = serde_decoder::decode_event(kind, bytes);
    let into = fast_decode::decode_event_into(kind, bytes, target);
    match (&reference, &into) {
        (Ok(expected), Ok(())) if target == expected => {}
        (Err(a), Err(b)) if same_error(a, b) => return Ok(()),
        _ => return Err(format!("reference: {reference:?}\ninto: {into:?}\ntarget before: {before}\ntarget after: {target:?}")),
    }
    match EventCodec::decode_event(kind, bytes) {
        Ok(codec) if codec == *target => Ok(()),
        codec => Err(format!("codec: {codec:?}\ninto: {target:?}")),
    }
}

/// The texts of the event schemas of a kind, every version.
fn versions(kind: EventKind) -> Vec<&'static str> {
    schema_texts().filter(|(record, _, _)| *record == kind.spec().record).map(|(_, text, _)| text).collect()
}

/// The header a producer of the schema `text` wrote: the specification's
/// fingerprint, or (before the migration) apache-avro's.
fn header_of(text: &str, legacy: bool) -> Vec<u8> {
    if legacy {
        use apache_avro::headers::HeaderBuilder;
        apache_avro::headers::RabinFingerprintHeader::from_schema(&Schema::parse_str(text).unwrap()).build_header()
    } else {
        meter_model::fingerprint::single_object_header(text).unwrap().to_vec()
    }
}

/// A message as a stream may carry it: any event, written by any schema
/// version with either fingerprint, maybe cut or with bytes changed, read as
/// its kind or (sometimes) as another.
fn stream_message() -> impl Strategy<Value = (EventKind, Vec<u8>)> {
    (
        any_event(),
        any::<prop::sample::Index>(),
        any::<bool>(),
        prop::option::weighted(0.25, any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        prop::option::weighted(0.1, prop::sample::select(EventKind::ALL.to_vec())),
    )
        .prop_map(|(event, version, legacy, cut, flips, read_as)| {
            let texts = versions(event.kind());
            let text = texts[version.index(texts.len())];
            let mut bytes = written_with(text, &event, header_of(text, legacy));
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            (read_as.unwrap_or(event.kind()), bytes)
        })
}

proptest! {
    #[test]
    fn a_reused_target_gets_the_previous_decoders_answers(start in any_event(), stream in prop::collection::vec(stream_message(), 1..12)) {
        let mut target = start;
        for (kind, bytes) in &stream {
            if let Err(difference) = into_agrees(*kind, bytes, &mut target) {
                prop_assert!(false, "{}", difference);
            }
        }
    }

    #[test]
    fn the_fast_decoder_reads_what_the_codec_writes(event in any_event()) {
        let bytes = EventCodec::encode_event(&event).unwrap();
        prop_assert_eq!(fast_decode::decode_event(event.kind(), &bytes).unwrap(), event);
    }

    #[test]
    fn damaged_messages_get_the_codecs_answer(event in any_event(), cut in any::<prop::sample::Index>(),
                                               flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = EventCodec::encode_event(&event).unwrap();
        // Every cut of a whole message is refused.
        let cut = cut.index(bytes.len() + 1);
        if cut < bytes.len() {
            prop_assert!(fast_decode::decode_event(event.kind(), &bytes[..cut]).is_err());
        }
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        for message in [&bytes[..], &bytes[..cut]] {
            for kind in EventKind::ALL {
                if let Err(difference) = same_answer(kind, message) {
                    prop_assert!(false, "{}", difference);
                }
            }
        }
    }
}

/// A message as a producer of the schema `text` wrote it: the fields that
/// schema has, with the given header (the fingerprint).
fn written_with(text: &str, event: &Event, header: Vec<u8>) -> Vec<u8> {
    let schema = Schema::parse_str(text).unwrap();
    let Schema::Record(record) = &schema else { panic!("event schemas are records") };
    let Value::Record(mut fields) = to_avro(event) else { panic!("events are records") };
    fields.retain(|(name, _)| record.fields.iter().any(|f| f.name == *name));
    let mut bytes = header;
    bytes.extend(apache_avro::to_avro_datum(&schema, Value::Record(fields)).unwrap());
    bytes
}

#[test]
fn every_schema_version_and_both_fingerprints_decode_the_same() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut versions = 0;
    // One target for every message: kinds and versions change under it.
    let mut reused = ticket_time().new_tree(&mut runner).unwrap().current();
    for (record, text, current) in schema_texts() {
        let strategy = match record {
            "io.meter.events.VmUsage" => vm_usage().boxed(),
            "io.meter.events.CheckResult" => check_result().boxed(),
            "io.meter.events.TicketTime" => ticket_time().boxed(),
            _ => continue,
        };
        versions += 1;
        let spec = meter_model::fingerprint::single_object_header(text).unwrap().to_vec();
        let legacy = {
            use apache_avro::headers::HeaderBuilder;
            apache_avro::headers::RabinFingerprintHeader::from_schema(&Schema::parse_str(text).unwrap()).build_header()
        };
        assert_eq!(legacy.len(), 10);
        for _ in 0..50 {
            let event = strategy.new_tree(&mut runner).unwrap().current();
            for header in [&spec, &legacy] {
                let bytes = written_with(text, &event, header.clone());
                let decoded = fast_decode::decode_event(event.kind(), &bytes)
                    .unwrap_or_else(|e| panic!("{record} (current: {current}) does not decode: {e}"));
                assert_eq!(Some(decoded.clone()), EventCodec::decode_event(event.kind(), &bytes).ok(), "{record}, current: {current}");
                fast_decode::decode_event_into(event.kind(), &bytes, &mut reused).unwrap();
                assert_eq!(reused, decoded, "{record} into a reused target, current: {current}");
                into_agrees(event.kind(), &bytes, &mut reused).unwrap();
                if current {
                    assert_eq!(decoded, event);
                } else {
                    // Older writers lack `version` and `deleted`: the schema defaults.
                    assert_eq!(decoded.header().version, 0);
                    assert!(!decoded.header().deleted);
                }
            }
        }
    }
    assert_eq!(versions, 7, "3 current event schemas and 4 in schemas/history");
}

#[test]
fn an_overflowing_varint_is_refused() {
    let mut event = ticket_time().new_tree(&mut proptest::test_runner::TestRunner::deterministic()).unwrap().current();
    event.header_mut().version = 1 << 62;
    event.header_mut().deleted = false;
    let mut bytes = EventCodec::encode_event(&event).unwrap();
    // `version` (zigzag 2^63: nine 0x80 then 0x01) and `deleted` close the datum.
    let end = bytes.len();
    assert_eq!(&bytes[end - 11..], &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00]);
    // A tenth byte worth 2 << 63: more than 64 bits.
    bytes[end - 2] = 0x02;
    assert!(fast_decode::decode_event(EventKind::TicketTime, &bytes).is_err());
}

#[test]
fn hostile_messages_are_errors() {
    let good = EventCodec::encode_event(&ticket_time().new_tree(&mut proptest::test_runner::TestRunner::deterministic()).unwrap().current()).unwrap();
    // A header of a known schema, then an array count of 2^29 in a few bytes.
    let mut huge_count = good[..10].to_vec();
    huge_count.extend([0x02, b'a', 0x02, b'b', 0x02, b'c', 0x02, b'd', 0x02, b'e', 0x80, 0x80, 0x80, 0x80, 0x04]);
    let mut wrong_fingerprint = good.clone();
    wrong_fingerprint[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
    let mut trailing = good.clone();
    trailing.push(0);
    let aggregate_header = meter_model::fingerprint::single_object_header(
        schema_texts().find(|(r, _, current)| *r == Aggregate::RECORD && *current).unwrap().1,
    )
    .unwrap();
    let mut other_record = aggregate_header.to_vec();
    other_record.extend_from_slice(&good[10..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("huge array count", huge_count),
        ("wrong fingerprint", wrong_fingerprint),
        ("trailing byte", trailing),
        ("an aggregate's fingerprint", other_record),
        ("junk near 1 MB", vec![0xC3; 900_000]),
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
    ];
    let mut reused = EventCodec::decode_event(EventKind::TicketTime, &good).unwrap();
    for (name, bytes) in &cases {
        assert!(fast_decode::decode_event(EventKind::TicketTime, bytes).is_err(), "{name}");
        assert!(EventCodec::decode_event(EventKind::TicketTime, bytes).is_err(), "{name} (codec)");
        for kind in EventKind::ALL {
            into_agrees(kind, bytes, &mut reused).unwrap_or_else(|d| panic!("{name}: {d}"));
        }
        // The target is usable again after the error.
        into_agrees(EventKind::TicketTime, &good, &mut reused).unwrap();
    }
    // A ticket's bytes read as another kind: a wrong record, not a panic.
    let wrong_kind = fast_decode::decode_event(EventKind::VmUsage, &good).unwrap_err();
    assert!(matches!(wrong_kind, CodecError::WrongRecord { .. }), "{wrong_kind}");
    // Every cut of a good message.
    for cut in 0..good.len() {
        assert!(fast_decode::decode_event(EventKind::TicketTime, &good[..cut]).is_err(), "cut at {cut}");
    }
}

/// Every byte of messages of every kind and schema version set to values at
/// the edges of Avro's encodings (booleans, varint continuation, zigzag signs,
/// union and enum indexes): the previous decoder's answer each time, into one
/// reused target.
#[test]
fn every_single_byte_change_gets_the_previous_decoders_answer() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut target = ticket_time().new_tree(&mut runner).unwrap().current();
    let mut checked = 0;
    for kind in EventKind::ALL {
        let strategy = match kind {
            EventKind::VmUsage => vm_usage().boxed(),
            EventKind::CheckResult => check_result().boxed(),
            EventKind::TicketTime => ticket_time().boxed(),
        };
        for text in versions(kind) {
            for legacy in [false, true] {
                for _ in 0..2 {
                    let event = strategy.new_tree(&mut runner).unwrap().current();
                    let good = written_with(text, &event, header_of(text, legacy));
                    for at in 0..good.len() {
                        let original = good[at];
                        let values = [0, 1, 2, 3, 0x7f, 0x80, 0x81, 0xfe, 0xff, original ^ 1, original.wrapping_add(2), original.wrapping_sub(2)];
                        for value in values {
                            let mut bytes = good.clone();
                            bytes[at] = value;
                            into_agrees(kind, &bytes, &mut target).unwrap_or_else(|d| panic!("byte {at} = {value:#x}: {d}"));
                            checked += 1;
                        }
                        into_agrees(kind, &good[..at], &mut target).unwrap_or_else(|d| panic!("cut at {at}: {d}"));
                    }
                    into_agrees(kind, &good, &mut target).unwrap();
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}
