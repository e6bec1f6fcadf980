//! The budget forecast through the real pipeline: the DOMAIN.md demo data
//! (`meter demo generate`) collected, aggregated and sunk into ClickHouse,
//! the example contracts plus a two-year one loaded; `meter forecast` and
//! the views `consumption_forecast` / `budget_forecast` are checked against
//! a forecast computed here from the demo files, day by day with decimals.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use meter_tests::TestEnv;
use rust_decimal::Decimal;
use serde_json::Value;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}")).parse().unwrap()
}

fn first_of(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap()
}

/// The forecast of one contract of acme (8-hour days) as an analyst would
/// compute it: months of ticket days from the demo file, the seasonal rule,
/// the run-out found by walking the days.
struct Independent {
    start: NaiveDate,
    months: BTreeMap<NaiveDate, Decimal>,
    remaining: Decimal,
    run_out: Option<NaiveDate>,
}

fn independent(tickets: &[Value], budget: Decimal, contract_start: NaiveDate, contract_end: NaiveDate, today: NaiveDate) -> Independent {
    let mut used: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    for t in tickets {
        let local = t["event_time"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap().with_timezone(&chrono_tz::Europe::Paris).date_naive();
        *used.entry(first_of(local)).or_default() += Decimal::from(t["minutes_worked"].as_i64().unwrap()) / Decimal::from(480);
    }
    let start = first_of(today).min(*used.keys().last().unwrap() + Months::new(1));
    let mut history: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
    let mut m = *used.keys().next().unwrap();
    while m < start {
        history.insert(m, used.get(&m).copied().unwrap_or_default());
        m = m + Months::new(1);
    }
    assert!(history.len() >= 12, "the demo data has more than a year of history: seasonal");
    let level: Decimal = history.iter().filter(|(m, _)| **m >= start - Months::new(12)).map(|(_, x)| *x).sum();
    let average = |k: u32| -> Decimal {
        let of_k: Vec<Decimal> = history.iter().filter(|(m, _)| m.month() == k).map(|(_, x)| *x).collect();
        if of_k.is_empty() { Decimal::ZERO } else { of_k.iter().sum::<Decimal>() / Decimal::from(of_k.len()) }
    };
    let sum: Decimal = (1..=12).map(average).sum();
    let months: BTreeMap<NaiveDate, Decimal> =
        (0..12).map(|i| start + Months::new(i)).map(|m| (m, level * average(m.month()) / sum)).collect();
    let consumed: Decimal = used.iter().filter(|(m, _)| **m >= first_of(contract_start) && **m < start).map(|(_, x)| *x).sum();
    let remaining = budget - consumed;
    let (mut run_out, mut cumulative, mut day) = (None, Decimal::ZERO, start);
    while remaining > Decimal::ZERO && day <= contract_end && day < start + Months::new(12) {
        if day >= contract_start {
            let month = first_of(day);
            let month_days = ((month + Months::new(1)) - month).num_days();
            cumulative += months[&month] / Decimal::from(month_days);
            if cumulative >= remaining {
                run_out = Some(day);
                break;
            }
        }
        day = day.succ_opt().unwrap();
    }
    Independent { start, months, remaining, run_out }
}

#[tokio::test(flavor = "multi_thread")]
async fn forecast_command_and_views_follow_the_seasons() {
    let env = TestEnv::new("forecast").await;
    let dir = env.dir.path().join("demo");
    env.meter(&["migrate"]);
    env.meter(&["demo", "generate", "--out", dir.to_str().unwrap()]);
    env.meter(&["collect", "file", "--kind", "ticket-time", dir.join("ticket-time.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    env.meter(&["contracts", "load", meter_tests::repo_root().join("config/contracts.example.toml").to_str().unwrap()]);
    // A two-year contract of 40 days: what is left after the first months
    // is used up in the forecast January.
    let two_years = env.dir.path().join("two-years.toml");
    std::fs::write(
        &two_years,
        "[[contracts]]\ntenant = \"acme\"\nid = \"acme-two-years\"\nunit = \"days\"\nyearly_amount = \"40\"\nstart = \"2026-01-01\"\nend = \"2027-12-31\"\n",
    )
    .unwrap();
    env.meter(&["contracts", "load", two_years.to_str().unwrap()]);
    let tickets = lines(&dir.join("ticket-time.jsonl"));
    let today = Utc::now().date_naive();
    let tolerance = Decimal::new(1, 5);

    let out = env.meter(&["forecast", "--tenant", "acme", "--format", "json"]);
    let forecasts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ch = env.clickhouse();
    for (contract, start, end) in [("acme-mco-2026", "2026-01-01", "2026-12-31"), ("acme-two-years", "2026-01-01", "2027-12-31")] {
        let f = forecasts.iter().find(|f| f["contract_id"] == contract).unwrap_or_else(|| panic!("no forecast of {contract}"));
        let budget = dec(&f["budget"]);
        let want = independent(&tickets, budget, start.parse().unwrap(), end.parse().unwrap(), today);
        assert_eq!(f["forecast_start"], want.start.to_string(), "{contract}");
        assert_eq!(f["method"], "seasonal");
        let months = f["months"].as_array().unwrap();
        assert_eq!(months.len(), 12);
        for m in months {
            let month: NaiveDate = m["month"].as_str().unwrap().parse().unwrap();
            let got = dec(&m["forecast"]);
            assert!((got - want.months[&month]).abs() < tolerance, "{contract} {month}: {got} vs {}", want.months[&month]);
        }
        // DOMAIN.md: January 27 days after 16 the year before: the forecast January is the high month.
        let (high, _) = want.months.iter().max_by_key(|(_, x)| **x).unwrap();
        assert_eq!(high.month(), 1);
        assert!(want.months[high] > Decimal::from(20), "{:?}", want.months);
        assert!((dec(&f["remaining"]) - want.remaining).abs() < tolerance, "{contract}: remaining {} vs {}", f["remaining"], want.remaining);
        assert_eq!(f["run_out_date"].as_str().map(str::to_string), want.run_out.map(|d| d.to_string()), "{contract}");

        // The views give the command's figures.
        let view: Vec<(String, String, String)> = ch
            .query("SELECT toString(month), toString(forecast), toString(forecast_cost) FROM consumption_forecast WHERE tenant = 'acme' AND contract_id = ? ORDER BY month")
            .bind(contract)
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(view.len(), 12);
        for ((month, forecast, cost), m) in view.iter().zip(months) {
            assert_eq!(month, m["month"].as_str().unwrap());
            assert_eq!(forecast.parse::<Decimal>().unwrap(), dec(&m["forecast"]), "{contract} {month}");
            assert_eq!(cost.parse::<Decimal>().unwrap(), dec(&m["forecast_cost"]), "{contract} {month}");
        }
        let (remaining, run_out, status): (String, String, String) = ch
            .query("SELECT toString(remaining), ifNull(toString(run_out_date), ''), status FROM budget_forecast WHERE tenant = 'acme' AND contract_id = ?")
            .bind(contract)
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(remaining.parse::<Decimal>().unwrap(), dec(&f["remaining"]));
        assert_eq!(run_out, f["run_out_date"].as_str().unwrap_or(""));
        assert_eq!(status, f["status"].as_str().unwrap());
    }
    let two_years = forecasts.iter().find(|f| f["contract_id"] == "acme-two-years").unwrap();
    assert_eq!(two_years["status"], "runs out", "{two_years}");
    assert!(two_years["run_out_date"].as_str().unwrap().contains("-01-"), "runs out in the forecast January: {two_years}");

    // Table and CSV: the same forecast for people and spreadsheets.
    let table = String::from_utf8(env.meter(&["forecast", "--tenant", "acme", "--contract", "acme-two-years"]).stdout).unwrap();
    assert!(table.contains("acme / acme-two-years (days): seasonal") && table.contains(two_years["run_out_date"].as_str().unwrap()), "{table}");
    let csv_out = env.meter(&["forecast", "--tenant", "acme", "--format", "csv"]).stdout;
    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    assert_eq!(reader.records().count(), 12 * forecasts.len());
}
