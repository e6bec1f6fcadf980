//! Re-rating a tenant's closed period from the raw events, on request.
//!
//! Reads the tenant's events from the event topics and the late-events topic
//! (so events that arrived too late are counted this time), applies them with
//! the live engine's rules but every month open (any order, latest version
//! of each event, deletions retracted), bills running VMs up to the range's
//! end, and emits every aggregate whose window lies inside [from, to) as
//! final, with a revision above any the live aggregator can produce.
//! Consumers (billing, ClickHouse) then keep the re-rated version.
//!
//! Only closed months can be re-rated: the live aggregator owns open ones.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use meter_config::MeterConfig;
use meter_kafka::{event_topic, kind_of_topic, KafkaError};
use meter_model::{Aggregate, Event, EventCodec, EventKey, EventKind, PeriodAction, PeriodControl};

use crate::engine::{close_instant, first_open_month, parse_month, EngineSettings, Outcome, PartitionState};
use crate::pricing::PriceBook;
use crate::windows::{period_first_day, start_of_local_day};

/// Revisions of re-rated aggregates start here: live revisions are input
/// offsets + 1, far below.
pub const REPROCESS_REVISION_BASE: i64 = 1 << 48;

#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyPeriod { from: NaiveDate, to: NaiveDate },
    #[error("month {month} of tenant {tenant} is still open (it closes at {closes}); the live aggregator owns it: wait for its close, or close it with `meter periods close`")]
    OpenPeriod { tenant: String, month: String, closes: String },
}

pub struct ReprocessRequest {
    pub tenant: String,
    /// First local day re-rated.
    pub from: NaiveDate,
    /// First local day not re-rated.
    pub to: NaiveDate,
    pub requested_by: String,
    pub reason: String,
    pub show_progress: bool,
}

pub struct ReprocessOutcome {
    pub events_read: u64,
    pub aggregates: Vec<Aggregate>,
    /// The latest version of every event of the tenant inside the range, as
    /// counted (drill-down rows).
    pub events: Vec<Event>,
    pub revision: i64,
    pub requested_at: DateTime<Utc>,
}

/// Everything the topics hold for one tenant: its events and its explicit closes.
pub struct TenantHistory {
    pub events: Vec<(EventKind, Event)>,
    /// Last explicitly closed month, if any.
    pub closed_through: Option<NaiveDate>,
    pub events_read: u64,
}

/// Reads a tenant's events (event topics and late topic) and explicit closes.
pub fn read_tenant_history(config: &MeterConfig, tenant: &str, show_progress: bool) -> Result<TenantHistory, ReprocessError> {
    let timeout = Duration::from_secs(300);
    let progress = if show_progress {
        let bar = ProgressBar::new(4);
        bar.set_style(ProgressStyle::with_template("{spinner} reading {msg} [{bar:20}] {pos}/{len} topics").unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut topics: Vec<String> = EventKind::ALL.iter().map(|k| event_topic(&config.topics, *k).to_string()).collect();
    topics.push(config.topics.late_events.clone());
    let mut history = TenantHistory { events: Vec::new(), closed_through: None, events_read: 0 };
    for topic in &topics {
        progress.set_message(topic.clone());
        for message in meter_kafka::read_to_end(&config.kafka, topic, timeout)? {
            if message.is_control() {
                if let Ok(control) = EventCodec::decode::<PeriodControl>(&message.payload) {
                    if control.action == PeriodAction::Close && control.tenant == tenant {
                        history.closed_through = history.closed_through.max(parse_month(&control.month));
                    }
                }
                continue;
            }
            let kind = if *topic == config.topics.late_events {
                message.header("meter.source_topic").and_then(|v| kind_of_topic(&config.topics, v))
            } else {
                kind_of_topic(&config.topics, topic)
            };
            let Some(kind) = kind else { continue };
            let Ok(event) = meter_model::fast_decode::decode_event(kind, &message.payload) else { continue };
            if event.header().tenant != tenant {
                continue;
            }
            history.events_read += 1;
            history.events.push((kind, event));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(history)
}

/// Refuses a range with a month that is not closed at `now`.
pub fn check_closed(config: &MeterConfig, tenant: &str, from: NaiveDate, to: NaiveDate, closed_through: Option<NaiveDate>, now: DateTime<Utc>) -> Result<(), ReprocessError> {
    let calendar = config.calendar();
    let (tz, grace) = (calendar.zone(tenant), calendar.grace_days(tenant));
    // The engine's rule: months before the first open one are closed.
    let first_open = first_open_month(tz, grace, Some(now), closed_through);
    let first = period_first_day(meter_model::Period::Month, from);
    let last = period_first_day(meter_model::Period::Month, to.pred_opt().unwrap_or(to));
    match first_open {
        Some(open) if open > last => Ok(()),
        open => {
            let month = open.map_or(first, |o| o.max(first));
            Err(ReprocessError::OpenPeriod {
                tenant: tenant.to_string(),
                month: month.format("%Y-%m").to_string(),
                closes: close_instant(tz, grace, month).map(|c| c.to_rfc3339()).unwrap_or_default(),
            })
        }
    }
}

/// Computes the re-rated aggregates (it publishes nothing).
pub fn reprocess(config: &MeterConfig, book: &PriceBook, request: &ReprocessRequest) -> Result<ReprocessOutcome, ReprocessError> {
    if request.from >= request.to {
        return Err(ReprocessError::EmptyPeriod { from: request.from, to: request.to });
    }
    let history = read_tenant_history(config, &request.tenant, request.show_progress)?;
    let requested_at = meter_model::codec::to_millis(Utc::now());
    check_closed(config, &request.tenant, request.from, request.to, history.closed_through, requested_at)?;
    rerate(config, book, request, history, requested_at)
}

/// Re-rates `history` for the request's range (pure: no I/O).
pub fn rerate(config: &MeterConfig, book: &PriceBook, request: &ReprocessRequest, history: TenantHistory, requested_at: DateTime<Utc>) -> Result<ReprocessOutcome, ReprocessError> {
    let mut settings = EngineSettings::from_config(config);
    settings.everything_open = true;
    let tz = settings.calendar.zone(&request.tenant);
    let start = start_of_local_day(tz, request.from);
    let end = start_of_local_day(tz, request.to);
    let mut state = PartitionState::default();
    let mut latest: HashMap<EventKey, Event> = HashMap::new();
    for (i, (_, event)) in history.events.iter().enumerate() {
        // Everything of the tenant before the range's end: VM intervals
        // opened earlier still contribute inside it.
        if event.header().event_time >= end {
            continue;
        }
        match state.apply(i as i64, requested_at, event, &settings, book) {
            Outcome::Counted | Outcome::Corrected | Outcome::Retracted => {
                latest.insert(event.header().key(), event.clone());
            }
            Outcome::Refused(e) => tracing::warn!(event_id = %event.header().event_id, error = %e, "event not rated during reprocessing"),
            _ => {}
        }
    }
    let revision = REPROCESS_REVISION_BASE + requested_at.timestamp();
    let aggregates = state
        .render_all_until(end, revision, requested_at, &settings, book)
        .into_iter()
        .filter(|a| a.window_start >= start && a.window_end <= end)
        .collect();
    let mut events: Vec<Event> = latest.into_values().filter(|e| (start..end).contains(&e.header().event_time)).collect();
    events.sort_by(|a, b| a.header().key().cmp(&b.header().key()));
    Ok(ReprocessOutcome { events_read: history.events_read, aggregates, events, revision, requested_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::{EventHeader, Period, SlaTier, VmTransition, VmUsage};
    use rust_decimal::Decimal;

    fn vm(id: &str, vm_id: &str, at: &str, transition: VmTransition) -> (EventKind, Event) {
        let at: DateTime<Utc> = at.parse().unwrap();
        let e = Event::VmUsage(VmUsage {
            header: EventHeader {
                event_id: id.into(),
                source: "openstack".into(),
                tenant: "initech".into(),
                subsidiary: "hq".into(),
                domain: "infrastructure".into(),
                event_time: at,
                ingest_time: "2026-12-01T00:00:00Z".parse().unwrap(),
                version: 0,
                deleted: false,
            },
            vm_id: vm_id.into(),
            vcpu: 2,
            ram_mib: 0,
            storage_gb: 0,
            bandwidth_mbps: 0,
            guaranteed_bandwidth: false,
            public_ips: 0,
            sla_tier: SlaTier::Sla99_7,
            options: vec![],
            datacenter: "PAR1".into(),
            transition,
            sample_interval_seconds: 0,
        });
        (EventKind::VmUsage, e)
    }

    #[test]
    fn a_vm_interval_crossing_the_range_end_counts_up_to_that_end() {
        let config = MeterConfig::default();
        let book = PriceBook::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap();
        let history = TenantHistory {
            events: vec![
                // Never stopped, and stopped after the range's end; arriving in any order.
                vm("b2", "b", "2026-02-02T00:00:00Z", VmTransition::Stop),
                vm("a1", "a", "2026-01-30T00:00:00Z", VmTransition::Start),
                vm("b1", "b", "2026-01-31T12:00:00Z", VmTransition::Start),
            ],
            closed_through: None,
            events_read: 3,
        };
        let request = ReprocessRequest {
            tenant: "initech".into(),
            from: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
            requested_by: "t".into(),
            reason: "t".into(),
            show_progress: false,
        };
        let now: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let out = rerate(&config, &book, &request, history, now).unwrap();
        let month: Decimal = out.aggregates.iter().filter(|a| a.period == Period::Month && a.metric == "vm.vcpu").map(|a| a.quantity).sum();
        // a: 48 h x 2 vCPU; b: 12 h x 2 vCPU.
        assert_eq!(month, Decimal::from(120));
        assert!(out.aggregates.iter().all(|a| a.is_final && a.revision > REPROCESS_REVISION_BASE));
        assert!(out.aggregates.iter().all(|a| a.window_end <= "2026-02-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()));
    }

    #[test]
    fn an_open_month_is_refused() {
        let config = MeterConfig::default();
        let now: DateTime<Utc> = "2026-02-03T00:00:00Z".parse().unwrap();
        let jan = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let feb = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        // January closes on 6 February (5 days of grace).
        assert!(matches!(check_closed(&config, "t", jan, feb, None, now), Err(ReprocessError::OpenPeriod { .. })));
        assert!(check_closed(&config, "t", jan, feb, Some(jan), now).is_ok(), "closed on request");
        assert!(check_closed(&config, "t", jan, feb, None, "2026-02-06T00:00:00Z".parse().unwrap()).is_ok());
    }
}
