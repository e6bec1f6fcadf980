//! `meter reprocess`: re-rate a tenant's period, publish the result, and
//! record who asked and why (ClickHouse `reprocess_log` and the log).

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Args;
use futures::future::try_join_all;
use meter_config::MeterConfig;
use meter_model::EventCodec;
use serde::Serialize;

#[derive(Args)]
pub struct ReprocessArgs {
    /// The tenant whose period is re-rated.
    #[arg(long)]
    tenant: String,
    /// First local day re-rated (YYYY-MM-DD, in the tenant's time zone).
    #[arg(long)]
    from: NaiveDate,
    /// First local day NOT re-rated (exclusive). Only windows entirely inside
    /// [from, to) are re-emitted: cover whole weeks, months or years to
    /// re-rate them too.
    #[arg(long)]
    to: NaiveDate,
    /// Who asks (recorded).
    #[arg(long)]
    requested_by: String,
    /// Why (recorded), e.g. "GLPI export of January arrived late".
    #[arg(long)]
    reason: String,
    /// Compute and print, publish nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clickhouse::Row, Serialize)]
struct LogRow {
    requested_at: u32,
    requested_by: String,
    reason: String,
    tenant: String,
    period_from: u16,
    period_to: u16,
    events_read: u64,
    aggregates_emitted: u64,
    revision: i64,
    price_book_version: String,
}

/// A date as ClickHouse's `Date`: days since 1970-01-01.
pub fn days(d: NaiveDate) -> u16 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    u16::try_from((d - epoch).num_days()).unwrap_or(0)
}

pub async fn run(config: &MeterConfig, args: ReprocessArgs) -> Result<()> {
    let book = aggregator::pricing::PriceBook::load(&config.price_book)?;
    let request = aggregator::reprocess::ReprocessRequest {
        tenant: args.tenant.clone(),
        from: args.from,
        to: args.to,
        requested_by: args.requested_by.clone(),
        reason: args.reason.clone(),
        show_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let outcome = tokio::task::block_in_place(|| aggregator::reprocess::reprocess(config, &book, &request))?;
    println!(
        "{}: {} events read, {} aggregates re-rated for [{}, {}) at revision {}",
        args.tenant,
        outcome.events_read,
        outcome.aggregates.len(),
        args.from,
        args.to,
        outcome.revision
    );
    if args.dry_run {
        for a in &outcome.aggregates {
            println!("  {} {} {} {} {} quantity {} cost {}", a.period.symbol(), a.window_label, a.subsidiary, a.domain, a.metric, a.quantity, a.cost);
        }
        return Ok(());
    }
    publish(config, &book, &request, &outcome).await
}

/// Publishes re-rated aggregates, marks their events counted in the detail
/// tables, and records the request in `reprocess_log`.
pub async fn publish(
    config: &MeterConfig,
    book: &aggregator::pricing::PriceBook,
    request: &aggregator::reprocess::ReprocessRequest,
    outcome: &aggregator::reprocess::ReprocessOutcome,
) -> Result<()> {
    let producer = meter_kafka::producer(&config.kafka)?;
    let sends = outcome.aggregates.iter().map(|a| {
        let producer = &producer;
        async move {
            let payload = EventCodec::encode(a)?;
            meter_kafka::publish(producer, &config.topics.aggregates, &a.aggregate_id, &payload).await
        }
    });
    try_join_all(sends).await.context("publishing re-rated aggregates")?;
    let client = sink_clickhouse::client(&config.clickhouse).with_database(&config.clickhouse.database);
    // The events the re-rated totals hold are counted now, late or not before.
    let calendar = config.calendar();
    let mut details = sink_clickhouse::details::DetailBatch::default();
    for event in &outcome.events {
        details.push(event, calendar.zone(&event.header().tenant), sink_clickhouse::details::Accounting::Reprocessed);
    }
    sink_clickhouse::writer::insert_details(&client, &mut details).await.context("marking the re-rated events counted in the detail tables")?;
    let mut insert = client.insert::<LogRow>("reprocess_log").await?;
    insert
        .write(&LogRow {
            requested_at: u32::try_from(outcome.requested_at.timestamp()).unwrap_or(0),
            requested_by: request.requested_by.clone(),
            reason: request.reason.clone(),
            tenant: request.tenant.clone(),
            period_from: days(request.from),
            period_to: days(request.to),
            events_read: outcome.events_read,
            aggregates_emitted: outcome.aggregates.len() as u64,
            revision: outcome.revision,
            price_book_version: book.version.clone(),
        })
        .await?;
    insert.end().await.context("recording the request in reprocess_log")?;
    tracing::info!(tenant = %request.tenant, from = %request.from, to = %request.to, requested_by = %request.requested_by,
        reason = %request.reason, aggregates = outcome.aggregates.len(), revision = outcome.revision, "period re-rated");
    Ok(())
}
