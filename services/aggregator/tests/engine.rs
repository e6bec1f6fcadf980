//! Engine behaviour on the DOMAIN.md figures, billing-month lateness,
//! corrections, VM timelines and hostile input, and their invariants.

use std::collections::BTreeMap;
use std::path::Path;

use aggregator::engine::{EngineSettings, LateReason, Outcome, PartitionState, Refusal};
use aggregator::pricing::PriceBook;
use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_config::TenantCalendar;
use meter_model::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn book() -> PriceBook {
    PriceBook::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap()
}

fn settings(grace_days: u32) -> EngineSettings {
    let mut config = meter_config::MeterConfig::default();
    config.aggregator.default_period_grace_days = grace_days;
    config.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: "Europe/Paris".parse().expect("an IANA zone"), period_grace_days: None });
    EngineSettings::from_config(&config)
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
        version: 0,
        deleted: false,
    }
}

fn task(id: &str, tenant: &str, at: DateTime<Utc>, minutes: i32, kind: TicketType) -> Event {
    Event::TicketTime(TicketTime {
        header: header(id, tenant, at),
        ticket_id: format!("T-{id}"),
        task_id: id.into(),
        ticket_type: kind,
        category_path: vec!["RUN".into(), "MCO".into(), "servers".into()],
        in_scope: true,
        requester: "alice".into(),
        technician: "bob".into(),
        technician_profile: TechnicianProfile::Engineer,
        application: None,
        country: Some("FR".into()),
        minutes_worked: minutes,
        start_time: at - Duration::minutes(i64::from(minutes)),
    })
}

fn vm(id: &str, vm_id: &str, at: DateTime<Utc>, transition: VmTransition, vcpu: i32) -> Event {
    Event::VmUsage(VmUsage {
        header: header(id, "initech", at),
        vm_id: vm_id.into(),
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
        sample_interval_seconds: if transition == VmTransition::Sample { 3600 } else { 0 },
    })
}

/// A partition fed record by record, as the runner does.
struct Partition {
    state: PartitionState,
    settings: EngineSettings,
    book: PriceBook,
    offset: i64,
    emitted: Vec<Aggregate>,
}

impl Partition {
    fn new(grace_days: u32) -> Self {
        Partition { state: PartitionState::default(), settings: settings(grace_days), book: book(), offset: 0, emitted: Vec::new() }
    }

    fn event(&mut self, e: &Event) -> Outcome {
        let at = e.header().ingest_time;
        let outcome = self.state.apply(self.offset, at, e, &self.settings, &self.book);
        self.offset += 1;
        outcome
    }

    fn control(&mut self, action: PeriodAction, clock: DateTime<Utc>, tenant: &str, month: &str) {
        let c = PeriodControl { action, clock, tenant: tenant.into(), month: month.into(), requested_by: "test".into(), reason: "test".into() };
        assert_eq!(self.state.apply_control(self.offset, &c, &self.settings, &self.book), Outcome::Control);
        self.offset += 1;
    }

    fn clock(&mut self, at: DateTime<Utc>) {
        self.control(PeriodAction::Clock, at, "", "");
    }

    fn flush(&mut self) {
        let out = self.state.take_emissions(&self.book);
        self.emitted.extend(out);
    }

    /// The latest revision of every aggregate emitted.
    fn latest(&self) -> BTreeMap<String, Aggregate> {
        let mut out: BTreeMap<String, Aggregate> = BTreeMap::new();
        for a in &self.emitted {
            if out.get(&a.aggregate_id).is_none_or(|b| a.revision >= b.revision) {
                out.insert(a.aggregate_id.clone(), a.clone());
            }
        }
        out
    }

    /// Sum of the latest quantity of `metric` per window label of `period` for `tenant`.
    fn totals(&self, tenant: &str, period: Period, metric: &str) -> BTreeMap<String, (Decimal, i64, i64, i64)> {
        let mut out: BTreeMap<String, (Decimal, i64, i64, i64)> = BTreeMap::new();
        for a in self.latest().values().filter(|a| a.tenant == tenant && a.period == period && a.metric == metric) {
            let e = out.entry(a.window_label.clone()).or_default();
            e.0 += a.quantity;
            e.1 += a.event_count;
            e.2 += a.incident_count;
            e.3 += a.request_count;
        }
        out
    }
}

#[test]
fn logged_actions_are_billed_to_the_minute() {
    // DOMAIN.md: 2.75 h, 0.08 h (a 5-minute answer), 1.83 h.
    let mut p = Partition::new(5);
    let day = utc("2024-01-08T10:00:00Z");
    for (i, minutes) in [165, 5, 110].into_iter().enumerate() {
        let e = task(&i.to_string(), "initech", day + Duration::minutes(i as i64), minutes, TicketType::Incident);
        assert_eq!(p.event(&e), Outcome::Counted);
    }
    p.flush();
    for period in Period::ALL {
        let a: Vec<_> = p.emitted.iter().filter(|a| a.period == period).collect();
        assert_eq!(a.len(), 1, "{period:?}");
        assert_eq!(a[0].quantity, dec!(280)); // minutes
        assert_eq!(a[0].cost, dec!(350.00)); // 280 min at 75 €/h
        assert_eq!(a[0].incident_count, 3);
        assert_eq!(a[0].revision, 3);
        assert!(!a[0].is_final);
    }
    // Nothing changed: nothing to emit again.
    assert!(p.state.take_emissions(&p.book).is_empty());
}

#[test]
fn a_month_counts_in_any_order_until_it_closes_then_its_finals_are_emitted() {
    let mut p = Partition::new(5);
    // Events of January 2026 logged weeks late, in reverse order.
    for day in (1..=31).rev() {
        let at = Utc.with_ymd_and_hms(2026, 1, day, 9, 0, 0).unwrap();
        let mut e = task(&format!("t{day}"), "initech", at, 60, TicketType::Request);
        e.header_mut().ingest_time = utc("2026-02-04T12:00:00Z"); // inside the 5-day grace
        assert_eq!(p.event(&e), Outcome::Counted, "day {day}");
        if day % 7 == 0 {
            p.flush();
        }
    }
    p.clock(utc("2026-02-05T23:00:00Z")); // grace not over yet
    p.flush();
    assert!(p.emitted.iter().all(|a| !a.is_final));
    p.clock(utc("2026-02-06T00:00:00Z")); // 1 February + 5 days: January closes
    p.flush();
    let month = p.totals("initech", Period::Month, "ticket.time");
    assert_eq!(month["2026-01-01"], (dec!(1860), 31, 0, 31));
    let finals: Vec<_> = p.emitted.iter().filter(|a| a.is_final).collect();
    // 31 days + the weeks ending in January (4: the week of 26 January ends on 1 February) + the month.
    assert_eq!(finals.iter().filter(|a| a.period == Period::Day).count(), 31);
    assert_eq!(finals.iter().filter(|a| a.period == Period::Month).count(), 1);
    assert!(finals.iter().all(|a| a.period != Period::Year), "the year stays open");
    // After the close, an event of January is late; one of February counts.
    let mut late = task("late", "initech", utc("2026-01-15T09:00:00Z"), 30, TicketType::Incident);
    late.header_mut().ingest_time = utc("2026-02-07T09:00:00Z");
    assert_eq!(p.event(&late), Outcome::Late(LateReason::PeriodClosed));
    let mut feb = task("feb", "initech", utc("2026-02-02T09:00:00Z"), 30, TicketType::Incident);
    feb.header_mut().ingest_time = utc("2026-02-07T09:00:00Z");
    assert_eq!(p.event(&feb), Outcome::Counted);
}

#[test]
fn an_event_stamped_after_its_months_close_is_late_even_before_a_clock_record() {
    let mut p = Partition::new(5);
    let mut e = task("x", "initech", utc("2026-01-10T09:00:00Z"), 30, TicketType::Incident);
    e.header_mut().ingest_time = utc("2026-03-01T00:00:00Z");
    assert_eq!(p.event(&e), Outcome::Late(LateReason::PeriodClosed));
    assert!(p.state.open_aggregates() == 0);
}

#[test]
fn an_explicit_close_closes_the_month_and_every_earlier_one() {
    let mut p = Partition::new(400);
    let mut e = task("x", "initech", utc("2025-11-10T09:00:00Z"), 30, TicketType::Incident);
    e.header_mut().ingest_time = utc("2025-12-02T09:00:00Z");
    assert_eq!(p.event(&e), Outcome::Counted);
    p.control(PeriodAction::Close, utc("2025-12-02T10:00:00Z"), "initech", "2025-11");
    p.flush();
    assert!(p.emitted.iter().any(|a| a.is_final && a.period == Period::Month && a.window_label == "2025-11-01"));
    let mut october = task("y", "initech", utc("2025-10-10T09:00:00Z"), 30, TicketType::Incident);
    october.header_mut().ingest_time = utc("2025-12-02T11:00:00Z");
    assert_eq!(p.event(&october), Outcome::Late(LateReason::PeriodClosed));
    // Another tenant's months stay open.
    let mut other = task("z", "globex", utc("2025-11-10T09:00:00Z"), 30, TicketType::Incident);
    other.header_mut().ingest_time = utc("2025-12-02T11:00:00Z");
    assert_eq!(p.event(&other), Outcome::Counted);
}

#[test]
fn a_correction_replaces_the_earlier_version_in_every_window_and_a_deletion_retracts_it() {
    let mut p = Partition::new(5);
    let mut v1 = task("glpi-task-7", "initech", utc("2026-01-05T09:00:00Z"), 60, TicketType::Incident);
    v1.header_mut().version = 100;
    assert_eq!(p.event(&v1), Outcome::Counted);
    p.flush();
    // Edited in GLPI: more minutes, another day, another type.
    let mut v2 = task("glpi-task-7", "initech", utc("2026-01-07T09:00:00Z"), 90, TicketType::Request);
    v2.header_mut().version = 200;
    assert_eq!(p.event(&v2), Outcome::Corrected);
    // The same version again, and the older one, count nothing.
    assert_eq!(p.event(&v2), Outcome::Duplicate);
    assert_eq!(p.event(&v1), Outcome::Duplicate);
    p.flush();
    let days = p.totals("initech", Period::Day, "ticket.time");
    assert_eq!(days["2026-01-05"], (dec!(0), 0, 0, 0));
    assert_eq!(days["2026-01-07"], (dec!(90), 1, 0, 1));
    assert_eq!(p.totals("initech", Period::Month, "ticket.time")["2026-01-01"], (dec!(90), 1, 0, 1));
    // Deleted in GLPI.
    let mut gone = v2.clone();
    gone.header_mut().version = 300;
    gone.header_mut().deleted = true;
    assert_eq!(p.event(&gone), Outcome::Retracted);
    p.flush();
    assert_eq!(p.totals("initech", Period::Month, "ticket.time")["2026-01-01"], (dec!(0), 0, 0, 0));
    // Costs follow to the cent.
    assert!(p.latest().values().all(|a| a.cost == dec!(0)));
}

#[test]
fn a_correction_after_the_close_goes_late_and_the_tenant_is_part_of_the_identity() {
    let mut p = Partition::new(5);
    let mut v1 = task("glpi-task-9", "initech", utc("2026-01-30T09:00:00Z"), 60, TicketType::Incident);
    v1.header_mut().version = 1;
    assert_eq!(p.event(&v1), Outcome::Counted);
    // Another tenant with the same source and id is another event.
    let mut shadow = task("glpi-task-9", "globex", utc("2026-01-30T09:00:00Z"), 60, TicketType::Incident);
    shadow.header_mut().version = 5;
    assert_eq!(p.event(&shadow), Outcome::Counted);
    p.clock(utc("2026-02-06T00:00:00Z"));
    // Moved into February (open) after January closed: late, not counted twice.
    let mut v2 = task("glpi-task-9", "initech", utc("2026-02-02T09:00:00Z"), 90, TicketType::Incident);
    v2.header_mut().version = 2;
    v2.header_mut().ingest_time = utc("2026-02-07T00:00:00Z");
    assert_eq!(p.event(&v2), Outcome::Late(LateReason::ClosedEventResent));
    // The same version sent again after the close is a duplicate, not late.
    let mut again = v1.clone();
    again.header_mut().ingest_time = utc("2026-02-07T00:00:00Z");
    assert_eq!(p.event(&again), Outcome::Duplicate);
    p.flush();
    assert!(p.totals("initech", Period::Month, "ticket.time").get("2026-02-01").is_none());
    assert_eq!(p.totals("initech", Period::Month, "ticket.time")["2026-01-01"].0, dec!(60));
}

#[test]
fn events_leave_at_the_clock_record_that_closes_their_month_even_after_clock_records_that_closed_nothing() {
    let mut p = Partition::new(5);
    assert_eq!(p.event(&task("t-1", "initech", utc("2026-01-20T09:00:00Z"), 30, TicketType::Incident)), Outcome::Counted);
    // Clock records inside the open month (the aggregator's periodic ones) close nothing.
    for day in ["2026-01-21", "2026-01-25", "2026-02-01", "2026-02-03"] {
        p.clock(utc(&format!("{day}T00:00:00Z")));
        assert_eq!(p.state.open_events(), 1, "after the clock of {day}");
    }
    // A tenant first seen now, in February.
    assert_eq!(p.event(&task("t-2", "globex", utc("2026-02-02T09:00:00Z"), 15, TicketType::Request)), Outcome::Counted);
    p.clock(utc("2026-02-05T00:00:00Z"));
    assert_eq!(p.state.open_events(), 2);
    // January closes (grace of 5 days): its event leaves, February's stays;
    // the January event re-sent is a duplicate, not a new one.
    p.clock(utc("2026-02-06T00:00:00Z"));
    assert_eq!(p.state.open_events(), 1);
    let mut again = task("t-1", "initech", utc("2026-01-20T09:00:00Z"), 30, TicketType::Incident);
    again.header_mut().ingest_time = utc("2026-02-07T00:00:00Z");
    assert_eq!(p.event(&again), Outcome::Duplicate);
    p.clock(utc("2026-03-06T00:00:00Z"));
    assert_eq!(p.state.open_events(), 0);
}

#[test]
fn no_tenant_makes_another_late_and_no_event_moves_time() {
    let mut p = Partition::new(5);
    let now = utc("2026-01-10T09:00:00Z");
    // A hostile tenant on the same partition: far-future and very old events.
    let mut future = task("f", "evil", utc("2099-01-01T00:00:00Z"), 30, TicketType::Incident);
    future.header_mut().ingest_time = now;
    assert!(matches!(p.event(&future), Outcome::Refused(Refusal::Invalid(_))));
    let mut skewed = task("s", "evil", now + Duration::hours(2), 30, TicketType::Incident);
    skewed.header_mut().ingest_time = now;
    assert!(matches!(p.event(&skewed), Outcome::Refused(Refusal::Invalid(_))), "2 h ahead of its stamp");
    let mut old = task("o", "evil", utc("2019-03-01T00:00:00Z"), 30, TicketType::Incident);
    old.header_mut().ingest_time = now;
    assert_eq!(p.event(&old), Outcome::Late(LateReason::PeriodClosed));
    assert!(p.state.clock.is_none(), "events never move the clock");
    // The honest tenant's old-but-open events still count.
    let mut a = task("a", "acme", utc("2026-01-02T09:00:00Z"), 45, TicketType::Request);
    a.header_mut().ingest_time = now;
    assert_eq!(p.event(&a), Outcome::Counted);
    let mut b = task("b", "acme", utc("2025-12-31T09:00:00Z"), 15, TicketType::Request);
    b.header_mut().ingest_time = utc("2026-01-04T00:00:00Z"); // December's grace: until 5 January
    assert_eq!(p.event(&b), Outcome::Counted);
    p.flush();
    assert!(p.latest().values().all(|a| a.tenant == "acme"));
}

/// DOMAIN.md's January 2026 example in any order: 27 days of 8 hours.
fn january(seed: u64) -> Vec<Event> {
    let mut events = Vec::new();
    // 20 incidents and 7 requests, 27 days of 8 hours in all (12,960 minutes),
    // minutes shifted between pairs of tasks by the seed.
    for i in 0..27 {
        let shift = ((seed as i32 + i * 37) % 41) - 20;
        let minutes = if i == 26 { 480 } else if i % 2 == 0 { 480 + shift } else { 480 - (((seed as i32 + (i - 1) * 37) % 41) - 20) };
        let day = 1 + (i as u32 * 7 + seed as u32) % 31;
        let at = Utc.with_ymd_and_hms(2026, 1, day, 8 + (i as u32 % 9), 0, 0).unwrap();
        let kind = if i < 20 { TicketType::Incident } else { TicketType::Request };
        let mut e = task(&format!("jan-{i}"), "acme", at, minutes, kind);
        e.header_mut().ingest_time = utc("2026-02-03T10:00:00Z");
        events.push(e);
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_order_and_any_flush_points_give_the_same_totals(seed in 0u64..1000, order in Just(()).prop_perturb(|_, mut rng| {
        let mut v: Vec<usize> = (0..27).collect();
        for i in (1..v.len()).rev() { v.swap(i, (rng.next_u32() as usize) % (i + 1)); }
        v
    }), flush_every in 1usize..9) {
        let events = january(seed);
        let mut sorted = Partition::new(5);
        for e in &events { sorted.event(e); }
        sorted.flush();
        let mut shuffled = Partition::new(5);
        for (n, i) in order.iter().enumerate() {
            // Re-sends are absorbed too.
            shuffled.event(&events[*i]);
            if n % 5 == 0 { shuffled.event(&events[*i]); }
            if n % flush_every == 0 { shuffled.flush(); }
        }
        shuffled.flush();
        let month = shuffled.totals("acme", Period::Month, "ticket.time");
        prop_assert_eq!(month["2026-01-01"].0, Decimal::from(27 * 8 * 60));
        prop_assert_eq!((month["2026-01-01"].2, month["2026-01-01"].3), (20, 7));
        for period in Period::ALL {
            prop_assert_eq!(shuffled.totals("acme", period, "ticket.time"), sorted.totals("acme", period, "ticket.time"));
        }
        // Costs too: the latest revisions agree to the cent.
        let cost = |p: &Partition| p.latest().values().map(|a| a.cost).sum::<Decimal>();
        prop_assert_eq!(cost(&shuffled), cost(&sorted));
    }
}

#[test]
fn a_rebuild_from_offset_zero_emits_the_same_revisions_byte_for_byte() {
    let records: Vec<Result<Event, DateTime<Utc>>> = january(7)
        .into_iter()
        .map(Ok)
        .chain([Err(utc("2026-02-04T00:00:00Z"))])
        .chain(january(9).into_iter().take(5).map(|mut e| {
            e.header_mut().version = 2;
            Ok(e)
        }))
        .chain([Err(utc("2026-02-06T00:00:00Z"))]) // the close
        .collect();
    let run = |flush_every: usize| {
        let mut p = Partition::new(5);
        for (i, r) in records.iter().enumerate() {
            match r {
                Ok(e) => {
                    p.event(e);
                }
                Err(clock) => p.clock(*clock),
            }
            if i % flush_every == 0 {
                p.flush();
            }
        }
        p.flush();
        p.emitted
            .iter()
            .map(|a| ((a.aggregate_id.clone(), a.revision), EventCodec::encode(a).unwrap()))
            .collect::<BTreeMap<_, _>>()
    };
    let live = run(3);
    let rebuilt = run(1000);
    let mut common = 0;
    for (key, bytes) in &rebuilt {
        if let Some(live_bytes) = live.get(key) {
            assert_eq!(live_bytes, bytes, "revision {key:?} differs");
            common += 1;
        }
    }
    // Every final and every latest revision is in both.
    assert!(common > 0);
    let finals = |m: &BTreeMap<(String, i64), Vec<u8>>| {
        m.iter().filter(|(_, b)| EventCodec::decode::<Aggregate>(b).unwrap().is_final).map(|(k, _)| k.clone()).collect::<Vec<_>>()
    };
    assert_eq!(finals(&live), finals(&rebuilt));
    assert!(!finals(&live).is_empty());
}

// ---------------------------------------------------------------- VMs ---

/// vCPU-hours per January 2026 day, computed independently of the engine.
fn expected_vcpu_hours(intervals: &[(DateTime<Utc>, DateTime<Utc>, i64)]) -> BTreeMap<u32, Decimal> {
    let mut out = BTreeMap::new();
    for day in 1..=31u32 {
        let start = Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap();
        let end = start + Duration::days(1);
        let mut seconds = 0i64;
        for (a, b, vcpu) in intervals {
            let (s, e) = ((*a).max(start), (*b).min(end));
            if s < e {
                seconds += (e - s).num_seconds() * vcpu;
            }
        }
        out.insert(day, Decimal::from(seconds) / Decimal::from(3600));
    }
    out
}

#[test]
fn january_vms_are_billed_every_hour_they_ran_whether_or_not_they_stopped() {
    let mut p = Partition::new(5);
    let transitions = vec![
        // Always on since December, never a transition in January.
        vm("a1", "always-on", utc("2025-12-20T10:00:00Z"), VmTransition::Create, 4),
        // Stopped on the 20th.
        vm("b1", "stopped", utc("2026-01-01T00:00:00Z"), VmTransition::Start, 2),
        vm("b2", "stopped", utc("2026-01-20T12:00:00Z"), VmTransition::Stop, 2),
        // Resized twice.
        vm("c1", "resized", utc("2026-01-03T00:00:00Z"), VmTransition::Create, 2),
        vm("c2", "resized", utc("2026-01-10T06:00:00Z"), VmTransition::Resize, 4),
        vm("c3", "resized", utc("2026-01-15T18:30:00Z"), VmTransition::Resize, 8),
    ];
    // December's VM is known before January; the rest arrive in reverse order, late.
    p.clock(utc("2025-12-20T09:00:00Z"));
    p.event(&transitions[0]);
    let mut final_ids: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    let mut check_flush = |p: &mut Partition| {
        let before = p.emitted.len();
        p.flush();
        for a in &p.emitted[before..] {
            assert!(!final_ids.contains_key(&a.aggregate_id), "an aggregate was emitted after its final: {a:?}");
            if a.is_final {
                final_ids.insert(a.aggregate_id.clone(), (a.revision, a.quantity));
            }
        }
    };
    let mut clock = utc("2025-12-20T12:00:00Z");
    while clock < utc("2026-02-10T00:00:00Z") {
        p.clock(clock);
        if clock == utc("2026-01-25T06:00:00Z") {
            for t in transitions[1..].iter().rev() {
                let mut t = t.clone();
                t.header_mut().ingest_time = clock;
                assert_eq!(p.event(&t), Outcome::Counted);
            }
        }
        check_flush(&mut p);
        clock += Duration::hours(6);
    }
    let expected = expected_vcpu_hours(&[
        (utc("2025-12-20T10:00:00Z"), utc("2026-02-10T00:00:00Z"), 4),
        (utc("2026-01-01T00:00:00Z"), utc("2026-01-20T12:00:00Z"), 2),
        (utc("2026-01-03T00:00:00Z"), utc("2026-01-10T06:00:00Z"), 2),
        (utc("2026-01-10T06:00:00Z"), utc("2026-01-15T18:30:00Z"), 4),
        (utc("2026-01-15T18:30:00Z"), utc("2026-02-10T00:00:00Z"), 8),
    ]);
    let days = p.totals("initech", Period::Day, "vm.vcpu");
    for (day, hours) in &expected {
        assert_eq!(days[&format!("2026-01-{day:02}")].0, *hours, "day {day}");
    }
    let month = p.totals("initech", Period::Month, "vm.vcpu");
    assert_eq!(month["2026-01-01"].0, expected.values().copied().sum::<Decimal>());
    // January's windows are final, once each.
    let finals = p.emitted.iter().filter(|a| a.is_final && a.metric == "vm.vcpu" && a.window_label.starts_with("2026-01")).count();
    assert!(finals >= 31 + 1, "{finals}");
    // Every week ending by 1 February is final and complete: the week of 5 January.
    let week = p.totals("initech", Period::Week, "vm.vcpu");
    let week_expected: Decimal = (5..=11).map(|d| expected[&d]).sum();
    assert_eq!(week["2026-01-05"].0, week_expected);
    // The cost is exact: 0.0125 €/vCPU-hour in 2026, rounded once per aggregate.
    let month_cost: Decimal = p.latest().values().filter(|a| a.period == Period::Month && a.metric == "vm.vcpu" && a.window_label == "2026-01-01").map(|a| a.cost).sum();
    assert_eq!(month_cost, (month["2026-01-01"].0 * dec!(0.0125)).round_dp(2));
}

#[test]
fn a_late_stop_ends_the_interval_at_its_own_time() {
    let mut p = Partition::new(5);
    p.clock(utc("2026-01-01T00:00:00Z"));
    p.event(&vm("s", "v", utc("2026-01-01T00:00:00Z"), VmTransition::Start, 1));
    p.clock(utc("2026-01-11T01:00:00Z")); // billed through 10 January
    p.flush();
    assert_eq!(p.totals("initech", Period::Month, "vm.vcpu")["2026-01-01"].0, dec!(240));
    let mut stop = vm("t", "v", utc("2026-01-08T12:00:00Z"), VmTransition::Stop, 1);
    stop.header_mut().ingest_time = utc("2026-01-11T02:00:00Z");
    assert_eq!(p.event(&stop), Outcome::Counted);
    p.clock(utc("2026-01-12T01:00:00Z"));
    p.flush();
    assert_eq!(p.totals("initech", Period::Month, "vm.vcpu")["2026-01-01"].0, dec!(180)); // 7.5 days
    assert_eq!(p.totals("initech", Period::Day, "vm.vcpu")["2026-01-09"].0, dec!(0));
}

#[test]
fn start_and_stop_at_one_instant_bill_nothing_in_either_order_and_a_stopped_vm_does_not_restart() {
    for reversed in [false, true] {
        let mut p = Partition::new(5);
        p.clock(utc("2026-01-01T00:00:00Z"));
        let at = utc("2026-01-05T10:00:00Z");
        let mut pair = vec![vm("a", "v", at, VmTransition::Start, 2), vm("b", "v", at, VmTransition::Stop, 2)];
        if reversed {
            pair.reverse();
        }
        for e in &pair {
            assert_eq!(p.event(e), Outcome::Counted);
        }
        // A RESIZE and a CREATE of the stopped VM do not start it.
        p.event(&vm("c", "v", utc("2026-01-06T10:00:00Z"), VmTransition::Resize, 8));
        p.event(&vm("d", "v", utc("2026-01-07T10:00:00Z"), VmTransition::Create, 8));
        p.clock(utc("2026-01-20T00:00:00Z"));
        p.flush();
        assert!(p.totals("initech", Period::Month, "vm.vcpu").values().all(|t| t.0.is_zero()), "reversed={reversed}");
    }
}

#[test]
fn an_unknown_option_is_refused_without_wedging_the_vm_and_deleted_vms_leave() {
    let mut p = Partition::new(5);
    p.clock(utc("2026-01-01T00:00:00Z"));
    let Event::VmUsage(mut bad) = vm("a", "v", utc("2026-01-02T00:00:00Z"), VmTransition::Start, 2) else { unreachable!() };
    bad.options = vec!["quantum_accelerator".into()];
    assert!(matches!(p.event(&Event::VmUsage(bad)), Outcome::Refused(Refusal::Unrated(_))));
    assert!(p.state.tracked_vms() == 0, "state unchanged");
    assert_eq!(p.event(&vm("b", "v", utc("2026-01-03T00:00:00Z"), VmTransition::Start, 2)), Outcome::Counted);
    assert_eq!(p.event(&vm("c", "v", utc("2026-01-04T00:00:00Z"), VmTransition::Delete, 2)), Outcome::Counted);
    // Samples for a lifecycle VM are refused, not billed twice.
    assert!(matches!(p.event(&vm("d", "v", utc("2026-01-03T12:00:00Z"), VmTransition::Sample, 2)), Outcome::Refused(Refusal::VmModeConflict { .. })));
    p.clock(utc("2026-02-06T00:00:00Z"));
    p.flush();
    assert_eq!(p.totals("initech", Period::Month, "vm.vcpu")["2026-01-01"].0, dec!(48));
    assert!(p.state.tracked_vms() == 0, "a deleted VM leaves once its month closes");
}

#[test]
fn hostile_sizes_are_refused_or_capped_never_crash() {
    let mut p = Partition::new(5);
    let Event::VmUsage(mut huge) = vm("h", "v", utc("2026-01-02T00:00:00Z"), VmTransition::Sample, 1) else { unreachable!() };
    huge.storage_gb = 9_000_000_000_000_000_000;
    assert!(matches!(p.event(&Event::VmUsage(huge.clone())), Outcome::Refused(Refusal::Invalid(_))));
    // 200 samples at the maximum sizes: counted, and the sums stay exact.
    huge.storage_gb = limits::MAX_STORAGE_GB;
    huge.ram_mib = limits::MAX_RAM_MIB;
    huge.vcpu = limits::MAX_VCPU as i32;
    huge.sample_interval_seconds = limits::MAX_SAMPLE_INTERVAL_SECONDS as i32;
    for i in 0..200 {
        huge.header.event_id = format!("h{i}");
        huge.header.event_time = utc("2026-02-01T00:00:00Z");
        huge.header.ingest_time = huge.header.event_time;
        let outcome = p.event(&Event::VmUsage(huge.clone()));
        assert!(matches!(outcome, Outcome::Counted | Outcome::Refused(Refusal::Overflow)), "{outcome:?}");
    }
    p.flush();
    for a in p.latest().values() {
        EventCodec::encode(a).expect("every aggregate encodes");
    }
    let mut long = task("l", "initech", utc("2026-01-02T00:00:00Z"), 30, TicketType::Incident);
    if let Event::TicketTime(t) = &mut long {
        t.category_path = vec!["x".into(); 250_000];
    }
    assert!(matches!(p.event(&long), Outcome::Refused(Refusal::Invalid(_))));
}

#[test]
fn a_tenant_cannot_open_unbounded_aggregates() {
    let mut p = Partition::new(5);
    p.settings.max_open_aggregates_per_tenant = 40;
    let mut refused = 0;
    for i in 0..30 {
        let mut e = task(&format!("r{i}"), "initech", utc("2026-01-02T09:00:00Z"), 10, TicketType::Incident);
        if let Event::TicketTime(t) = &mut e {
            t.requester = format!("requester-{i}"); // a free-text dimension
        }
        if matches!(p.event(&e), Outcome::Refused(Refusal::TenantAggregateLimit { .. })) {
            refused += 1;
        }
    }
    assert_eq!(refused, 20); // 4 aggregates per requester: 10 requesters fit
    assert!(p.state.open_aggregates() <= 40);
    // Another tenant is not affected.
    assert_eq!(p.event(&task("g", "globex", utc("2026-01-02T09:00:00Z"), 10, TicketType::Incident)), Outcome::Counted);
}

#[test]
fn a_paris_tenant_month_starts_at_paris_midnight() {
    let mut p = Partition::new(5);
    // 31 December 2025 23:30 UTC is already January in Paris.
    p.event(&task("x", "acme", utc("2025-12-31T23:30:00Z"), 30, TicketType::Incident));
    p.flush();
    assert!(p.totals("acme", Period::Month, "ticket.time").contains_key("2026-01-01"));
    let _ = TenantCalendar::uniform(chrono_tz::UTC, 5);
}

// ------------------------------------------------------------ identity ---

/// Every emitted `aggregate_id` is the documented formula of the aggregate's
/// own fields (consumers and the sink key on it), for every kind.
#[test]
fn emitted_aggregate_ids_follow_the_published_formula() {
    let mut p = Partition::new(5);
    let at = utc("2026-01-12T09:00:00Z");
    let mut t = task("id-1", "acme", at, 30, TicketType::Incident);
    if let Event::TicketTime(t) = &mut t {
        t.category_path = vec!["RUN".into(), "MCO > x".into(), "servers".into()];
        t.application = Some("Sage".into());
    }
    p.event(&t);
    p.event(&Event::CheckResult(CheckResult {
        header: header("chk-1", "acme", at),
        check_id: "backup".into(),
        check_name: "Backup job".into(),
        target: "srv1".into(),
        frequency: CheckFrequency::Daily,
        scheduled_time: None,
        executed_time: Some(at),
        status: CheckStatus::Ko,
        ticket_ref: Some("T-1".into()),
        time_spent_minutes: 5,
        output: None,
    }));
    let mut sample = vm("vm-s", "vm-1", at, VmTransition::Sample, 4);
    if let Event::VmUsage(v) = &mut sample {
        v.options = vec!["backup".into()];
        v.ram_mib = 8192;
    }
    p.event(&sample);
    p.event(&vm("vm-c", "vm-2", at, VmTransition::Create, 2));
    p.clock(utc("2026-01-13T00:30:00Z"));
    p.flush();
    let kinds: std::collections::BTreeSet<String> = p.emitted.iter().map(|a| format!("{:?}", a.kind)).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    for a in &p.emitted {
        let expected = aggregate_id(a.kind, &a.tenant, &a.subsidiary, &a.domain, a.period, a.window_start, &a.metric, &a.dimensions);
        assert_eq!(a.aggregate_id, expected, "{} {:?} {}", a.metric, a.period, a.window_label);
    }
    assert!(p.emitted.iter().any(|a| a.dimensions.get("category").map(String::as_str) == Some("RUN > MCO > x > servers")));
}

/// One input record of the clock-sweep property: an event (index into the
/// pool, version, deleted) or a clock record (hours after 2026-01-01).
#[derive(Debug, Clone)]
enum Input {
    Event { which: usize, version: i64, deleted: bool, ingest_hours: i64 },
    Clock { hours: i64 },
}

fn sweep_inputs() -> impl Strategy<Value = Vec<Input>> {
    let input = prop_oneof![
        4 => (0usize..24, 0i64..3, proptest::bool::weighted(0.15), 0i64..24 * 80)
            .prop_map(|(which, version, deleted, ingest_hours)| Input::Event { which, version, deleted, ingest_hours }),
        1 => (0i64..24 * 80).prop_map(|hours| Input::Clock { hours }),
    ];
    proptest::collection::vec(input, 1..120)
}

/// Event `which` of the pool: two tenants (Paris and UTC) on one partition,
/// times on both sides of the January/February and February/March edges.
fn pool_event(which: usize) -> Event {
    let tenant = if which % 2 == 0 { "acme" } else { "globex" };
    let base = utc("2026-01-31T22:30:00Z");
    let at = base + Duration::hours((which as i64 - 12) * 60) + Duration::minutes(which as i64 * 7);
    task(&format!("e-{which}"), tenant, at, 1 + which as i32 * 11, TicketType::Incident)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Clock records skip their pass over the events when no tenant's first
    /// open month moved. A state reloaded from its checkpoint before every
    /// clock record always makes that pass (the memo of the last pass is not
    /// saved). Fed shuffled, late, corrected and deleted events of two
    /// tenants, the two states hold the same events and closed identities,
    /// and give the same outcome to every record.
    #[test]
    fn skipping_the_sweep_changes_nothing_a_full_sweep_would(inputs in sweep_inputs()) {
        let start = utc("2026-01-01T00:00:00Z");
        let dir = tempfile::tempdir().unwrap();
        let store = aggregator::checkpoint::CheckpointStore::new(dir.path()).unwrap();
        let mut live = Partition::new(3);
        let mut reloaded = Partition::new(3);
        let (state, mut checkpoint) = store.open("t", 0).unwrap();
        // One identity key for both (each state draws its own), and both
        // saved at the same points (saving marks what it wrote), only the
        // live one never reloaded.
        let live_dir = tempfile::tempdir().unwrap();
        let (_, mut live_checkpoint) = aggregator::checkpoint::CheckpointStore::new(live_dir.path()).unwrap().open("t", 0).unwrap();
        live.state = state.clone();
        live.state.track_changes();
        reloaded.state = state;
        for input in &inputs {
            match input {
                Input::Event { which, version, deleted, ingest_hours } => {
                    let mut e = pool_event(*which);
                    let h = e.header_mut();
                    h.version = *version;
                    h.deleted = *deleted;
                    h.ingest_time = h.ingest_time.max(start + Duration::hours(*ingest_hours));
                    prop_assert_eq!(live.event(&e), reloaded.event(&e), "{:?}", input);
                }
                Input::Clock { hours } => {
                    // As the runner does: emissions are taken before a save.
                    live.flush();
                    reloaded.flush();
                    live_checkpoint.save_owned(&mut live.state, 1).unwrap();
                    checkpoint.save_owned(&mut reloaded.state, 1).unwrap();
                    drop(checkpoint);
                    let (state, again) = store.open("t", 0).unwrap();
                    reloaded.state = state;
                    checkpoint = again;
                    live.clock(start + Duration::hours(*hours));
                    reloaded.clock(start + Duration::hours(*hours));
                    prop_assert_eq!(live.state.open_events(), reloaded.state.open_events());
                    prop_assert!(live.state == reloaded.state, "the states differ after the clock of {:?}", input);
                }
            }
        }
    }
}
