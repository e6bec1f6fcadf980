//! `meter collect file --backfill`: a history import in one step. The events
//! are published like any others (the live aggregator sets aside those of
//! closed months as late); then, per tenant, the closed months they fall in
//! are re-rated from every raw event and re-emitted final, above any earlier
//! revision, and the request is recorded like `meter reprocess`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use meter_config::MeterConfig;

use aggregator::engine::{first_open_month, month_of};
use aggregator::reprocess::{read_tenant_history, rerate, ReprocessRequest};
use aggregator::windows::next_period_first_day;
use meter_model::Period;

/// The days to re-rate for a tenant's backfilled closed months: from the
/// first month to the end of the last, widened to whole weeks and years
/// where every month they touch is closed (so those windows are re-emitted
/// complete too).
pub fn range_for(months: &BTreeSet<NaiveDate>, first_open: Option<NaiveDate>) -> Option<(NaiveDate, NaiveDate)> {
    let first = *months.first()?;
    let last = *months.last()?;
    let closed = |day: NaiveDate| first_open.is_none_or(|open| day < open);
    let mut from = first;
    let mut to = next_period_first_day(Period::Month, last);
    let year_start = NaiveDate::from_ymd_opt(first.year(), 1, 1)?;
    let year_end = NaiveDate::from_ymd_opt(last.year() + 1, 1, 1)?;
    if closed(year_end - Duration::days(1)) {
        from = from.min(year_start);
        to = to.max(year_end);
    }
    let monday = from - Duration::days(i64::from(from.weekday().num_days_from_monday()));
    if closed(monday) {
        from = monday;
    }
    let next_monday = to + Duration::days(i64::from((7 - to.weekday().num_days_from_monday()) % 7));
    if closed(next_monday - Duration::days(1)) {
        to = next_monday;
    }
    Some((from, to))
}

pub async fn run(config: &MeterConfig, published: &[(String, DateTime<Utc>)], requested_by: &str, reason: &str) -> Result<()> {
    let calendar = config.calendar();
    let book = aggregator::pricing::PriceBook::load(&config.price_book)?;
    let mut by_tenant: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (tenant, at) in published {
        by_tenant.entry(tenant.as_str()).or_default().push(*at);
    }
    for (tenant, times) in by_tenant {
        let history = tokio::task::block_in_place(|| read_tenant_history(config, tenant, std::io::IsTerminal::is_terminal(&std::io::stderr())))?;
        let now = meter_model::codec::to_millis(Utc::now());
        let tz = calendar.zone(tenant);
        let first_open = first_open_month(tz, calendar.grace_days(tenant), Some(now), history.closed_through);
        let closed: BTreeSet<NaiveDate> =
            times.iter().map(|t| month_of(tz, *t)).filter(|m| first_open.is_none_or(|open| *m < open)).collect();
        let Some((from, to)) = range_for(&closed, first_open) else {
            println!("{tenant}: every backfilled event is in an open month: the live aggregator counts them");
            continue;
        };
        let request = ReprocessRequest {
            tenant: tenant.to_string(),
            from,
            to,
            requested_by: requested_by.to_string(),
            reason: format!("backfill: {reason}"),
            show_progress: false,
        };
        let outcome = rerate(config, &book, &request, history, now)?;
        println!(
            "{tenant}: backfill re-rated [{from}, {to}) ({} closed months): {} aggregates at revision {}",
            closed.len(),
            outcome.aggregates.len(),
            outcome.revision
        );
        crate::reprocess_cmd::publish(config, &book, &request, &outcome).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn a_closed_january_widens_to_whole_weeks_but_not_to_an_open_year() {
        let months: BTreeSet<NaiveDate> = [d(2025, 1, 1)].into();
        // Open from December 2025 on: the year 2025 is not closed yet.
        let (from, to) = range_for(&months, Some(d(2025, 12, 1))).unwrap();
        assert_eq!(from, d(2024, 12, 30)); // Monday of the week of 1 January
        assert_eq!(to, d(2025, 2, 3)); // Monday after the week of 31 January
    }

    #[test]
    fn a_closed_year_is_re_rated_whole() {
        let months: BTreeSet<NaiveDate> = [d(2024, 3, 1)].into();
        let (from, to) = range_for(&months, Some(d(2025, 6, 1))).unwrap();
        assert_eq!(from, d(2024, 1, 1));
        assert_eq!(to, d(2025, 1, 6)); // the week of 31 December 2024 ends on Sunday 5 January
    }

    #[test]
    fn nothing_closed_nothing_to_do() {
        assert!(range_for(&BTreeSet::new(), None).is_none());
    }
}
