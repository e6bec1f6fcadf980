//! The deterministic heart of the aggregator: applies events of one input
//! partition, in offset order, to that partition's state.
//!
//! Determinism is the basis of the output guarantee: an aggregate's revision
//! is the input offset (+1) of the last event that changed it, so its content
//! at a given revision is a function of the partition's input alone. A replay
//! after a crash re-emits the same revisions with the same content, which
//! consumers (and ClickHouse's ReplacingMergeTree) absorb.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use meter_model::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::pricing::{PriceBook, Prices, RatingError};
use crate::windows::{split_interval, window_of, Window};

/// Settings the engine needs, resolved from the configuration.
pub struct EngineSettings {
    pub periods: Vec<Period>,
    pub allowed_lateness: Duration,
    pub dedup_horizon: Duration,
    pub zone_of: Box<dyn Fn(&str) -> Tz + Send + Sync>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events: i64,
    pub incidents: i64,
    pub requests: i64,
    pub ok: i64,
    pub warning: i64,
    pub ko: i64,
    pub unknown: i64,
    pub missed: i64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.events += o.events;
        self.incidents += o.incidents;
        self.requests += o.requests;
        self.ok += o.ok;
        self.warning += o.warning;
        self.ko += o.ko;
        self.unknown += o.unknown;
        self.missed += o.missed;
    }
}

/// One open aggregate and its exact accumulators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateState {
    pub kind: EventKind,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub period: Period,
    pub time_zone: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub window_label: String,
    pub metric: String,
    pub unit: String,
    pub dimensions: BTreeMap<String, String>,
    /// Quantity = base / quantity_divisor; cost = round(cost_numerator / divisor).
    pub quantity_divisor: Decimal,
    pub divisor: Decimal,
    pub base_quantity: Decimal,
    pub cost_numerator: Decimal,
    pub counts: Counts,
    pub revision: i64,
    pub dirty: bool,
}

/// A VM's last known lifecycle state, for time-weighting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    pub since: DateTime<Utc>,
    pub running: bool,
    pub last: VmUsage,
}

/// Everything the aggregator keeps for one input partition; checkpointed
/// together with `next_offset` so a restart resumes exactly after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// First offset not yet applied.
    pub next_offset: i64,
    /// Highest event time seen: the partition's watermark.
    pub watermark: Option<DateTime<Utc>>,
    pub aggregates: BTreeMap<String, AggregateState>,
    /// (source, event_id) -> event time, for deduplication within the horizon.
    #[serde(with = "seen_as_list")]
    pub seen: HashMap<(String, String), DateTime<Utc>>,
    pub vms: BTreeMap<String, VmState>,
}

mod seen_as_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &HashMap<(String, String), DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        let mut list: Vec<(&String, &String, &DateTime<Utc>)> = map.iter().map(|((a, b), t)| (a, b, t)).collect();
        list.sort();
        serde::Serialize::serialize(&list, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<(String, String), DateTime<Utc>>, D::Error> {
        let list: Vec<(String, String, DateTime<Utc>)> = Deserialize::deserialize(d)?;
        Ok(list.into_iter().map(|(a, b, t)| ((a, b), t)).collect())
    }
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Added to its windows.
    Counted,
    /// Same (source, event_id) already counted.
    Duplicate,
    /// Its day window closed (watermark past end + allowed lateness), or a VM
    /// transition older than the VM's last one: kept aside for reprocessing.
    Late { reason: &'static str },
    /// Could not be rated: dead-letter it.
    Unrated(RatingError),
}

/// One piece of an event's effect on one aggregate.
struct Contribution {
    period: Period,
    window: Window,
    metric: &'static str,
    unit: &'static str,
    quantity_divisor: Decimal,
    divisor: Decimal,
    /// Shared by the contributions of one event: cloned only when an
    /// aggregate is created.
    dimensions: Rc<BTreeMap<String, String>>,
    base: Decimal,
    cost_numerator: Decimal,
    counts: Counts,
}

const SECONDS_PER_HOUR: i64 = 3600;

impl PartitionState {
    /// Applies the event at `offset`. The caller guarantees offsets arrive in
    /// increasing order and skips those below `next_offset`.
    pub fn apply(&mut self, offset: i64, event: &Event, settings: &EngineSettings, book: &PriceBook) -> Outcome {
        self.next_offset = offset + 1;
        let header = event.header();
        let key = (header.source.clone(), header.event_id.clone());
        if self.seen.contains_key(&key) {
            return Outcome::Duplicate;
        }
        let tz = (settings.zone_of)(&header.tenant);
        let earliest = match event {
            Event::VmUsage(v) if v.transition == VmTransition::Sample => {
                header.event_time - Duration::seconds(i64::from(v.sample_interval_seconds))
            }
            _ => header.event_time,
        };
        if self.is_closed(window_of(Period::Day, tz, earliest).end, settings) {
            return Outcome::Late { reason: "window_closed" };
        }
        let contributions = match self.contributions(event, tz, settings, book) {
            Ok(c) => c,
            Err(Outcome::Late { reason }) => return Outcome::Late { reason },
            Err(Outcome::Unrated(e)) => return Outcome::Unrated(e),
            Err(other) => return other,
        };
        if let Event::VmUsage(v) = event {
            if v.transition != VmTransition::Sample {
                self.vms.insert(
                    vm_key(v),
                    VmState {
                        since: header.event_time,
                        running: matches!(v.transition, VmTransition::Create | VmTransition::Start | VmTransition::Resize),
                        last: v.clone(),
                    },
                );
            }
        }
        for c in contributions {
            self.add(event.kind(), header, tz, offset, c);
        }
        self.seen.insert(key, header.event_time);
        if self.watermark.is_none_or(|w| header.event_time > w) {
            self.watermark = Some(header.event_time);
        }
        Outcome::Counted
    }

    /// Marks that an offset was consumed without effect (dead-lettered or late).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = offset + 1;
    }

    fn is_closed(&self, window_end: DateTime<Utc>, settings: &EngineSettings) -> bool {
        self.watermark.is_some_and(|w| window_end + settings.allowed_lateness <= w)
    }

    fn contributions(
        &self,
        event: &Event,
        tz: Tz,
        settings: &EngineSettings,
        book: &PriceBook,
    ) -> Result<Vec<Contribution>, Outcome> {
        let header = event.header();
        let mut out = Vec::new();
        match event {
            Event::TicketTime(t) => {
                let rate = book.ticket_hour(&header.tenant, header.event_time, t.technician_profile).map_err(Outcome::Unrated)?;
                let minutes = Decimal::from(t.minutes_worked);
                let counts = Counts {
                    events: 1,
                    incidents: i64::from(t.ticket_type == TicketType::Incident),
                    requests: i64::from(t.ticket_type == TicketType::Request),
                    ..Counts::default()
                };
                let dims = Rc::new(ticket_dimensions(t));
                for &period in &settings.periods {
                    out.push(Contribution {
                        period,
                        window: window_of(period, tz, header.event_time),
                        metric: "ticket.time",
                        unit: "minute",
                        quantity_divisor: Decimal::ONE,
                        divisor: Decimal::from(60),
                        dimensions: dims.clone(),
                        base: minutes,
                        cost_numerator: minutes * rate,
                        counts: counts.clone(),
                    });
                }
            }
            Event::CheckResult(c) => {
                let price = if c.status == CheckStatus::Missed {
                    Decimal::ZERO // a run not done is not billed
                } else {
                    book.check_run(&header.tenant, header.event_time, c.frequency).map_err(Outcome::Unrated)?
                };
                let counts = Counts {
                    events: 1,
                    ok: i64::from(c.status == CheckStatus::Ok),
                    warning: i64::from(c.status == CheckStatus::Warning),
                    ko: i64::from(c.status == CheckStatus::Ko),
                    unknown: i64::from(c.status == CheckStatus::Unknown),
                    missed: i64::from(c.status == CheckStatus::Missed),
                    ..Counts::default()
                };
                let mut dims = BTreeMap::new();
                dims.insert("check_name".to_string(), c.check_name.clone());
                dims.insert("frequency".to_string(), c.frequency.avro_symbol().to_string());
                let dims = Rc::new(dims);
                for &period in &settings.periods {
                    out.push(Contribution {
                        period,
                        window: window_of(period, tz, header.event_time),
                        metric: "check.runs",
                        unit: "run",
                        quantity_divisor: Decimal::ONE,
                        divisor: Decimal::ONE,
                        dimensions: dims.clone(),
                        base: Decimal::ONE,
                        cost_numerator: price,
                        counts: counts.clone(),
                    });
                }
            }
            Event::VmUsage(v) => {
                let (from, to, usage) = match v.transition {
                    VmTransition::Sample => {
                        (header.event_time - Duration::seconds(i64::from(v.sample_interval_seconds)), header.event_time, Some(v))
                    }
                    _ => match self.vms.get(&vm_key(v)) {
                        Some(prev) if header.event_time < prev.since => {
                            return Err(Outcome::Late { reason: "vm_transition_out_of_order" })
                        }
                        Some(prev) if prev.running => (prev.since, header.event_time, Some(&prev.last)),
                        _ => (header.event_time, header.event_time, None),
                    },
                };
                if let Some(usage) = usage {
                    // The event that closes an interval owns its usage; the
                    // interval is priced piece by piece at each price change.
                    let mut cuts = vec![from];
                    cuts.extend(book.change_instants(&header.tenant).into_iter().filter(|t| *t > from && *t < to));
                    cuts.push(to);
                    for piece in cuts.windows(2) {
                        let prices = book.prices_at(&header.tenant, piece[0]).map_err(Outcome::Unrated)?;
                        vm_contributions(usage, &prices, tz, piece[0], piece[1], settings, &mut out).map_err(Outcome::Unrated)?;
                    }
                }
            }
        }
        Ok(out)
    }

    fn add(&mut self, kind: EventKind, header: &EventHeader, tz: Tz, offset: i64, c: Contribution) {
        let id = aggregate_id(
            kind,
            &header.tenant,
            &header.subsidiary,
            &header.domain,
            c.period,
            c.window.start,
            c.metric,
            &c.dimensions,
        );
        let entry = self.aggregates.entry(id).or_insert_with(|| AggregateState {
            kind,
            tenant: header.tenant.clone(),
            subsidiary: header.subsidiary.clone(),
            domain: header.domain.clone(),
            period: c.period,
            time_zone: tz.name().to_string(),
            window_start: c.window.start,
            window_end: c.window.end,
            window_label: c.window.label(),
            metric: c.metric.to_string(),
            unit: c.unit.to_string(),
            dimensions: (*c.dimensions).clone(),
            quantity_divisor: c.quantity_divisor,
            divisor: c.divisor,
            base_quantity: Decimal::ZERO,
            cost_numerator: Decimal::ZERO,
            counts: Counts::default(),
            revision: 0,
            dirty: false,
        });
        entry.base_quantity += c.base;
        entry.cost_numerator += c.cost_numerator;
        entry.counts.add(&c.counts);
        entry.revision = offset + 1;
        entry.dirty = true;
    }

    /// Takes the aggregates to emit now: every changed one, and every one
    /// whose window has closed (marked final and then forgotten). Also
    /// forgets dedup keys older than the horizon.
    pub fn take_emissions(&mut self, settings: &EngineSettings, book: &PriceBook, now: DateTime<Utc>) -> Vec<Aggregate> {
        let mut out = Vec::new();
        let mut closed = Vec::new();
        for (id, state) in self.aggregates.iter_mut() {
            let is_final = self.watermark.is_some_and(|w| state.window_end + settings.allowed_lateness <= w);
            if state.dirty || is_final {
                out.push(render(id, state, is_final, book, now));
                state.dirty = false;
            }
            if is_final {
                closed.push(id.clone());
            }
        }
        for id in closed {
            self.aggregates.remove(&id);
        }
        if let Some(w) = self.watermark {
            let horizon = w - settings.dedup_horizon;
            self.seen.retain(|_, t| *t >= horizon);
        }
        out
    }

    /// Moves the watermark forward to `to` (never back): the idle-partition
    /// rule, applied by the runner from processing time.
    pub fn advance_watermark(&mut self, to: DateTime<Utc>) -> bool {
        if self.watermark.is_some_and(|w| w < to) {
            self.watermark = Some(to);
            return true;
        }
        false
    }

    pub fn has_pending(&self) -> bool {
        self.aggregates.values().any(|a| a.dirty)
    }
}

fn render(id: &str, s: &AggregateState, is_final: bool, book: &PriceBook, now: DateTime<Utc>) -> Aggregate {
    Aggregate {
        aggregate_id: id.to_string(),
        revision: s.revision,
        is_final,
        kind: s.kind,
        tenant: s.tenant.clone(),
        subsidiary: s.subsidiary.clone(),
        domain: s.domain.clone(),
        period: s.period,
        time_zone: s.time_zone.clone(),
        window_start: s.window_start,
        window_end: s.window_end,
        window_label: s.window_label.clone(),
        metric: s.metric.clone(),
        unit: s.unit.clone(),
        dimensions: s.dimensions.clone(),
        quantity: (s.base_quantity / s.quantity_divisor).round_dp(6),
        event_count: s.counts.events,
        incident_count: s.counts.incidents,
        request_count: s.counts.requests,
        ok_count: s.counts.ok,
        warning_count: s.counts.warning,
        ko_count: s.counts.ko,
        unknown_count: s.counts.unknown,
        missed_count: s.counts.missed,
        cost: book.round(s.cost_numerator / s.divisor),
        currency: book.currency.clone(),
        price_book_version: book.version.clone(),
        emitted_at: meter_model::codec::to_millis(now),
    }
}

fn vm_key(v: &VmUsage) -> String {
    format!("{}\u{1f}{}", v.header.tenant, v.vm_id)
}

/// Analyst dimensions of ticket time.
pub fn ticket_dimensions(t: &TicketTime) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    d.insert("ticket_type".into(), t.ticket_type.avro_symbol().into());
    d.insert("category".into(), t.category_path.join(" > "));
    d.insert("in_scope".into(), t.in_scope.to_string());
    d.insert("application".into(), t.application.clone().unwrap_or_default());
    d.insert("requester".into(), t.requester.clone());
    d.insert("technician".into(), t.technician.clone());
    d.insert("technician_profile".into(), t.technician_profile.avro_symbol().into());
    d.insert("country".into(), t.country.clone().unwrap_or_default());
    d
}

/// The resources of a VM over [from, to), one contribution per resource,
/// period window and window piece.
fn vm_contributions(
    v: &VmUsage,
    prices: &Prices,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    settings: &EngineSettings,
    out: &mut Vec<Contribution>,
) -> Result<(), RatingError> {
    let sla = prices.sla_multiplier.get(&v.sla_tier).copied().unwrap_or(Decimal::ONE);
    let bandwidth_price = if v.guaranteed_bandwidth {
        prices.bandwidth_mbps_hour * prices.guaranteed_bandwidth_multiplier
    } else {
        prices.bandwidth_mbps_hour
    };
    let hour = Decimal::from(SECONDS_PER_HOUR);
    let mut resources: Vec<(&'static str, &'static str, Decimal, Decimal, Decimal, Option<String>)> = vec![
        ("vm.vcpu", "vCPU-hour", Decimal::from(v.vcpu), prices.vcpu_hour * sla, hour, None),
        ("vm.ram", "GiB-hour", Decimal::from(v.ram_mib), prices.ram_gib_hour * sla, hour * Decimal::from(1024), None),
        ("vm.storage", "GB-hour", Decimal::from(v.storage_gb), prices.storage_gb_hour * sla, hour, None),
        ("vm.public_ip", "IP-hour", Decimal::from(v.public_ips), prices.public_ip_hour, hour, None),
        ("vm.bandwidth", "Mbps-hour", Decimal::from(v.bandwidth_mbps), bandwidth_price, hour, None),
    ];
    for option in &v.options {
        let price = prices.option_hour.get(option).copied().ok_or_else(|| RatingError::UnknownOption(option.clone()))?;
        resources.push(("vm.option", "option-hour", Decimal::ONE, price, hour, Some(option.clone())));
    }
    for &period in &settings.periods {
        for (window, a, b) in split_interval(period, tz, from, to) {
            let seconds = Decimal::from((b - a).num_seconds());
            for (metric, unit, amount, price, divisor, option) in &resources {
                if amount.is_zero() || seconds.is_zero() {
                    continue;
                }
                let mut dims = BTreeMap::new();
                dims.insert("sla_tier".to_string(), v.sla_tier.avro_symbol().to_string());
                dims.insert("datacenter".to_string(), v.datacenter.clone());
                if let Some(option) = option {
                    dims.insert("option".to_string(), option.clone());
                }
                let base = amount.checked_mul(seconds).ok_or(RatingError::Overflow)?;
                out.push(Contribution {
                    period,
                    window,
                    metric,
                    unit,
                    quantity_divisor: *divisor,
                    divisor: *divisor,
                    dimensions: Rc::new(dims),
                    base,
                    cost_numerator: base.checked_mul(*price).ok_or(RatingError::Overflow)?,
                    counts: Counts { events: 1, ..Counts::default() },
                });
            }
        }
    }
    Ok(())
}
