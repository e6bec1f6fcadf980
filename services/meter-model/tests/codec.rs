use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, TimeZone, Utc};
use meter_model::codec::schema_texts;
use meter_model::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

#[test]
fn every_schema_parses_and_the_files_are_the_embedded_ones() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let mut on_disk = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let text = std::fs::read_to_string(&path).unwrap();
            Schema::parse_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            assert!(
                schema_texts().any(|(_, t, current)| current && t == text),
                "{} is not embedded as a current schema",
                path.display()
            );
            on_disk += 1;
        }
    }
    assert_eq!(on_disk, 6, "vm_usage, check_result, ticket_time, aggregate, dead_letter, period_control");
    for (record, text, _) in schema_texts() {
        let schema = Schema::parse_str(text).unwrap();
        assert_eq!(schema.name().map(|n| n.fullname(None)), Some(record.to_string()));
    }
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2019-01-01 .. 2031-01-01, millisecond precision as Avro keeps it.
    (1_546_300_800_000i64..1_924_992_000_000i64).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9éà _./-]{0,24}"
}

fn header() -> impl Strategy<Value = EventHeader> {
    (text(), text(), text(), text(), text(), instant(), instant()).prop_map(
        |(event_id, source, tenant, subsidiary, domain, event_time, ingest_time)| EventHeader {
            event_id,
            source,
            tenant,
            subsidiary,
            domain,
            event_time,
            ingest_time,
            version: 0,
            deleted: false,
        },
    )
}

fn money() -> impl Strategy<Value = Decimal> {
    // Any amount with up to 6 decimals, negative ones included (credit notes).
    (-10_000_000_000_000i64..10_000_000_000_000i64).prop_map(|units| Decimal::new(units, 6))
}

proptest! {
    #[test]
    fn vm_usage_round_trips(h in header(), vcpu in 0i32..512, ram in 0i64..1<<40, opts in prop::collection::vec(text(), 0..4),
                            tier in prop::sample::select(vec![SlaTier::Sla99_7, SlaTier::Sla99_9, SlaTier::Sla99_99]),
                            tr in prop::sample::select(vec![VmTransition::Sample, VmTransition::Create, VmTransition::Resize, VmTransition::Delete])) {
        let e = VmUsage { header: h, vm_id: "vm-1".into(), vcpu, ram_mib: ram, storage_gb: 100, bandwidth_mbps: 200,
            guaranteed_bandwidth: vcpu % 2 == 0, public_ips: 2, sla_tier: tier, options: opts, datacenter: "PAR1".into(),
            transition: tr, sample_interval_seconds: 300 };
        let bytes = EventCodec::encode(&e).unwrap();
        prop_assert_eq!(&bytes[..2], &[0xC3u8, 0x01][..]);
        prop_assert_eq!(EventCodec::decode::<VmUsage>(&bytes).unwrap(), e);
    }

    #[test]
    fn check_result_round_trips(h in header(), sched in proptest::option::of(instant()), exec in proptest::option::of(instant()),
                                ticket in proptest::option::of(text()),
                                status in prop::sample::select(vec![CheckStatus::Ok, CheckStatus::Warning, CheckStatus::Ko, CheckStatus::Unknown, CheckStatus::Missed])) {
        let e = CheckResult { header: h, check_id: "c1".into(), check_name: "Backup jobs".into(), target: "srv-01".into(),
            frequency: CheckFrequency::Weekly, scheduled_time: sched, executed_time: exec, status, ticket_ref: ticket,
            time_spent_minutes: 15, output: Some("OK - 3 jobs".into()) };
        let bytes = EventCodec::encode(&e).unwrap();
        prop_assert_eq!(EventCodec::decode::<CheckResult>(&bytes).unwrap(), e);
    }

    #[test]
    fn ticket_time_round_trips(h in header(), start in instant(), minutes in 1i32..1440, cat in prop::collection::vec(text(), 1..4),
                               app in proptest::option::of(text()), country in proptest::option::of("[A-Z]{2}")) {
        let e = TicketTime { header: h, ticket_id: "T-42".into(), task_id: "7".into(), ticket_type: TicketType::Incident,
            category_path: cat, in_scope: false, requester: "alice".into(), technician: "bob".into(),
            technician_profile: TechnicianProfile::Architect, application: app, country, minutes_worked: minutes, start_time: start };
        let bytes = EventCodec::encode(&e).unwrap();
        prop_assert_eq!(EventCodec::decode::<TicketTime>(&bytes).unwrap(), e);
    }

    #[test]
    fn aggregate_round_trips_money_exactly(quantity in money(), cost in money(), start in instant(), rev in 0i64..i64::MAX) {
        let mut dims = BTreeMap::new();
        dims.insert("ticket_type".to_string(), "INCIDENT".to_string());
        let a = Aggregate { aggregate_id: "abc".into(), revision: rev, is_final: rev % 2 == 0, kind: EventKind::TicketTime,
            tenant: "acme".into(), subsidiary: "acme-fr".into(), domain: "infrastructure".into(), period: Period::Month,
            time_zone: "Europe/Paris".into(), window_start: start, window_end: start, window_label: "2024-01-01".into(),
            metric: "ticket.minutes".into(), unit: "minute".into(), dimensions: dims, quantity, event_count: 3,
            incident_count: 2, request_count: 1, ok_count: 0, warning_count: 0, ko_count: 0, unknown_count: 0, missed_count: 0,
            cost, currency: "EUR".into(), price_book_version: "2024-01".into(), emitted_at: start };
        let back = EventCodec::decode::<Aggregate>(&EventCodec::encode(&a).unwrap()).unwrap();
        prop_assert_eq!(back.cost, cost);
        prop_assert_eq!(back.quantity, quantity);
        prop_assert_eq!(back, a);
    }
}

#[test]
fn dead_letter_round_trips_with_original_bytes() {
    let d = DeadLetter {
        component: "collector-file".into(),
        error_kind: "malformed_json".into(),
        error: "expected value at line 1 column 1".into(),
        original: vec![0, 159, 146, 150, b'{'],
        event_kind: Some("ticket-time".into()),
        source_file: Some("tickets.jsonl".into()),
        source_line: Some(17),
        source_topic: None,
        source_partition: None,
        source_offset: None,
        failed_at: Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
    };
    assert_eq!(EventCodec::decode::<DeadLetter>(&EventCodec::encode(&d).unwrap()).unwrap(), d);
}

#[test]
fn decoding_refuses_garbage_with_a_clear_reason() {
    assert!(matches!(EventCodec::decode::<TicketTime>(b"{}"), Err(CodecError::TooShort(2))));
    assert!(matches!(EventCodec::decode::<TicketTime>(b"{\"json\": true}"), Err(CodecError::BadMarker(b'{', b'"'))));
    let mut unknown = vec![0xC3, 0x01];
    unknown.extend([9u8; 8]);
    assert!(matches!(EventCodec::decode::<TicketTime>(&unknown), Err(CodecError::UnknownFingerprint(_))));
    // A valid message of another record type is refused, not misread.
    let dl = DeadLetter {
        component: "x".into(), error_kind: "y".into(), error: "z".into(), original: vec![], event_kind: None,
        source_file: None, source_line: None, source_topic: None, source_partition: None, source_offset: None,
        failed_at: Utc::now(),
    };
    let bytes = EventCodec::encode(&dl).unwrap();
    assert!(matches!(EventCodec::decode::<TicketTime>(&bytes), Err(CodecError::WrongRecord { .. })));
    // Truncated datum.
    assert!(EventCodec::decode::<DeadLetter>(&bytes[..bytes.len() - 3]).is_err());
}

fn v1_ticket_schema() -> Schema {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/history/ticket_time.v1.avsc")).unwrap();
    Schema::parse_str(&text).unwrap()
}

#[test]
fn current_ticket_time_schema_reads_version_1() {
    let v1 = v1_ticket_schema();
    let current = <TicketTime as AvroRecord>::schema();
    SchemaCompatibility::can_read(&v1, current).expect("the current TicketTime schema must read v1 data");

    // A message actually written by a v1 producer (no application/country) decodes, with the defaults.
    let t = Utc.with_ymd_and_hms(2024, 1, 15, 9, 30, 0).unwrap();
    let v1_record = Value::Record(vec![
        ("event_id".into(), Value::String("glpi-task-7".into())),
        ("source".into(), Value::String("glpi-main".into())),
        ("tenant".into(), Value::String("acme".into())),
        ("subsidiary".into(), Value::String("acme-fr".into())),
        ("domain".into(), Value::String("infrastructure".into())),
        ("event_time".into(), Value::TimestampMillis(t.timestamp_millis())),
        ("ingest_time".into(), Value::TimestampMillis(t.timestamp_millis())),
        ("ticket_id".into(), Value::String("T-1".into())),
        ("task_id".into(), Value::String("7".into())),
        ("ticket_type".into(), Value::Enum(1, "REQUEST".into())),
        ("category_path".into(), Value::Array(vec![Value::String("RUN".into()), Value::String("MCO".into())])),
        ("in_scope".into(), Value::Boolean(true)),
        ("requester".into(), Value::String("alice".into())),
        ("technician".into(), Value::String("bob".into())),
        ("technician_profile".into(), Value::Enum(1, "ENGINEER".into())),
        ("minutes_worked".into(), Value::Int(165)),
        ("start_time".into(), Value::TimestampMillis(t.timestamp_millis())),
    ]);
    let datum = apache_avro::to_avro_datum(&v1, v1_record).unwrap();
    // The header as a v1 producer wrote it (apache-avro's legacy fingerprint),
    // and as one writes it now (the specification's fingerprint).
    let legacy = apache_avro::headers::HeaderBuilder::build_header(
        &apache_avro::headers::RabinFingerprintHeader::from_schema(&v1),
    );
    let v1_text = schema_texts().find(|(r, _, current)| *r == TicketTime::RECORD && !current).unwrap().1;
    let spec = meter_model::fingerprint::single_object_header(v1_text).unwrap().to_vec();
    assert_ne!(legacy, spec);
    for header in [legacy, spec] {
        let mut bytes = header;
        bytes.extend_from_slice(&datum);
        let decoded = EventCodec::decode::<TicketTime>(&bytes).unwrap();
        assert_eq!(decoded.minutes_worked, 165);
        assert_eq!(decoded.ticket_type, TicketType::Request);
        assert_eq!(decoded.application, None);
        assert_eq!(decoded.country, None);
    }
}

#[test]
fn a_field_without_default_would_break_compatibility() {
    // Guard that the compatibility check above can fail: a reader demanding a
    // new field with no default cannot read v1.
    let v1 = v1_ticket_schema();
    let mut json: serde_json::Value = serde_json::from_str(&v1.canonical_form()).unwrap();
    json["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "new_required", "type": "string"}));
    let stricter = Schema::parse_str(&json.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&v1, &stricter).is_err());
}

#[test]
fn json_input_refuses_unknown_fields_and_validation_lists_problems() {
    let line = r#"{"event_id":"1","source":"s","tenant":"t","subsidiary":"s","domain":"d","event_time":"2024-01-02T10:00:00Z",
        "ticket_id":"T","task_id":"1","ticket_type":"INCIDENT","category_path":["RUN"],"requester":"r","technician":"x",
        "technician_profile":"ENGINEER","minutes_worked":12,"start_time":"2024-01-02T09:48:00Z"}"#;
    let e = Event::from_json(EventKind::TicketTime, line).unwrap();
    e.validate().unwrap();
    let typo = line.replace("\"requester\"", "\"requestor\"");
    assert!(Event::from_json(EventKind::TicketTime, &typo).unwrap_err().to_string().contains("requestor"));
    let bad = line.replace("\"minutes_worked\":12", "\"minutes_worked\":0").replace("\"tenant\":\"t\"", "\"tenant\":\" \"");
    let err = Event::from_json(EventKind::TicketTime, &bad).unwrap().validate().unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
}

#[test]
fn an_aggregate_always_encodes_to_the_same_bytes() {
    // Map entries are written in key order, whatever the HashMap's order.
    let mut dims = std::collections::BTreeMap::new();
    for i in 0..40 {
        dims.insert(format!("dimension-{i}"), format!("value-{i}"));
    }
    let a = Aggregate {
        aggregate_id: "x".into(),
        revision: 1,
        is_final: false,
        kind: EventKind::TicketTime,
        tenant: "acme".into(),
        subsidiary: "acme-fr".into(),
        domain: "infrastructure".into(),
        period: Period::Day,
        time_zone: "Europe/Paris".into(),
        window_start: Utc.timestamp_millis_opt(1_767_222_000_000).unwrap(),
        window_end: Utc.timestamp_millis_opt(1_767_308_400_000).unwrap(),
        window_label: "2026-01-01".into(),
        metric: "ticket.time".into(),
        unit: "minute".into(),
        dimensions: dims,
        quantity: rust_decimal_macros::dec!(12.5),
        event_count: 1,
        incident_count: 1,
        request_count: 0,
        ok_count: 0,
        warning_count: 0,
        ko_count: 0,
        unknown_count: 0,
        missed_count: 0,
        cost: rust_decimal_macros::dec!(3.25),
        currency: "EUR".into(),
        price_book_version: "2025.1".into(),
        emitted_at: Utc.timestamp_millis_opt(1_767_222_000_000).unwrap(),
    };
    let first = EventCodec::encode(&a).unwrap();
    for _ in 0..20 {
        assert_eq!(EventCodec::encode(&a.clone()).unwrap(), first);
    }
    assert_eq!(EventCodec::decode::<Aggregate>(&first).unwrap(), a);
}

#[test]
fn events_written_before_version_and_deleted_still_decode() {
    // A ticket written with the previous schema (no version, no deleted).
    let old = Schema::parse_str(include_str!("../../../schemas/history/ticket_time.v2.avsc")).unwrap();
    let e = sample_ticket();
    let Event::TicketTime(t) = &e else { unreachable!() };
    let mut value = t.to_avro().unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.retain(|(name, _)| name != "version" && name != "deleted");
    }
    let mut bytes = {
        use apache_avro::headers::HeaderBuilder;
        apache_avro::headers::RabinFingerprintHeader::from_schema(&old).build_header()
    };
    bytes.extend(apache_avro::to_avro_datum(&old, value).unwrap());
    let decoded = EventCodec::decode_event(EventKind::TicketTime, &bytes).unwrap();
    assert_eq!(decoded.header().version, 0);
    assert!(!decoded.header().deleted);
    assert_eq!(decoded.header().event_id, e.header().event_id);
}

#[test]
fn hostile_avro_is_an_error_not_an_abort() {
    // A header of a known schema, then an array count of 2^29 in a few bytes.
    let good = EventCodec::encode_event(&sample_ticket()).unwrap();
    let mut evil = good[..10].to_vec();
    evil.extend([0x02, b'a', 0x02, b'b', 0x02, b'c', 0x02, b'd', 0x02, b'e']);
    evil.extend([0x80, 0x80, 0x80, 0x80, 0x04]); // a huge count
    assert!(EventCodec::decode_event(EventKind::TicketTime, &evil).is_err());
    // Truncated and garbage messages too.
    for cut in [0, 3, 10, 20, good.len() - 1] {
        assert!(EventCodec::decode_event(EventKind::TicketTime, &good[..cut]).is_err(), "cut at {cut}");
    }
}

fn sample_ticket() -> Event {
    let line = r#"{"event_id":"1","source":"s","tenant":"t","subsidiary":"s","domain":"d","event_time":"2024-01-02T10:00:00Z",
        "ticket_id":"T","task_id":"1","ticket_type":"INCIDENT","category_path":["RUN"],"requester":"r","technician":"x",
        "technician_profile":"ENGINEER","minutes_worked":12,"start_time":"2024-01-02T09:48:00Z"}"#;
    Event::from_json(EventKind::TicketTime, line).unwrap()
}

#[test]
fn writer_record_names_what_a_message_says_it_holds_without_decoding_it() {
    let control = PeriodControl {
        action: PeriodAction::Clock,
        clock: Utc.with_ymd_and_hms(2026, 2, 6, 0, 0, 0).unwrap(),
        tenant: String::new(),
        month: String::new(),
        requested_by: "aggregator".into(),
        reason: "clock".into(),
    };
    let bytes = EventCodec::encode(&control).unwrap();
    assert_eq!(codec::writer_record(&bytes), Some(PeriodControl::RECORD));
    // The fingerprint alone decides: a damaged datum still names its record.
    assert_eq!(codec::writer_record(&bytes[..10]), Some(PeriodControl::RECORD));
    let mut other = bytes.clone();
    other[5] ^= 0xff;
    assert_eq!(codec::writer_record(&other), None, "an unknown fingerprint");
    let mut marker = bytes.clone();
    marker[0] = 0;
    assert_eq!(codec::writer_record(&marker), None, "no single-object marker");
    assert_eq!(codec::writer_record(&bytes[..9]), None, "too short");
    assert_eq!(codec::writer_record(&[]), None);
}
