//! Decode hot path of the codec: one `TicketTime` single-object message to a
//! Rust value, several ways, on one core. Prints events per second.
//!
//!   EventCodec      EventCodec::decode (apache-avro generic `Value`, then our
//!                   field-by-field conversion to the domain struct)
//!   avro Value      apache_avro::from_avro_datum alone (the generic part)
//!   avro serde      apache_avro::from_avro_datum + apache_avro::from_value
//!                   into a serde struct mirroring the schema
//!   serde_avro_fast serde_avro_fast::from_single_object_slice into the same
//!                   struct (checks the header fingerprint against the schema's)
//!   serde_avro_fast, borrowed: the same into a struct of `&str` (no copies)
//!   decode_event    meter_model::fast_decode::decode_event: the aggregator's
//!                   decoder (the datum read by its writer schema's plan, with
//!                   the codec's fingerprint rules) into a new event
//!   decode_event_into the same into one event reused for every message (what
//!                   the aggregator's loop should call: no allocation once the
//!                   event's strings have grown)
//!   validate_with   Event::validate_with on the decoded (valid) events
//!
//! Run: `cargo bench -p meter-model --bench decode [-- N] [STAGE]` (N messages,
//! default 200000; STAGE: run only the stages whose name contains it, e.g.
//! under `valgrind --tool=callgrind` for repeatable instruction counts).

use std::hint::black_box;
use std::time::Instant;

use meter_model::*;
use serde::Deserialize;

/// The ticket_time.avsc record as serde sees it (instants in epoch milliseconds).
#[derive(Debug, PartialEq, Deserialize)]
#[allow(dead_code)]
struct TicketTimeWire {
    event_id: String,
    source: String,
    tenant: String,
    subsidiary: String,
    domain: String,
    event_time: i64,
    ingest_time: i64,
    ticket_id: String,
    task_id: String,
    ticket_type: TicketType,
    category_path: Vec<String>,
    in_scope: bool,
    requester: String,
    technician: String,
    technician_profile: TechnicianProfile,
    application: Option<String>,
    country: Option<String>,
    minutes_worked: i32,
    start_time: i64,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct TicketTimeBorrowed<'a> {
    event_id: &'a str,
    source: &'a str,
    tenant: &'a str,
    subsidiary: &'a str,
    domain: &'a str,
    event_time: i64,
    ingest_time: i64,
    ticket_id: &'a str,
    task_id: &'a str,
    ticket_type: TicketType,
    category_path: Vec<&'a str>,
    in_scope: bool,
    requester: &'a str,
    technician: &'a str,
    technician_profile: TechnicianProfile,
    application: Option<&'a str>,
    country: Option<&'a str>,
    minutes_worked: i32,
    start_time: i64,
}

/// A function of its own, so that callgrind can count its instructions
/// (`--toggle-collect='*validate_all'`).
#[inline(never)]
fn validate_all(events: &[Event], limits: &Limits) -> usize {
    events.iter().map(|e| black_box(black_box(e).validate_with(limits).is_ok()) as usize).sum()
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|s| s.parse().ok()).unwrap_or(200_000);
    // `cargo bench` passes `--bench`; any other word picks stages.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--") && a.parse::<usize>().is_err());
    let subsidiaries = ["acme-fr", "acme-de", "acme-it"];
    let profiles = ["ADMINISTRATOR", "ENGINEER", "CONSULTANT"];
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let at = start + chrono::Duration::seconds(i as i64 * 13);
            let json = serde_json::json!({
                "event_id": format!("task-{i}"), "source": "glpi", "tenant": "acme", "subsidiary": subsidiaries[i % 3],
                "domain": "infrastructure", "event_time": at.to_rfc3339(),
                "ingest_time": (at + chrono::Duration::seconds(30)).to_rfc3339(), "ticket_id": format!("T{}", i / 4),
                "task_id": i.to_string(), "ticket_type": if i % 3 == 0 { "REQUEST" } else { "INCIDENT" },
                "category_path": ["RUN", "MCO", "servers"], "in_scope": true, "requester": format!("user{}", i % 50),
                "technician": format!("tech{}", i % 8), "technician_profile": profiles[i % 3],
                "application": if i % 4 == 0 { Some("Sage") } else { None }, "country": "FR",
                "minutes_worked": 1 + (i % 120), "start_time": (at - chrono::Duration::minutes(5)).to_rfc3339(),
            });
            let event = Event::from_json(EventKind::TicketTime, &json.to_string()).expect("valid event");
            EventCodec::encode_event(&event).expect("encode")
        })
        .collect();

    let avro_schema = TicketTime::schema();
    let text = meter_model::codec::schema_texts()
        .find(|(r, _, current)| *r == TicketTime::RECORD && *current)
        .map(|(_, t, _)| t)
        .unwrap();
    let fast_schema: serde_avro_fast::Schema = text.parse().expect("serde_avro_fast parses ticket_time.avsc");

    // The four paths read the same values (and serde_avro_fast accepts our header).
    for m in messages.iter().step_by(97) {
        let production = EventCodec::decode::<TicketTime>(m).unwrap();
        let value = apache_avro::from_avro_datum(avro_schema, &mut &m[10..], None).unwrap();
        let avro: TicketTimeWire = apache_avro::from_value(&value).unwrap();
        let fast: TicketTimeWire = serde_avro_fast::from_single_object_slice(m, &fast_schema).unwrap();
        assert_eq!(avro, fast);
        assert_eq!(avro.event_id, production.header.event_id);
        assert_eq!(avro.start_time, production.start_time.timestamp_millis());
        assert_eq!(avro.application, production.application);
    }
    // The reused event reads what the codec reads, message after message.
    let mut reused = meter_model::fast_decode::decode_event(EventKind::TicketTime, &messages[0]).unwrap();
    for m in messages.iter().step_by(31) {
        meter_model::fast_decode::decode_event_into(EventKind::TicketTime, m, &mut reused).unwrap();
        assert_eq!(reused, EventCodec::decode_event(EventKind::TicketTime, m).unwrap());
    }

    let stage = |name: &str, f: &mut dyn FnMut() -> usize| {
        if only.as_deref().is_some_and(|only| !name.contains(only)) {
            return;
        }
        // Best of three rounds.
        let mut best = f64::MAX;
        let mut count = 0;
        for _ in 0..3 {
            let t = Instant::now();
            count = f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:<38} {:>10.0} events/s {:>6.0} ns/event  ({count} events in {best:.3} s, best of 3, one core)",
            count as f64 / best,
            best * 1e9 / count.max(1) as f64
        );
    };

    stage("fast_decode::decode_event", &mut || {
        messages
            .iter()
            .map(|m| black_box(meter_model::fast_decode::decode_event(EventKind::TicketTime, m).is_ok()) as usize)
            .sum()
    });
    stage("fast_decode::decode_event_into", &mut || {
        let mut event = meter_model::fast_decode::decode_event(EventKind::TicketTime, &messages[0]).unwrap();
        messages
            .iter()
            .map(|m| black_box(meter_model::fast_decode::decode_event_into(EventKind::TicketTime, m, &mut event).is_ok()) as usize)
            .sum()
    });
    // Decoded only for the stages that read them (a profile of one decoder stays clean).
    let events: Vec<Event> = if only.as_deref().is_none_or(|only| "Event::validate_with (valid tickets)".contains(only)) {
        messages.iter().map(|m| meter_model::fast_decode::decode_event(EventKind::TicketTime, m).unwrap()).collect()
    } else {
        Vec::new()
    };
    let limits = Limits::default();
    stage("Event::validate_with (valid tickets)", &mut || {
        validate_all(&events, &limits)
    });
    stage("decode_event_into + validate_with", &mut || {
        let mut event = meter_model::fast_decode::decode_event(EventKind::TicketTime, &messages[0]).unwrap();
        messages
            .iter()
            .map(|m| {
                let decoded = meter_model::fast_decode::decode_event_into(EventKind::TicketTime, m, &mut event).is_ok();
                black_box(decoded && event.validate_with(&limits).is_ok()) as usize
            })
            .sum()
    });
    stage("EventCodec::decode (apache-avro)", &mut || {
        messages.iter().map(|m| black_box(EventCodec::decode::<TicketTime>(m).is_ok()) as usize).sum()
    });
    stage("apache-avro Value only", &mut || {
        messages
            .iter()
            .map(|m| black_box(apache_avro::from_avro_datum(avro_schema, &mut &m[10..], None).is_ok()) as usize)
            .sum()
    });
    stage("apache-avro Value + from_value", &mut || {
        messages
            .iter()
            .map(|m| {
                let value = apache_avro::from_avro_datum(avro_schema, &mut &m[10..], None).unwrap();
                black_box(apache_avro::from_value::<TicketTimeWire>(&value).is_ok()) as usize
            })
            .sum()
    });
    stage("serde_avro_fast (owned)", &mut || {
        messages
            .iter()
            .map(|m| black_box(serde_avro_fast::from_single_object_slice::<TicketTimeWire>(m, &fast_schema).is_ok()) as usize)
            .sum()
    });
    stage("serde_avro_fast (borrowed &str)", &mut || {
        messages
            .iter()
            .map(|m| {
                black_box(serde_avro_fast::from_single_object_slice::<TicketTimeBorrowed>(m, &fast_schema).is_ok()) as usize
            })
            .sum()
    });
}
