//! Contract burn as Prometheus gauges, read from the `contract_status` view,
//! so that alert rules can compare consumption with its pro-rata.

use std::time::Duration;

use prometheus::{GaugeVec, Opts, Registry};
use serde::Deserialize;

#[derive(Clone)]
pub struct ContractGauges {
    /// consumed to date / expected to date (a ratio, not money: f64 is fine).
    ratio: GaugeVec,
    consumed: GaugeVec,
    expected: GaugeVec,
}

impl ContractGauges {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
            let g = GaugeVec::new(Opts::new(name, help), &["tenant", "contract", "unit"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(ContractGauges {
            ratio: gauge("meter_tenant_contract_consumed_ratio", "Consumed to date over expected to date (pro rata of the revised amounts).")?,
            consumed: gauge("meter_tenant_contract_consumed", "Consumed to date, in the contract's unit.")?,
            expected: gauge("meter_tenant_contract_expected_to_date", "Expected to date, in the contract's unit.")?,
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
