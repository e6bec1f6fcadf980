//! The aggregator's guarantees on the real broker and ClickHouse: duplicates
//! and late events, SIGKILL at random moments, a broker restart, a
//! ClickHouse outage, and two instances sharing the work. Each asserts the
//! final totals in ClickHouse and on the aggregate topic equal the totals
//! computed independently from the input, to the cent.
//!
//! These tests restart shared servers, so they run one at a time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use meter_model::{Aggregate, EventCodec, TicketTime};
use meter_tests::scenario::{build_input, day_totals, write_lines, DayTotals, Lcg};
use meter_tests::{publish_in_chunks, stack, wait_caught_up, Supervised, TestEnv};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test environment whose consumers notice a dead member quickly.
async fn fault_env(label: &str) -> TestEnv {
    let mut env = TestEnv::new(label).await;
    env.config.kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    env.config.kafka.properties.insert("heartbeat.interval.ms".into(), "500".into());
    env.config.aggregator.stalled_partition_seconds = 10;
    std::fs::write(&env.config_path, toml::to_string(&env.config).unwrap()).unwrap();
    env
}

fn ticket(id: &str, at: DateTime<Utc>, minutes: i64) -> Value {
    json!({
        "event_id": id, "source": "glpi-test", "tenant": "initech", "subsidiary": "initech-hq", "domain": "infrastructure",
        "event_time": at.to_rfc3339(), "ticket_id": format!("T-{id}"), "task_id": id, "ticket_type": "INCIDENT",
        "category_path": ["RUN", "MCO"], "in_scope": true, "requester": "alice", "technician": "bob",
        "technician_profile": "ENGINEER", "minutes_worked": minutes, "start_time": (at - Span::minutes(minutes)).to_rfc3339(),
    })
}

fn expected_for(tickets: &[&Value]) -> DayTotals {
    // One aggregate per day here (same subsidiary, domain and dimensions):
    // cost = round(sum(minutes) x 75 EUR/h / 60), half-even, 2 decimals.
    let mut per_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for t in tickets {
        let day = t["event_time"].as_str().unwrap()[..10].to_string();
        let e = per_day.entry(day).or_default();
        e.0 += t["minutes_worked"].as_i64().unwrap();
        e.1 += 1;
    }
    per_day
        .into_iter()
        .map(|(day, (minutes, n))| {
            let cost = (Decimal::from(minutes) * Decimal::from(75) / Decimal::from(60))
                .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
            (("initech".into(), "initech-hq".into(), "infrastructure".into(), "TICKET_TIME".into(), day), (Decimal::from(minutes), cost, n))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_count_once_and_events_of_a_closed_month_are_set_aside() {
    let _serial = serial();
    let env = TestEnv::new("late").await;
    let day = |m: u32, d: u32, h: u32| Utc.with_ymd_and_hms(2024, m, d, h, 0, 0).unwrap();
    let first: Vec<Value> = (8..=14).flat_map(|d| [ticket(&format!("a{d}"), day(1, d, 9), 10 + i64::from(d)), ticket(&format!("b{d}"), day(1, d, 10), 45)]).collect();
    let february = ticket("feb-1", day(2, 1, 9), 20);
    // After January is closed on request:
    let revising = ticket("late-ok", day(2, 1, 15), 33); // February is open: it revises 1 February
    let too_late = ticket("late-ko", day(1, 9, 15), 50); // January is closed
    let mut second: Vec<Value> = first[3..8].to_vec(); // a collector sending again: duplicates, not late
    second.push(revising.clone());
    second.push(too_late.clone());

    env.meter(&["migrate"]);
    write_lines(&env.dir.path().join("first.jsonl"), &first.iter().chain([&february]).map(Value::to_string).collect::<Vec<_>>());
    write_lines(&env.dir.path().join("second.jsonl"), &second.iter().map(Value::to_string).collect::<Vec<_>>());
    env.meter(&["collect", "file", "--kind", "ticket-time", env.dir.path().join("first.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    let out = env.meter(&["periods", "close", "--tenant", "initech", "--month", "2024-01", "--requested-by", "billing@example.com", "--reason", "invoice sent"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2024-01"));
    env.meter(&["collect", "file", "--kind", "ticket-time", env.dir.path().join("second.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);

    let counted: Vec<&Value> = first.iter().chain([&february, &revising]).collect();
    let expected = expected_for(&counted);
    env.assert_clickhouse_day_totals(&expected).await;
    env.assert_topic_day_totals(&expected);

    // 1 February: emitted after the first file, then revised with a higher revision.
    let revisions: Vec<Aggregate> = env
        .read_topic(&env.config.topics.aggregates)
        .iter()
        .map(|(_, p, _)| EventCodec::decode::<Aggregate>(p).unwrap())
        .filter(|a| a.period == meter_model::Period::Day && a.window_label == "2024-02-01")
        .collect();
    assert!(revisions.len() >= 2, "{revisions:?}");
    assert!(revisions.windows(2).all(|w| w[0].revision < w[1].revision), "revisions increase");
    assert_eq!(revisions.last().unwrap().quantity, Decimal::from(20 + 33));

    // The event of the closed month is on the late-events topic, unchanged, with its reason.
    let late = env.read_topic(&env.config.topics.late_events);
    assert_eq!(late.len(), 1, "exactly the one event of the closed month");
    let (key, payload, headers) = &late[0];
    let event: TicketTime = EventCodec::decode(payload).unwrap();
    assert_eq!(event.header.event_id, "late-ko");
    assert_eq!(key.as_deref(), Some("initech"));
    assert!(headers.contains(&("meter.reason".to_string(), "period_closed".to_string())), "{headers:?}");

    // Drill-down rows: the duplicate lines collapsed, the late event marked as such.
    let rows: Vec<(String, String)> = env
        .clickhouse()
        .query("SELECT event_id, accounting FROM ticket_tasks FINAL ORDER BY event_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), first.len() + 3);
    for (id, accounting) in &rows {
        assert_eq!(accounting, if id == "late-ko" { "late" } else { "counted" }, "{id}");
    }

    // January's windows are final after its close, February's are not.
    let finals: Vec<(String, u8)> = env
        .clickhouse()
        .query("SELECT toString(window_date), is_final FROM aggregates FINAL WHERE period = 'DAY' ORDER BY window_date")
        .fetch_all()
        .await
        .unwrap();
    assert!(!finals.is_empty());
    for (day, is_final) in finals {
        assert_eq!(is_final == 1, day.as_str() < "2024-02-01", "{day}");
    }
    let listed = env.meter(&["periods", "list", "--tenant", "initech", "--months", "40"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("2024-01  closed  explicitly"), "{}", String::from_utf8_lossy(&listed.stdout));

    // Re-rating the period on request counts the late event this time,
    // supersedes the live revisions, marks it counted in the drill-down, and
    // records who asked and why. An open month is refused.
    let open = std::process::Command::new(meter_tests::meter_bin())
        .args(["--config", env.config_path.to_str().unwrap(), "reprocess", "--tenant", "initech", "--from", "2024-02-01", "--to", "2024-02-02",
            "--requested-by", "x", "--reason", "y"])
        .output()
        .unwrap();
    assert!(!open.status.success() && String::from_utf8_lossy(&open.stderr).contains("still open"), "{}", String::from_utf8_lossy(&open.stderr));
    env.meter(&[
        "reprocess", "--tenant", "initech", "--from", "2024-01-08", "--to", "2024-01-15",
        "--requested-by", "billing@example.com", "--reason", "late GLPI export",
    ]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    let everything: Vec<&Value> = first.iter().chain([&february, &revising, &too_late]).collect();
    let rerated = expected_for(&everything);
    env.assert_clickhouse_day_totals(&rerated).await;
    env.assert_topic_day_totals(&rerated);
    let late_rows: u64 = env.clickhouse().query("SELECT count() FROM ticket_tasks FINAL WHERE accounting = 'late'").fetch_one().await.unwrap();
    assert_eq!(late_rows, 0, "after the reprocess every event is counted");
    let log: Vec<(String, String, String, u64)> = env
        .clickhouse()
        .query("SELECT requested_by, reason, tenant, aggregates_emitted FROM reprocess_log")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].0.as_str(), log[0].1.as_str(), log[0].2.as_str()), ("billing@example.com", "late GLPI export", "initech"));
    assert!(log[0].3 >= 8, "7 days and the week of 8 January: {}", log[0].3);
}

/// The full three-kind scenario, as lines per kind.
fn scenario_lines(env: &TestEnv) -> (Vec<(&'static str, Vec<String>)>, DayTotals) {
    let book = aggregator::pricing::PriceBook::load(&env.config.price_book).unwrap();
    let input = build_input(&book);
    let lines = vec![
        ("ticket-time", input.tickets.iter().map(Value::to_string).collect()),
        ("check-result", input.checks.iter().map(Value::to_string).collect()),
        ("vm-usage", input.vms.iter().map(Value::to_string).collect()),
    ];
    (lines, day_totals(&input.expected))
}

fn publisher(env: &TestEnv, lines: Vec<(&'static str, Vec<String>)>, chunks: usize) -> std::thread::JoinHandle<u32> {
    let config_path = env.config_path.clone();
    let dir = env.dir.path().to_path_buf();
    let env_ref = meter_tests::PublishTarget { config_path, dir };
    std::thread::spawn(move || {
        let mut retries = 0;
        for (kind, kind_lines) in &lines {
            retries += publish_in_chunks(&env_ref, kind, kind_lines, chunks, Duration::from_millis(200));
        }
        retries
    })
}

fn caught_up(env: &TestEnv) {
    let t = &env.config.topics;
    wait_caught_up(&env.config, &env.config.aggregator.group_id, &[&t.ticket_time, &t.check_result, &t.vm_usage], Duration::from_secs(180));
    wait_caught_up(&env.config, &env.config.sink.group_id, &[&t.aggregates], Duration::from_secs(180));
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregator_killed_at_random_moments_loses_and_doubles_nothing() {
    let _serial = serial();
    let env = fault_env("sigkill").await;
    env.meter(&["migrate"]);
    let (lines, expected) = scenario_lines(&env);
    let publishing = publisher(&env, lines, 12);
    let mut aggregator = Supervised::start(&env, &["aggregate"]);
    let mut sink = Supervised::start(&env, &["sink", "clickhouse"]);
    let mut rng = Lcg(7);
    while aggregator.kills < 12 || !publishing.is_finished() {
        std::thread::sleep(Duration::from_millis(300 + rng.next(2500)));
        aggregator.kill();
        if aggregator.kills % 4 == 0 {
            sink.kill(); // the sink is killed too, now and then
            sink.ensure_running();
        }
        aggregator.ensure_running();
    }
    publishing.join().unwrap();
    caught_up(&env);
    assert!(aggregator.kills >= 10, "{} kills", aggregator.kills);
    env.assert_clickhouse_day_totals(&expected).await;
    env.assert_topic_day_totals(&expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_and_a_clickhouse_outage_lose_nothing() {
    let _serial = serial();
    let outage = std::env::var("METER_TEST_OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    let env = fault_env("outage").await;
    env.meter(&["migrate"]);
    let (lines, expected) = scenario_lines(&env);
    let publishing = publisher(&env, lines, 12);
    let mut aggregator = Supervised::start(&env, &["aggregate"]);
    let mut sink = Supervised::start(&env, &["sink", "clickhouse"]);
    let watch = |a: &mut Supervised, s: &mut Supervised, secs: u64| {
        for _ in 0..secs * 2 {
            std::thread::sleep(Duration::from_millis(500));
            a.ensure_running();
            s.ensure_running();
        }
    };
    watch(&mut aggregator, &mut sink, 4);
    stack(&["restart-broker"]);
    watch(&mut aggregator, &mut sink, 4);
    stack(&["stop", "clickhouse"]);
    watch(&mut aggregator, &mut sink, outage);
    stack(&["start", "clickhouse"]);
    while !publishing.is_finished() {
        watch(&mut aggregator, &mut sink, 1);
    }
    publishing.join().unwrap();
    caught_up(&env);
    env.assert_clickhouse_day_totals(&expected).await;
    env.assert_topic_day_totals(&expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_aggregators_share_the_work_and_one_dying_changes_nothing() {
    let _serial = serial();
    let env = fault_env("scaleout").await;
    env.meter(&["migrate"]);
    let (lines, expected) = scenario_lines(&env);
    let mut first = Supervised::start(&env, &["aggregate"]);
    let mut second = Supervised::start(&env, &["aggregate"]);
    let _sink = Supervised::start(&env, &["sink", "clickhouse"]);
    let publishing = publisher(&env, lines, 12);
    std::thread::sleep(Duration::from_secs(8));
    first.kill(); // not restarted: the second instance takes its partitions over
    while !publishing.is_finished() {
        std::thread::sleep(Duration::from_millis(500));
        second.ensure_running();
    }
    publishing.join().unwrap();
    caught_up(&env);
    assert_eq!(second.starts, 1, "the surviving instance never restarted");
    env.assert_clickhouse_day_totals(&expected).await;
    env.assert_topic_day_totals(&expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn until_idle_never_stops_while_a_dead_members_partitions_have_lag() {
    let _serial = serial();
    let env = fault_env("idletruth").await;
    env.meter(&["migrate"]);
    let (lines, expected) = scenario_lines(&env);
    // A member joins, takes partitions, and dies holding them (kill -9).
    let mut doomed = Supervised::start(&env, &["aggregate"]);
    std::thread::sleep(Duration::from_secs(6));
    doomed.kill();
    for (kind, kind_lines) in &lines {
        let path = env.dir.path().join(format!("{kind}.jsonl"));
        write_lines(&path, kind_lines);
        env.meter(&["collect", "file", "--kind", kind, path.to_str().unwrap()]);
    }
    // Idle is not done: it must wait for the dead member's partitions (or
    // say which are behind and fail), never report success with lag.
    let first = env.meter_status(&["aggregate", "--until-idle", "2"]);
    if !first.status.success() {
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(stderr.contains("still behind"), "{stderr}");
        env.meter(&["aggregate", "--until-idle", "2"]);
    }
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    env.assert_clickhouse_day_totals(&expected).await;
    env.assert_topic_day_totals(&expected);
}
