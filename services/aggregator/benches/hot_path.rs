//! Hot-path benchmark: Avro decode, validation, deduplication, window
//! assignment (four periods, tenant time zone) and rating, on one core.
//! Prints events per second, best of three rounds per stage, and first the
//! memory one partition's state takes per event of an open month.
//! Run: `cargo bench -p aggregator --bench hot_path [-- EVENTS]`.
//!
//! The aggregator decodes with `meter_model::fast_decode`; the codec's
//! apache-avro path (`EventCodec::decode_event`) is measured alongside.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use aggregator::engine::{EngineSettings, Outcome, PartitionState};
use aggregator::pricing::PriceBook;
use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::*;

fn main() {
    let book = PriceBook::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).expect("price book");
    let mut config = meter_config::MeterConfig::default();
    config.aggregator.default_time_zone = chrono_tz::Europe::Paris;
    let settings = EngineSettings::from_config(&config);
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let messages = ticket_messages("task", start, n);
    // HOT_PATH_ONLY=<words> runs only the stages whose name contains them (profiling).
    let only = std::env::var("HOT_PATH_ONLY").ok();
    // HOT_PATH_ROUNDS=<n> rounds per stage instead of 3 (profiling: the set-up is then a small share).
    let rounds: usize = std::env::var("HOT_PATH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let stage = |name: &str, f: &mut dyn FnMut() -> usize| {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            return;
        }
        // Best of three rounds (the machine is shared).
        let mut best = f64::MAX;
        let mut count = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            count = f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name:<40} {:>12.0} events/s  ({count} events in {best:.3} s, best of {rounds}, one core)", count as f64 / best);
    };

    // First, while no stage has freed memory the state could reuse: what one
    // partition's state holds for N events of (about) one open month.
    if only.as_deref().is_none_or(|o| "memory".contains(o)) {
        let before = rss_kib();
        let mut state = PartitionState::default();
        let mut e = fast_decode::blank_event(EventKind::TicketTime);
        for (offset, m) in messages.iter().enumerate() {
            fast_decode::decode_event_into(EventKind::TicketTime, m, &mut e).expect("decode");
            state.apply(offset as i64, e.header().ingest_time, &e, &settings, &book);
        }
        let grown = rss_kib().saturating_sub(before) as f64 * 1024.0;
        println!(
            "{:<40} {:>12.0} bytes/event ({} events, {} open aggregates, RSS +{:.0} MiB)",
            "memory (state of one partition)",
            grown / n as f64,
            state.open_events(),
            state.open_aggregates(),
            grown / (1024.0 * 1024.0)
        );
    }
    stage("decode (fast_decode into a kept event, the aggregator's)", &mut || {
        let mut event = fast_decode::blank_event(EventKind::TicketTime);
        messages.iter().map(|m| black_box(fast_decode::decode_event_into(EventKind::TicketTime, m, &mut event).is_ok()) as usize).sum()
    });
    stage("decode (fast_decode, a new event each)", &mut || {
        messages.iter().map(|m| black_box(fast_decode::decode_event(EventKind::TicketTime, m).is_ok()) as usize).sum()
    });
    stage("decode (EventCodec, apache-avro Value)", &mut || {
        messages.iter().map(|m| black_box(EventCodec::decode_event(EventKind::TicketTime, m).is_ok()) as usize).sum()
    });
    let events: Vec<Event> = messages.iter().map(|m| fast_decode::decode_event(EventKind::TicketTime, m).expect("decode")).collect();
    stage("validate", &mut || events.iter().map(|e| black_box(e.validate().is_ok()) as usize).sum());
    stage("dedup + window x4 + rate (engine)", &mut || {
        let mut state = PartitionState::default();
        let mut counted = 0;
        for (offset, e) in events.iter().enumerate() {
            counted += usize::from(state.apply(offset as i64, e.header().ingest_time, e, &settings, &book) == Outcome::Counted);
        }
        black_box(state.take_emissions(&book).len());
        counted
    });
    // The steady path: a partition that counted last month's events, closed
    // by a clock record (its maps keep their capacity), counts this month's.
    let steady = (only.as_deref().is_none_or(|o| "whole hot path, steady".contains(o))).then(|| {
        let december = ticket_messages("december-task", Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap(), n.min(200_000));
        let mut state = PartitionState::default();
        let mut e = fast_decode::blank_event(EventKind::TicketTime);
        for (offset, m) in december.iter().enumerate() {
            fast_decode::decode_event_into(EventKind::TicketTime, m, &mut e).expect("decode");
            state.apply(offset as i64, e.header().ingest_time, &e, &settings, &book);
        }
        let clock = PeriodControl {
            action: PeriodAction::Clock,
            clock: start + Duration::days(i64::from(config.aggregator.default_period_grace_days)) + Duration::hours(1),
            tenant: String::new(),
            month: String::new(),
            requested_by: "bench".into(),
            reason: "close December".into(),
        };
        state.apply_control(december.len() as i64, &clock, &settings, &book);
        black_box(state.take_emissions(&book).len());
        assert_eq!(state.open_events(), 0, "December closed");
        state
    });
    if let Some(prepared) = &steady {
        let mut best = f64::MAX;
        let mut counted = 0;
        for _ in 0..rounds {
            let mut state = prepared.clone();
            let first = state.next_offset;
            let mut e = fast_decode::blank_event(EventKind::TicketTime);
            let t = Instant::now();
            counted = 0;
            for (i, m) in messages.iter().enumerate() {
                fast_decode::decode_event_into(EventKind::TicketTime, m, &mut e).expect("decode");
                if state.apply(first + i as i64, e.header().ingest_time, &e, &settings, &book) == Outcome::Counted {
                    counted += 1;
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
            black_box(&state);
        }
        let name = "whole hot path, steady (a month held)";
        println!("{name:<40} {:>12.0} events/s  ({counted} events in {best:.3} s, best of {rounds}, one core)", counted as f64 / best);
    }
    stage("whole hot path, first month (empty state)", &mut || {
        let mut state = PartitionState::default();
        let mut counted = 0;
        let mut e = fast_decode::blank_event(EventKind::TicketTime);
        for (offset, m) in messages.iter().enumerate() {
            fast_decode::decode_event_into(EventKind::TicketTime, m, &mut e).expect("decode");
            if state.apply(offset as i64, e.header().ingest_time, &e, &settings, &book) == Outcome::Counted {
                counted += 1;
            }
        }
        counted
    });
}

/// This process's resident set, KiB (0 where /proc is absent).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// `n` encoded ticket-time events, one every 13 s from `start` (200,000 take
/// 30 days), of 600 scopes (3 subsidiaries, 50 requesters, 8 technicians).
fn ticket_messages(id_prefix: &str, start: DateTime<Utc>, n: usize) -> Vec<Vec<u8>> {
    let subsidiaries = ["acme-fr", "acme-de", "acme-it"];
    let profiles = [TechnicianProfile::Administrator, TechnicianProfile::Engineer, TechnicianProfile::Consultant];
    (0..n)
        .map(|i| {
            let at = start + Duration::seconds(i as i64 * 13);
            let e = TicketTime {
                header: EventHeader {
                    event_id: format!("{id_prefix}-{i}"),
                    source: "glpi".into(),
                    tenant: "acme".into(),
                    subsidiary: subsidiaries[i % 3].into(),
                    domain: "infrastructure".into(),
                    event_time: at,
                    ingest_time: at,
                    version: 0,
                    deleted: false,
                },
                ticket_id: format!("T{}", i / 4),
                task_id: i.to_string(),
                ticket_type: if i % 3 == 0 { TicketType::Request } else { TicketType::Incident },
                category_path: vec!["RUN".into(), "MCO".into(), "servers".into()],
                in_scope: true,
                requester: format!("user{}", i % 50),
                technician: format!("tech{}", i % 8),
                technician_profile: profiles[i % 3],
                application: None,
                country: Some("FR".into()),
                minutes_worked: 1 + (i % 120) as i32,
                start_time: at - Duration::minutes(5),
            };
            EventCodec::encode(&e).expect("encode")
        })
        .collect()
}
