//! `meter periods`: a tenant's billing months, open or closed, and their
//! explicit, recorded close.
//!
//! A close is a control record written into every partition of every event
//! topic (the aggregator applies it in order with the events, so a rebuild
//! decides the same) and a row in ClickHouse's `period_closes` (the register).

use anyhow::{bail, Context, Result};
use chrono::{NaiveDate, Utc};
use clap::Subcommand;
use meter_config::MeterConfig;
use meter_model::{EventKind, PeriodAction, PeriodControl};
use serde::{Deserialize, Serialize};

use aggregator::engine::{close_instant, month_end, month_of, parse_month};

use crate::reprocess_cmd::days;

#[derive(Subcommand)]
pub enum PeriodsAction {
    /// Close a tenant's billing month (and every earlier one) now, before its
    /// grace ends: its aggregates are emitted final, later events of it go to
    /// the late topic. Recorded with who and why.
    Close {
        #[arg(long)]
        tenant: String,
        /// The month, YYYY-MM, in the tenant's time zone. It must have ended.
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
        /// Who asks (recorded).
        #[arg(long)]
        requested_by: String,
        /// Why (recorded), e.g. "invoice sent on the 2nd".
        #[arg(long)]
        reason: String,
    },
    /// List a tenant's months: open (and when each closes) or closed (by
    /// grace, or explicitly by whom and why).
    List {
        #[arg(long)]
        tenant: String,
        /// How many months back from the current one.
        #[arg(long, default_value_t = 13)]
        months: u32,
    },
}

#[derive(clickhouse::Row, Serialize, Deserialize)]
struct CloseRow {
    tenant: String,
    month: u16,
    closed_at: u32,
    requested_by: String,
    reason: String,
}

fn date(days_since_epoch: u16) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default() + chrono::Duration::days(i64::from(days_since_epoch))
}

pub async fn run(config: &MeterConfig, action: PeriodsAction) -> Result<()> {
    match action {
        PeriodsAction::Close { tenant, month, requested_by, reason } => close(config, &tenant, &month, &requested_by, &reason).await,
        PeriodsAction::List { tenant, months } => list(config, &tenant, months).await,
    }
}

async fn close(config: &MeterConfig, tenant: &str, month_text: &str, requested_by: &str, reason: &str) -> Result<()> {
    let Some(month) = parse_month(month_text) else { bail!("--month {month_text:?} is not YYYY-MM") };
    if requested_by.trim().is_empty() || reason.trim().is_empty() {
        bail!("--requested-by and --reason must say who closes and why (they are recorded)");
    }
    let tz = config.calendar().zone(tenant);
    let now = meter_model::codec::to_millis(Utc::now());
    if month_end(tz, month) > now {
        bail!("{month_text} has not ended yet in {tz} (it ends at {}): a month closes after its end", month_end(tz, month));
    }
    let control = PeriodControl {
        action: PeriodAction::Close,
        clock: now,
        tenant: tenant.to_string(),
        month: month.format("%Y-%m").to_string(),
        requested_by: requested_by.to_string(),
        reason: reason.to_string(),
    };
    let producer = meter_kafka::producer(&config.kafka)?;
    let mut written = 0;
    for kind in EventKind::ALL {
        let topic = meter_kafka::event_topic(&config.topics, kind);
        let partitions = tokio::task::block_in_place(|| meter_kafka::partitions_of(&config.kafka, topic, std::time::Duration::from_secs(10)))?;
        for partition in partitions {
            meter_kafka::publish_control(&producer, topic, partition, &control).await.with_context(|| format!("writing the close into {topic}/{partition}"))?;
            written += 1;
        }
    }
    let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let mut insert = client.insert::<CloseRow>("period_closes").await?;
    insert
        .write(&CloseRow {
            tenant: tenant.to_string(),
            month: days(month),
            closed_at: u32::try_from(now.timestamp()).unwrap_or(0),
            requested_by: requested_by.to_string(),
            reason: reason.to_string(),
        })
        .await?;
    insert.end().await.context("recording the close in period_closes (run `meter migrate`?)")?;
    tracing::info!(%tenant, month = %control.month, %requested_by, %reason, partitions = written, "billing month closed");
    println!("{tenant}: {} and earlier months closed ({written} partitions notified); the aggregator emits their finals", control.month);
    Ok(())
}

async fn list(config: &MeterConfig, tenant: &str, months: u32) -> Result<()> {
    let calendar = config.calendar();
    let (tz, grace) = (calendar.zone(tenant), calendar.grace_days(tenant));
    let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
    let closes: Vec<CloseRow> = client
        .query("SELECT tenant, toUInt16(month) AS month, toUInt32(closed_at) AS closed_at, requested_by, reason FROM period_closes FINAL WHERE tenant = ? ORDER BY month")
        .bind(tenant)
        .fetch_all()
        .await
        .context("reading period_closes (run `meter migrate`?)")?;
    let explicit_through = closes.iter().map(|c| date(c.month)).max();
    let now = Utc::now();
    let current = month_of(tz, now);
    println!("tenant {tenant} ({tz}, grace {grace} days)");
    for back in (0..=months).rev() {
        let Some(month) = current.checked_sub_months(chrono::Months::new(back)) else { continue };
        let closes_at = close_instant(tz, grace, month);
        let label = month.format("%Y-%m");
        if let Some(c) = closes.iter().filter(|c| date(c.month) >= month).min_by_key(|c| c.month) {
            let at = chrono::DateTime::from_timestamp(i64::from(c.closed_at), 0).unwrap_or_default();
            println!("  {label}  closed  explicitly on {at} by {} ({})", c.requested_by, c.reason);
        } else if closes_at.is_some_and(|at| at <= now) {
            println!("  {label}  closed  by grace at {}", closes_at.map(|t| t.to_rfc3339()).unwrap_or_default());
        } else {
            println!("  {label}  open    closes at {}", closes_at.map(|t| t.to_rfc3339()).unwrap_or_default());
        }
    }
    if explicit_through.is_some_and(|m| m < current.checked_sub_months(chrono::Months::new(months)).unwrap_or(current)) {
        println!("  (earlier explicit closes exist before the months listed)");
    }
    Ok(())
}
