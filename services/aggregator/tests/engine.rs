//! Engine behaviour on the DOMAIN.md figures, and its invariants.

use std::collections::BTreeMap;
use std::path::Path;

use aggregator::engine::{EngineSettings, Outcome, PartitionState};
use aggregator::pricing::PriceBook;
use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn book_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap()
}

fn book() -> PriceBook {
    PriceBook::parse(&book_text()).unwrap()
}

fn settings() -> EngineSettings {
    EngineSettings {
        periods: Period::ALL.to_vec(),
        allowed_lateness: Duration::days(3),
        dedup_horizon: Duration::days(7),
        zone_of: Box::new(|tenant| if tenant == "acme" { chrono_tz::Europe::Paris } else { chrono_tz::UTC }),
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn header(id: &str, tenant: &str, at: DateTime<Utc>) -> EventHeader {
    EventHeader {
        event_id: id.into(),
        source: "glpi".into(),
        tenant: tenant.into(),
        subsidiary: format!("{tenant}-fr"),
        domain: "infrastructure".into(),
        event_time: at,
        ingest_time: at,
    }
}

fn task(id: &str, tenant: &str, at: DateTime<Utc>, minutes: i32, profile: TechnicianProfile, kind: TicketType) -> Event {
    Event::TicketTime(TicketTime {
        header: header(id, tenant, at),
        ticket_id: format!("T-{id}"),
        task_id: id.into(),
        ticket_type: kind,
        category_path: vec!["RUN".into(), "MCO".into(), "servers".into()],
        in_scope: true,
        requester: "alice".into(),
        technician: "bob".into(),
        technician_profile: profile,
        application: None,
        country: Some("FR".into()),
        minutes_worked: minutes,
        start_time: at - Duration::minutes(i64::from(minutes)),
    })
}

fn vm(id: &str, at: DateTime<Utc>, transition: VmTransition, vcpu: i32, interval: i32) -> Event {
    Event::VmUsage(VmUsage {
        header: header(id, "initech", at),
        vm_id: "vm-1".into(),
        vcpu,
        ram_mib: 0,
        storage_gb: 0,
        bandwidth_mbps: 0,
        guaranteed_bandwidth: false,
        public_ips: 0,
        sla_tier: SlaTier::Sla99_7,
        options: vec![],
        datacenter: "PAR1".into(),
        transition,
        sample_interval_seconds: interval,
    })
}

fn by_period(emitted: &[Aggregate], period: Period, metric: &str) -> Vec<Aggregate> {
    let mut v: Vec<_> = emitted.iter().filter(|a| a.period == period && a.metric == metric).cloned().collect();
    v.sort_by(|a, b| a.window_start.cmp(&b.window_start));
    v
}

#[test]
fn logged_actions_are_billed_to_the_minute() {
    // DOMAIN.md: 2.75 h, 0.08 h (a 5-minute answer), 1.83 h.
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    let day = utc("2024-01-08T10:00:00Z");
    for (i, minutes) in [165, 5, 110].into_iter().enumerate() {
        let e = task(&i.to_string(), "initech", day + Duration::minutes(i as i64), minutes, TechnicianProfile::Engineer, TicketType::Incident);
        assert_eq!(state.apply(i as i64, &e, &s, &b), Outcome::Counted);
    }
    let out = state.take_emissions(&s, &b, Utc::now());
    for period in Period::ALL {
        let a = by_period(&out, period, "ticket.time");
        assert_eq!(a.len(), 1, "{period:?}");
        assert_eq!(a[0].quantity, dec!(280)); // minutes
        assert_eq!(a[0].cost, dec!(350.00)); // 280 min at 75 €/h
        assert_eq!(a[0].incident_count, 3);
        assert_eq!(a[0].revision, 3);
    }
    // Nothing changed: nothing to emit again.
    assert!(state.take_emissions(&s, &b, Utc::now()).is_empty());
}

#[test]
fn per_minute_rates_round_once_per_aggregate() {
    // 7 minutes at 62 €/h (2025 administrator) = 7.2333... €; three of them are 21.70 €, not 3 x 7.23.
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    for i in 0..3 {
        let e = task(&i.to_string(), "initech", utc("2025-03-03T09:00:00Z"), 7, TechnicianProfile::Administrator, TicketType::Request);
        state.apply(i, &e, &s, &b);
    }
    let day = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Day, "ticket.time");
    assert_eq!(day[0].cost, dec!(21.70));
    assert_eq!(day[0].request_count, 3);
}

#[test]
fn duplicates_count_once() {
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    let e = task("42", "initech", utc("2024-01-08T10:00:00Z"), 30, TechnicianProfile::Engineer, TicketType::Incident);
    assert_eq!(state.apply(0, &e, &s, &b), Outcome::Counted);
    assert_eq!(state.apply(1, &e, &s, &b), Outcome::Duplicate);
    let day = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Day, "ticket.time");
    assert_eq!(day[0].quantity, dec!(30));
    assert_eq!(day[0].revision, 1, "the duplicate did not revise the aggregate");
}

#[test]
fn late_events_revise_within_lateness_and_are_set_aside_after() {
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    let e = |id: &str, at: &str| task(id, "initech", utc(at), 10, TechnicianProfile::Engineer, TicketType::Incident);
    state.apply(0, &e("a", "2024-01-08T10:00:00Z"), &s, &b);
    let first = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Day, "ticket.time");
    // The watermark moves two days on; an event for 8 January is late but allowed.
    state.apply(1, &e("b", "2024-01-10T10:00:00Z"), &s, &b);
    assert_eq!(state.apply(2, &e("c", "2024-01-08T11:00:00Z"), &s, &b), Outcome::Counted);
    let revised = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Day, "ticket.time");
    let jan8 = revised.iter().find(|a| a.window_label == "2024-01-08").unwrap();
    assert!(jan8.revision > first[0].revision);
    assert_eq!(jan8.quantity, dec!(20));
    assert!(!jan8.is_final);
    // Watermark past 9 January 00:00 + 3 days: 8 January is emitted final once, then closed.
    state.apply(3, &e("d", "2024-01-12T01:00:00Z"), &s, &b);
    let out = state.take_emissions(&s, &b, Utc::now());
    let finals: Vec<_> = out.iter().filter(|a| a.is_final).collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].window_label, "2024-01-08");
    assert_eq!(finals[0].quantity, dec!(20));
    assert_eq!(state.apply(4, &e("f", "2024-01-08T12:00:00Z"), &s, &b), Outcome::Late { reason: "window_closed" });
    assert!(state.take_emissions(&s, &b, Utc::now()).iter().all(|a| a.window_label != "2024-01-08" || a.period != Period::Day));
}

#[test]
fn four_vcpu_from_22_to_02_give_eight_vcpu_hours_to_each_day() {
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    assert_eq!(state.apply(0, &vm("start", utc("2024-01-08T22:00:00Z"), VmTransition::Start, 4, 0), &s, &b), Outcome::Counted);
    assert_eq!(state.apply(1, &vm("stop", utc("2024-01-09T02:00:00Z"), VmTransition::Stop, 4, 0), &s, &b), Outcome::Counted);
    let days = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Day, "vm.vcpu");
    assert_eq!(days.len(), 2);
    assert_eq!(days[0].quantity, dec!(8));
    assert_eq!(days[1].quantity, dec!(8));
    assert_eq!(days[0].cost, b.round(dec!(8) * dec!(0.0120)));
    // A transition older than the last one is set aside, not misapplied.
    assert_eq!(
        state.apply(2, &vm("old", utc("2024-01-08T23:00:00Z"), VmTransition::Resize, 8, 0), &s, &b),
        Outcome::Late { reason: "vm_transition_out_of_order" }
    );
}

#[test]
fn a_price_change_splits_an_interval_at_its_instant() {
    let text = book_text()
        .replace("valid_from = \"2025-01-01T00:00:00Z\"", "valid_from = \"2024-06-15T12:00:00Z\"")
        .replace("scale = 2", "scale = 6");
    let b = PriceBook::parse(&text).unwrap();
    let s = settings();
    let mut state = PartitionState::default();
    // One vCPU sampled over 11:00-13:00: one hour at 0.0120, one at 0.0125.
    state.apply(0, &vm("s", utc("2024-06-15T13:00:00Z"), VmTransition::Sample, 1, 7200), &s, &b);
    let day = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Day, "vm.vcpu");
    assert_eq!(day[0].quantity, dec!(2));
    assert_eq!(day[0].cost, dec!(0.0245));
}

#[test]
fn a_paris_tenant_month_starts_at_paris_midnight() {
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    // 31 Dec 23:30 UTC is 1 January in Paris.
    state.apply(0, &task("1", "acme", utc("2023-12-31T23:30:00Z"), 60, TechnicianProfile::Engineer, TicketType::Incident), &s, &b);
    let months = by_period(&state.take_emissions(&s, &b, Utc::now()), Period::Month, "ticket.time");
    assert_eq!(months[0].window_label, "2024-01-01");
    assert_eq!(months[0].time_zone, "Europe/Paris");
    assert_eq!(months[0].window_start, Utc.with_ymd_and_hms(2023, 12, 31, 23, 0, 0).unwrap());
}

fn latest(emissions: impl IntoIterator<Item = Aggregate>) -> BTreeMap<String, (i64, Decimal, Decimal, i64)> {
    let mut m: BTreeMap<String, (i64, Decimal, Decimal, i64)> = BTreeMap::new();
    for a in emissions {
        let v = (a.revision, a.quantity, a.cost, a.event_count);
        match m.get(&a.aggregate_id) {
            Some(old) if old.0 > v.0 => {}
            Some(old) if old.0 == v.0 => assert_eq!(old, &v, "same revision, different content"),
            _ => {
                m.insert(a.aggregate_id, v);
            }
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Flush points and a crash (restore from the last checkpoint, replay the
    /// rest) change nothing: the latest revision of every aggregate is the
    /// same as one uninterrupted run's.
    #[test]
    fn crashes_and_flush_points_do_not_change_the_result(
        pool in prop::collection::vec((0i64..(20 * 86_400), 1i32..300, any::<bool>()), 1..20),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..60),
        flush_every in 1usize..10,
        crash_at in 0usize..60,
    ) {
        let (s, b) = (settings(), book());
        let base = utc("2024-02-20T00:00:00Z");
        // Picks repeat pool entries: a repeat is a true duplicate (same id, same content).
        let input: Vec<Event> = picks.iter().map(|pick| {
            let id = pick.index(pool.len());
            let (secs, minutes, incident) = pool[id];
            let kind = if incident { TicketType::Incident } else { TicketType::Request };
            task(&id.to_string(), "acme", base + Duration::seconds(secs), minutes, TechnicianProfile::Consultant, kind)
        }).collect();

        let mut reference = PartitionState::default();
        for (offset, e) in input.iter().enumerate() {
            reference.apply(offset as i64, e, &s, &b);
        }
        let expected = latest(reference.take_emissions(&s, &b, Utc::now()));

        let mut emitted = Vec::new();
        let mut state = PartitionState::default();
        let mut checkpoint = state.clone();
        let mut offset = 0usize;
        let mut crashed = false;
        while offset < input.len() {
            state.apply(offset as i64, &input[offset], &s, &b);
            offset += 1;
            if offset % flush_every == 0 {
                emitted.extend(state.take_emissions(&s, &b, Utc::now()));
                checkpoint = state.clone();
            }
            if !crashed && offset == crash_at.min(input.len()) {
                crashed = true;
                state = checkpoint.clone(); // lose everything since the checkpoint
                offset = state.next_offset as usize;
            }
        }
        emitted.extend(state.take_emissions(&s, &b, Utc::now()));
        let got = latest(emitted);
        // Closed windows leave the reference state; compare what both still know.
        for (id, v) in &expected {
            prop_assert_eq!(got.get(id), Some(v));
        }
    }
}

#[test]
fn an_idle_partition_closes_its_windows_when_its_watermark_is_moved() {
    let (s, b) = (settings(), book());
    let mut state = PartitionState::default();
    state.apply(0, &task("1", "initech", utc("2024-01-08T10:00:00Z"), 10, TechnicianProfile::Engineer, TicketType::Incident), &s, &b);
    state.take_emissions(&s, &b, Utc::now());
    assert!(!state.advance_watermark(utc("2024-01-01T00:00:00Z")), "a watermark never moves back");
    assert!(state.advance_watermark(utc("2024-01-20T00:00:00Z")));
    let out = state.take_emissions(&s, &b, Utc::now());
    assert!(out.iter().any(|a| a.period == Period::Day && a.is_final && a.window_label == "2024-01-08"));
    assert!(out.iter().any(|a| a.period == Period::Week && a.is_final));
    assert!(out.iter().all(|a| a.period == Period::Day || a.period == Period::Week), "month and year stay open");
}
