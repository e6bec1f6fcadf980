//! Billing-grade event time on the real broker and ClickHouse: DOMAIN.md's
//! January example fed in random orders (open months live, closed months
//! with `--backfill`), corrections and deletions, a rebuild from offset 0
//! compared byte for byte with the live run across a close, a silent
//! partition that closes after a restart, and VMs billed every hour they ran.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use meter_model::{Aggregate, EventCodec, Period};
use meter_tests::scenario::{write_lines, Lcg};
use meter_tests::TestEnv;
use rust_decimal::Decimal;
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn shuffled(mut lines: Vec<String>, seed: u64) -> Vec<String> {
    let mut rng = Lcg(seed);
    for i in (1..lines.len()).rev() {
        let j = rng.next(i as u64 + 1) as usize;
        lines.swap(i, j);
    }
    lines
}

/// Latest revision of each aggregate on the aggregate topic.
fn latest_on_topic(env: &TestEnv) -> BTreeMap<String, Aggregate> {
    let mut latest: BTreeMap<String, Aggregate> = BTreeMap::new();
    for (_, payload, _) in env.read_topic(&env.config.topics.aggregates) {
        let a: Aggregate = EventCodec::decode(&payload).unwrap();
        if latest.get(&a.aggregate_id).is_none_or(|b| a.revision >= b.revision) {
            latest.insert(a.aggregate_id.clone(), a);
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread")]
async fn the_january_example_in_any_order_gives_the_domain_figures() {
    let _serial = serial();
    for seed in [11u64, 4242] {
        let mut env = TestEnv::new("january").await;
        // acme keeps January 2026 open 400 days; January 2025 is closed.
        env.config.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: "Europe/Paris".parse().expect("an IANA zone"), period_grace_days: Some(400) });
        env.save_config();
        let dir = env.dir.path().join("demo");
        env.meter(&["migrate"]);
        env.meter(&["demo", "generate", "--out", dir.to_str().unwrap()]);
        let tickets: Vec<String> = std::fs::read_to_string(dir.join("ticket-time.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"tenant\":\"acme\"") || l.contains("\"tenant\": \"acme\""))
            .map(String::from)
            .collect();
        let (y2025, y2026): (Vec<String>, Vec<String>) = tickets.into_iter().partition(|l| l.contains("\"event_time\":\"2025-"));
        assert!(y2025.len() > 10 && y2026.len() > 10, "{} {}", y2025.len(), y2026.len());
        let open_file = env.dir.path().join("2026.jsonl");
        let closed_file = env.dir.path().join("2025.jsonl");
        write_lines(&open_file, &shuffled(y2026, seed));
        write_lines(&closed_file, &shuffled(y2025, seed + 1));
        env.meter(&["collect", "file", "--kind", "ticket-time", open_file.to_str().unwrap()]);
        let out = env.meter(&[
            "collect", "file", "--kind", "ticket-time", "--backfill", "--requested-by", "onboarding@example.com",
            "--reason", "history of acme", closed_file.to_str().unwrap(),
        ]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("backfill re-rated"), "{}", String::from_utf8_lossy(&out.stdout));
        env.meter(&["aggregate", "--until-idle", "2"]);
        env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
        let ch = env.clickhouse();
        let days: Vec<(u16, String)> = ch
            .query("SELECT year, toString(sum(minutes) / 480) FROM seasonality_monthly WHERE tenant = 'acme' AND month_of_year = 1 GROUP BY year ORDER BY year")
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(days.iter().map(|(y, d)| (*y, dec(d))).collect::<Vec<_>>(), vec![(2025, dec("16")), (2026, dec("27"))], "seed {seed}");
        for (filter, expected) in [
            ("category LIKE '%backups%'", vec![(2025, dec("0.16")), (2026, dec("2.18"))]),
            ("category LIKE '%Hyper-V%'", vec![(2026, dec("2.47"))]),
        ] {
            let rows: Vec<(u16, String)> = ch
                .query(&format!(
                    "SELECT year, toString(round(sum(minutes) / 480, 2)) FROM seasonality_monthly \
                     WHERE tenant = 'acme' AND month_of_year = 1 AND {filter} GROUP BY year ORDER BY year"
                ))
                .fetch_all()
                .await
                .unwrap();
            assert_eq!(rows.into_iter().map(|(y, d)| (y, dec(&d))).collect::<Vec<_>>(), expected, "{filter}, seed {seed}");
        }
        // The detail tables agree with the totals: ticket counts from the drill-down rows.
        let counts: Vec<(u16, String, u64)> = ch
            .query("SELECT year, ticket_type, sum(tickets) FROM tickets_monthly WHERE tenant = 'acme' AND month_of_year = 1 GROUP BY year, ticket_type ORDER BY year, ticket_type")
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(
            counts,
            vec![(2025, "INCIDENT".into(), 9), (2025, "REQUEST".into(), 8), (2026, "INCIDENT".into(), 20), (2026, "REQUEST".into(), 7)],
            "seed {seed}"
        );
        let log: Vec<(String, String)> = ch.query("SELECT requested_by, reason FROM reprocess_log").fetch_all().await.unwrap();
        assert_eq!(log, vec![("onboarding@example.com".to_string(), "backfill: history of acme".to_string())]);
    }
}

fn ticket(id: &str, tenant: &str, at: DateTime<Utc>, minutes: i64, version: i64, deleted: bool) -> Value {
    json!({
        "event_id": id, "source": "glpi-main", "tenant": tenant, "subsidiary": format!("{tenant}-hq"), "domain": "infrastructure",
        "event_time": at.to_rfc3339(), "ticket_id": format!("T-{id}"), "task_id": id, "ticket_type": "INCIDENT",
        "category_path": ["RUN", "MCO"], "in_scope": true, "requester": "alice", "technician": "bob",
        "technician_profile": "ENGINEER", "minutes_worked": minutes, "start_time": (at - Duration::minutes(minutes)).to_rfc3339(),
        "version": version, "deleted": deleted,
    })
}

async fn day_minutes(env: &TestEnv, tenant: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, String)> = env
        .clickhouse()
        .query("SELECT toString(window_date), toString(sum(quantity)) FROM aggregates FINAL WHERE tenant = ? AND period = 'DAY' GROUP BY window_date ORDER BY window_date")
        .bind(tenant)
        .fetch_all()
        .await
        .unwrap();
    rows.into_iter().map(|(d, q)| (d, dec(&q).trunc().try_into().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn corrections_and_deletions_revise_every_window_until_the_close() {
    let _serial = serial();
    let env = TestEnv::new("corrections").await;
    env.meter(&["migrate"]);
    let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2025, 3, d, h, 0, 0).unwrap();
    let write = |name: &str, lines: &[Value]| {
        let path = env.dir.path().join(name);
        write_lines(&path, &lines.iter().map(Value::to_string).collect::<Vec<_>>());
        path
    };
    // Two tenants on one partition (same key space), the same task id in both.
    let first = write("first.jsonl", &[
        ticket("task-1", "initech", at(3, 9), 60, 1, false),
        ticket("task-2", "initech", at(4, 9), 30, 1, false),
        ticket("task-3", "initech", at(5, 9), 45, 1, false),
        ticket("task-1", "globex", at(3, 9), 15, 1, false),
    ]);
    env.meter(&["collect", "file", "--kind", "ticket-time", first.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    let second = write("second.jsonl", &[
        // Edited: more minutes, another day.
        ticket("task-1", "initech", at(6, 9), 90, 2, false),
        // The first version again, and the new one again: nothing more.
        ticket("task-1", "initech", at(3, 9), 60, 1, false),
        ticket("task-1", "initech", at(6, 9), 90, 2, false),
        // Deleted.
        ticket("task-2", "initech", at(4, 9), 30, 2, true),
    ]);
    env.meter(&["collect", "file", "--kind", "ticket-time", second.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    let days = day_minutes(&env, "initech").await;
    assert_eq!(days.get("2025-03-03"), Some(&0));
    assert_eq!(days.get("2025-03-04"), Some(&0));
    assert_eq!(days.get("2025-03-05"), Some(&45));
    assert_eq!(days.get("2025-03-06"), Some(&90));
    assert_eq!(day_minutes(&env, "globex").await.get("2025-03-03"), Some(&15), "another tenant's task-1 is its own");
    let rows: Vec<(String, String, u32, String)> = env
        .clickhouse()
        .query("SELECT event_id, toString(local_date), minutes_worked, accounting FROM ticket_tasks FINAL WHERE tenant = 'initech' ORDER BY event_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("task-1".into(), "2025-03-06".into(), 90, "counted".into()),
            ("task-2".into(), "2025-03-04".into(), 30, "deleted".into()),
            ("task-3".into(), "2025-03-05".into(), 45, "counted".into()),
        ]
    );
    // After the close, a correction goes to the late topic and changes nothing.
    env.meter(&["periods", "close", "--tenant", "initech", "--month", "2025-03", "--requested-by", "billing", "--reason", "invoiced"]);
    let third = write("third.jsonl", &[ticket("task-3", "initech", at(5, 9), 200, 2, false)]);
    env.meter(&["collect", "file", "--kind", "ticket-time", third.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    assert_eq!(day_minutes(&env, "initech").await.get("2025-03-05"), Some(&45));
    let late = env.read_topic(&env.config.topics.late_events);
    assert_eq!(late.len(), 1);
    let month: Vec<(String, u8)> = env
        .clickhouse()
        .query("SELECT toString(sum(quantity)), max(is_final) FROM aggregates FINAL WHERE tenant = 'initech' AND period = 'MONTH'")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!((dec(&month[0].0), month[0].1), (dec("135"), 1), "90 + 45 minutes, final");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_from_offset_zero_emits_what_the_live_run_emitted_across_a_close() {
    let _serial = serial();
    let env = TestEnv::new("rebuild").await;
    env.meter(&["migrate"]);
    let at = |m: u32, d: u32, h: u32| Utc.with_ymd_and_hms(2025, m, d, h, 0, 0).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for i in 0..60u32 {
        let tenant = if i % 3 == 0 { "globex" } else { "initech" };
        lines.push(ticket(&format!("t{i}"), tenant, at(4 + i % 2, 1 + i % 28, 8 + i % 9), 5 + i64::from(i), 1, false).to_string());
    }
    let path = env.dir.path().join("a.jsonl");
    write_lines(&path, &shuffled(lines, 3));
    env.meter(&["collect", "file", "--kind", "ticket-time", path.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["periods", "close", "--tenant", "initech", "--month", "2025-04", "--requested-by", "billing", "--reason", "invoiced"]);
    let corrections: Vec<String> = (0..10u32).map(|i| ticket(&format!("t{}", i * 3 + 1), "initech", at(5, 20, 9), 99, 2, false).to_string()).collect();
    let path = env.dir.path().join("b.jsonl");
    write_lines(&path, &corrections);
    env.meter(&["collect", "file", "--kind", "ticket-time", path.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    let live: BTreeMap<(String, i64), Vec<u8>> = env
        .read_topic(&env.config.topics.aggregates)
        .into_iter()
        .map(|(_, p, _)| {
            let a: Aggregate = EventCodec::decode(&p).unwrap();
            ((a.aggregate_id, a.revision), p)
        })
        .collect();
    assert!(live.keys().any(|k| EventCodec::decode::<Aggregate>(&live[k]).unwrap().is_final), "the close emitted finals");

    // Rebuild: a new group, no checkpoint, its own output topic.
    let mut rebuilt_env = TestEnv::new("rebuilt").await;
    rebuilt_env.config.topics.vm_usage = env.config.topics.vm_usage.clone();
    rebuilt_env.config.topics.check_result = env.config.topics.check_result.clone();
    rebuilt_env.config.topics.ticket_time = env.config.topics.ticket_time.clone();
    rebuilt_env.save_config();
    rebuilt_env.meter(&["aggregate", "--until-idle", "2"]);
    let rebuilt: BTreeMap<(String, i64), Vec<u8>> = rebuilt_env
        .read_topic(&rebuilt_env.config.topics.aggregates)
        .into_iter()
        .map(|(_, p, _)| {
            let a: Aggregate = EventCodec::decode(&p).unwrap();
            ((a.aggregate_id, a.revision), p)
        })
        .collect();
    // Every revision emitted by both is the same, byte for byte; every final
    // and every latest revision of the live run is in the rebuild.
    let mut common = 0;
    for (key, bytes) in &rebuilt {
        if let Some(live_bytes) = live.get(key) {
            assert_eq!(live_bytes, bytes, "{key:?}");
            common += 1;
        }
    }
    let mut latest_live: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, rev) in live.keys() {
        let e = latest_live.entry(id.as_str()).or_insert(*rev);
        *e = (*e).max(*rev);
    }
    for (id, rev) in latest_live {
        assert!(rebuilt.contains_key(&(id.to_string(), rev)), "latest revision {rev} of {id} missing from the rebuild");
    }
    assert!(common >= live.keys().filter(|k| EventCodec::decode::<Aggregate>(&live[*k]).unwrap().is_final).count());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_partition_still_closes_its_months_after_a_restart() {
    let _serial = serial();
    let mut env = TestEnv::new("silent").await;
    env.meter(&["migrate"]);
    let path = env.dir.path().join("a.jsonl");
    write_lines(&path, &[ticket("s1", "initech", Utc.with_ymd_and_hms(2025, 9, 10, 9, 0, 0).unwrap(), 40, 1, false).to_string()]);
    env.meter(&["collect", "file", "--kind", "ticket-time", path.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    let before = latest_on_topic(&env);
    assert!(before.values().all(|a| !a.is_final));
    // The grace is shortened while it is down: September 2025 is past its
    // close by the wall clock, and nothing more arrives.
    env.config.aggregator.default_period_grace_days = 5;
    env.save_config();
    env.meter(&["aggregate", "--until-idle", "2"]);
    let after = latest_on_topic(&env);
    let finals: Vec<&Aggregate> = after.values().filter(|a| a.is_final).collect();
    assert_eq!(finals.len(), 4, "day, week, month and year of September 2025: {after:?}");
    assert!(finals.iter().all(|a| a.quantity == Decimal::from(40)));
}

/// vCPU-hours per day of January 2026 (UTC), independently of the engine.
fn expected_days(intervals: &[(DateTime<Utc>, DateTime<Utc>, i64)]) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for day in 1..=31u32 {
        let start = Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap();
        let end = start + Duration::days(1);
        let seconds: i64 = intervals.iter().map(|(a, b, v)| ((*b).min(end) - (*a).max(start)).num_seconds().max(0) * v).sum();
        out.insert(start.format("%Y-%m-%d").to_string(), Decimal::from(seconds) / Decimal::from(3600));
    }
    out
}

fn transition(id: &str, vm_id: &str, at: DateTime<Utc>, transition: &str, vcpu: i64) -> Value {
    json!({
        "event_id": id, "source": "openstack", "tenant": "initech", "subsidiary": "initech-hq", "domain": "infrastructure",
        "event_time": at.to_rfc3339(), "vm_id": vm_id, "vcpu": vcpu, "ram_mib": 0, "storage_gb": 0, "bandwidth_mbps": 0,
        "public_ips": 0, "sla_tier": "SLA_99_7", "options": [], "datacenter": "PAR1", "transition": transition,
        "sample_interval_seconds": 0,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn january_vms_are_billed_every_hour_they_ran_and_no_final_is_superseded() {
    let _serial = serial();
    let env = TestEnv::new("vms").await;
    env.meter(&["migrate"]);
    let t = |d: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2026, 1, d, h, m, 0).unwrap();
    let lines: Vec<String> = [
        transition("a1", "always-on", Utc.with_ymd_and_hms(2025, 12, 31, 22, 0, 0).unwrap(), "CREATE", 4),
        transition("b1", "stopped", t(1, 0, 0), "START", 2),
        transition("b2", "stopped", t(20, 12, 0), "STOP", 2),
        transition("c1", "resized", t(3, 0, 0), "CREATE", 2),
        transition("c2", "resized", t(10, 6, 0), "RESIZE", 4),
        transition("c3", "resized", t(15, 18, 30), "RESIZE", 8),
    ]
    .iter()
    .rev()
    .map(Value::to_string)
    .collect();
    let path = env.dir.path().join("vms.jsonl");
    write_lines(&path, &lines);
    env.meter(&["collect", "file", "--kind", "vm-usage", path.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["periods", "close", "--tenant", "initech", "--month", "2026-01", "--requested-by", "billing", "--reason", "monthly invoice"]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    let end = t(31, 0, 0) + Duration::days(1);
    let expected = expected_days(&[
        (t(1, 0, 0), end, 4),
        (t(1, 0, 0), t(20, 12, 0), 2),
        (t(3, 0, 0), t(10, 6, 0), 2),
        (t(10, 6, 0), t(15, 18, 30), 4),
        (t(15, 18, 30), end, 8),
    ]);
    let rows: Vec<(String, String, String, u8)> = env
        .clickhouse()
        .query("SELECT toString(window_date), toString(sum(quantity)), toString(sum(cost)), min(is_final) FROM aggregates FINAL \
                WHERE tenant = 'initech' AND metric = 'vm.vcpu' AND period = 'DAY' AND toYYYYMM(window_date) = 202601 GROUP BY window_date ORDER BY window_date")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 31);
    for (day, quantity, cost, is_final) in &rows {
        assert_eq!(dec(quantity), expected[day], "{day}");
        // 0.0125 EUR a vCPU-hour in 2026, rounded once per aggregate (one per day here).
        assert_eq!(dec(cost), (expected[day] * dec("0.0125")).round_dp(2), "{day}");
        assert_eq!(*is_final, 1, "{day}");
    }
    let month: Vec<String> = env
        .clickhouse()
        .query("SELECT toString(sum(quantity)) FROM aggregates FINAL WHERE tenant = 'initech' AND metric = 'vm.vcpu' AND period = 'MONTH' AND window_date = '2026-01-01'")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(dec(&month[0]), expected.values().copied().sum::<Decimal>());
    let week: Vec<String> = env
        .clickhouse()
        .query("SELECT toString(sum(quantity)) FROM aggregates FINAL WHERE tenant = 'initech' AND metric = 'vm.vcpu' AND period = 'WEEK' AND window_date = '2026-01-05'")
        .fetch_all()
        .await
        .unwrap();
    let week_expected: Decimal = (5..=11).map(|d| expected[&format!("2026-01-{d:02}")]).sum();
    assert_eq!(dec(&week[0]), week_expected);
    // No final aggregate is ever followed by another revision of it.
    let mut finals: BTreeMap<String, i64> = BTreeMap::new();
    for (_, payload, _) in env.read_topic(&env.config.topics.aggregates) {
        let a: Aggregate = EventCodec::decode(&payload).unwrap();
        if let Some(rev) = finals.get(&a.aggregate_id) {
            panic!("{} revised after its final (revision {rev}): {a:?}", a.aggregate_id);
        }
        if a.is_final {
            finals.insert(a.aggregate_id.clone(), a.revision);
        }
        assert!(a.window_start.year() >= 2025);
        assert!(a.period != Period::Year || a.window_start.year() < 2026 || !a.is_final, "the year 2026 stays open");
    }
}
