//! Synthetic sink input shared by the CPU bench (`benches/sink.rs`) and the
//! end-to-end publisher (`examples/publish_sink_input.rs`): aggregates shaped
//! like the aggregator's (a ticket aggregate carries its eight dimensions)
//! and events of the three kinds, one third each, all valid.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use meter_model::*;
use rust_decimal::Decimal;

const TENANTS: usize = 50;

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01T00:00:00Z
}

/// The `i`-th aggregate: distinct ids, the four periods, the three kinds,
/// windows of one billing month (one ClickHouse partition, as live traffic;
/// a batch spread over many months writes one part per month).
pub fn aggregate(i: usize) -> Aggregate {
    let tenant = format!("tenant-{:02}", i % TENANTS);
    let kind = [EventKind::TicketTime, EventKind::CheckResult, EventKind::VmUsage][i % 3];
    let period = Period::ALL[i / 3 % 4];
    let day = start() + Duration::days((i / 12 % 31) as i64);
    let mut dimensions = BTreeMap::new();
    let (metric, unit) = match kind {
        EventKind::TicketTime => {
            for (k, v) in [
                ("application", "Sage".to_string()),
                ("category", "RUN > MCO > servers".to_string()),
                ("country", "FR".to_string()),
                ("in_scope", "true".to_string()),
                ("requester", format!("user{}", i % 10)),
                ("technician", format!("tech{}", i % 8)),
                ("technician_profile", "ENGINEER".to_string()),
                ("ticket_type", if i.is_multiple_of(2) { "INCIDENT" } else { "REQUEST" }.to_string()),
            ] {
                dimensions.insert(k.to_string(), v);
            }
            ("ticket.time", "minute")
        }
        EventKind::CheckResult => {
            dimensions.insert("check_name".into(), format!("Backup jobs {}", i % 7));
            dimensions.insert("frequency".into(), "DAILY".into());
            dimensions.insert("status".into(), "OK".into());
            ("check.runs", "run")
        }
        EventKind::VmUsage => {
            dimensions.insert("datacenter".into(), "PAR1".into());
            dimensions.insert("sla_tier".into(), "SLA_99_9".into());
            ("vm.vcpu_hours", "vCPU-hour")
        }
    };
    Aggregate {
        aggregate_id: format!("{i:032x}"),
        revision: 1 + (i % 5) as i64,
        is_final: i.is_multiple_of(10),
        kind,
        tenant: tenant.clone(),
        subsidiary: format!("{tenant}-{}", ["a", "b", "c"][i % 3]),
        domain: "infrastructure".into(),
        period,
        time_zone: "Europe/Paris".into(),
        window_start: day,
        window_end: day + Duration::days(1),
        window_label: day.format("%Y-%m-%d").to_string(),
        metric: metric.into(),
        unit: unit.into(),
        dimensions,
        quantity: Decimal::new(1_234_567 + i as i64, 6),
        event_count: 1 + (i % 40) as i64,
        incident_count: (i % 3) as i64,
        request_count: (i % 2) as i64,
        ok_count: 0,
        warning_count: 0,
        ko_count: 0,
        unknown_count: 0,
        missed_count: 0,
        cost: Decimal::new(98_765_432 + i as i64, 6),
        currency: "EUR".into(),
        price_book_version: "2026-01".into(),
        emitted_at: day + Duration::hours(30),
    }
}

fn header(i: usize) -> EventHeader {
    let tenant = format!("tenant-{:02}", i % TENANTS);
    let at = start() + Duration::seconds(i as i64 * 13);
    EventHeader {
        event_id: format!("bench-{i}"),
        source: "bench".into(),
        subsidiary: format!("{tenant}-{}", ["a", "b", "c"][i % 3]),
        tenant,
        domain: "infrastructure".into(),
        event_time: at,
        ingest_time: at + Duration::seconds(5),
        version: 0,
        deleted: false,
    }
}

/// The `i`-th event: a ticket task, a check run or a VM sample in turn.
pub fn event(i: usize) -> Event {
    let header = header(i);
    match i % 3 {
        0 => Event::TicketTime(TicketTime {
            header,
            ticket_id: format!("T{}", i / 4),
            task_id: i.to_string(),
            ticket_type: if i.is_multiple_of(2) { TicketType::Incident } else { TicketType::Request },
            category_path: vec!["RUN".into(), "MCO".into(), "servers".into()],
            in_scope: true,
            requester: format!("user{}", i % 10),
            technician: format!("tech{}", i % 8),
            technician_profile: TechnicianProfile::Engineer,
            application: Some("Sage".into()),
            country: Some("FR".into()),
            minutes_worked: 1 + (i % 90) as i32,
            start_time: DateTime::from_timestamp(1_767_225_000, 0).unwrap_or_default(),
        }),
        1 => Event::CheckResult(CheckResult {
            scheduled_time: Some(header.event_time),
            executed_time: Some(header.event_time),
            header,
            check_id: format!("check-{}", i % 7),
            check_name: format!("Backup jobs {}", i % 7),
            target: "srv-01".into(),
            frequency: CheckFrequency::Daily,
            status: CheckStatus::Ok,
            ticket_ref: None,
            time_spent_minutes: 5,
            output: Some("all jobs succeeded".into()),
        }),
        _ => Event::VmUsage(VmUsage {
            header,
            vm_id: format!("vm-{}", i % 100),
            vcpu: 4,
            ram_mib: 8192,
            storage_gb: 100,
            bandwidth_mbps: 200,
            guaranteed_bandwidth: false,
            public_ips: 1,
            sla_tier: SlaTier::Sla99_9,
            options: vec!["backup".into()],
            datacenter: "PAR1".into(),
            transition: VmTransition::Sample,
            sample_interval_seconds: 300,
        }),
    }
}
