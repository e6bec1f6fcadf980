//! The sink's aggregate decoder (`meter_model::aggregate_decode`) reads
//! exactly what the codec reads (`EventCodec::decode::<Aggregate>`): every
//! aggregate, both fingerprints of its schema, and refuses (never panics on)
//! what the codec refuses.

use std::collections::BTreeMap;

use apache_avro::Schema;
use chrono::{DateTime, TimeZone, Utc};
use meter_model::aggregate_decode::decode_aggregate;
use meter_model::codec::schema_texts;
use meter_model::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rust_decimal::Decimal;

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_546_300_800_000i64..1_924_992_000_000i64).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9éà _./>-]{0,24}"
}

/// Any decimal the schema holds: up to 28 digits, 6 of them decimals, either sign.
fn decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|m| Decimal::new(m, 6)),
        (-(10i128.pow(28) - 1)..10i128.pow(28)).prop_map(|m| Decimal::from_i128_with_scale(m, 6)),
    ]
}

fn count() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..1000, any::<i64>()]
}

fn aggregate() -> impl Strategy<Value = Aggregate> {
    (
        (text(), any::<i64>(), any::<bool>(), prop::sample::select(EventKind::ALL.to_vec()), text(), text(), text()),
        (prop::sample::select(Period::ALL.to_vec()), text(), instant(), instant(), text(), text(), text()),
        (prop::collection::btree_map(text(), text(), 0..10), decimal(), decimal(), text(), text(), instant()),
        prop::collection::vec(count(), 8),
    )
        .prop_map(
            |(
                (aggregate_id, revision, is_final, kind, tenant, subsidiary, domain),
                (period, time_zone, window_start, window_end, window_label, metric, unit),
                (dimensions, quantity, cost, currency, price_book_version, emitted_at),
                counts,
            )| Aggregate {
                aggregate_id,
                revision,
                is_final,
                kind,
                tenant,
                subsidiary,
                domain,
                period,
                time_zone,
                window_start,
                window_end,
                window_label,
                metric,
                unit,
                dimensions,
                quantity,
                event_count: counts[0],
                incident_count: counts[1],
                request_count: counts[2],
                ok_count: counts[3],
                warning_count: counts[4],
                ko_count: counts[5],
                unknown_count: counts[6],
                missed_count: counts[7],
                cost,
                currency,
                price_book_version,
                emitted_at,
            },
        )
}

/// Decimals compare by value; the fast decoder must also keep the codec's scale.
fn same(a: &Aggregate, b: &Aggregate) -> bool {
    a == b && a.quantity.scale() == b.quantity.scale() && a.cost.scale() == b.cost.scale()
}

/// The fast decoder accepts nothing the codec refuses, and reads what both
/// accept the same. It may refuse more: apache-avro wraps a varint longer
/// than 64 bits, it does not.
fn same_answer(bytes: &[u8]) -> Result<(), String> {
    match (EventCodec::decode::<Aggregate>(bytes), decode_aggregate(bytes)) {
        (Ok(a), Ok(b)) if same(&a, &b) => Ok(()),
        (_, Err(_)) => Ok(()),
        (a, b) => Err(format!("codec: {a:?}\nfast: {b:?}")),
    }
}

proptest! {
    #[test]
    fn the_fast_decoder_reads_what_the_codec_writes(a in aggregate()) {
        let bytes = EventCodec::encode(&a).unwrap();
        let fast = decode_aggregate(&bytes).unwrap();
        let codec = EventCodec::decode::<Aggregate>(&bytes).unwrap();
        prop_assert!(same(&fast, &codec), "fast: {fast:?}\ncodec: {codec:?}");
        prop_assert_eq!(fast, a);
    }

    #[test]
    fn damaged_messages_get_the_codecs_answer(a in aggregate(), cut in any::<prop::sample::Index>(),
                                               flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = EventCodec::encode(&a).unwrap();
        // Every cut of a whole message is refused.
        let cut = cut.index(bytes.len() + 1);
        if cut < bytes.len() {
            prop_assert!(decode_aggregate(&bytes[..cut]).is_err());
        }
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        for message in [&bytes[..], &bytes[..cut]] {
            if let Err(difference) = same_answer(message) {
                prop_assert!(false, "{}", difference);
            }
        }
    }
}

fn current_text() -> &'static str {
    schema_texts().find(|(r, _, current)| *r == Aggregate::RECORD && *current).unwrap().1
}

#[test]
fn both_fingerprints_decode_the_same() {
    let text = current_text();
    let spec = meter_model::fingerprint::single_object_header(text).unwrap().to_vec();
    let legacy = {
        use apache_avro::headers::HeaderBuilder;
        apache_avro::headers::RabinFingerprintHeader::from_schema(&Schema::parse_str(text).unwrap()).build_header()
    };
    assert_eq!(legacy.len(), 10);
    assert_ne!(spec, legacy, "the aggregate schema has logical types: its two fingerprints differ");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..50 {
        let a = aggregate().new_tree(&mut runner).unwrap().current();
        let datum = &EventCodec::encode(&a).unwrap()[10..];
        for header in [&spec, &legacy] {
            let mut bytes = header.clone();
            bytes.extend_from_slice(datum);
            assert_eq!(decode_aggregate(&bytes).unwrap(), a);
            assert_eq!(EventCodec::decode::<Aggregate>(&bytes).unwrap(), a);
        }
    }
}

/// The same dimension twice in a message: both decoders keep the last.
#[test]
fn a_repeated_map_key_keeps_the_last_value_in_both() {
    let mut a = aggregate().new_tree(&mut proptest::test_runner::TestRunner::deterministic()).unwrap().current();
    a.dimensions = BTreeMap::from([("k".to_string(), "first".to_string())]);
    let bytes = EventCodec::encode(&a).unwrap();
    // The map block: count 1, "k", "first", end. Make it count 2 with a second "k".
    let one = [0x02, 0x02, b'k', 0x0a, b'f', b'i', b'r', b's', b't', 0x00];
    let at = bytes.windows(one.len()).position(|w| w == one).expect("the map is in the datum");
    let mut twice = bytes[..at].to_vec();
    twice.extend([0x04, 0x02, b'k', 0x0a, b'f', b'i', b'r', b's', b't', 0x02, b'k', 0x08, b'l', b'a', b's', b't', 0x00]);
    twice.extend_from_slice(&bytes[at + one.len()..]);
    let codec = EventCodec::decode::<Aggregate>(&twice).unwrap();
    let fast = decode_aggregate(&twice).unwrap();
    assert_eq!(codec.dimensions["k"], "last");
    assert!(same(&codec, &fast));
}

#[test]
fn hostile_messages_are_errors() {
    let good = EventCodec::encode(&aggregate().new_tree(&mut proptest::test_runner::TestRunner::deterministic()).unwrap().current()).unwrap();
    let mut wrong_fingerprint = good.clone();
    wrong_fingerprint[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
    let mut trailing = good.clone();
    trailing.push(0);
    // A map count of 2^29 in a few bytes, after the fields before `dimensions`.
    let mut huge_map = meter_model::fingerprint::single_object_header(current_text()).unwrap().to_vec();
    huge_map.extend([0x02, b'a', 0x02, 0x00, 0x00, 0x02, b't', 0x02, b's', 0x02, b'd', 0x00, 0x02, b'z']);
    huge_map.extend([0x02, 0x02, 0x02, b'l', 0x02, b'm', 0x02, b'u', 0x80, 0x80, 0x80, 0x80, 0x04]);
    let ticket = EventKind::TicketTime.spec().schema;
    let mut event_fingerprint = meter_model::fingerprint::single_object_header(ticket).unwrap().to_vec();
    event_fingerprint.extend_from_slice(&good[10..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong fingerprint", wrong_fingerprint),
        ("trailing byte", trailing),
        ("huge map count", huge_map),
        ("an event's fingerprint", event_fingerprint.clone()),
        ("junk near 1 MB", vec![0xC3; 900_000]),
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
    ];
    for (name, bytes) in &cases {
        assert!(decode_aggregate(bytes).is_err(), "{name}");
        assert!(EventCodec::decode::<Aggregate>(bytes).is_err(), "{name} (codec)");
    }
    // Another record's fingerprint: the codec's error, not a decoding attempt.
    let wrong_record = decode_aggregate(&event_fingerprint).unwrap_err();
    assert!(matches!(wrong_record, CodecError::WrongRecord { .. }), "{wrong_record}");
    assert_eq!(wrong_record.to_string(), EventCodec::decode::<Aggregate>(&event_fingerprint).unwrap_err().to_string());
    for cut in 0..good.len() {
        assert!(decode_aggregate(&good[..cut]).is_err(), "cut at {cut}");
    }
}
