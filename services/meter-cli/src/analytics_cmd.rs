//! Analyst-facing commands: loading contracts, and the FOCUS cost export.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Subcommand};
use meter_config::MeterConfig;
use serde::Deserialize;

#[derive(Subcommand)]
pub enum ContractsAction {
    /// Load contracts (format: config/contracts.example.toml) into ClickHouse; a reload replaces them.
    Load { file: PathBuf },
}

#[derive(Subcommand)]
pub enum TenantsAction {
    /// Create the tenant's own database (fed from the shared tables, with the
    /// analyst views) and its read-only ClickHouse user. Idempotent.
    Provision {
        /// Tenant id; repeat it, or omit it to provision every tenant in [tenants] of the config.
        #[arg(long)]
        tenant: Vec<String>,
        /// Password of the tenant user (default: a random one, printed once).
        #[arg(long, env = "METER_TENANT_PASSWORD")]
        password: Option<String>,
    },
}

#[derive(Args)]
pub struct FocusArgs {
    /// The tenant (billing account) exported.
    #[arg(long)]
    tenant: String,
    /// First local day exported (YYYY-MM-DD).
    #[arg(long)]
    from: NaiveDate,
    /// First local day NOT exported.
    #[arg(long)]
    to: NaiveDate,
    /// Output file (CSV).
    #[arg(long)]
    out: PathBuf,
}

pub async fn contracts(config: &MeterConfig, action: ContractsAction) -> Result<()> {
    match action {
        ContractsAction::Load { file } => {
            let contracts = sink_clickhouse::contracts::load_file(&file)?;
            let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
            let n = sink_clickhouse::contracts::store(&client, &contracts).await?;
            println!("{n} contracts loaded from {}", file.display());
        }
    }
    Ok(())
}

pub async fn tenants(config: &MeterConfig, action: TenantsAction) -> Result<()> {
    match action {
        TenantsAction::Provision { tenant, password } => {
            let tenants: Vec<String> = if tenant.is_empty() { config.tenants.keys().cloned().collect() } else { tenant };
            anyhow::ensure!(!tenants.is_empty(), "no tenant given: pass --tenant ID or list tenants under [tenants] in the config");
            let client = sink_clickhouse::client(&config.clickhouse);
            for t in tenants {
                let (password, generated) = match &password {
                    Some(p) => (p.clone(), false),
                    None => {
                        let mut bytes = [0u8; 18];
                        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
                        (hex::encode(bytes), true)
                    }
                };
                let (db, user) = sink_clickhouse::tenants::provision(
                    &client,
                    &config.clickhouse.database,
                    &t,
                    &password,
                    &config.clickhouse.users_d_dir,
                )
                .await?;
                if generated {
                    println!("{t}: database {db}, read-only user {user}, password {password} (shown once)");
                } else {
                    println!("{t}: database {db}, read-only user {user}");
                }
            }
        }
    }
    Ok(())
}

/// FOCUS (FinOps Open Cost and Usage Specification) columns, one row per
/// daily aggregate; `x_` columns are this pipeline's extras.
const FOCUS_HEADER: [&str; 24] = [
    "BillingAccountId", "BillingAccountName", "SubAccountId", "SubAccountName", "BillingPeriodStart", "BillingPeriodEnd",
    "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ChargeDescription", "ServiceCategory", "ServiceName",
    "BilledCost", "EffectiveCost", "BillingCurrency", "ConsumedQuantity", "ConsumedUnit", "PricingQuantity", "PricingUnit",
    "Tags", "x_Domain", "x_Metric", "x_PriceBookVersion", "x_AggregateId",
];

#[derive(clickhouse::Row, Deserialize)]
struct FocusSource {
    tenant: String,
    subsidiary: String,
    domain: String,
    kind: String,
    metric: String,
    unit: String,
    window_start: String,
    window_end: String,
    month_start: String,
    month_end: String,
    quantity: String,
    cost: String,
    currency: String,
    price_book_version: String,
    aggregate_id: String,
    dimension_keys: Vec<String>,
    dimension_values: Vec<String>,
}

/// FOCUS ServiceCategory and our service name for a metric.
fn service_of(kind: &str, metric: &str) -> (&'static str, &'static str) {
    match (kind, metric) {
        ("VM_USAGE", "vm.storage") => ("Storage", "IaaS virtual machines"),
        ("VM_USAGE", "vm.bandwidth" | "vm.public_ip") => ("Networking", "IaaS virtual machines"),
        ("VM_USAGE", _) => ("Compute", "IaaS virtual machines"),
        ("CHECK_RESULT", _) => ("Management and Governance", "Supervision checks (MCO)"),
        _ => ("Other", "Managed services (ticket time)"),
    }
}

pub async fn export_focus(config: &MeterConfig, args: FocusArgs) -> Result<()> {
    let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let rows: Vec<FocusSource> = client
        .query(
            "SELECT tenant, subsidiary, domain, kind, metric, unit, \
                    formatDateTime(window_start, '%Y-%m-%dT%H:%M:%SZ', 'UTC'), formatDateTime(window_end, '%Y-%m-%dT%H:%M:%SZ', 'UTC'), \
                    toString(toStartOfMonth(window_date)), toString(addMonths(toStartOfMonth(window_date), 1)), \
                    toString(quantity), toString(cost), currency, price_book_version, aggregate_id, dimension_keys, dimension_values \
             FROM aggregates FINAL \
             WHERE period = 'DAY' AND tenant = ? AND window_date >= toDate(?) AND window_date < toDate(?) \
             ORDER BY window_date, subsidiary, kind, metric, aggregate_id",
        )
        .bind(&args.tenant)
        .bind(args.from.to_string())
        .bind(args.to.to_string())
        .fetch_all()
        .await
        .context("reading daily aggregates")?;
    let mut out = csv::Writer::from_path(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    out.write_record(FOCUS_HEADER)?;
    for r in &rows {
        let (category, service) = service_of(&r.kind, &r.metric);
        let tags: serde_json::Map<String, serde_json::Value> = r
            .dimension_keys
            .iter()
            .zip(&r.dimension_values)
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let quantity = r.quantity.trim_end_matches('0').trim_end_matches('.');
        let cost = r.cost.trim_end_matches('0').trim_end_matches('.');
        out.write_record([
            r.tenant.as_str(),
            r.tenant.as_str(),
            r.subsidiary.as_str(),
            r.subsidiary.as_str(),
            r.month_start.as_str(),
            r.month_end.as_str(),
            r.window_start.as_str(),
            r.window_end.as_str(),
            "Usage",
            &format!("{} {} ({})", r.metric, r.unit, r.domain),
            category,
            service,
            if cost.is_empty() { "0" } else { cost },
            if cost.is_empty() { "0" } else { cost },
            r.currency.as_str(),
            if quantity.is_empty() { "0" } else { quantity },
            r.unit.as_str(),
            if quantity.is_empty() { "0" } else { quantity },
            r.unit.as_str(),
            &serde_json::Value::Object(tags).to_string(),
            r.domain.as_str(),
            r.metric.as_str(),
            r.price_book_version.as_str(),
            r.aggregate_id.as_str(),
        ])?;
    }
    out.flush()?;
    println!("{} FOCUS rows for {} [{}, {}) written to {}", rows.len(), args.tenant, args.from, args.to, args.out.display());
    Ok(())
}
