//! `meter forecast`: per tenant and contract, the next 12 months of
//! consumption (in the contract's unit) and cost, the remaining budget and
//! the day the forecast consumption uses it up.
//!
//! The method is the one of the ClickHouse views `consumption_forecast` and
//! `budget_forecast` (migration 0010), computed here from the same inputs in
//! the same integer micro-units, so both give the same figures:
//! - the forecast starts at the first month without complete data: the
//!   current month, or the month after the tenant's last data if earlier;
//! - history is the tenant's months from its first data to that start (a
//!   month without data counts as 0);
//! - with 12 months of history or more ("seasonal"), month M is forecast as
//!   level × average(M) / Σ averages: level is the consumption of the last
//!   12 months, average(M) the mean of the months M of history;
//! - with less ("flat"), every month is the mean month of history.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{Datelike, Months, NaiveDate, Utc};
use clap::{Args, ValueEnum};
use meter_config::MeterConfig;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Months forecast.
pub const HORIZON_MONTHS: u32 = 12;
/// History needed for the seasonal method.
pub const SEASONAL_MIN_MONTHS: i64 = 12;
const MICROS: i64 = 1_000_000;

#[derive(Args)]
pub struct ForecastArgs {
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this contract.
    #[arg(long)]
    contract: Option<String>,
    /// Output: a table per contract, JSON (one object per contract), or CSV (one row per contract and month).
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Forecast as of this day (YYYY-MM-DD) instead of today (UTC); the views always use today.
    #[arg(long, value_name = "DATE")]
    as_of: Option<NaiveDate>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// A contract's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Days,
    Euros,
    Tickets,
}

impl Unit {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "days" => Ok(Unit::Days),
            "euros" => Ok(Unit::Euros),
            "tickets" => Ok(Unit::Tickets),
            other => anyhow::bail!("unknown contract unit {other:?}"),
        }
    }
}

/// A tenant's consumption in one month, in base micro-units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonthUsage {
    pub month: NaiveDate,
    pub minutes_micros: i64,
    pub cost_micros: i64,
    pub tickets: i64,
}

/// What the forecast needs of a contract.
#[derive(Clone, Debug)]
pub struct Contract {
    pub tenant: String,
    pub contract_id: String,
    pub unit: Unit,
    /// Minutes in a contract day (hours_per_day × 60, truncated).
    pub minutes_per_day: i64,
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Σ of the expected amounts of its days (its budget), micro-units.
    pub budget_micros: i64,
    /// Consumption per month of the contract (contract_burn_monthly), micro-units.
    pub consumed_months: Vec<(NaiveDate, i64)>,
}

impl Contract {
    /// A month's consumption in the contract's unit, micro-units.
    fn in_unit(&self, u: &MonthUsage) -> i64 {
        match self.unit {
            Unit::Days => u.minutes_micros / self.minutes_per_day.max(1),
            Unit::Euros => u.cost_micros,
            Unit::Tickets => u.tickets * MICROS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Seasonal,
    Flat,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastMonth {
    pub month: NaiveDate,
    /// In the contract's unit.
    pub forecast: Decimal,
    /// Euros.
    pub forecast_cost: Decimal,
    /// Days of the month inside the contract, from the forecast start.
    pub contract_days: u32,
    /// The forecast for those days.
    pub forecast_in_contract: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContractForecast {
    pub tenant: String,
    pub contract_id: String,
    pub unit: Unit,
    pub method: Method,
    pub forecast_start: NaiveDate,
    pub history_months: i64,
    pub budget: Decimal,
    pub consumed_before_forecast: Decimal,
    pub remaining: Decimal,
    pub forecast_to_end: Decimal,
    pub balance_at_end: Decimal,
    pub run_out_date: Option<NaiveDate>,
    /// "exhausted" (nothing left at the forecast start), "runs out", "lasts".
    pub status: &'static str,
    pub months: Vec<ForecastMonth>,
}

fn micros(m: i64) -> Decimal {
    Decimal::new(m, 6).normalize()
}

fn month_index(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

fn add_months(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_add_months(Months::new(n)).unwrap_or(d)
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn days_in_month(month: NaiveDate) -> u32 {
    let next = add_months(month, 1);
    u32::try_from((next - month).num_days()).unwrap_or(0)
}

/// The first month forecast: the month of `today`, or the month after the
/// last month of history if that is earlier. None without history.
pub fn forecast_start(today: NaiveDate, history: &[MonthUsage]) -> Option<NaiveDate> {
    let last = history.iter().map(|u| u.month).max()?;
    Some(first_of_month(today).min(add_months(last, 1)))
}

/// The monthly forecast of one contract from its tenant's history (months
/// before `start` are used; later ones ignored). None if there is no month
/// of history before `start`.
pub fn forecast_months(contract: &Contract, history: &[MonthUsage], start: NaiveDate) -> Option<(Method, i64, Vec<ForecastMonth>)> {
    let first = history.iter().map(|u| u.month).min()?;
    let history_months = month_index(start) - month_index(first);
    if history_months < 1 {
        return None;
    }
    let past: Vec<&MonthUsage> = history.iter().filter(|u| u.month < start).collect();
    let recent_from = start.checked_sub_months(Months::new(12)).unwrap_or(start);
    // Per month of the year: sums over history and over the last 12 months.
    let mut by_month: BTreeMap<u32, (i64, i64, i64, i64)> = BTreeMap::new();
    for u in &past {
        let e = by_month.entry(u.month.month()).or_default();
        let (unit, cost) = (contract.in_unit(u), u.cost_micros);
        e.0 += unit;
        e.2 += cost;
        if u.month >= recent_from {
            e.1 += unit;
            e.3 += cost;
        }
    }
    // How many months of the year `m` the history spans.
    let spanned = |m: u32| -> i64 {
        let offset = (i64::from(m) - i64::from(first.month()) + 12) % 12;
        if offset < history_months { (history_months - 1 - offset) / 12 + 1 } else { 0 }
    };
    let averages: BTreeMap<u32, (i64, i64)> =
        by_month.iter().map(|(m, s)| (*m, (s.0 / spanned(*m).max(1), s.2 / spanned(*m).max(1)))).collect();
    let (unit_level, cost_level): (i64, i64) = by_month.values().fold((0, 0), |a, s| (a.0 + s.1, a.1 + s.3));
    let (unit_total, cost_total): (i64, i64) = by_month.values().fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.2));
    let (unit_avg_sum, cost_avg_sum): (i64, i64) = averages.values().fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
    let method = if history_months >= SEASONAL_MIN_MONTHS { Method::Seasonal } else { Method::Flat };
    let seasonal = |level: i64, average: i64, sum: i64| -> i64 {
        if sum > 0 { i64::try_from(i128::from(level) * i128::from(average) / i128::from(sum)).unwrap_or(i64::MAX) } else { 0 }
    };
    let months = (0..HORIZON_MONTHS)
        .map(|ahead| {
            let month = add_months(start, ahead);
            let (unit_avg, cost_avg) = averages.get(&month.month()).copied().unwrap_or((0, 0));
            let (forecast, cost) = match method {
                Method::Seasonal => (seasonal(unit_level, unit_avg, unit_avg_sum), seasonal(cost_level, cost_avg, cost_avg_sum)),
                Method::Flat => (unit_total / history_months, cost_total / history_months),
            };
            let month_days = days_in_month(month);
            let last_day = add_months(month, 1).pred_opt().unwrap_or(month);
            let from = month.max(contract.start);
            let to = last_day.min(contract.end);
            let contract_days = u32::try_from((to - from).num_days() + 1).unwrap_or(0);
            let in_contract = forecast * i64::from(contract_days) / i64::from(month_days.max(1));
            ForecastMonth {
                month,
                forecast: micros(forecast),
                forecast_cost: micros(cost),
                contract_days,
                forecast_in_contract: micros(in_contract),
            }
        })
        .collect();
    Some((method, history_months, months))
}

/// Micro-units, truncated (as ClickHouse's toInt64 of a decimal).
fn to_micros(d: Decimal) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (d * Decimal::from(MICROS)).trunc().to_i64().unwrap_or(i64::MAX)
}

/// The budget of a contract against its monthly forecast: remaining at the
/// forecast start, forecast to the contract's end (within the horizon), and
/// the first day the forecast consumption reaches the budget.
pub fn forecast_contract(contract: &Contract, history: &[MonthUsage], today: NaiveDate) -> Option<ContractForecast> {
    let start = forecast_start(today, history)?;
    let (method, history_months, months) = forecast_months(contract, history, start)?;
    let consumed: i64 = contract.consumed_months.iter().filter(|(m, _)| *m < start).map(|(_, c)| c).sum();
    let remaining = contract.budget_micros - consumed;
    let uses: Vec<i64> = months.iter().map(|m| to_micros(m.forecast_in_contract)).collect();
    let total: i64 = uses.iter().sum();
    let mut run_out_date = None;
    if remaining > 0 {
        let mut before = 0i64;
        for (m, used) in months.iter().zip(&uses) {
            if before + used >= remaining {
                // Days of this month needed: ceil(still to consume × month days / month forecast).
                let forecast = to_micros(m.forecast);
                let month_days = i64::from(days_in_month(m.month));
                let needed = (remaining - before) * month_days;
                let day_number = ((needed + forecast - 1) / forecast.max(1)).min(i64::from(m.contract_days)).max(1);
                let first = m.month.max(contract.start);
                run_out_date = first.checked_add_days(chrono::Days::new(u64::try_from(day_number - 1).unwrap_or(0)));
                break;
            }
            before += used;
        }
    }
    let status = if remaining <= 0 {
        "exhausted"
    } else if run_out_date.is_some() {
        "runs out"
    } else {
        "lasts"
    };
    Some(ContractForecast {
        tenant: contract.tenant.clone(),
        contract_id: contract.contract_id.clone(),
        unit: contract.unit,
        method,
        forecast_start: start,
        history_months,
        budget: micros(contract.budget_micros),
        consumed_before_forecast: micros(consumed),
        remaining: micros(remaining),
        forecast_to_end: micros(total),
        balance_at_end: micros(remaining - total),
        run_out_date,
        status,
        months,
    })
}

#[derive(clickhouse::Row, Deserialize)]
struct UsageRow {
    tenant: String,
    month: String,
    minutes_micros: i64,
    cost_micros: i64,
    tickets: i64,
}

#[derive(clickhouse::Row, Deserialize)]
struct ContractRow {
    tenant: String,
    contract_id: String,
    unit: String,
    hours_per_day: String,
    start_date: String,
    end_date: String,
}

#[derive(clickhouse::Row, Deserialize)]
struct BurnRow {
    tenant: String,
    contract_id: String,
    month: String,
    expected: String,
    consumed: String,
}

fn date(s: &str) -> Result<NaiveDate> {
    s.parse().with_context(|| format!("bad date {s:?} from ClickHouse"))
}

fn decimal(s: &str) -> Result<Decimal> {
    s.parse().with_context(|| format!("bad decimal {s:?} from ClickHouse"))
}

/// Reads the inputs from ClickHouse and forecasts every matching contract.
pub async fn compute(client: &clickhouse::Client, args: &ForecastArgs) -> Result<Vec<ContractForecast>> {
    let tenant = args.tenant.clone().unwrap_or_default();
    let contract = args.contract.clone().unwrap_or_default();
    let usage: Vec<UsageRow> = client
        .query("SELECT tenant, toString(month), minutes_micros, cost_micros, tickets FROM tenant_consumption_monthly WHERE (? = '' OR tenant = ?)")
        .bind(&tenant)
        .bind(&tenant)
        .fetch_all()
        .await
        .context("reading tenant_consumption_monthly (migrated? `meter migrate`)")?;
    let contracts: Vec<ContractRow> = client
        .query(
            "SELECT tenant, contract_id, unit, toString(hours_per_day), toString(start_date), toString(end_date) FROM contracts FINAL \
             WHERE (? = '' OR tenant = ?) AND (? = '' OR contract_id = ?) ORDER BY tenant, contract_id",
        )
        .bind(&tenant)
        .bind(&tenant)
        .bind(&contract)
        .bind(&contract)
        .fetch_all()
        .await
        .context("reading contracts")?;
    let burn: Vec<BurnRow> = client
        .query(
            "SELECT tenant, contract_id, toString(month), toString(expected), toString(consumed) FROM contract_burn_monthly \
             WHERE (? = '' OR tenant = ?) AND (? = '' OR contract_id = ?)",
        )
        .bind(&tenant)
        .bind(&tenant)
        .bind(&contract)
        .bind(&contract)
        .fetch_all()
        .await
        .context("reading contract_burn_monthly")?;
    let mut history: BTreeMap<String, Vec<MonthUsage>> = BTreeMap::new();
    for u in usage {
        history.entry(u.tenant).or_default().push(MonthUsage {
            month: date(&u.month)?,
            minutes_micros: u.minutes_micros,
            cost_micros: u.cost_micros,
            tickets: u.tickets,
        });
    }
    let mut budgets: BTreeMap<(String, String), (Decimal, Vec<(NaiveDate, i64)>)> = BTreeMap::new();
    for b in burn {
        let e = budgets.entry((b.tenant, b.contract_id)).or_default();
        e.0 += decimal(&b.expected)?;
        e.1.push((date(&b.month)?, to_micros(decimal(&b.consumed)?)));
    }
    let today = args.as_of.unwrap_or_else(|| Utc::now().date_naive());
    let mut out = Vec::new();
    for c in contracts {
        let Some((expected, consumed_months)) = budgets.remove(&(c.tenant.clone(), c.contract_id.clone())) else { continue };
        let contract = Contract {
            unit: Unit::parse(&c.unit)?,
            minutes_per_day: to_micros(decimal(&c.hours_per_day)? * Decimal::from(60)) / MICROS,
            start: date(&c.start_date)?,
            end: date(&c.end_date)?,
            budget_micros: to_micros(expected),
            consumed_months,
            tenant: c.tenant,
            contract_id: c.contract_id,
        };
        if let Some(f) = forecast_contract(&contract, history.get(&contract.tenant).map(Vec::as_slice).unwrap_or_default(), today) {
            out.push(f);
        }
    }
    Ok(out)
}

const CSV_COLUMNS: [&str; 18] = [
    "tenant", "contract_id", "unit", "method", "forecast_start", "history_months", "budget", "consumed_before_forecast", "remaining",
    "forecast_to_end", "balance_at_end", "run_out_date", "status", "month", "forecast", "forecast_cost", "contract_days",
    "forecast_in_contract",
];

fn unit_name(u: Unit) -> &'static str {
    match u {
        Unit::Days => "days",
        Unit::Euros => "euros",
        Unit::Tickets => "tickets",
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Seasonal => "seasonal",
        Method::Flat => "flat",
    }
}

pub fn write_csv<W: std::io::Write>(out: W, forecasts: &[ContractForecast]) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_COLUMNS)?;
    for f in forecasts {
        for m in &f.months {
            w.write_record([
                f.tenant.clone(),
                f.contract_id.clone(),
                unit_name(f.unit).to_string(),
                method_name(f.method).to_string(),
                f.forecast_start.to_string(),
                f.history_months.to_string(),
                f.budget.to_string(),
                f.consumed_before_forecast.to_string(),
                f.remaining.to_string(),
                f.forecast_to_end.to_string(),
                f.balance_at_end.to_string(),
                f.run_out_date.map(|d| d.to_string()).unwrap_or_default(),
                f.status.to_string(),
                m.month.to_string(),
                m.forecast.to_string(),
                m.forecast_cost.to_string(),
                m.contract_days.to_string(),
                m.forecast_in_contract.to_string(),
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}

pub fn table(f: &ContractForecast) -> String {
    let unit = unit_name(f.unit);
    let run_out = match (f.status, f.run_out_date) {
        ("exhausted", _) => "already used up".to_string(),
        (_, Some(d)) => d.to_string(),
        _ => "not within the contract and 12 months".to_string(),
    };
    let mut s = format!(
        "{} / {} ({unit}): {} forecast from {} on {} months of history\n\
         budget {} {unit}, consumed before {} {} {unit}, remaining {} {unit}, forecast to the end {} {unit}, balance {} {unit}; runs out: {run_out}\n",
        f.tenant,
        f.contract_id,
        method_name(f.method),
        f.forecast_start.format("%Y-%m"),
        f.history_months,
        f.budget.round_dp(2),
        f.forecast_start.format("%Y-%m"),
        f.consumed_before_forecast.round_dp(2),
        f.remaining.round_dp(2),
        f.forecast_to_end.round_dp(2),
        f.balance_at_end.round_dp(2),
    );
    s.push_str(&format!("  {:<8} {:>12} {:>12} {:>13} {:>12}\n", "month", unit, "euros", "contract days", "in contract"));
    for m in &f.months {
        s.push_str(&format!(
            "  {:<8} {:>12} {:>12} {:>13} {:>12}\n",
            m.month.format("%Y-%m").to_string(),
            m.forecast.round_dp(2).to_string(),
            m.forecast_cost.round_dp(2).to_string(),
            m.contract_days,
            m.forecast_in_contract.round_dp(2).to_string(),
        ));
    }
    s
}

pub async fn run(config: &MeterConfig, args: ForecastArgs) -> Result<()> {
    let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let forecasts = compute(&client, &args).await?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&forecasts)?),
        OutputFormat::Csv => write_csv(std::io::stdout().lock(), &forecasts)?,
        OutputFormat::Table => {
            if forecasts.is_empty() {
                println!("no contract with history to forecast");
            }
            for f in &forecasts {
                println!("{}", table(f));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn days_contract(budget_days: i64, start: &str, end: &str, consumed: Vec<(NaiveDate, i64)>) -> Contract {
        Contract {
            tenant: "acme".into(),
            contract_id: "c".into(),
            unit: Unit::Days,
            minutes_per_day: 480,
            start: d(start),
            end: d(end),
            budget_micros: budget_days * MICROS,
            consumed_months: consumed,
        }
    }

    fn usage(month: &str, minutes: i64) -> MonthUsage {
        MonthUsage { month: d(month), minutes_micros: minutes * MICROS, cost_micros: minutes * MICROS * 85 / 60, tickets: minutes / 100 }
    }

    /// The independent model: the seasonal forecast of one month written out
    /// with decimals, as an analyst would in a spreadsheet.
    fn spreadsheet(history: &[(&str, i64)], start: &str, target_month: u32) -> Decimal {
        let start = d(start);
        let days = |m: i64| Decimal::from(m) / Decimal::from(480);
        let level: Decimal = history.iter().filter(|(m, _)| d(m) >= start - chrono::Months::new(12) && d(m) < start).map(|(_, x)| days(*x)).sum();
        let first = history.iter().map(|(m, _)| d(m)).min().unwrap();
        // Every month from the first to the start, 0 where there is no data.
        let mut all: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
        let mut m = first;
        while m < start {
            all.insert(m, Decimal::ZERO);
            m = m + chrono::Months::new(1);
        }
        for (month, x) in history {
            if d(month) < start {
                *all.get_mut(&d(month)).unwrap() += days(*x);
            }
        }
        let average = |moy: u32| {
            let v: Vec<Decimal> = all.iter().filter(|(m, _)| m.month() == moy).map(|(_, x)| *x).collect();
            if v.is_empty() { Decimal::ZERO } else { v.iter().sum::<Decimal>() / Decimal::from(v.len()) }
        };
        let sum: Decimal = (1..=12).map(average).sum();
        level * average(target_month) / sum
    }

    #[test]
    fn domain_january_is_forecast_high() {
        // DOMAIN.md: January 2025 16 days, January 2026 27 days (8-hour days),
        // February 2026 the three logged actions (280 minutes).
        let raw = [("2025-01-01", 16 * 480), ("2026-01-01", 27 * 480), ("2026-02-01", 280)];
        let history: Vec<MonthUsage> = raw.iter().map(|(m, x)| usage(m, *x)).collect();
        let contract = days_contract(263, "2026-01-01", "2026-12-31", vec![]);
        let today = d("2026-12-02");
        let start = forecast_start(today, &history).unwrap();
        assert_eq!(start, d("2026-03-01"), "the month after the last data");
        let (method, months_of_history, months) = forecast_months(&contract, &history, start).unwrap();
        assert_eq!((method, months_of_history, months.len()), (Method::Seasonal, 14, 12));
        let january = months.iter().find(|m| m.month == d("2027-01-01")).unwrap();
        assert!(months.iter().all(|m| m.forecast <= january.forecast), "January is the highest month");
        for m in &months {
            let want = spreadsheet(&raw, "2026-03-01", m.month.month());
            assert!((m.forecast - want).abs() < Decimal::new(1, 5), "{}: {} vs {want}", m.month, m.forecast);
        }
        // level 27.583 days x 21.5 / (21.5 + 0.2916) = 27.214...
        assert!(january.forecast > Decimal::from(27) && january.forecast < Decimal::from(28), "{}", january.forecast);
    }

    #[test]
    fn less_than_a_year_of_history_is_flat_at_the_mean_month() {
        let history = vec![usage("2026-06-01", 4800), usage("2026-07-01", 0), usage("2026-08-01", 9600)];
        let contract = days_contract(100, "2026-01-01", "2027-12-31", vec![]);
        let start = forecast_start(d("2026-08-20"), &history).unwrap();
        assert_eq!(start, d("2026-08-01"), "the current month is not history");
        let (method, n, months) = forecast_months(&contract, &history, start).unwrap();
        // June 10 days, July 0: mean 5 days a month.
        assert_eq!((method, n), (Method::Flat, 2));
        assert!(months.iter().all(|m| m.forecast == Decimal::from(5)), "{months:?}");
    }

    #[test]
    fn the_budget_runs_out_on_the_day_the_forecast_reaches_it() {
        // 24 months of 10 days (4800 minutes) a month: flat seasonality at 10 days.
        let history: Vec<MonthUsage> =
            (0..24).map(|i| usage(&add_months(d("2024-03-01"), i).to_string(), 4800)).collect();
        // 30 days budget, 8 consumed before the start (March 2026): 22 left,
        // March 10 (cumulative 10), April 10 (20), May: 2 days of 31 days at
        // 10 days a month = 6.2 days of May: the 7th.
        let contract = days_contract(30, "2026-01-01", "2026-12-31", vec![(d("2026-01-01"), 3 * MICROS), (d("2026-02-01"), 5 * MICROS), (d("2026-03-01"), 7 * MICROS)]);
        let f = forecast_contract(&contract, &history, d("2026-03-15")).unwrap();
        assert_eq!(f.forecast_start, d("2026-03-01"));
        assert_eq!(f.method, Method::Seasonal);
        assert_eq!(f.remaining, Decimal::from(22));
        assert_eq!(f.run_out_date, Some(d("2026-05-07")));
        assert_eq!(f.status, "runs out");
        // To the contract's end (December): 10 months of 10 days.
        assert_eq!(f.forecast_to_end, Decimal::from(100));
        assert_eq!(f.balance_at_end, Decimal::from(-78));
    }

    #[test]
    fn a_used_up_budget_is_exhausted_and_a_large_one_lasts() {
        let history = vec![usage("2025-12-01", 4800), usage("2026-01-01", 4800)];
        let used = days_contract(5, "2026-01-01", "2026-12-31", vec![(d("2026-01-01"), 10 * MICROS)]);
        let f = forecast_contract(&used, &history, d("2026-02-10")).unwrap();
        assert_eq!((f.status, f.run_out_date, f.remaining), ("exhausted", None, Decimal::from(-5)));
        let large = days_contract(1000, "2026-01-01", "2026-12-31", vec![]);
        let f = forecast_contract(&large, &history, d("2026-02-10")).unwrap();
        assert_eq!((f.status, f.run_out_date), ("lasts", None));
        // Flat at 10 days: February to December inside the contract.
        assert_eq!(f.forecast_to_end, Decimal::from(110));
    }

    #[test]
    fn contract_days_cut_the_months_at_the_contract_end() {
        let history = vec![usage("2026-01-01", 31 * 480)];
        let contract = days_contract(1000, "2026-01-01", "2026-02-14", vec![]);
        let f = forecast_contract(&contract, &history, d("2026-02-01")).unwrap();
        let february = &f.months[0];
        assert_eq!((february.month, february.contract_days), (d("2026-02-01"), 14));
        // 31 days a month spread over February's 28 days, 14 of them.
        assert_eq!(february.forecast_in_contract, Decimal::new(155, 1));
        assert_eq!(f.months[1].contract_days, 0);
    }

    #[test]
    fn csv_has_one_row_per_contract_and_month() {
        let history = vec![usage("2026-01-01", 4800)];
        let contract = days_contract(50, "2026-01-01", "2026-12-31", vec![]);
        let f = forecast_contract(&contract, &history, d("2026-02-10")).unwrap();
        let mut out = Vec::new();
        write_csv(&mut out, &[f.clone()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1 + 12);
        assert!(text.lines().nth(1).unwrap().starts_with("acme,c,days,flat,2026-02-01,1,50,0,50,"), "{text}");
        assert!(table(&f).contains("runs out: 2026-06-"), "{}", table(&f));
    }
}
