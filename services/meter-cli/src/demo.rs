//! Demo input built from the figures in DOMAIN.md, written as the JSON-lines
//! files the file collector reads. Deterministic: the same files every run.
//!
//! - acme (Europe/Paris, 8-hour contract days): January 2026 = 27 days of
//!   ticket time (20 incidents, 7 requests), of which backups 2.18 days and
//!   Hyper-V servers 2.47 days; January 2025 = 16 days (9 incidents, 8
//!   requests), backups 0.16 days, Hyper-V 0. In February 2026, the logged
//!   actions of 2.75 h, 0.08 h and 1.83 h.
//! - acme's scheduled checks in January 2026: daily Office 365 and backup
//!   jobs, weekly Active Directory, Exchange and firewall; two KO with their
//!   ticket, one weekly run missed.
//! - initech (UTC): a VM with 4 vCPU from 22:00 to 02:00, and hourly samples
//!   of two VMs over three days.
//! - one malformed line in the ticket file, to show how it is reported.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

struct Ticket<'a> {
    year: i32,
    incidents: usize,
    requests: usize,
    /// (category path, minutes, tickets): a category's minutes are spread
    /// over its own tickets (a ticket has one category).
    work: &'a [(&'a [&'a str], i64, usize)],
}

fn ticket_lines() -> Vec<Value> {
    let backups: &[&str] = &["RUN", "MCO", "backups"];
    let hyperv: &[&str] = &["RUN", "MCO", "servers", "Hyper-V"];
    let workstations: &[&str] = &["RUN", "support", "workstations"];
    let network: &[&str] = &["RUN", "MCO", "network"];
    let months = [
        // 16 days = 7680 min: backups 0.16 day (77 min), no Hyper-V.
        Ticket { year: 2025, incidents: 9, requests: 8, work: &[(backups, 77, 1), (workstations, 5000, 10), (network, 2603, 6)] },
        // 27 days = 12960 min: backups 2.18 days (1046 min), Hyper-V 2.47 days (1186 min).
        Ticket {
            year: 2026,
            incidents: 20,
            requests: 7,
            work: &[(backups, 1046, 2), (hyperv, 1186, 3), (workstations, 7000, 14), (network, 3728, 8)],
        },
    ];
    let technicians = [("bob", "ENGINEER"), ("carol", "ADMINISTRATOR"), ("dave", "CONSULTANT"), ("erin", "ARCHITECT")];
    let subsidiaries = ["acme-fr", "acme-de"];
    let mut lines = Vec::new();
    let mut task_id = 0u32;
    for month in &months {
        debug_assert_eq!(month.work.iter().map(|w| w.2).sum::<usize>(), month.incidents + month.requests);
        let mut first_ticket = 0usize;
        for (category, total, count) in month.work {
            // Tasks of at most 3 hours, each on the category's next ticket in turn.
            let mut left = *total;
            let mut n = 0usize;
            while left > 0 {
                let minutes = left.min(180);
                left -= minutes;
                let t = first_ticket + n % count;
                n += 1;
                task_id += 1;
                let kind = if t < month.incidents { "INCIDENT" } else { "REQUEST" };
                // Working days of January, 08:00-18:00 Paris, in order.
                let day = 2 + (task_id as i64 % 27);
                let start = Utc.with_ymd_and_hms(month.year, 1, 1, 7, 0, 0).single().unwrap_or_default()
                    + Duration::days(day)
                    + Duration::minutes(task_id as i64 % 120);
                let (technician, profile) = technicians[task_id as usize % technicians.len()];
                lines.push((start, task_line(task_id, month.year, t, kind, category, subsidiaries[t % 2], technician, profile, minutes, start)));
            }
            first_ticket += count;
        }
    }
    // DOMAIN.md's logged actions, in February: 2.75 h, 0.08 h (a 5-minute answer), 1.83 h.
    for (i, minutes) in [165i64, 5, 110].into_iter().enumerate() {
        task_id += 1;
        let start = Utc.with_ymd_and_hms(2026, 2, 3, 8 + 3 * i as u32, 0, 0).single().unwrap_or_default();
        lines.push((start, task_line(task_id, 2026, 99, "REQUEST", &["RUN", "support", "software"], "acme-fr", "bob", "ENGINEER", minutes, start)));
    }
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, v)| v).collect()
}

#[allow(clippy::too_many_arguments)]
fn task_line(
    task_id: u32,
    year: i32,
    ticket: usize,
    kind: &str,
    category: &[&str],
    subsidiary: &str,
    technician: &str,
    profile: &str,
    minutes: i64,
    start: DateTime<Utc>,
) -> Value {
    let domain = if category.contains(&"network") { "network" } else if category.contains(&"workstations") { "workstation" } else { "infrastructure" };
    json!({
        "event_id": format!("task-{task_id}"),
        "source": "glpi-demo",
        "tenant": "acme",
        "subsidiary": subsidiary,
        "domain": domain,
        "event_time": (start + Duration::minutes(minutes)).to_rfc3339(),
        "ticket_id": format!("{year}-{:03}", ticket + 1),
        "task_id": task_id.to_string(),
        "ticket_type": kind,
        "category_path": category,
        "in_scope": !category.contains(&"software"),
        "requester": if ticket % 3 == 0 { "marie.dupont" } else { "jean.martin" },
        "technician": technician,
        "technician_profile": profile,
        "application": if category.contains(&"software") { Some("Sage") } else { None },
        "country": if subsidiary == "acme-de" { "DE" } else { "FR" },
        "minutes_worked": minutes,
        "start_time": start.to_rfc3339(),
    })
}

fn check_lines() -> Vec<Value> {
    let mut lines = Vec::new();
    let jan = |d: i64, h: u32| Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).single().unwrap_or_default() + Duration::days(d - 1);
    let mut n = 0;
    let mut push = |at: DateTime<Utc>, id: &str, name: &str, freq: &str, status: &str, ticket: Option<&str>| {
        n += 1;
        let executed = (status != "MISSED").then(|| at.to_rfc3339());
        lines.push((at, json!({
            "event_id": format!("check-{n}"), "source": "icinga-demo", "tenant": "acme", "subsidiary": "acme-fr",
            "domain": "infrastructure", "event_time": at.to_rfc3339(), "check_id": id, "check_name": name,
            "target": format!("{id}.acme.local"), "frequency": freq, "scheduled_time": at.to_rfc3339(),
            "executed_time": executed, "status": status, "ticket_ref": ticket, "time_spent_minutes": 10,
            "output": format!("{name}: {status}"),
        })));
    };
    for day in 1..=31 {
        push(jan(day, 6), "o365", "Office 365", "DAILY", "OK", None);
        let backup_ko = day == 14;
        push(jan(day, 7), "backup", "Backup jobs", "DAILY", if backup_ko { "KO" } else { "OK" }, backup_ko.then_some("2026-014"));
    }
    for (week, monday) in [5i64, 12, 19, 26].into_iter().enumerate() {
        push(jan(monday, 9), "ad", "Active Directory", "WEEKLY", "OK", None);
        push(jan(monday, 10), "exchange", "Exchange", "WEEKLY", if week == 2 { "KO" } else { "OK" }, (week == 2).then_some("2026-019"));
        push(jan(monday, 11), "firewall", "Firewall", "WEEKLY", if week == 3 { "MISSED" } else { "OK" }, None);
    }
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, v)| v).collect()
}

fn vm_lines() -> Vec<Value> {
    let mut lines = Vec::new();
    let vm = |id: &str, vm_id: &str, at: DateTime<Utc>, transition: &str, vcpu: i64, ram: i64, interval: i64, tier: &str| {
        json!({
            "event_id": id, "source": "openstack-demo", "tenant": "initech", "subsidiary": "initech-hq",
            "domain": "infrastructure", "event_time": at.to_rfc3339(), "vm_id": vm_id, "vcpu": vcpu, "ram_mib": ram,
            "storage_gb": 100, "bandwidth_mbps": 100, "guaranteed_bandwidth": vm_id == "web-1", "public_ips": 1,
            "sla_tier": tier, "options": if vm_id == "web-1" { vec!["load_balancer", "backup"] } else { vec!["backup"] },
            "datacenter": "PAR1", "transition": transition, "sample_interval_seconds": interval,
        })
    };
    let t0 = Utc.with_ymd_and_hms(2026, 1, 12, 0, 0, 0).single().unwrap_or_default();
    let mut events = vec![
        (t0 + Duration::hours(22), vm("batch-1-start", "batch-1", t0 + Duration::hours(22), "START", 4, 8192, 0, "SLA_99_7")),
        (t0 + Duration::hours(26), vm("batch-1-stop", "batch-1", t0 + Duration::hours(26), "STOP", 4, 8192, 0, "SLA_99_7")),
    ];
    for hour in 1..=72 {
        let at = t0 + Duration::hours(hour);
        events.push((at, vm(&format!("web-1-{hour}"), "web-1", at, "SAMPLE", 2, 4096, 3600, "SLA_99_99")));
        events.push((at, vm(&format!("db-1-{hour}"), "db-1", at, "SAMPLE", if hour > 36 { 8 } else { 4 }, 16384, 3600, "SLA_99_9")));
    }
    events.sort_by_key(|(t, _)| *t);
    lines.extend(events.into_iter().map(|(_, v)| v));
    lines
}

/// Writes the three demo files; returns (kind, path, events).
pub fn generate(out: &Path) -> Result<Vec<(&'static str, PathBuf, usize)>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for (kind, file, lines, bad) in [
        ("ticket-time", "ticket-time.jsonl", ticket_lines(), Some("{\"event_id\": \"broken\", this line is not JSON")),
        ("check-result", "check-result.jsonl", check_lines(), None),
        ("vm-usage", "vm-usage.jsonl", vm_lines(), None),
    ] {
        let path = out.join(file);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for (i, line) in lines.iter().enumerate() {
            if i == 3 {
                if let Some(bad) = bad {
                    writeln!(f, "{bad}")?;
                }
            }
            writeln!(f, "{line}")?;
        }
        f.flush()?;
        written.push((kind, path, lines.len()));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minutes in a contract day for the demo tenant.
    const DAY_MINUTES: i64 = 480;

    fn minutes(lines: &[Value], year: &str, category: Option<&str>) -> i64 {
        lines
            .iter()
            .filter(|l| l["ticket_id"].as_str().unwrap().starts_with(year))
            .filter(|l| l["ticket_id"].as_str().unwrap() != format!("{year}-100"))
            .filter(|l| category.is_none_or(|c| l["category_path"].as_array().unwrap().iter().any(|p| p == c)))
            .map(|l| l["minutes_worked"].as_i64().unwrap())
            .sum()
    }

    #[test]
    fn demo_tickets_reproduce_the_domain_january_figures() {
        let lines = ticket_lines();
        let days = |m: i64| (m as f64 / DAY_MINUTES as f64 * 100.0).round() / 100.0;
        assert_eq!(minutes(&lines, "2026", None), 27 * DAY_MINUTES);
        assert_eq!(minutes(&lines, "2025", None), 16 * DAY_MINUTES);
        assert_eq!(days(minutes(&lines, "2026", Some("backups"))), 2.18);
        assert_eq!(days(minutes(&lines, "2025", Some("backups"))), 0.16);
        assert_eq!(days(minutes(&lines, "2026", Some("Hyper-V"))), 2.47);
        assert_eq!(minutes(&lines, "2025", Some("Hyper-V")), 0);
        for (year, incidents, requests) in [("2026", 20, 7), ("2025", 9, 8)] {
            let tickets = |kind: &str| {
                let mut ids: Vec<&str> = lines
                    .iter()
                    .filter(|l| l["ticket_id"].as_str().unwrap().starts_with(year) && l["ticket_type"] == kind)
                    .filter(|l| l["ticket_id"].as_str().unwrap() != format!("{year}-100"))
                    .map(|l| l["ticket_id"].as_str().unwrap())
                    .collect();
                ids.sort();
                ids.dedup();
                ids.len()
            };
            assert_eq!((tickets("INCIDENT"), tickets("REQUEST")), (incidents, requests), "{year}");
        }
    }
}
