//! The single-object fingerprints are the Avro specification's (CRC-64-AVRO of
//! the Parsing Canonical Form), as other implementations compute them, and
//! messages written with the legacy (apache-avro 0.21) fingerprints still decode.
//!
//! Expected values come from fastavro (an independent implementation that
//! follows the specification): `tests/data/fingerprint_vectors.json` is written
//! by `tests/python/fingerprint_vectors.py`; run it again after a schema change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use meter_model::codec::schema_texts;
use meter_model::fingerprint::{fingerprint, legacy_fingerprint, parsing_canonical_form};
use meter_model::*;
use rust_decimal_macros::dec;
use serde_json::Value;

fn hex(fp: [u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fingerprint_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

const REGENERATE: &str = "run `.stack/venv/bin/python tests/python/fingerprint_vectors.py` after changing a schema";

#[test]
fn canonical_form_and_fingerprint_of_each_rule_equal_fastavro() {
    let cases = vectors()["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 30);
    let rules: BTreeSet<&str> = cases.iter().map(|c| c["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        ["FULLNAMES", "INTEGERS", "ORDER", "PRIMITIVES", "STRINGS", "STRIP", "WHITESPACE"].into_iter().collect(),
        "every rule of the specification has cases"
    );
    for case in &cases {
        let text = case["schema"].as_str().unwrap();
        assert_eq!(parsing_canonical_form(text).unwrap(), case["canonical"].as_str().unwrap(), "{text}");
        assert_eq!(hex(fingerprint(text).unwrap()), case["crc64_avro"].as_str().unwrap(), "{text}");
    }
}

/// The same values, written out, so a wrong vector file cannot hide a regression.
#[test]
fn known_fingerprints() {
    let cases = [
        // Primitives: the Java reference implementation's values (signed longs
        // 8247732601305521295, -3434872931120570953, 5746618253357095269), little-endian.
        (r#""int""#, "8f5c393f1ad57572"),
        (r#"{"type":"long"}"#, "b71df49344e154d0"),
        (r#""bytes""#, "651920c3da16c04f"),
        // A logical type is its primitive ([PRIMITIVES] + [STRIP]).
        (r#"{"type":"long","logicalType":"timestamp-millis"}"#, "b71df49344e154d0"),
        (r#"{"type":"bytes","logicalType":"decimal","precision":28,"scale":6}"#, "651920c3da16c04f"),
        (r#"["null",{"type":"long","logicalType":"timestamp-millis"}]"#, "4a8040ed5813ca98"),
        (r#"{"type":"record","name":"Bill","namespace":"io.meter","fields":[]}"#, "cbb32ca6be6758b5"),
        (r#"{"type":"enum","namespace":"io.meter","name":"Tier","symbols":["GOLD","SILVER"]}"#, "8909a085fcffbd5b"),
    ];
    for (text, expected) in cases {
        assert_eq!(hex(fingerprint(text).unwrap()), expected, "{text}");
    }
    // The issue's example: what fastavro computes for aggregate.avsc, and what
    // the messages carried before (apache-avro 0.21's canonical form).
    let aggregate = std::fs::read_to_string(repo_root().join("schemas/aggregate.avsc")).unwrap();
    assert_eq!(hex(fingerprint(&aggregate).unwrap()), "875b1f87043d67df");
    assert_eq!(hex(legacy_fingerprint(Aggregate::schema())), "33a8a557be197683");
}

fn schema_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for dir in ["schemas", "schemas/history"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "avsc") {
                let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn every_schema_file_has_the_fingerprint_fastavro_computes() {
    let vectors = vectors();
    let expected: BTreeMap<String, (String, String)> = vectors["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["file"].as_str().unwrap().to_string(),
                (s["canonical"].as_str().unwrap().to_string(), s["crc64_avro"].as_str().unwrap().to_string()),
            )
        })
        .collect();
    let files = schema_files();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the vector file lists exactly the schema files: {REGENERATE}"
    );
    for (file, text) in &files {
        let (canonical, fp) = &expected[file];
        assert_eq!(&parsing_canonical_form(text).unwrap(), canonical, "{file}: {REGENERATE}");
        assert_eq!(&hex(fingerprint(text).unwrap()), fp, "{file}: {REGENERATE}");
    }
}

#[test]
fn writers_put_the_specification_fingerprint_in_the_header() {
    let files = schema_files();
    let spec_of = |record: &str| {
        let (_, text, _) = schema_texts().find(|(r, _, current)| *r == record && *current).unwrap();
        assert!(files.values().any(|t| t == text));
        fingerprint(text).unwrap()
    };
    let aggregate = sample_aggregate();
    let bytes = EventCodec::encode(&aggregate).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(hex(bytes[2..10].try_into().unwrap()), "875b1f87043d67df");
    let letter = DeadLetter {
        component: "collector-file".into(),
        error_kind: "malformed_json".into(),
        error: "expected value".into(),
        original: b"{not json".to_vec(),
        event_kind: Some("TICKET_TIME".into()),
        source_file: Some("tickets.jsonl".into()),
        source_line: Some(3),
        source_topic: None,
        source_partition: None,
        source_offset: None,
        failed_at: Utc.with_ymd_and_hms(2026, 1, 12, 10, 0, 0).unwrap(),
    };
    let bytes = EventCodec::encode(&letter).unwrap();
    assert_eq!(&bytes[2..10], &spec_of(DeadLetter::RECORD));
    assert_eq!(EventCodec::decode::<DeadLetter>(&bytes).unwrap().source_line, Some(3));
}

#[test]
fn no_two_known_schema_versions_share_a_fingerprint() {
    // The canonical form ignores docs, defaults and logical types: a new
    // version that only changes those would be indistinguishable on the wire.
    let mut seen: BTreeMap<[u8; 8], String> = BTreeMap::new();
    for (record, text, current) in schema_texts() {
        let schema = apache_avro::Schema::parse_str(text).unwrap();
        let who = format!("{record} (current: {current})");
        for fp in [fingerprint(text).unwrap(), legacy_fingerprint(&schema)] {
            if let Some(other) = seen.insert(fp, who.clone()) {
                // The legacy and the specification fingerprint of one schema
                // are equal when it has no logical type.
                assert_eq!(other, who, "fingerprint {} of {who} is also {other}'s", hex(fp));
            }
        }
    }
}

fn sample_aggregate() -> Aggregate {
    let start = Utc.with_ymd_and_hms(2026, 1, 11, 23, 0, 0).unwrap();
    Aggregate {
        aggregate_id: "agg-acme-2026-01-12".into(),
        revision: 3,
        is_final: false,
        kind: EventKind::TicketTime,
        tenant: "acme".into(),
        subsidiary: "acme-fr".into(),
        domain: "infrastructure".into(),
        period: Period::Day,
        time_zone: "Europe/Paris".into(),
        window_start: start,
        window_end: start + chrono::Duration::days(1),
        window_label: "2026-01-12".into(),
        metric: "ticket.minutes".into(),
        unit: "minute".into(),
        dimensions: [("ticket_type".to_string(), "INCIDENT".to_string())].into_iter().collect(),
        quantity: dec!(165),
        event_count: 1,
        incident_count: 1,
        request_count: 0,
        ok_count: 0,
        warning_count: 0,
        ko_count: 0,
        unknown_count: 0,
        missed_count: 0,
        cost: dec!(206.25),
        currency: "EUR".into(),
        price_book_version: "2026-01".into(),
        emitted_at: Utc.with_ymd_and_hms(2026, 1, 12, 10, 45, 0).unwrap(),
    }
}

/// An aggregate as the pipeline wrote it before the change: the header
/// carries apache-avro 0.21's fingerprint of aggregate.avsc (33a8a557be197683).
const AGGREGATE_WRITTEN_WITH_LEGACY_FINGERPRINT: &str = concat!(
    "c30133a8a557be197683266167672d61636d652d323032362d30312d31320600040861636d650e61636d652d66721c696e66",
    "726173747275637475726500184575726f70652f506172697380b6cdf4f56680a680c7f66614323032362d30312d31321c74",
    "69636b65742e6d696e757465730c6d696e75746502167469636b65745f7479706510494e434944454e540020000000000000",
    "00000000000009d5b3400202000000000000200000000000000000000000000c4b2010064555520e323032362d3031c0fff8",
    "9cf666",
);

#[test]
fn messages_written_with_the_legacy_fingerprint_still_decode() {
    // Bytes frozen from the previous writer.
    let old = hex_decode(AGGREGATE_WRITTEN_WITH_LEGACY_FINGERPRINT);
    assert_eq!(&old[..10], &hex_decode("c30133a8a557be197683")[..]);
    assert_eq!(EventCodec::decode::<Aggregate>(&old).unwrap(), sample_aggregate());

    // Every known schema version: legacy header + datum decodes like the new header + datum.
    let new = EventCodec::encode(&sample_aggregate()).unwrap();
    assert_eq!(&new[10..], &old[10..], "only the header changed");
    let mut relabelled = vec![0xC3, 0x01];
    relabelled.extend_from_slice(&legacy_fingerprint(Aggregate::schema()));
    relabelled.extend_from_slice(&new[10..]);
    assert_eq!(relabelled, old);

    // An unknown fingerprint is still refused.
    let mut unknown = new.clone();
    unknown[2] ^= 0xff;
    assert!(matches!(EventCodec::decode::<Aggregate>(&unknown), Err(CodecError::UnknownFingerprint(_))));
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}


#[test]
fn every_current_record_decodes_under_its_legacy_fingerprint() {
    let events = [
        (EventKind::TicketTime, r#"{"event_id":"task-7","source":"glpi-main","tenant":"acme","subsidiary":"acme-fr",
            "domain":"infrastructure","event_time":"2026-01-12T10:45:00Z","ticket_id":"2026-001","task_id":"7",
            "ticket_type":"INCIDENT","category_path":["RUN","MCO","backups"],"in_scope":true,"requester":"marie.dupont",
            "technician":"bob","technician_profile":"ENGINEER","application":null,"country":"FR","minutes_worked":165,
            "start_time":"2026-01-12T08:00:00Z"}"#),
        (EventKind::VmUsage, r#"{"event_id":"vm-1-s1","source":"vmware","tenant":"acme","subsidiary":"acme-fr",
            "domain":"hosting","event_time":"2026-01-12T10:00:00Z","vm_id":"vm-1","vcpu":4,"ram_mib":8192,"storage_gb":100,
            "bandwidth_mbps":100,"sla_tier":"SLA_99_9","datacenter":"par1","transition":"SAMPLE","sample_interval_seconds":3600}"#),
        (EventKind::CheckResult, r#"{"event_id":"run-1","source":"icinga","tenant":"acme","subsidiary":"acme-fr",
            "domain":"supervision","event_time":"2026-01-12T10:00:00Z","check_id":"backup","check_name":"Backup",
            "target":"srv-1","frequency":"DAILY","executed_time":"2026-01-12T10:00:00Z","status":"OK"}"#),
    ];
    for (kind, json) in events {
        let event = Event::from_json(kind, json).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let bytes = EventCodec::encode_event(&event).unwrap();
        let schema = match kind {
            EventKind::VmUsage => VmUsage::schema(),
            EventKind::CheckResult => CheckResult::schema(),
            EventKind::TicketTime => TicketTime::schema(),
        };
        let legacy = legacy_fingerprint(schema);
        assert_ne!(&bytes[2..10], &legacy, "{kind:?} has timestamps: the two fingerprints differ");
        let mut old = vec![0xC3, 0x01];
        old.extend_from_slice(&legacy);
        old.extend_from_slice(&bytes[10..]);
        let decoded = EventCodec::decode_event(kind, &old).unwrap();
        assert_eq!(EventCodec::encode_event(&decoded).unwrap(), bytes, "{kind:?}");
    }
}

#[test]
fn serde_avro_fast_computes_the_same_fingerprints() {
    // A maintained crate that follows the specification agrees on every schema file.
    for (file, text) in schema_files() {
        let theirs: serde_avro_fast::Schema = text.parse().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(hex(*theirs.rabin_fingerprint()), hex(fingerprint(&text).unwrap()), "{file}");
    }
    for case in vectors()["cases"].as_array().unwrap() {
        let text = case["schema"].as_str().unwrap();
        // serde_avro_fast only parses some standalone schemas (e.g. not a bare
        // union or an empty record name reference); compare those it does.
        if let Ok(theirs) = text.parse::<serde_avro_fast::Schema>() {
            assert_eq!(hex(*theirs.rabin_fingerprint()), case["crc64_avro"].as_str().unwrap(), "{text}");
        }
    }
}
