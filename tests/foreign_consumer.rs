//! A consumer outside the pipeline reads every topic a run produced with
//! nothing but `schemas/`: `tests/python/decode_topics.py` (confluent-kafka +
//! fastavro, installed by scripts/test.sh into .stack/venv) fingerprints the
//! .avsc files as the Avro specification says, finds each message's writer
//! schema by the fingerprint in its single-object header, and decodes it. It
//! must decode every message of the event topics, the aggregates, the dead
//! letters and the late events, to the same content the pipeline's codec reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use aggregator::pricing::PriceBook;
use meter_model::fingerprint::fingerprint;
use meter_model::{Aggregate, DeadLetter, EventCodec, EventKind};
use meter_tests::scenario::{build_input, write_lines};
use meter_tests::{repo_root, TestEnv};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The Python of the test venv: $METER_PYTHON, else .stack/venv/bin/python.
fn python() -> PathBuf {
    if let Ok(path) = std::env::var("METER_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join(".stack/venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .stack/venv && .stack/venv/bin/pip install -r tests/python/requirements.txt",
        venv.display()
    );
    venv
}

fn hex(fp: [u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_consumer_decodes_every_topic_with_only_the_schema_files() {
    let env = TestEnv::new("foreign").await;
    let book = PriceBook::load(&env.config.price_book).unwrap();
    let input = build_input(&book);
    let dir = env.dir.path();

    // Events of the three kinds, plus two bad ticket lines (dead letters).
    let mut tickets: Vec<String> = input.tickets.iter().map(Value::to_string).collect();
    tickets.insert(10, "{\"event_id\": \"x\", not json".into());
    tickets.insert(20, tickets[5].replace("\"minutes_worked\":", "\"minutes\":3,\"minutes_worked\":"));
    write_lines(&dir.join("tickets.jsonl"), &tickets);
    write_lines(&dir.join("checks.jsonl"), &input.checks.iter().map(Value::to_string).collect::<Vec<_>>());
    write_lines(&dir.join("vms.jsonl"), &input.vms.iter().map(Value::to_string).collect::<Vec<_>>());
    env.meter(&["collect", "file", "--kind", "ticket-time", dir.join("tickets.jsonl").to_str().unwrap()]);
    env.meter(&["collect", "file", "--kind", "check-result", dir.join("checks.jsonl").to_str().unwrap()]);
    env.meter(&["collect", "file", "--kind", "vm-usage", dir.join("vms.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);

    // A ticket for a billing month closed on request (late-events topic).
    env.meter(&["migrate"]);
    let tenant = input.tickets[0]["tenant"].as_str().unwrap().to_string();
    let month = input.tickets[0]["event_time"].as_str().unwrap()[..7].to_string();
    env.meter(&["periods", "close", "--tenant", &tenant, "--month", &month, "--requested-by", "test", "--reason", "closed for the late event"]);
    let mut late = input.tickets[0].clone();
    late["event_id"] = json!("late-ko");
    write_lines(&dir.join("late.jsonl"), &[late.to_string()]);
    env.meter(&["collect", "file", "--kind", "ticket-time", dir.join("late.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);

    let t = &env.config.topics;
    let topics = [&t.ticket_time, &t.check_result, &t.vm_usage, &t.aggregates, &t.dead_letters, &t.late_events];
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/decode_topics.py"))
        .args(["--brokers", &env.config.kafka.brokers, "--schemas"])
        .arg(repo_root().join("schemas"))
        .arg("--topics")
        .args(topics.iter().map(|t| t.as_str()))
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&output.stderr);
    let decoded: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("decode_topics.py printed no JSON ({e}, {}):\n{report}", output.status));
    assert_eq!(decoded["failures"], 0, "{report}\n{}", serde_json::to_string_pretty(&decoded["topics"]).unwrap());
    assert!(output.status.success(), "{report}");
    eprintln!("decode_topics.py:\n{report}");

    // The fastavro fingerprints of the schema files are ours.
    for (fp, file) in decoded["schemas"].as_object().unwrap() {
        let text = std::fs::read_to_string(repo_root().join("schemas").join(file.as_str().unwrap())).unwrap();
        assert_eq!(&hex(fingerprint(&text).unwrap()), fp, "{file}");
    }

    let mut total = 0;
    for topic in topics {
        // Every message, control records (the aggregator's clock on event topics) too.
        let ours = meter_tests::read_all(&env.config, topic);
        let theirs = &decoded["topics"][topic.as_str()];
        let records = theirs["records"].as_array().unwrap();
        assert!(!ours.is_empty(), "{topic} is empty: the scenario must write to every topic");
        assert_eq!(theirs["messages"], ours.len(), "{topic}: {report}");
        assert_eq!(records.len(), ours.len(), "{topic}: every message decoded");
        total += ours.len();

        // Every header carries the specification's fingerprint of a current schema.
        for (_, payload, _) in &ours {
            let fp = hex(payload[2..10].try_into().unwrap());
            let file = decoded["schemas"][&fp].as_str().unwrap_or_else(|| panic!("{topic}: unknown fingerprint {fp}"));
            assert!(!file.starts_with("history/"), "{topic}: written with {file}");
        }

        // Same content as the pipeline's own codec reads, message by message.
        let by_offset: BTreeMap<(i64, i64), &Value> =
            records.iter().map(|r| ((r["partition"].as_i64().unwrap(), r["offset"].as_i64().unwrap()), &r["record"])).collect();
        let mut python_ids: Vec<String> = Vec::new();
        let mut rust_ids: Vec<String> = Vec::new();
        for record in by_offset.values() {
            python_ids.push(match topic {
                _ if topic == &t.aggregates => format!(
                    "{} r{} {} {} {}",
                    record["aggregate_id"].as_str().unwrap(),
                    record["revision"],
                    record["quantity"].as_str().unwrap().parse::<Decimal>().unwrap().normalize(),
                    record["cost"].as_str().unwrap().parse::<Decimal>().unwrap().normalize(),
                    record["window_start"],
                ),
                _ if topic == &t.dead_letters => format!("{} line {}", record["error_kind"].as_str().unwrap(), record["source_line"]),
                _ if record.get("action").is_some() => format!("control {} {}", record["action"].as_str().unwrap(), record["clock"]),
                _ => format!("{} {}", record["event_id"].as_str().unwrap(), record["event_time"]),
            });
        }
        for (_, payload, headers) in &ours {
            let control = headers.iter().any(|(k, _)| k == meter_model::CONTROL_HEADER);
            rust_ids.push(match topic {
                _ if control => {
                    let c: meter_model::PeriodControl = EventCodec::decode(payload).unwrap();
                    format!("control {} {}", c.action.avro_symbol(), c.clock.timestamp_millis())
                }
                _ if topic == &t.aggregates => {
                    let a: Aggregate = EventCodec::decode(payload).unwrap();
                    format!(
                        "{} r{} {} {} {}",
                        a.aggregate_id,
                        a.revision,
                        a.quantity.normalize(),
                        a.cost.normalize(),
                        a.window_start.timestamp_millis()
                    )
                }
                _ if topic == &t.dead_letters => {
                    let d: DeadLetter = EventCodec::decode(payload).unwrap();
                    format!("{} line {}", d.error_kind, d.source_line.map_or("null".into(), |l| l.to_string()))
                }
                _ => {
                    let kind = if topic == &t.check_result {
                        EventKind::CheckResult
                    } else if topic == &t.vm_usage {
                        EventKind::VmUsage
                    } else {
                        EventKind::TicketTime
                    };
                    let e = EventCodec::decode_event(kind, payload).unwrap();
                    format!("{} {}", e.header().event_id, e.header().event_time.timestamp_millis())
                }
            });
        }
        python_ids.sort();
        rust_ids.sort();
        assert_eq!(python_ids, rust_ids, "{topic}: Python and the codec read the same content");
    }
    assert_eq!(decoded["decoded"], total);

    // The dead letters and the late event are the ones this test caused.
    let dead = decoded["topics"][t.dead_letters.as_str()]["records"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let late = decoded["topics"][t.late_events.as_str()]["records"].as_array().unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["record"]["event_id"], "late-ko");
    assert_eq!(late[0]["headers"]["meter.reason"], "period_closed");
    let aggregates = &decoded["topics"][t.aggregates.as_str()];
    assert_eq!(aggregates["by_schema"].as_object().unwrap().keys().collect::<Vec<_>>(), ["aggregate.avsc"]);
}
