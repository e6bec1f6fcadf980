//! The ClickHouse model analysts use, fed through the real pipeline with the
//! DOMAIN.md demo data (`meter demo generate`): each view's answer is
//! checked against figures computed here from the demo files.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use meter_tests::TestEnv;
use rust_decimal::Decimal;
use serde_json::Value;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn paris_date(v: &Value, field: &str) -> NaiveDate {
    v[field].as_str().unwrap().parse::<DateTime<Utc>>().unwrap().with_timezone(&chrono_tz::Europe::Paris).date_naive()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// The 2026 ticket tasks of the (Paris) week starting on Monday `week`.
fn tickets_of_week<'a>(tickets: &'a [Value], week: &str) -> Vec<&'a Value> {
    let monday: NaiveDate = week.parse().unwrap();
    tickets
        .iter()
        .filter(|t| t["ticket_id"].as_str().unwrap().starts_with("2026"))
        .filter(|t| {
            let d = paris_date(t, "event_time");
            d >= monday && d < monday + chrono::Duration::days(7)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn views_answer_the_domain_questions() {
    let env = TestEnv::new("views").await;
    let dir = env.dir.path().join("demo");
    env.meter(&["migrate"]);
    env.meter(&["demo", "generate", "--out", dir.to_str().unwrap()]);
    for kind in ["ticket-time", "check-result", "vm-usage"] {
        env.meter(&["collect", "file", "--kind", kind, dir.join(format!("{kind}.jsonl")).to_str().unwrap()]);
    }
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    let contracts = meter_tests::repo_root().join("config/contracts.example.toml");
    env.meter(&["contracts", "load", contracts.to_str().unwrap()]);
    let ch = env.clickhouse();
    let tickets = lines(&dir.join("ticket-time.jsonl"));
    let checks = lines(&dir.join("check-result.jsonl"));

    // Seasonality, DOMAIN.md: January 27 days against 16 the year before
    // (8-hour days), 20 incidents and 7 requests against 9 and 8; backups
    // 2.18 days against 0.16; Hyper-V 2.47 against 0.
    let days: Vec<(u16, String)> = ch
        .query("SELECT year, toString(sum(minutes) / 480) FROM seasonality_monthly WHERE tenant = 'acme' AND month_of_year = 1 GROUP BY year ORDER BY year")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(days.iter().map(|(y, d)| (*y, dec(d))).collect::<Vec<_>>(), vec![(2025, dec("16")), (2026, dec("27"))]);
    let filtered = |filter: &'static str| {
        let ch = ch.clone();
        async move {
            let rows: Vec<(u16, String)> = ch
                .query(&format!(
                    "SELECT year, toString(round(sum(minutes) / 480, 2)) FROM seasonality_monthly \
                     WHERE tenant = 'acme' AND month_of_year = 1 AND {filter} GROUP BY year ORDER BY year"
                ))
                .fetch_all()
                .await
                .unwrap();
            rows.into_iter().map(|(y, d)| (y, dec(&d))).collect::<Vec<_>>()
        }
    };
    assert_eq!(filtered("category LIKE '%backups%'").await, vec![(2025, dec("0.16")), (2026, dec("2.18"))]);
    assert_eq!(filtered("category LIKE '%Hyper-V%'").await, vec![(2026, dec("2.47"))]);
    let counts: Vec<(u16, String, u64)> = ch
        .query("SELECT year, ticket_type, sum(tickets) FROM tickets_monthly WHERE tenant = 'acme' AND month_of_year = 1 GROUP BY year, ticket_type ORDER BY year, ticket_type")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        counts,
        vec![(2025, "INCIDENT".into(), 9), (2025, "REQUEST".into(), 8), (2026, "INCIDENT".into(), 20), (2026, "REQUEST".into(), 7)]
    );

    // Re-billing: minutes per subsidiary and month equal the demo file's.
    let mut minutes_by_sub: BTreeMap<(String, String), i64> = BTreeMap::new();
    for t in &tickets {
        let d = paris_date(t, "event_time");
        *minutes_by_sub.entry((t["subsidiary"].as_str().unwrap().into(), format!("{}-{:02}-01", d.year(), d.month()))).or_default() +=
            t["minutes_worked"].as_i64().unwrap();
    }
    let rebilling: Vec<(String, String, String, String)> = ch
        .query("SELECT subsidiary, toString(month), toString(quantity), toString(cost) FROM rebilling_monthly WHERE tenant = 'acme' AND kind = 'TICKET_TIME' ORDER BY subsidiary, month")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rebilling.len(), minutes_by_sub.len());
    for (sub, month, quantity, cost) in &rebilling {
        assert_eq!(dec(quantity), Decimal::from(minutes_by_sub[&(sub.clone(), month.clone())]), "{sub} {month}");
        assert!(dec(cost) > Decimal::ZERO);
    }

    // Contract burn, acme 2026 (263 days a year, 8 h): January expects
    // 263 x 31 / 365 days, consumed 27: an overrun.
    let burn: Vec<(String, String, String, String, String)> = ch
        .query("SELECT toString(month), toString(expected), toString(consumed), toString(consumed_to_date - expected_to_date), status \
                FROM contract_burn_monthly WHERE contract_id = 'acme-mco-2026' ORDER BY month")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(burn.len(), 12);
    let january_expected = (Decimal::from(263) * Decimal::from(31) / Decimal::from(365)).round_dp(6);
    assert_eq!((burn[0].0.as_str(), dec(&burn[0].1), dec(&burn[0].2)), ("2026-01-01", january_expected, dec("27")));
    assert_eq!(burn[0].4, "overrun");
    // February: the three logged actions (2.75 h + 0.08 h + 1.83 h = 280 min).
    // Days are exact sums of minutes divided once, truncated to the micro-day.
    let days_of = |minutes: i64| (Decimal::from(minutes) / Decimal::from(480)).round_dp_with_strategy(6, rust_decimal::RoundingStrategy::ToZero);
    assert_eq!(dec(&burn[1].2), days_of(280));
    // April on, the revised amount (200 a year).
    assert_eq!(dec(&burn[3].1), (Decimal::from(200) * Decimal::from(30) / Decimal::from(365)).round_dp(6));
    let year_expected: Decimal = burn.iter().map(|b| dec(&b.1)).sum();
    let revised = (Decimal::from(263) * Decimal::from(31 + 28 + 31) + Decimal::from(200) * Decimal::from(30 + 31 + 30 + 31 + 31)
        + Decimal::from(300) * Decimal::from(30 + 31 + 30 + 31)) / Decimal::from(365);
    assert!((year_expected - revised).abs() < dec("0.00001"), "{year_expected} vs {revised}");
    // Weekly: consumption of a week against the contractual average of 5.25 days.
    let mut week_minutes: BTreeMap<NaiveDate, i64> = BTreeMap::new();
    for t in tickets.iter().filter(|t| t["ticket_id"].as_str().unwrap().starts_with("2026")) {
        let d = paris_date(t, "event_time");
        let monday = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()));
        *week_minutes.entry(monday).or_default() += t["minutes_worked"].as_i64().unwrap();
    }
    let weekly: Vec<(String, String, String, u8)> = ch
        .query("SELECT toString(week), toString(consumed), toString(weekly_average), above_weekly_average FROM contract_burn_weekly \
                WHERE contract_id = 'acme-mco-2026' AND consumed > 0 ORDER BY week")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(weekly.len(), week_minutes.len());
    for (week, consumed, average, above) in &weekly {
        let want = days_of(week_minutes[&week.parse::<NaiveDate>().unwrap()]);
        assert_eq!(dec(consumed), want, "week {week}");
        assert_eq!(dec(average), dec("5.25"));
        assert_eq!(*above == 1, want > dec("5.25"), "week {week}");
    }
    // Consumption spikes: the weeks above 1.25 x 5.25 = 6.5625 days (the
    // example's spike_factor), and the tickets behind each, to the minute.
    let spikes: Vec<(String, String, String)> = ch
        .query("SELECT toString(week), toString(consumed), toString(threshold) FROM consumption_spikes WHERE contract_id = 'acme-mco-2026' ORDER BY week")
        .fetch_all()
        .await
        .unwrap();
    let want: Vec<(String, Decimal)> =
        week_minutes.iter().map(|(w, m)| (w.to_string(), days_of(*m))).filter(|(_, days)| *days > dec("6.5625")).collect();
    assert!(!want.is_empty(), "the demo data has spike weeks");
    assert_eq!(spikes.iter().map(|(w, c, _)| (w.clone(), dec(c))).collect::<Vec<_>>(), want);
    assert!(spikes.iter().all(|(_, _, t)| dec(t) == dec("6.5625")));
    for (week, _) in &want {
        let (ticket_count, minutes): (u64, u64) = ch
            .query("SELECT uniqExact(ticket_id), sum(minutes) FROM consumption_spike_tickets WHERE contract_id = 'acme-mco-2026' AND toString(week) = ?")
            .bind(week)
            .fetch_one()
            .await
            .unwrap();
        let in_week: Vec<&Value> = tickets_of_week(&tickets, week);
        assert_eq!(minutes as i64, week_minutes[&week.parse::<NaiveDate>().unwrap()], "week {week}");
        assert_eq!(ticket_count as usize, in_week.iter().map(|t| t["ticket_id"].as_str().unwrap()).collect::<std::collections::BTreeSet<_>>().len());
    }

    // Check compliance by week: the Exchange KO with its ticket, the missed firewall run.
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Compliance {
        week: String,
        check_name: String,
        scheduled: u64,
        done: u64,
        ko: u64,
        missed: u64,
        ko_tickets: Vec<String>,
    }
    let compliance: Vec<Compliance> = ch
        .query("SELECT toString(week), check_name, scheduled, done, ko, missed, ko_tickets FROM check_compliance_weekly \
                WHERE tenant = 'acme' AND (ko > 0 OR missed > 0) ORDER BY week, check_name")
        .fetch_all()
        .await
        .unwrap();
    let mut want = Vec::new();
    for c in checks.iter().filter(|c| c["status"] == "KO" || c["status"] == "MISSED") {
        let d = paris_date(c, "event_time");
        let monday = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()));
        want.push((monday.to_string(), c["check_name"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string(), c["ticket_ref"].as_str().map(String::from)));
    }
    assert_eq!(compliance.len(), want.len());
    for (week, name, status, ticket) in &want {
        let row = compliance.iter().find(|r| &r.week == week && &r.check_name == name).unwrap_or_else(|| panic!("{week} {name}"));
        match status.as_str() {
            "KO" => assert_eq!((row.ko, row.ko_tickets.clone()), (1, vec![ticket.clone().unwrap()])),
            _ => assert_eq!((row.missed, row.done + 1), (1, row.scheduled)),
        }
    }

    // ROI: the yearly time and cost of backup incidents, and a payback time.
    let roi: Vec<(String, String, String)> = ch
        .query("SELECT toString(yearly_incident_minutes), toString(yearly_incident_cost), toString(round(50000 / toFloat64(yearly_incident_cost), 1)) \
                FROM incident_cost_yearly WHERE tenant = 'acme' AND year = 2026 AND category = 'RUN > MCO > backups'")
        .fetch_all()
        .await
        .unwrap();
    let backup_incident_minutes: i64 = tickets
        .iter()
        .filter(|t| t["ticket_id"].as_str().unwrap().starts_with("2026") && t["ticket_type"] == "INCIDENT")
        .filter(|t| t["category_path"].as_array().unwrap().iter().any(|c| c == "backups"))
        .map(|t| t["minutes_worked"].as_i64().unwrap())
        .sum();
    assert_eq!(roi.len(), 1);
    assert_eq!(dec(&roi[0].0), Decimal::from(backup_incident_minutes));
    assert!(dec(&roi[0].1) > Decimal::ZERO);

    // FOCUS export: one row per daily aggregate, costs summing to the daily totals.
    let out = env.dir.path().join("focus.csv");
    env.meter(&["export", "focus", "--tenant", "acme", "--from", "2026-01-01", "--to", "2026-02-01", "--out", out.to_str().unwrap()]);
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let headers = reader.headers().unwrap().clone();
    for column in ["BilledCost", "EffectiveCost", "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ServiceCategory", "SubAccountId", "ConsumedQuantity", "ConsumedUnit", "BillingCurrency", "Tags"] {
        assert!(headers.iter().any(|h| h == column), "{column} missing");
    }
    let billed = headers.iter().position(|h| h == "BilledCost").unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let focus_total: Decimal = rows.iter().map(|r| dec(&r[billed])).sum();
    let (daily_rows, daily_total): (u64, String) = ch
        .query("SELECT count(), toString(sum(cost)) FROM aggregates FINAL WHERE period = 'DAY' AND tenant = 'acme' AND window_date >= '2026-01-01' AND window_date < '2026-02-01'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, daily_rows);
    assert_eq!(focus_total, dec(&daily_total));

    // The same export as Parquet (format from the extension): same columns,
    // same rows, exact Decimal128(38, 6) costs, UTC timestamps.
    let parquet_out = env.dir.path().join("focus.parquet");
    env.meter(&["export", "focus", "--tenant", "acme", "--from", "2026-01-01", "--to", "2026-02-01", "--out", parquet_out.to_str().unwrap()]);
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&parquet_out).unwrap()).unwrap();
    let names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, headers.iter().collect::<Vec<_>>());
    let (mut parquet_rows, mut parquet_total, mut first_start) = (0usize, Decimal::ZERO, None);
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        parquet_rows += batch.num_rows();
        let billed = batch.column_by_name("BilledCost").unwrap().as_any().downcast_ref::<arrow_array::Decimal128Array>().unwrap();
        assert_eq!((billed.precision(), billed.scale()), (38, 6));
        parquet_total += billed.values().iter().map(|v| Decimal::from_i128_with_scale(*v, 6)).sum::<Decimal>();
        let start = batch.column_by_name("ChargePeriodStart").unwrap();
        let start = start.as_any().downcast_ref::<arrow_array::TimestampMillisecondArray>().unwrap();
        assert_eq!(start.timezone(), Some("UTC"));
        if first_start.is_none() && !start.is_empty() {
            first_start = Some(start.value(0));
        }
    }
    assert_eq!(parquet_rows, rows.len());
    assert_eq!(parquet_total, focus_total);
    let charge_start = headers.iter().position(|h| h == "ChargePeriodStart").unwrap();
    assert_eq!(first_start, rows.first().map(|r| r[charge_start].parse::<DateTime<Utc>>().unwrap().timestamp_millis()));
}
