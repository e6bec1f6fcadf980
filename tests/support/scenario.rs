//! The shared test scenario: events of the three kinds with known content,
//! and the totals expected from them, computed here independently of the
//! pipeline's code (only the price lookup is shared).

use std::collections::BTreeMap;

use aggregator::pricing::PriceBook;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

/// Deterministic pseudo-random numbers (a test needs the same input every run).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next(items.len() as u64) as usize]
    }
}

/// Identity of one aggregate: (tenant, subsidiary, domain, kind, local day, metric, dimensions).
pub type Key = (String, String, String, String, String, String, String);
/// (base quantity, cost numerator, quantity divisor, cost divisor, events)
pub type Acc = (Decimal, Decimal, Decimal, Decimal, i64);

fn local_day(tenant: &str, t: DateTime<Utc>) -> String {
    let tz: chrono_tz::Tz = if tenant == "acme" { chrono_tz::Europe::Paris } else { chrono_tz::UTC };
    t.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

fn add(expected: &mut BTreeMap<Key, Acc>, key: Key, base: Decimal, numerator: Decimal, qdiv: Decimal, div: Decimal) {
    let e = expected.entry(key).or_insert((Decimal::ZERO, Decimal::ZERO, qdiv, div, 0));
    e.0 += base;
    e.1 += numerator;
    e.4 += 1;
}

/// Per (tenant, subsidiary, domain, kind, day): (quantity, cost, events).
pub type DayTotals = BTreeMap<(String, String, String, String, String), (Decimal, Decimal, i64)>;

pub fn day_totals(expected: &BTreeMap<Key, Acc>) -> DayTotals {
    let mut out = DayTotals::new();
    for ((tenant, sub, domain, kind, day, _, _), (base, num, qdiv, div, n)) in expected {
        let e = out.entry((tenant.clone(), sub.clone(), domain.clone(), kind.clone(), day.clone())).or_default();
        e.0 += (base / qdiv).round_dp(6);
        e.1 += (num / div).round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
        e.2 += n;
    }
    out
}

pub struct Input {
    pub tickets: Vec<Value>,
    pub checks: Vec<Value>,
    pub vms: Vec<Value>,
    pub expected: BTreeMap<Key, Acc>,
}

pub fn build_input(book: &PriceBook) -> Input {
    let mut rng = Lcg(20240325);
    let mut expected = BTreeMap::new();
    let start = Utc.with_ymd_and_hms(2024, 3, 25, 0, 0, 0).unwrap();

    // Ticket time: Paris tenant across the DST change and the month end, and
    // a UTC tenant with a price override.
    let mut tickets = Vec::new();
    for i in 0..400 {
        let tenant = *rng.pick(&["acme", "globex"]);
        let sub = format!("{tenant}-{}", rng.pick(&["fr", "de"]));
        let domain = *rng.pick(&["infrastructure", "network", "workstation"]);
        let at = start + Duration::minutes(i * 41 + rng.next(30) as i64);
        let minutes = 1 + rng.next(240) as i64;
        let profile = *rng.pick(&["ADMINISTRATOR", "ENGINEER", "CONSULTANT", "ARCHITECT"]);
        let kind = *rng.pick(&["INCIDENT", "REQUEST"]);
        let category = rng.pick(&[vec!["RUN", "MCO", "backups"], vec!["RUN", "MCO", "servers", "Hyper-V"], vec!["BUILD", "projects"]]).clone();
        let app = *rng.pick(&[None, Some("Sage")]);
        tickets.push(json!({
            "event_id": format!("task-{i}"), "source": "glpi-test", "tenant": tenant, "subsidiary": sub, "domain": domain,
            "event_time": at.to_rfc3339(), "ticket_id": format!("T{}", i / 3), "task_id": i.to_string(), "ticket_type": kind,
            "category_path": category, "in_scope": i % 7 != 0, "requester": "alice", "technician": "bob",
            "technician_profile": profile, "application": app, "country": "FR", "minutes_worked": minutes,
            "start_time": (at - Duration::minutes(minutes)).to_rfc3339(),
        }));
        let rate = book.prices_at(tenant, at).unwrap().ticket_hour
            [&serde_json::from_value(json!(profile)).unwrap()];
        let dims = format!("{kind}|{}|{}|{}|alice|bob|{profile}|FR", category.join(" > "), i % 7 != 0, app.unwrap_or(""));
        let m = Decimal::from(minutes);
        add(&mut expected, (tenant.into(), sub, domain.into(), "TICKET_TIME".into(), local_day(tenant, at), "ticket.time".into(), dims),
            m, m * rate, Decimal::ONE, Decimal::from(60));
    }

    // Check runs, priced per run by frequency; missed runs are free.
    let mut checks = Vec::new();
    for i in 0..150 {
        let at = start + Duration::minutes(i * 97);
        let (name, freq) = *rng.pick(&[("Office 365", "DAILY"), ("Active Directory", "WEEKLY"), ("Audit", "YEARLY")]);
        let status = *rng.pick(&["OK", "OK", "OK", "KO", "WARNING", "MISSED"]);
        let executed = (status != "MISSED").then(|| at.to_rfc3339());
        checks.push(json!({
            "event_id": format!("check-{i}"), "source": "icinga-test", "tenant": "acme", "subsidiary": "acme-fr",
            "domain": "infrastructure", "event_time": at.to_rfc3339(), "check_id": name, "check_name": name, "target": "srv",
            "frequency": freq, "scheduled_time": at.to_rfc3339(), "executed_time": executed, "status": status,
            "ticket_ref": (status == "KO").then(|| format!("T-{i}")), "time_spent_minutes": 5,
        }));
        let price = if status == "MISSED" {
            Decimal::ZERO
        } else {
            book.prices_at("acme", at).unwrap().check_run[&serde_json::from_value(json!(freq)).unwrap()]
        };
        add(&mut expected, ("acme".into(), "acme-fr".into(), "infrastructure".into(), "CHECK_RESULT".into(), local_day("acme", at),
            "check.runs".into(), format!("{name}|{freq}")), Decimal::ONE, price, Decimal::ONE, Decimal::ONE);
    }

    // VM samples every 30 minutes, some crossing midnight, UTC tenant.
    let mut vms = Vec::new();
    for (n, (vm, vcpu, ram, tier, options)) in [
        ("web-1", 2i64, 4096i64, "SLA_99_99", vec!["load_balancer"]),
        ("db-1", 8, 32768, "SLA_99_9", vec!["backup", "firewall"]),
        ("batch-1", 4, 8192, "SLA_99_7", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        for s in 0..96 {
            let end = start + Duration::minutes(15 + 30 * s);
            vms.push(json!({
                "event_id": format!("{vm}-{s}"), "source": "openstack-test", "tenant": "initech", "subsidiary": "initech-hq",
                "domain": "infrastructure", "event_time": end.to_rfc3339(), "vm_id": vm, "vcpu": vcpu, "ram_mib": ram,
                "storage_gb": 50 * (n as i64 + 1), "bandwidth_mbps": 100, "guaranteed_bandwidth": n == 0, "public_ips": n,
                "sla_tier": tier, "options": options, "datacenter": "PAR1", "transition": "SAMPLE", "sample_interval_seconds": 1800,
            }));
            let prices = book.prices_at("initech", end).unwrap();
            let sla = prices.sla_multiplier[&serde_json::from_value(json!(tier)).unwrap()];
            let from = end - Duration::minutes(30);
            // Split at UTC midnight, by hand.
            let midnight = Utc.from_utc_datetime(&end.date_naive().and_hms_opt(0, 0, 0).unwrap());
            let pieces = if from < midnight { vec![(from, midnight), (midnight, end)] } else { vec![(from, end)] };
            for (a, b) in pieces {
                let secs = Decimal::from((b - a).num_seconds());
                let day = a.format("%Y-%m-%d").to_string();
                let hour = Decimal::from(3600);
                let bw = if n == 0 { prices.bandwidth_mbps_hour * prices.guaranteed_bandwidth_multiplier } else { prices.bandwidth_mbps_hour };
                let mut parts = vec![
                    ("vm.vcpu", Decimal::from(vcpu), prices.vcpu_hour * sla, hour, String::new()),
                    ("vm.ram", Decimal::from(ram), prices.ram_gib_hour * sla, hour * Decimal::from(1024), String::new()),
                    ("vm.storage", Decimal::from(50 * (n as i64 + 1)), prices.storage_gb_hour * sla, hour, String::new()),
                    ("vm.public_ip", Decimal::from(n as i64), prices.public_ip_hour, hour, String::new()),
                    ("vm.bandwidth", Decimal::from(100), bw, hour, String::new()),
                ];
                for o in &options {
                    parts.push(("vm.option", Decimal::ONE, prices.option_hour[*o], hour, o.to_string()));
                }
                for (metric, amount, price, div, option) in parts {
                    if amount.is_zero() {
                        continue;
                    }
                    let base = amount * secs;
                    add(&mut expected, ("initech".into(), "initech-hq".into(), "infrastructure".into(), "VM_USAGE".into(), day.clone(),
                        metric.into(), format!("{tier}|PAR1|{option}")), base, base * price, div, div);
                }
            }
        }
    }
    tickets.sort_by_key(|v| v["event_time"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap());
    checks.sort_by_key(|v| v["event_time"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap());
    vms.sort_by_key(|v| v["event_time"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap());
    Input { tickets, checks, vms, expected }
}

pub fn write_lines(path: &std::path::Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

