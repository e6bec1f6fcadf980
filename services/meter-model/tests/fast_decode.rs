//! The fast event decoder (`meter_model::fast_decode`) reads exactly what the
//! codec reads: every event, every schema version in `schemas/history/`, both
//! fingerprints of each, and refuses (never panics on) what the codec refuses.

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, TimeZone, Utc};
use meter_model::codec::schema_texts;
use meter_model::fast_decode;
use meter_model::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

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

proptest! {
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
    for (name, bytes) in &cases {
        assert!(fast_decode::decode_event(EventKind::TicketTime, bytes).is_err(), "{name}");
        assert!(EventCodec::decode_event(EventKind::TicketTime, bytes).is_err(), "{name} (codec)");
    }
    // A ticket's bytes read as another kind: a wrong record, not a panic.
    let wrong_kind = fast_decode::decode_event(EventKind::VmUsage, &good).unwrap_err();
    assert!(matches!(wrong_kind, CodecError::WrongRecord { .. }), "{wrong_kind}");
    // Every cut of a good message.
    for cut in 0..good.len() {
        assert!(fast_decode::decode_event(EventKind::TicketTime, &good[..cut]).is_err(), "cut at {cut}");
    }
}
