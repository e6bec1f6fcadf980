//! The provider fill rate: the capacity installed per datacenter
//! (`meter capacity load`, into `datacenter_capacity`), and the fill rate of
//! the last complete day as Prometheus gauges (served by
//! `meter contracts metrics` with the contract gauges), read from the
//! `provider_fill_rate_daily` view, for the alert MeterProviderFillRateBelowTarget.

use std::time::Duration;

use chrono::Utc;
use meter_config::capacity::CapacityFile;
use meter_telemetry::{LabelValues, MetricFamily};
use prometheus::{GaugeVec, Registry};
use serde::{Deserialize, Serialize};

#[derive(clickhouse::Row, Serialize)]
struct CapacityRow {
    datacenter: String,
    vcpu: u64,
    ram_gib: u64,
    storage_gb: u64,
    loaded_at: u32,
}

/// Writes every datacenter of the file; a datacenter's latest load wins.
pub async fn store(client: &clickhouse::Client, file: &CapacityFile) -> Result<usize, clickhouse::error::Error> {
    let loaded_at = u32::try_from(Utc::now().timestamp()).unwrap_or(0);
    let mut insert = client.insert::<CapacityRow>("datacenter_capacity").await?;
    for dc in &file.datacenters {
        insert
            .write(&CapacityRow { datacenter: dc.name.clone(), vcpu: dc.vcpu, ram_gib: dc.ram_gib, storage_gb: dc.storage_gb, loaded_at })
            .await?;
    }
    insert.end().await?;
    Ok(file.datacenters.len())
}

pub const FILL_RATIO: MetricFamily = MetricFamily::gauge(
    "meter_provider_fill_ratio",
    "Capacity sold to running VMs over capacity installed, per datacenter and resource (vcpu, ram, storage), on the last complete UTC day.",
    &["datacenter", "resource"],
)
.closed(&[LabelValues { label: "resource", values: &["vcpu", "ram", "storage"] }]);

/// The fill-rate family.
pub const METRICS: &[MetricFamily] = &[FILL_RATIO];

#[derive(Clone)]
pub struct FillGauges {
    /// Capacity sold / installed on the last complete UTC day, per resource (a ratio, not money).
    ratio: GaugeVec,
}

impl FillGauges {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(FillGauges { ratio: FILL_RATIO.register_float_gauge_vec(registry)? })
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct Fill {
    datacenter: String,
    vcpu: String,
    ram: String,
    storage: String,
    installed_vcpu: u64,
    installed_ram_gib: u64,
    installed_storage_gb: u64,
}

/// Reads yesterday's fill rates once and replaces the gauges (a datacenter
/// without a row yesterday has no gauge: no VM ran there, or no capacity).
pub async fn refresh(client: &clickhouse::Client, gauges: &FillGauges) -> Result<usize, clickhouse::error::Error> {
    let rows: Vec<Fill> = client
        .query(
            "SELECT datacenter, toString(vcpu_fill_rate), toString(ram_fill_rate), toString(storage_fill_rate), \
             installed_vcpu, installed_ram_gib, installed_storage_gb FROM provider_fill_rate_daily WHERE day = yesterday()",
        )
        .fetch_all()
        .await?;
    gauges.ratio.reset();
    for r in &rows {
        for (resource, value, installed) in
            [("vcpu", &r.vcpu, r.installed_vcpu), ("ram", &r.ram, r.installed_ram_gib), ("storage", &r.storage, r.installed_storage_gb)]
        {
            if installed > 0 {
                gauges.ratio.with_label_values(&[r.datacenter.as_str(), resource]).set(value.parse().unwrap_or(0.0));
            }
        }
    }
    Ok(rows.len())
}

/// Refreshes the gauges every `every` until Ctrl-C; a failed read is logged
/// and retried at the next tick.
pub async fn run(client: clickhouse::Client, gauges: FillGauges, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => match refresh(&client, &gauges).await {
                Ok(n) => tracing::debug!(datacenters = n, "provider fill rate refreshed"),
                Err(e) => tracing::warn!(error = %e, "reading provider_fill_rate_daily failed; retrying at the next tick"),
            },
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}
