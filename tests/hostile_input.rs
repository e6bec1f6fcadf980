//! No input can stop the pipeline: the hostile corpus (`tests/corpus/hostile/`)
//! and hostile bytes built here go through the JSON-lines, CSV and raw-topic
//! intakes; every service keeps running, every bad record is on the
//! dead-letter topic with its reason, and every good record around it is
//! counted.

use std::collections::BTreeMap;
use std::time::Duration;

use meter_model::{DeadLetter, Event, EventCodec, EventKind};
use meter_tests::scenario::write_lines;
use meter_tests::TestEnv;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rust_decimal::Decimal;

fn corpus(name: &str) -> std::path::PathBuf {
    meter_tests::repo_root().join("tests/corpus/hostile").join(name)
}

fn dead_letters(env: &TestEnv) -> Vec<DeadLetter> {
    env.read_topic(&env.config.topics.dead_letters).iter().map(|(_, p, _)| EventCodec::decode::<DeadLetter>(p).expect("dead letter decodes")).collect()
}

async fn day_totals(env: &TestEnv, metric: &str) -> BTreeMap<String, Decimal> {
    let rows: Vec<(String, String)> = env
        .clickhouse()
        .query("SELECT toString(window_date), toString(sum(quantity)) FROM aggregates FINAL WHERE tenant = 'initech' AND period = 'DAY' AND metric = ? GROUP BY window_date ORDER BY window_date")
        .bind(metric)
        .fetch_all()
        .await
        .unwrap();
    rows.into_iter().map(|(d, q)| (d, q.parse().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_files_rows_and_raw_bytes_are_dead_lettered_and_the_good_records_counted() {
    let mut env = TestEnv::new("hostile").await;
    // The hostile tenant's months close 5 days after their end, as by default.
    env.config.tenants.insert("evil".into(), meter_config::TenantConfig { time_zone: "UTC".parse().expect("an IANA zone"), period_grace_days: Some(5) });
    env.save_config();
    env.meter(&["migrate"]);

    // JSON lines: the corpus, plus a 10 MB line and a 250,000-level category
    // path (too large to keep in the repository), then one more good line.
    let mut tickets: Vec<String> = std::fs::read_to_string(corpus("ticket-time.jsonl")).unwrap().lines().map(String::from).collect();
    tickets.push(format!("{{\"event_id\":\"{}\"}}", "x".repeat(10 * 1024 * 1024)));
    let good_after = r#"{"event_id":"good-last","source":"glpi","tenant":"initech","subsidiary":"initech-hq","domain":"infrastructure","event_time":"2026-01-20T09:00:00Z","ticket_id":"T9","task_id":"gl","ticket_type":"REQUEST","category_path":["RUN"],"requester":"alice","technician":"bob","technician_profile":"ENGINEER","minutes_worked":7,"start_time":"2026-01-20T08:00:00Z"}"#;
    let wide = good_after.replace("good-last", "wide").replace("\"tenant\":\"initech\"", "\"tenant\":\"evil\"").replace(
        "\"category_path\":[\"RUN\"]",
        &format!("\"category_path\":[{}]", vec!["\"x\""; 250_000].join(",")),
    );
    tickets.push(wide);
    tickets.push(good_after.to_string());
    let ticket_file = env.dir.path().join("tickets.jsonl");
    write_lines(&ticket_file, &tickets);
    let out = env.meter(&["collect", "file", "--kind", "ticket-time", ticket_file.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("5 published"), "{report}");
    env.meter(&["collect", "file", "--kind", "vm-usage", corpus("vm-usage.jsonl").to_str().unwrap()]);

    // CSV: hostile rows between good ones.
    let csv = [
        "event_id,source,tenant,subsidiary,domain,event_time,vm_id,vcpu,ram_mib,storage_gb,bandwidth_mbps,guaranteed_bandwidth,public_ips,sla_tier,options,datacenter,transition,sample_interval_seconds",
        "c1,vmware,initech,initech-hq,infrastructure,2026-01-20T10:00:00Z,db-1,4,0,0,0,false,0,SLA_99_7,,PAR1,SAMPLE,3600",
        "c2,vmware,evil,evil-hq,infrastructure,2026-01-20T10:00:00Z,db-2,4,0,9000000000000000000,0,false,0,SLA_99_7,,PAR1,SAMPLE,3600",
        "c3,vmware,evil,evil-hq,infrastructure,+262142-12-31T12:00:00Z,db-3,4,0,0,0,false,0,SLA_99_7,,PAR1,SAMPLE,3600",
        "c4,vmware,evil,evil-hq,infrastructure,2026-01-20T10:00:00Z,db-4,-4,0,0,0,false,0,SLA_99_7,,PAR1,SAMPLE,3600",
        "c5,vmware,evil,evil-hq,infrastructure,2026-01-20T10:00:00Z,db-5,NaN,0,0,0,false,0,SLA_99_7,,PAR1,SAMPLE,3600",
        "c6,vmware,initech,initech-hq,infrastructure,2026-01-21T10:00:00Z,db-1,4,0,0,0,false,0,SLA_99_7,,PAR1,SAMPLE,3600",
    ];
    let csv_file = env.dir.path().join("vms.csv");
    write_lines(&csv_file, &csv.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    env.meter(&["collect", "vm-csv", csv_file.to_str().unwrap()]);

    // Raw bytes on the event topic, from a producer that skips every collector,
    // each followed by a good event.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &env.config.kafka.brokers).create().unwrap();
    let good: Event = Event::from_json(EventKind::TicketTime, good_after).unwrap();
    let stamped = |id: &str, minutes: i32| {
        let mut e = good.clone();
        if let Event::TicketTime(t) = &mut e {
            t.header.event_id = id.into();
            t.header.ingest_time = meter_model::codec::to_millis(chrono::Utc::now());
            t.minutes_worked = minutes;
        }
        EventCodec::encode_event(&e).unwrap()
    };
    let valid = stamped("raw-template", 1);
    let mut huge_count = valid[..10].to_vec();
    huge_count.extend([0x02, b'a', 0x02, b'b', 0x02, b'c', 0x02, b'd', 0x02, b'e', 0x80, 0x80, 0x80, 0x80, 0x04]);
    let mut wrong_fingerprint = valid.clone();
    wrong_fingerprint[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
    let mut micros = good.clone();
    if let Event::TicketTime(t) = &mut micros {
        t.header.event_id = "micros".into();
        // Microseconds written into a millisecond field: year 57,000.
        t.header.event_time = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_micros()).unwrap();
        t.header.ingest_time = meter_model::codec::to_millis(chrono::Utc::now());
    }
    let raw: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", valid[..valid.len() / 2].to_vec()),
        ("huge array count", huge_count),
        ("wrong fingerprint", wrong_fingerprint),
        ("junk near 1 MB", vec![0xC3; 900_000]),
        ("empty", Vec::new()),
        ("microseconds", EventCodec::encode_event(&micros).unwrap()),
    ];
    // Valid Avro from another tenant on the same partition (same key): far
    // in the future and very old. Neither moves time for initech.
    let mut raw = raw;
    let mut far = good.clone();
    let mut old = good.clone();
    for (e, id, at) in [(&mut far, "evil-future", "2099-06-01T00:00:00Z"), (&mut old, "evil-old", "2019-03-01T00:00:00Z")] {
        if let Event::TicketTime(t) = e {
            t.header.tenant = "evil".into();
            t.header.event_id = id.into();
            t.header.event_time = at.parse().unwrap();
            t.start_time = t.header.event_time;
            t.header.ingest_time = meter_model::codec::to_millis(chrono::Utc::now());
        }
    }
    raw.push(("far future, valid Avro", EventCodec::encode_event(&far).unwrap()));
    raw.push(("very old, valid Avro", EventCodec::encode_event(&old).unwrap()));
    for (i, (_, bytes)) in raw.iter().enumerate() {
        let record = FutureRecord::to(&env.config.topics.ticket_time).key("initech").payload(bytes);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        let after = stamped(&format!("raw-good-{i}"), 1);
        let record = FutureRecord::to(&env.config.topics.ticket_time).key("initech").payload(&after);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }

    // The services run through all of it and stop on their own.
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);

    let letters = dead_letters(&env);
    let by_reason = |component: &str| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in letters.iter().filter(|l| l.component == component) {
            *m.entry(l.error_kind.clone()).or_default() += 1;
        }
        m
    };
    let file_letters: usize = by_reason("collector-file").values().sum();
    // 12 + 3 broken lines of the ticket corpus, the 10 MB line, the wide one; 8 VM lines (one is refused later, by price).
    assert!(file_letters >= 12 + 2 + 2 + 7, "{:?}", by_reason("collector-file"));
    assert!(by_reason("collector-file").contains_key("line_too_long"));
    assert_eq!(by_reason("collector-vm-csv").values().sum::<usize>(), 4, "{:?}", by_reason("collector-vm-csv"));
    let aggregator = by_reason("aggregator");
    assert_eq!(aggregator.get("avro_decode").copied().unwrap_or(0), 5, "{aggregator:?}");
    assert!(aggregator.get("invalid_event").copied().unwrap_or(0) >= 1, "microseconds: {aggregator:?}");
    // Every dead letter fits the broker and says why; big originals are cut, and say so.
    for l in &letters {
        assert!(!l.error.is_empty() && !l.error_kind.is_empty());
        assert!(l.original.len() <= meter_kafka::DEAD_LETTER_ORIGINAL_BYTES, "{} bytes", l.original.len());
    }
    assert!(letters.iter().any(|l| l.error.contains("original truncated")));

    // The good records are counted, to the minute and the vCPU-hour.
    let minutes = day_totals(&env, "ticket.time").await;
    let expected: BTreeMap<String, Decimal> = [
        ("2026-01-11", 10),
        ("2026-01-12", 20),
        ("2026-01-13", 30),
        ("2026-01-14", 40),
        ("2026-01-20", 7 + 8),
    ]
    .into_iter()
    .map(|(d, m)| (d.to_string(), Decimal::from(m)))
    .collect();
    assert_eq!(minutes, expected);
    let vcpu = day_totals(&env, "vm.vcpu").await;
    assert_eq!(vcpu.values().copied().sum::<Decimal>(), Decimal::from(4 * 2 + 2 * 4), "{vcpu:?}");
    let evil: u64 = env.clickhouse().query("SELECT count() FROM aggregates WHERE tenant = 'evil'").fetch_one().await.unwrap();
    assert_eq!(evil, 0);
    // The very old one waits on the late topic (its month is closed by its own stamp).
    let late: Vec<String> = env
        .read_topic(&env.config.topics.late_events)
        .iter()
        .filter_map(|(_, p, _)| EventCodec::decode_event(EventKind::TicketTime, p).ok())
        .map(|e| e.header().event_id.clone())
        .collect();
    assert_eq!(late, vec!["evil-old".to_string()]);
}
