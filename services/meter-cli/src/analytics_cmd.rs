//! Analyst-facing commands: loading contracts, and the FOCUS cost export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use meter_config::MeterConfig;
use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Subcommand)]
pub enum ContractsAction {
    /// Load contracts (format: config/contracts.example.toml) into ClickHouse; a reload replaces them.
    Load { file: PathBuf },
    /// Serve each contract's burn as Prometheus gauges (meter_tenant_contract_consumed_ratio...)
    /// and the provider fill rate per datacenter (meter_provider_fill_ratio) on
    /// contracts.metrics_listen, read from ClickHouse every contracts.refresh_seconds.
    Metrics,
}

#[derive(Subcommand)]
pub enum CapacityAction {
    /// Load the capacity installed per datacenter (format and defaults: config/capacity.toml)
    /// into ClickHouse's datacenter_capacity, for the provider fill rate views; a reload
    /// replaces each listed datacenter.
    Load { file: PathBuf },
}

pub async fn capacity(config: &MeterConfig, action: CapacityAction) -> Result<()> {
    match action {
        CapacityAction::Load { file } => {
            let capacity = meter_config::capacity::load(&file)?;
            let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
            let n = sink_clickhouse::capacity::store(&client, &capacity).await.context("writing datacenter_capacity (migrated? `meter migrate`)")?;
            println!("{n} datacenters loaded from {}", file.display());
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TenantsAction {
    /// Create the tenant's own database (fed from the shared tables, with the
    /// analyst views) and its read-only ClickHouse user. Idempotent.
    Provision {
        /// Tenant id; repeat it, or omit it to provision every tenant in [tenants] of the config.
        #[arg(long)]
        tenant: Vec<String>,
        /// Password of the tenant user, for one tenant only (default: a random one per tenant, printed once).
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
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Output format (default: parquet if --out ends in .parquet, else csv).
    #[arg(long, value_enum)]
    format: Option<FocusFormat>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FocusFormat {
    Csv,
    Parquet,
}

impl FocusFormat {
    fn of_path(path: &Path) -> Self {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("parquet") => FocusFormat::Parquet,
            _ => FocusFormat::Csv,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FocusFormat::Csv => "CSV",
            FocusFormat::Parquet => "Parquet",
        }
    }
}

pub async fn contracts(config: &MeterConfig, action: ContractsAction) -> Result<()> {
    match action {
        ContractsAction::Load { file } => {
            let contracts = sink_clickhouse::contracts::load_file(&file)?;
            let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
            let n = sink_clickhouse::contracts::store(&client, &contracts).await?;
            println!("{n} contracts loaded from {}", file.display());
        }
        ContractsAction::Metrics => {
            let registry = meter_telemetry::registry("contracts-metrics")?;
            let gauges = sink_clickhouse::contract_metrics::ContractGauges::register(&registry)?;
            let fill = sink_clickhouse::capacity::FillGauges::register(&registry)?;
            meter_telemetry::serve_metrics(config.contracts.metrics_listen, registry).await?;
            let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
            let every = std::time::Duration::from_secs(config.contracts.refresh_seconds.max(1));
            tokio::spawn(sink_clickhouse::capacity::run(client.clone(), fill, every));
            sink_clickhouse::contract_metrics::run(client, gauges, every).await;
        }
    }
    Ok(())
}

/// Refuses, before anything is created: one `--password` for several tenants
/// (they would all share it), and two ids that map to the same database and
/// user (`acme-fr`, `acme_fr`).
fn check_provision_request(database: &str, tenants: &[String], password_given: bool) -> Result<()> {
    let mut distinct = tenants.to_vec();
    distinct.sort();
    distinct.dedup();
    anyhow::ensure!(
        !(password_given && distinct.len() > 1),
        "--password was given for {} tenants: they would all share it; provision one tenant per --password, or omit it (a random password each)",
        distinct.len()
    );
    if let Some((a, b)) = sink_clickhouse::tenants::colliding(database, &distinct)? {
        anyhow::bail!("tenants {a:?} and {b:?} would share one database and user: refused (rename one)");
    }
    Ok(())
}

pub async fn tenants(config: &MeterConfig, action: TenantsAction) -> Result<()> {
    match action {
        TenantsAction::Provision { tenant, password } => {
            let tenants: Vec<String> = if tenant.is_empty() { config.tenants.keys().cloned().collect() } else { tenant };
            anyhow::ensure!(!tenants.is_empty(), "no tenant given: pass --tenant ID or list tenants under [tenants] in the config");
            check_provision_request(&config.clickhouse.database, &tenants, password.is_some())?;
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
                let done = sink_clickhouse::tenants::provision(
                    &client,
                    &config.clickhouse.database,
                    &t,
                    &password,
                    &config.clickhouse.users_d_dir,
                )
                .await?;
                let (db, user) = (&done.database, &done.user);
                let shared = if done.row_filters {
                    format!(", and {} under row filters (its rows only)", config.clickhouse.database)
                } else {
                    String::new()
                };
                if generated {
                    println!("{t}: database {db}{shared}, read-only user {user}, password {password} (shown once)");
                } else {
                    println!("{t}: database {db}{shared}, read-only user {user}");
                }
            }
        }
    }
    Ok(())
}

/// How a FOCUS column is typed in Parquet (in CSV every cell is text).
#[derive(Clone, Copy)]
enum ColumnType {
    Text,
    /// Decimal128(38, 6), exact: money and quantities.
    Decimal,
    /// Timestamp(Millisecond, UTC); `YYYY-MM-DDTHH:MM:SSZ` in CSV.
    Timestamp,
}

/// FOCUS (FinOps Open Cost and Usage Specification) columns, one row per
/// daily aggregate; `x_` columns are this pipeline's extras. The one column
/// list of both formats: `focus_row` gives the cells in this order.
const FOCUS_COLUMNS: [(&str, ColumnType); 24] = {
    use ColumnType::{Decimal as D, Text as T, Timestamp as Ts};
    [
        ("BillingAccountId", T), ("BillingAccountName", T), ("SubAccountId", T), ("SubAccountName", T),
        ("BillingPeriodStart", T), ("BillingPeriodEnd", T), ("ChargePeriodStart", Ts), ("ChargePeriodEnd", Ts),
        ("ChargeCategory", T), ("ChargeDescription", T), ("ServiceCategory", T), ("ServiceName", T),
        ("BilledCost", D), ("EffectiveCost", D), ("BillingCurrency", T), ("ConsumedQuantity", D), ("ConsumedUnit", T),
        ("PricingQuantity", D), ("PricingUnit", T), ("Tags", T), ("x_Domain", T), ("x_Metric", T),
        ("x_PriceBookVersion", T), ("x_AggregateId", T),
    ]
};

/// Scale of the Decimal128 columns (that of the ClickHouse aggregates).
const FOCUS_SCALE: u32 = 6;

enum Cell {
    Text(String),
    Decimal(Decimal),
    Timestamp(DateTime<Utc>),
}

impl Cell {
    fn to_csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            // No trailing zeros: 12.5, 0.
            Cell::Decimal(d) => d.normalize().to_string(),
            Cell::Timestamp(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

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

/// FOCUS ServiceCategory and our service name for a metric (the kinds table).
fn service_of(kind: &str, metric: &str) -> (&'static str, &'static str) {
    match meter_model::EventKind::from_symbol(kind) {
        Some(kind) => ((kind.spec().focus_category)(metric), kind.spec().focus_service),
        None => ("Other", "Unknown event kind"),
    }
}

/// The cells of one FOCUS row, in the order of `FOCUS_COLUMNS`.
fn focus_row(r: &FocusSource) -> Result<[Cell; 24]> {
    let (category, service) = service_of(&r.kind, &r.metric);
    let tags: serde_json::Map<String, serde_json::Value> = r
        .dimension_keys
        .iter()
        .zip(&r.dimension_values)
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let decimal = |s: &str| -> Result<Decimal> {
        let d: Decimal = s.parse().with_context(|| format!("aggregate {}: bad decimal {s:?}", r.aggregate_id))?;
        anyhow::ensure!(d.scale() <= FOCUS_SCALE, "aggregate {}: {s} has more than {FOCUS_SCALE} decimals", r.aggregate_id);
        Ok(d)
    };
    let time = |s: &str| -> Result<DateTime<Utc>> {
        s.parse().with_context(|| format!("aggregate {}: bad time {s:?}", r.aggregate_id))
    };
    let (quantity, cost) = (decimal(&r.quantity)?, decimal(&r.cost)?);
    let text = |s: &str| Cell::Text(s.to_string());
    Ok([
        text(&r.tenant),
        text(&r.tenant),
        text(&r.subsidiary),
        text(&r.subsidiary),
        text(&r.month_start),
        text(&r.month_end),
        Cell::Timestamp(time(&r.window_start)?),
        Cell::Timestamp(time(&r.window_end)?),
        text("Usage"),
        Cell::Text(format!("{} {} ({})", r.metric, r.unit, r.domain)),
        text(category),
        text(service),
        Cell::Decimal(cost),
        Cell::Decimal(cost),
        text(&r.currency),
        Cell::Decimal(quantity),
        text(&r.unit),
        Cell::Decimal(quantity),
        text(&r.unit),
        Cell::Text(serde_json::Value::Object(tags).to_string()),
        text(&r.domain),
        text(&r.metric),
        text(&r.price_book_version),
        text(&r.aggregate_id),
    ])
}

fn write_csv(path: &Path, rows: &[[Cell; 24]]) -> Result<()> {
    let mut out = csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    out.write_record(FOCUS_COLUMNS.iter().map(|(name, _)| *name))?;
    for row in rows {
        out.write_record(row.iter().map(Cell::to_csv))?;
    }
    out.flush()?;
    Ok(())
}

fn write_parquet(path: &Path, rows: &[[Cell; 24]]) -> Result<()> {
    use arrow_array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    let scale = i8::try_from(FOCUS_SCALE).expect("scale fits i8");
    let data_type = |ty: ColumnType| match ty {
        ColumnType::Text => DataType::Utf8,
        ColumnType::Decimal => DataType::Decimal128(38, scale),
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    };
    let schema = Arc::new(Schema::new(
        FOCUS_COLUMNS.iter().map(|(name, ty)| Field::new(*name, data_type(*ty), false)).collect::<Vec<_>>(),
    ));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(FOCUS_COLUMNS.len());
    for (i, (name, ty)) in FOCUS_COLUMNS.iter().enumerate() {
        let mismatch = || anyhow::anyhow!("FOCUS column {name}: cell of the wrong type");
        columns.push(match ty {
            ColumnType::Text => {
                let v = rows.iter().map(|r| match &r[i] { Cell::Text(s) => Ok(s.as_str()), _ => Err(mismatch()) });
                Arc::new(StringArray::from(v.collect::<Result<Vec<_>>>()?))
            }
            ColumnType::Decimal => {
                // Exact: the unscaled value at scale 6 (scale checked <= 6 in focus_row).
                let v = rows.iter().map(|r| match &r[i] {
                    Cell::Decimal(d) => Ok(d.mantissa() * 10i128.pow(FOCUS_SCALE - d.scale())),
                    _ => Err(mismatch()),
                });
                Arc::new(Decimal128Array::from(v.collect::<Result<Vec<_>>>()?).with_precision_and_scale(38, scale)?)
            }
            ColumnType::Timestamp => {
                let v = rows.iter().map(|r| match &r[i] { Cell::Timestamp(t) => Ok(t.timestamp_millis()), _ => Err(mismatch()) });
                Arc::new(TimestampMillisecondArray::from(v.collect::<Result<Vec<_>>>()?).with_timezone("UTC"))
            }
        });
    }
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

pub async fn export_focus(config: &MeterConfig, args: FocusArgs) -> Result<()> {
    let format = args.format.unwrap_or_else(|| FocusFormat::of_path(&args.out));
    let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let sources: Vec<FocusSource> = client
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
    let rows = sources.iter().map(focus_row).collect::<Result<Vec<_>>>()?;
    match format {
        FocusFormat::Csv => write_csv(&args.out, &rows)?,
        FocusFormat::Parquet => write_parquet(&args.out, &rows)?,
    }
    println!(
        "{} FOCUS rows for {} [{}, {}) written to {} ({})",
        rows.len(),
        args.tenant,
        args.from,
        args.to,
        args.out.display(),
        format.name()
    );
    Ok(())
}
