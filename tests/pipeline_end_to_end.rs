//! A known set of events of all three kinds goes through the real pipeline:
//! `meter collect file` (one process per file) -> Tansu -> `meter aggregate`
//! -> aggregate topic -> `meter sink clickhouse` -> ClickHouse. The daily
//! totals in ClickHouse, and the latest revisions on the aggregate topic,
//! must equal to the cent the totals this test computes on its own from the
//! same events. Bad lines are reported with their number and dead-lettered;
//! duplicated lines count once.

use aggregator::pricing::PriceBook;
use meter_model::{DeadLetter, EventCodec};
use meter_tests::scenario::{build_input, day_totals, write_lines};
use meter_tests::TestEnv;
use rust_decimal::Decimal;
use serde_json::json;

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

    env.assert_clickhouse_day_totals(&expected).await;
    env.assert_topic_day_totals(&expected);

    // Drill-down: the ticket tasks behind the daily ticket totals, once each.
    let tasks: Vec<(String, String, String, u64, u64)> = env
        .clickhouse()
        .query(
            "SELECT tenant, subsidiary, toString(local_date), count(), sum(minutes_worked) FROM ticket_tasks FINAL \
             WHERE accounting = 'counted' GROUP BY tenant, subsidiary, local_date",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(tasks.iter().map(|t| t.3).sum::<u64>(), input.tickets.len() as u64, "each task once, duplicates collapsed");
    for (tenant, subsidiary, day, count, minutes) in &tasks {
        let (quantity, events) = expected
            .iter()
            .filter(|((t, s, _, k, d), _)| t == tenant && s == subsidiary && k == "TICKET_TIME" && d == day)
            .fold((Decimal::ZERO, 0i64), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.2));
        assert_eq!((Decimal::from(*minutes), *count as i64), (quantity, events), "drill-down of {tenant}/{subsidiary}/{day}");
    }
    let runs: u64 = env.clickhouse().query("SELECT count() FROM check_runs FINAL").fetch_one().await.unwrap();
    assert_eq!(runs, input.checks.len() as u64);
    let vm_events: u64 = env.clickhouse().query("SELECT count() FROM vm_usage_events FINAL").fetch_one().await.unwrap();
    assert_eq!(vm_events, input.vms.len() as u64);
    let grand: Decimal = expected.values().map(|v| v.1).sum();
    assert!(grand > Decimal::from(1000), "a meaningful bill: {grand}");

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
