//! Contracts as data (format: `config/contracts.example.toml`): loaded into
//! `contracts`, and into `contract_days` with the amount expected each day.
//!
//! A contract has a yearly amount in its unit (days, euros or tickets) over
//! [start, end]; a revision sets a new yearly amount from a month on. The
//! amount expected in a month is the month's yearly amount × the contract
//! days in the month / the contract's days, exact to 6 decimals; it is
//! spread over the month's days so that the days sum to it exactly.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("ClickHouse: {0} (did `meter migrate` run?)")]
    ClickHouse(#[from] clickhouse::error::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractUnit {
    Days,
    Euros,
    Tickets,
}

impl ContractUnit {
    fn label(self) -> &'static str {
        match self {
            ContractUnit::Days => "days",
            ContractUnit::Euros => "euros",
            ContractUnit::Tickets => "tickets",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    /// First month of the new yearly amount, "YYYY-MM".
    pub from_month: String,
    pub yearly_amount: Decimal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub tenant: String,
    pub id: String,
    pub unit: ContractUnit,
    pub yearly_amount: Decimal,
    /// Hours in a contract day (days contracts), often 7 or 8.
    #[serde(default = "eight")]
    pub hours_per_day: Decimal,
    /// First and last day (inclusive).
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Contractual weekly average; default: yearly amount over the contract's weeks.
    pub weekly_average: Option<Decimal>,
    /// A week consuming more than `spike_factor` × the weekly average is a
    /// consumption spike (`consumption_spikes`); default 1.5.
    #[serde(default = "default_spike_factor")]
    pub spike_factor: Decimal,
    #[serde(default)]
    pub revisions: Vec<Revision>,
}

fn eight() -> Decimal {
    Decimal::from(8)
}

/// 1.5: a week half again above the contractual average.
pub fn default_spike_factor() -> Decimal {
    Decimal::new(15, 1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractFile {
    contracts: Vec<Contract>,
}

pub fn load_file(path: &Path) -> Result<Vec<Contract>, ContractError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ContractError::Read { path: display.clone(), source })?;
    let file: ContractFile = toml::from_str(&text).map_err(|e| ContractError::Invalid { path: display.clone(), message: e.to_string() })?;
    for c in &file.contracts {
        let bad = |m: String| ContractError::Invalid { path: display.clone(), message: format!("contract {}: {m}", c.id) };
        if c.end < c.start {
            return Err(bad("end is before start".into()));
        }
        if c.yearly_amount.is_sign_negative() || c.hours_per_day <= Decimal::ZERO {
            return Err(bad("yearly_amount must not be negative and hours_per_day must be positive".into()));
        }
        if c.spike_factor <= Decimal::ZERO {
            return Err(bad(format!("spike_factor {} must be positive (1.5: a week half again above the weekly average)", c.spike_factor)));
        }
        for r in &c.revisions {
            month_start(&r.from_month).ok_or_else(|| bad(format!("revision month {:?} is not YYYY-MM", r.from_month)))?;
        }
    }
    Ok(file.contracts)
}

fn month_start(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()
}

/// The amount expected on each day of the contract.
pub fn expected_per_day(c: &Contract) -> BTreeMap<NaiveDate, Decimal> {
    let total_days = Decimal::from((c.end - c.start).num_days() + 1);
    let mut revisions: Vec<(NaiveDate, Decimal)> =
        c.revisions.iter().filter_map(|r| month_start(&r.from_month).map(|m| (m, r.yearly_amount))).collect();
    revisions.sort();
    let mut out = BTreeMap::new();
    let mut month = NaiveDate::from_ymd_opt(c.start.year(), c.start.month(), 1).unwrap_or(c.start);
    while month <= c.end {
        let next = month.checked_add_months(chrono::Months::new(1)).unwrap_or(c.end + Duration::days(1));
        let first = month.max(c.start);
        let last = (next - Duration::days(1)).min(c.end);
        let days = (last - first).num_days() + 1;
        let yearly = revisions.iter().rev().find(|(m, _)| *m <= month).map(|(_, a)| *a).unwrap_or(c.yearly_amount);
        let month_amount = (yearly * Decimal::from(days) / total_days).round_dp(6);
        // Spread in micro-units: equal shares, the remainder one micro-unit a day from the first.
        let micros = (month_amount * Decimal::from(1_000_000)).trunc();
        let share = (micros / Decimal::from(days)).trunc();
        let mut remainder = micros - share * Decimal::from(days);
        let mut day = first;
        while day <= last {
            let extra = if remainder > Decimal::ZERO { Decimal::ONE } else { Decimal::ZERO };
            remainder -= extra;
            out.insert(day, (share + extra) / Decimal::from(1_000_000));
            day += Duration::days(1);
        }
        month = next;
    }
    out
}

#[derive(clickhouse::Row, Serialize)]
struct ContractRow {
    tenant: String,
    contract_id: String,
    unit: String,
    yearly_amount: i64,
    hours_per_day: i64,
    weekly_average: i64,
    start_date: u16,
    end_date: u16,
    loaded_at: u32,
}

#[derive(clickhouse::Row, Serialize)]
struct SpikeFactorRow {
    tenant: String,
    contract_id: String,
    spike_factor: i64,
    loaded_at: u32,
}

#[derive(clickhouse::Row, Serialize)]
struct ContractDayRow {
    tenant: String,
    contract_id: String,
    day: u16,
    expected: i64,
    loaded_at: u32,
}

fn micros(d: Decimal) -> i64 {
    let mut d = d;
    d.rescale(6);
    i64::try_from(d.mantissa()).unwrap_or(i64::MAX)
}

fn days_since_epoch(d: NaiveDate) -> u16 {
    u16::try_from((d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days()).unwrap_or(0)
}

/// Writes the contracts, their spike factors and their days; a reload
/// replaces them (newer `loaded_at`).
pub async fn store(client: &clickhouse::Client, contracts: &[Contract]) -> Result<usize, ContractError> {
    let loaded_at = u32::try_from(Utc::now().timestamp()).unwrap_or(0);
    let mut insert = client.insert::<ContractRow>("contracts").await?;
    let mut day_rows = Vec::new();
    for c in contracts {
        let total_days = Decimal::from((c.end - c.start).num_days() + 1);
        let weekly = c.weekly_average.unwrap_or_else(|| (c.yearly_amount * Decimal::from(7) / total_days).round_dp(6));
        insert
            .write(&ContractRow {
                tenant: c.tenant.clone(),
                contract_id: c.id.clone(),
                unit: c.unit.label().into(),
                yearly_amount: micros(c.yearly_amount),
                hours_per_day: micros(c.hours_per_day),
                weekly_average: micros(weekly),
                start_date: days_since_epoch(c.start),
                end_date: days_since_epoch(c.end),
                loaded_at,
            })
            .await?;
        for (day, expected) in expected_per_day(c) {
            day_rows.push(ContractDayRow { tenant: c.tenant.clone(), contract_id: c.id.clone(), day: days_since_epoch(day), expected: micros(expected), loaded_at });
        }
    }
    insert.end().await?;
    let mut insert = client.insert::<SpikeFactorRow>("contract_spike_factors").await?;
    for c in contracts {
        insert
            .write(&SpikeFactorRow { tenant: c.tenant.clone(), contract_id: c.id.clone(), spike_factor: micros(c.spike_factor), loaded_at })
            .await?;
    }
    insert.end().await?;
    let mut insert = client.insert::<ContractDayRow>("contract_days").await?;
    for row in &day_rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(contracts.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(revisions: Vec<Revision>) -> Contract {
        Contract {
            tenant: "acme".into(),
            id: "c".into(),
            unit: ContractUnit::Days,
            yearly_amount: Decimal::from(263),
            hours_per_day: Decimal::from(8),
            start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2026, 12, 31).unwrap(),
            weekly_average: None,
            spike_factor: default_spike_factor(),
            revisions,
        }
    }

    #[test]
    fn days_sum_to_each_month_and_to_the_year() {
        let days = expected_per_day(&contract(vec![]));
        assert_eq!(days.len(), 365);
        let january: Decimal = days.iter().filter(|(d, _)| d.month() == 1).map(|(_, v)| *v).sum();
        assert_eq!(january, (Decimal::from(263) * Decimal::from(31) / Decimal::from(365)).round_dp(6));
        let year: Decimal = days.values().sum();
        assert!((year - Decimal::from(263)).abs() <= Decimal::new(12, 6), "{year}");
    }

    #[test]
    fn a_revision_changes_the_months_from_its_month_on() {
        let revised = contract(vec![Revision { from_month: "2026-04".into(), yearly_amount: Decimal::from(131) }]);
        let days = expected_per_day(&revised);
        let month = |m: u32| -> Decimal { days.iter().filter(|(d, _)| d.month() == m).map(|(_, v)| *v).sum() };
        assert_eq!(month(3), (Decimal::from(263) * Decimal::from(31) / Decimal::from(365)).round_dp(6));
        assert_eq!(month(4), (Decimal::from(131) * Decimal::from(30) / Decimal::from(365)).round_dp(6));
    }

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/contracts.example.toml");
        let contracts = load_file(&path).unwrap();
        assert!(contracts.iter().any(|c| c.unit == ContractUnit::Days && !c.revisions.is_empty()));
        assert!(contracts.iter().any(|c| c.spike_factor != default_spike_factor()));
        assert!(contracts.iter().any(|c| c.spike_factor == default_spike_factor()), "the default applies where none is set");
    }

    #[test]
    fn a_spike_factor_must_be_positive() {
        let dir = std::env::temp_dir().join(format!("meter-contracts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("contracts.toml");
        std::fs::write(
            &path,
            "[[contracts]]\ntenant = \"acme\"\nid = \"c\"\nunit = \"days\"\nyearly_amount = \"263\"\nstart = \"2026-01-01\"\nend = \"2026-12-31\"\nspike_factor = \"0\"\n",
        )
        .unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("spike_factor"), "{err}");
    }
}
