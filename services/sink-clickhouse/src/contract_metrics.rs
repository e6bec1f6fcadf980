//! Contract burn as Prometheus gauges, read from the `contract_status` view,
//! so that alert rules can compare consumption with its pro-rata; and the
//! current week's consumption against the spike threshold (weekly average ×
//! spike factor), read from `contract_weekly_spikes`.

use std::time::Duration;

use meter_telemetry::MetricFamily;
use prometheus::{GaugeVec, Registry};
use serde::Deserialize;

const CONTRACT_LABELS: &[&str] = &["tenant", "contract", "unit"];
pub const CONSUMED_RATIO: MetricFamily = MetricFamily::gauge(
    "meter_tenant_contract_consumed_ratio",
    "Consumed to date over expected to date (pro rata of the revised amounts).",
    CONTRACT_LABELS,
);
pub const CONSUMED: MetricFamily =
    MetricFamily::gauge("meter_tenant_contract_consumed", "Consumed to date, in the contract's unit.", CONTRACT_LABELS);
pub const EXPECTED_TO_DATE: MetricFamily =
    MetricFamily::gauge("meter_tenant_contract_expected_to_date", "Expected to date, in the contract's unit.", CONTRACT_LABELS);
pub const WEEK_SPIKE_RATIO: MetricFamily = MetricFamily::gauge(
    "meter_tenant_contract_week_spike_ratio",
    "Consumed this week (Monday on) over the contract's weekly average times its spike factor: above 1 is a consumption spike.",
    CONTRACT_LABELS,
);

/// The contract gauges' families.
pub const METRICS: &[MetricFamily] = &[CONSUMED_RATIO, CONSUMED, EXPECTED_TO_DATE, WEEK_SPIKE_RATIO];

#[derive(Clone)]
pub struct ContractGauges {
    /// consumed to date / expected to date (a ratio, not money: f64 is fine).
    ratio: GaugeVec,
    consumed: GaugeVec,
    expected: GaugeVec,
    /// This week's consumption / (weekly average × spike factor): above 1 is a spike.
    week_spike_ratio: GaugeVec,
}

impl ContractGauges {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(ContractGauges {
            ratio: CONSUMED_RATIO.register_float_gauge_vec(registry)?,
            consumed: CONSUMED.register_float_gauge_vec(registry)?,
            expected: EXPECTED_TO_DATE.register_float_gauge_vec(registry)?,
            week_spike_ratio: WEEK_SPIKE_RATIO.register_float_gauge_vec(registry)?,
        })
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct Status {
    tenant: String,
    contract_id: String,
    unit: String,
    expected: String,
    consumed: String,
}

#[derive(clickhouse::Row, Deserialize)]
struct Week {
    tenant: String,
    contract_id: String,
    unit: String,
    spike_ratio: String,
}

/// Reads every contract's status once and updates the gauges.
pub async fn refresh(client: &clickhouse::Client, gauges: &ContractGauges) -> Result<usize, clickhouse::error::Error> {
    let rows: Vec<Status> = client
        .query("SELECT tenant, contract_id, unit, toString(expected_to_date), toString(consumed_to_date) FROM contract_status")
        .fetch_all()
        .await?;
    for r in &rows {
        let expected: f64 = r.expected.parse().unwrap_or(0.0);
        let consumed: f64 = r.consumed.parse().unwrap_or(0.0);
        let labels = [r.tenant.as_str(), r.contract_id.as_str(), r.unit.as_str()];
        gauges.expected.with_label_values(&labels).set(expected);
        gauges.consumed.with_label_values(&labels).set(consumed);
        if expected > 0.0 {
            gauges.ratio.with_label_values(&labels).set(consumed / expected);
        }
    }
    // Only contracts running this week: a spike gauge of an ended contract
    // (or of last week) must not stay behind.
    let weeks: Vec<Week> = client
        .query("SELECT tenant, contract_id, unit, toString(spike_ratio) FROM contract_weekly_spikes WHERE week = toMonday(today())")
        .fetch_all()
        .await?;
    gauges.week_spike_ratio.reset();
    for w in &weeks {
        let ratio: f64 = w.spike_ratio.parse().unwrap_or(0.0);
        gauges.week_spike_ratio.with_label_values(&[w.tenant.as_str(), w.contract_id.as_str(), w.unit.as_str()]).set(ratio);
    }
    Ok(rows.len())
}

/// Refreshes the gauges every `every` until Ctrl-C; a failed read is logged
/// and retried at the next tick (the gauges keep their last values).
pub async fn run(client: clickhouse::Client, gauges: ContractGauges, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => match refresh(&client, &gauges).await {
                Ok(n) => tracing::info!(contracts = n, "contract burn refreshed"),
                Err(e) => tracing::warn!(error = %e, "reading contract_status failed; retrying at the next tick"),
            },
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}
