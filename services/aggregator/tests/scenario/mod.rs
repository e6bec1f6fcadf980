//! A mixed stream for checkpoint tests: tickets of two tenants (Paris and
//! UTC), corrections, deletions and re-sends, check runs, VM samples and a
//! lifecycle VM, clock records that close December then January. Used by
//! `tests/checkpoint.rs`; `fixtures/checkpoint-v1.json` is the JSON
//! checkpoint the engine before the compact state wrote after `first_part`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::*;

pub enum Record {
    Event(Event),
    Clock(DateTime<Utc>),
}

fn header(id: &str, tenant: &str, at: DateTime<Utc>, ingest: DateTime<Utc>, version: i64) -> EventHeader {
    EventHeader {
        event_id: id.into(),
        source: "glpi".into(),
        tenant: tenant.into(),
        subsidiary: format!("{tenant}-{}", if id.len() % 2 == 0 { "fr" } else { "de" }),
        domain: "infrastructure".into(),
        event_time: at,
        ingest_time: ingest,
        version,
        deleted: false,
    }
}

fn ticket(i: u32, tenant: &str, version: i64, minutes: i32) -> Event {
    let at = Utc.with_ymd_and_hms(2026, 1, 1 + i % 28, 7 + i % 10, (i * 7) % 60, 0).unwrap();
    let ingest = Utc.with_ymd_and_hms(2026, 1, 30, 12, 0, 0).unwrap() + Duration::minutes(i64::from(i));
    Event::TicketTime(TicketTime {
        header: header(&format!("task-{i}"), tenant, at, ingest, version),
        ticket_id: format!("T-{}", i / 3),
        task_id: i.to_string(),
        ticket_type: if i % 3 == 0 { TicketType::Request } else { TicketType::Incident },
        category_path: vec!["RUN".into(), "MCO".into(), if i % 2 == 0 { "servers".into() } else { "backup".into() }],
        in_scope: i % 5 != 0,
        requester: format!("user{}", i % 4),
        technician: format!("tech{}", i % 3),
        technician_profile: [TechnicianProfile::Administrator, TechnicianProfile::Engineer, TechnicianProfile::Architect][(i % 3) as usize],
        application: (i % 4 == 0).then(|| "Sage".into()),
        country: Some("FR".into()),
        minutes_worked: minutes,
        start_time: at - Duration::minutes(i64::from(minutes)),
    })
}

/// A ticket of December 2025, stamped before December closes.
fn december_ticket() -> Event {
    let mut e = ticket(100, "acme", 0, 30);
    if let Event::TicketTime(t) = &mut e {
        t.header.event_time = Utc.with_ymd_and_hms(2025, 12, 30, 9, 0, 0).unwrap();
        t.start_time = t.header.event_time - Duration::minutes(30);
        t.header.ingest_time = Utc.with_ymd_and_hms(2025, 12, 31, 10, 0, 0).unwrap();
    }
    e
}

fn check(i: u32, status: CheckStatus) -> Event {
    let at = Utc.with_ymd_and_hms(2026, 1, 1 + i % 28, 6, 0, 0).unwrap();
    Event::CheckResult(CheckResult {
        header: header(&format!("check-{i}"), "acme", at, Utc.with_ymd_and_hms(2026, 1, 30, 12, 0, 0).unwrap(), 0),
        check_id: format!("backup-{}", i % 2),
        check_name: if i % 2 == 0 { "Veeam backup".into() } else { "Sophos Central".into() },
        target: "srv1".into(),
        frequency: CheckFrequency::Daily,
        scheduled_time: Some(at),
        executed_time: (status != CheckStatus::Missed).then_some(at),
        status,
        ticket_ref: (status == CheckStatus::Ko).then(|| format!("T-{i}")),
        time_spent_minutes: 5,
        output: None,
    })
}

fn vm(id: &str, vm_id: &str, at: DateTime<Utc>, transition: VmTransition, vcpu: i32) -> Event {
    Event::VmUsage(VmUsage {
        header: header(id, "initech", at, Utc.with_ymd_and_hms(2026, 1, 30, 12, 0, 0).unwrap(), 0),
        vm_id: vm_id.into(),
        vcpu,
        ram_mib: 4096,
        storage_gb: 50,
        bandwidth_mbps: 100,
        guaranteed_bandwidth: vm_id.ends_with('2'),
        public_ips: 1,
        sla_tier: SlaTier::Sla99_9,
        options: if vm_id.ends_with('1') { vec!["backup".into()] } else { vec![] },
        datacenter: "PAR1".into(),
        transition,
        sample_interval_seconds: if transition == VmTransition::Sample { 3600 } else { 0 },
    })
}

/// What the fixture's checkpoint holds.
pub fn first_part() -> Vec<Record> {
    let mut out = vec![Record::Event(december_ticket())];
    for i in 0..40 {
        out.push(Record::Event(ticket(i, if i % 4 == 3 { "globex" } else { "acme" }, 1, 10 + (i as i32 * 13) % 200)));
    }
    for i in 0..10 {
        out.push(Record::Event(check(i, [CheckStatus::Ok, CheckStatus::Ko, CheckStatus::Missed][(i % 3) as usize])));
    }
    for h in 0..12 {
        let at = Utc.with_ymd_and_hms(2026, 1, 20, 10 + h, 0, 0).unwrap();
        out.push(Record::Event(vm(&format!("s-{h}"), "vm-1", at, VmTransition::Sample, 2 + (h as i32 % 2))));
    }
    out.push(Record::Event(vm("c-1", "vm-2", Utc.with_ymd_and_hms(2026, 1, 10, 8, 0, 0).unwrap(), VmTransition::Create, 4)));
    out.push(Record::Event(vm("r-1", "vm-2", Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap(), VmTransition::Resize, 8)));
    // December 2025 closes (the clock passes its end and the 5-day grace):
    // its ticket becomes a closed event.
    out.push(Record::Clock(Utc.with_ymd_and_hms(2026, 1, 30, 13, 0, 0).unwrap()));
    out
}

/// What happens after the checkpoint: corrections, deletions, re-sends,
/// new events, a stop, then the close of January.
pub fn second_part() -> Vec<Record> {
    let mut out = Vec::new();
    for i in (0..40).step_by(3) {
        out.push(Record::Event(ticket(i, if i % 4 == 3 { "globex" } else { "acme" }, 2, 7 + (i as i32 * 5) % 100)));
    }
    for i in (1..40).step_by(7) {
        let mut e = ticket(i, if i % 4 == 3 { "globex" } else { "acme" }, 3, 1);
        e.header_mut().deleted = true;
        out.push(Record::Event(e));
    }
    for i in 0..5 {
        out.push(Record::Event(ticket(i, if i % 4 == 3 { "globex" } else { "acme" }, 1, 10 + (i as i32 * 13) % 200)));
    }
    for i in 40..60 {
        out.push(Record::Event(ticket(i, "acme", 1, 25)));
    }
    for h in 12..20 {
        let at = Utc.with_ymd_and_hms(2026, 1, 20, 10, 0, 0).unwrap() + Duration::hours(h);
        out.push(Record::Event(vm(&format!("s-{h}"), "vm-1", at, VmTransition::Sample, 2)));
    }
    out.push(Record::Event(vm("p-1", "vm-2", Utc.with_ymd_and_hms(2026, 1, 25, 18, 0, 0).unwrap(), VmTransition::Stop, 8)));
    // The December ticket again: a duplicate of a closed event.
    out.push(Record::Event(december_ticket()));
    out.push(Record::Clock(Utc.with_ymd_and_hms(2026, 2, 7, 0, 0, 0).unwrap()));
    out
}
