//! A known set of events of all three kinds goes through the real pipeline:
//! `meter collect file` (one process per file) -> Tansu -> `meter aggregate`
//! -> aggregate topic -> `meter sink clickhouse` -> ClickHouse. The daily
//! totals in ClickHouse, and the latest revisions on the aggregate topic,
//! must equal to the cent the totals this test computes on its own from the
//! same events. Bad lines are reported with their number and dead-lettered;
//! duplicated lines count once.

use std::collections::BTreeMap;

use aggregator::pricing::PriceBook;
use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::{Aggregate, DeadLetter, EventCodec, Period};
use meter_tests::TestEnv;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

/// Deterministic pseudo-random numbers (a test needs the same input every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next(items.len() as u64) as usize]
    }
}

/// Identity of one aggregate: (tenant, subsidiary, domain, kind, local day, metric, dimensions).
type Key = (String, String, String, String, String, String, String);
/// (base quantity, cost numerator, quantity divisor, cost divisor, events)
type Acc = (Decimal, Decimal, Decimal, Decimal, i64);

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
type DayTotals = BTreeMap<(String, String, String, String, String), (Decimal, Decimal, i64)>;

fn day_totals(expected: &BTreeMap<Key, Acc>) -> DayTotals {
    let mut out = DayTotals::new();
    for ((tenant, sub, domain, kind, day, _, _), (base, num, qdiv, div, n)) in expected {
        let e = out.entry((tenant.clone(), sub.clone(), domain.clone(), kind.clone(), day.clone())).or_default();
        e.0 += (base / qdiv).round_dp(6);
        e.1 += (num / div).round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
        e.2 += n;
    }
    out
}

struct Input {
    tickets: Vec<Value>,
    checks: Vec<Value>,
    vms: Vec<Value>,
    expected: BTreeMap<Key, Acc>,
}

fn build_input(book: &PriceBook) -> Input {
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

fn write_lines(path: &std::path::Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_daily_totals_equal_the_totals_computed_from_the_raw_events() {
    let env = TestEnv::new("e2e").await;
    let book = PriceBook::load(&env.config.price_book).unwrap();
    let input = build_input(&book);

    // Ticket file: every task, each 10th one sent twice (a collector retry),
    // and three bad lines at known line numbers.
    let mut ticket_lines = Vec::new();
    let mut bad_lines = Vec::new();
    for (i, t) in input.tickets.iter().enumerate() {
        ticket_lines.push(t.to_string());
        if i % 10 == 0 {
            ticket_lines.push(t.to_string());
        }
        if i == 50 {
            ticket_lines.push("{\"event_id\": \"x\", not json".into());
            bad_lines.push((ticket_lines.len() as i64, "malformed_json"));
            let mut typo = t.clone();
            typo.as_object_mut().unwrap().insert("minutes".into(), json!(3));
            ticket_lines.push(typo.to_string());
            bad_lines.push((ticket_lines.len() as i64, "unknown_field"));
            let mut zero = t.clone();
            zero["event_id"] = json!("zero-minutes");
            zero["minutes_worked"] = json!(0);
            ticket_lines.push(zero.to_string());
            bad_lines.push((ticket_lines.len() as i64, "invalid_event"));
        }
    }
    let dir = env.dir.path();
    write_lines(&dir.join("tickets.jsonl"), &ticket_lines);
    write_lines(&dir.join("checks.jsonl"), &input.checks.iter().map(|v| v.to_string()).collect::<Vec<_>>());
    write_lines(&dir.join("vms.jsonl"), &input.vms.iter().map(|v| v.to_string()).collect::<Vec<_>>());

    env.meter(&["migrate"]);
    let out = env.meter(&["collect", "file", "--kind", "ticket-time", dir.join("tickets.jsonl").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(&format!("{} lines read, {} published, 3 rejected", ticket_lines.len(), ticket_lines.len() - 3)), "{report}");
    for (line, reason) in &bad_lines {
        assert!(report.contains(&format!("line {line}: {reason}")), "line {line} ({reason}) not reported:\n{report}");
    }
    env.meter(&["collect", "file", "--kind", "check-result", dir.join("checks.jsonl").to_str().unwrap()]);
    env.meter(&["collect", "file", "--kind", "vm-usage", dir.join("vms.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "3"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "3"]);

    let expected = day_totals(&input.expected);
    assert!(expected.len() > 50, "the scenario covers many (tenant, subsidiary, domain, kind, day) cells");

    // ClickHouse: latest revision of each daily aggregate, summed per cell.
    let rows: Vec<(String, String, String, String, String, String, String, u64)> = env
        .clickhouse()
        .query(
            "SELECT tenant, subsidiary, domain, kind, toString(window_date), toString(sum(quantity)), toString(sum(cost)), sum(event_count) \
             FROM aggregates FINAL WHERE period = 'DAY' GROUP BY tenant, subsidiary, domain, kind, window_date",
        )
        .fetch_all()
        .await
        .unwrap();
    let got: DayTotals = rows
        .into_iter()
        .map(|(t, s, d, k, day, q, c, n)| ((t, s, d, k, day), (q.parse().unwrap(), c.parse().unwrap(), n as i64)))
        .collect();
    assert_eq!(got.len(), expected.len(), "same set of (tenant, subsidiary, domain, kind, day) cells");
    for (cell, want) in &expected {
        let have = got.get(cell).unwrap_or_else(|| panic!("{cell:?} missing in ClickHouse"));
        assert_eq!(have.0.normalize(), want.0.normalize(), "quantity of {cell:?}");
        assert_eq!(have.1.normalize(), want.1.normalize(), "cost of {cell:?}");
        assert_eq!(have.2, want.2, "event count of {cell:?}");
    }
    let grand: Decimal = expected.values().map(|v| v.1).sum();
    assert!(grand > Decimal::from(1000), "a meaningful bill: {grand}");

    // Aggregate topic: the latest revision of each daily aggregate gives the same totals.
    let mut latest: BTreeMap<String, Aggregate> = BTreeMap::new();
    for (key, payload, _) in env.read_topic(&env.config.topics.aggregates) {
        let a: Aggregate = EventCodec::decode(&payload).unwrap();
        assert_eq!(key.as_deref(), Some(a.aggregate_id.as_str()), "aggregates are keyed by their id");
        if latest.get(&a.aggregate_id).is_none_or(|b| (a.revision, a.is_final) > (b.revision, b.is_final)) {
            latest.insert(a.aggregate_id.clone(), a);
        }
    }
    let mut from_topic = DayTotals::new();
    for a in latest.values().filter(|a| a.period == Period::Day) {
        let e = from_topic
            .entry((a.tenant.clone(), a.subsidiary.clone(), a.domain.clone(), a.kind.symbol().to_string(), a.window_label.clone()))
            .or_default();
        e.0 += a.quantity;
        e.1 += a.cost;
        e.2 += a.event_count;
    }
    assert_eq!(from_topic.len(), expected.len());
    for (cell, want) in &expected {
        let have = &from_topic[cell];
        assert_eq!((have.0.normalize(), have.1.normalize(), have.2), (want.0.normalize(), want.1.normalize(), want.2), "{cell:?} on the topic");
    }

    // Dead letters: the three bad lines, with their original bytes and line numbers.
    let letters: Vec<DeadLetter> =
        env.read_topic(&env.config.topics.dead_letters).iter().map(|(_, p, _)| EventCodec::decode(p).unwrap()).collect();
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (line, reason) in &bad_lines {
        let letter = letters.iter().find(|l| l.source_line == Some(*line)).unwrap_or_else(|| panic!("no dead letter for line {line}"));
        assert_eq!(letter.error_kind, *reason);
        assert_eq!(String::from_utf8_lossy(&letter.original).trim_end(), ticket_lines[*line as usize - 1]);
    }
}
