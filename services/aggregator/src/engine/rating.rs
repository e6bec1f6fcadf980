//! What one event adds to its windows: counts, quantities and costs, one
//! change per period window (and per VM resource and window piece).

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use meter_model::*;
use rust_decimal::Decimal;

use super::calendar::period_index;
use super::scopes::{ScopeId, ScopeProbe, Scopes};
use super::parts::NO_WINDOW;
use super::{AggKey, Change, CountFlags, EngineSettings, Opening, Part, Parts, Refusal};
use crate::pricing::{PriceBook, Prices, RatingError};
use crate::windows::{split_interval, Window};

const SECONDS_PER_HOUR: i64 = 3600;

/// One billed resource of a VM.
struct Resource<'a> {
    metric: &'static str,
    unit: &'static str,
    /// Units held (vCPUs, MiB, GB, IPs, Mbps, 1 for an option).
    amount: Decimal,
    /// Price per unit-hour (RAM: per GiB-hour, its base being MiB-seconds).
    price: Decimal,
    /// Base quantities are unit-seconds; quantity = base / divisor.
    divisor: Decimal,
    option: Option<&'a str>,
}

/// The dimensions of ticket time, in key order.
pub fn ticket_dimensions(t: &TicketTime) -> [(&'static str, DimensionValue<'_>); 8] {
    [
        ("application", DimensionValue::Text(t.application.as_deref().unwrap_or_default())),
        ("category", DimensionValue::Joined(&t.category_path, " > ")),
        ("country", DimensionValue::Text(t.country.as_deref().unwrap_or_default())),
        ("in_scope", DimensionValue::Text(if t.in_scope { "true" } else { "false" })),
        ("requester", DimensionValue::Text(&t.requester)),
        ("technician", DimensionValue::Text(&t.technician)),
        ("technician_profile", DimensionValue::Text(t.technician_profile.avro_symbol())),
        ("ticket_type", DimensionValue::Text(t.ticket_type.avro_symbol())),
    ]
}

/// Everything the engine's rating of one event needs besides the event.
pub struct Rater<'a> {
    pub settings: &'a EngineSettings,
    pub book: &'a PriceBook,
    pub scopes: &'a mut Scopes,
}

impl Rater<'_> {
    /// The contribution of a ticket, a check run or a VM sample: its counts,
    /// what to keep of it, and its changes appended to `out`. `windows` are
    /// the windows of the event's instant, by period index.
    pub fn contributions(&mut self, event: &Event, zone: Tz, windows: &[Window; 4], out: &mut Vec<Change>) -> Result<(CountFlags, Parts), Refusal> {
        let h = event.header();
        match event {
            Event::TicketTime(t) => {
                let rate = self.book.ticket_hour(&h.tenant, h.event_time, t.technician_profile)?;
                let minutes = Decimal::from(t.minutes_worked);
                let cost = minutes.checked_mul(rate).ok_or(Refusal::Overflow)?;
                let flags = CountFlags::EVENT.with(match t.ticket_type {
                    TicketType::Incident => CountFlags::INCIDENT,
                    TicketType::Request => CountFlags::REQUEST,
                });
                let dims = ticket_dimensions(t);
                let scope = self.intern(event.kind(), h, "ticket.time", "minute", &dims, Decimal::ONE, Decimal::from(60));
                Ok((flags, self.windows(scope, zone, windows, minutes, cost, flags, out)))
            }
            Event::CheckResult(c) => {
                let price = if c.status == CheckStatus::Missed {
                    Decimal::ZERO // a run not done is not billed
                } else {
                    self.book.check_run(&h.tenant, h.event_time, c.frequency)?
                };
                let flags = CountFlags::EVENT.with(match c.status {
                    CheckStatus::Ok => CountFlags::OK,
                    CheckStatus::Warning => CountFlags::WARNING,
                    CheckStatus::Ko => CountFlags::KO,
                    CheckStatus::Unknown => CountFlags::UNKNOWN,
                    CheckStatus::Missed => CountFlags::MISSED,
                });
                // In key order.
                let dims = [("check_name", DimensionValue::Text(&c.check_name)), ("frequency", DimensionValue::Text(c.frequency.avro_symbol()))];
                let scope = self.intern(event.kind(), h, "check.runs", "run", &dims, Decimal::ONE, Decimal::ONE);
                Ok((flags, self.windows(scope, zone, windows, Decimal::ONE, price, flags, out)))
            }
            Event::VmUsage(v) => {
                let first = out.len();
                let from = h.event_time - Duration::seconds(i64::from(v.sample_interval_seconds));
                let mut cuts = vec![from];
                cuts.extend(self.book.change_instants(&h.tenant).into_iter().filter(|t| *t > from && *t < h.event_time));
                cuts.push(h.event_time);
                for piece in cuts.windows(2) {
                    let prices = self.book.prices_at(&h.tenant, piece[0])?;
                    self.vm_changes(v, &prices, zone, piece[0], piece[1], out)?;
                }
                // A sample is one event in each aggregate it touches, however
                // many pieces (price changes) it was cut into.
                let new = &mut out[first..];
                new.sort_by_key(|c| c.key);
                let mut parts: Vec<Part> = Vec::with_capacity(new.len());
                for c in new.iter_mut() {
                    match parts.last_mut() {
                        Some(p) if p.key == c.key => {
                            c.counts = Default::default();
                            p.base = p.base.checked_add(c.base).ok_or(Refusal::Overflow)?;
                            p.cost = p.cost.checked_add(c.cost).ok_or(Refusal::Overflow)?;
                        }
                        _ => {
                            c.counts = CountFlags::EVENT.counts(1);
                            parts.push(Part { key: c.key, base: c.base, cost: c.cost, counted: true });
                        }
                    }
                }
                Ok((CountFlags::EVENT, Parts::List(parts.into_boxed_slice())))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn intern(
        &mut self,
        kind: EventKind,
        h: &EventHeader,
        metric: &'static str,
        unit: &'static str,
        dimensions: &[(&str, DimensionValue<'_>)],
        quantity_divisor: Decimal,
        divisor: Decimal,
    ) -> ScopeId {
        self.scopes.intern(ScopeProbe { kind, tenant: &h.tenant, subsidiary: &h.subsidiary, domain: &h.domain, metric, unit, dimensions, quantity_divisor, divisor })
    }

    /// One change per configured period, the same amounts in each.
    #[allow(clippy::too_many_arguments)]
    fn windows(&self, scope: ScopeId, zone: Tz, windows: &[Window; 4], base: Decimal, cost: Decimal, flags: CountFlags, out: &mut Vec<Change>) -> Parts {
        let mut starts = [NO_WINDOW; 4];
        for &period in &self.settings.periods {
            let window = windows[period_index(period)];
            let start = window.start.timestamp_millis();
            starts[period_index(period)] = start;
            out.push(Change::new(AggKey { scope, period, start_ms: start }, Some(Opening { zone, window }), base, cost, flags.counts(1)));
        }
        Parts::windows(scope, starts, base, cost)
    }

    /// The resources of a VM over [from, to), one change per resource,
    /// period window and window piece.
    pub fn vm_changes(&mut self, v: &VmUsage, prices: &Prices, zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>, out: &mut Vec<Change>) -> Result<(), Refusal> {
        let sla = prices.sla_multiplier.get(&v.sla_tier).copied().ok_or(RatingError::UnknownSlaTier(v.sla_tier))?;
        let bandwidth_price = if v.guaranteed_bandwidth {
            prices.bandwidth_mbps_hour * prices.guaranteed_bandwidth_multiplier
        } else {
            prices.bandwidth_mbps_hour
        };
        let hour = Decimal::from(SECONDS_PER_HOUR);
        let resource = |metric, unit, amount, price, divisor| Resource { metric, unit, amount, price, divisor, option: None };
        let mut resources: Vec<Resource<'_>> = vec![
            resource("vm.vcpu", "vCPU-hour", Decimal::from(v.vcpu), prices.vcpu_hour * sla, hour),
            resource("vm.ram", "GiB-hour", Decimal::from(v.ram_mib), prices.ram_gib_hour * sla, hour * Decimal::from(1024)),
            resource("vm.storage", "GB-hour", Decimal::from(v.storage_gb), prices.storage_gb_hour * sla, hour),
            resource("vm.public_ip", "IP-hour", Decimal::from(v.public_ips), prices.public_ip_hour, hour),
            resource("vm.bandwidth", "Mbps-hour", Decimal::from(v.bandwidth_mbps), bandwidth_price, hour),
        ];
        for option in &v.options {
            let price = prices.option_hour.get(option).copied().ok_or_else(|| RatingError::UnknownOption(option.clone()))?;
            resources.push(Resource { option: Some(option.as_str()), ..resource("vm.option", "option-hour", Decimal::ONE, price, hour) });
        }
        let h = &v.header;
        // One scope per resource, shared by its windows.
        let mut scopes: Vec<ScopeId> = Vec::with_capacity(resources.len());
        for r in &resources {
            // In key order.
            let datacenter = ("datacenter", DimensionValue::Text(&v.datacenter));
            let sla = ("sla_tier", DimensionValue::Text(v.sla_tier.avro_symbol()));
            let scope = match r.option {
                Some(option) => self.intern(EventKind::VmUsage, h, r.metric, r.unit, &[datacenter, ("option", DimensionValue::Text(option)), sla], r.divisor, r.divisor),
                None => self.intern(EventKind::VmUsage, h, r.metric, r.unit, &[datacenter, sla], r.divisor, r.divisor),
            };
            scopes.push(scope);
        }
        for &period in &self.settings.periods {
            for (window, a, b) in split_interval(period, zone, from, to) {
                let seconds = Decimal::from((b - a).num_seconds());
                for (r, scope) in resources.iter().zip(&scopes) {
                    if r.amount.is_zero() || seconds.is_zero() {
                        continue;
                    }
                    let base = r.amount.checked_mul(seconds).ok_or(Refusal::Overflow)?;
                    let cost = base.checked_mul(r.price).ok_or(Refusal::Overflow)?;
                    let key = AggKey { scope: *scope, period, start_ms: window.start.timestamp_millis() };
                    out.push(Change::new(key, Some(Opening { zone, window }), base, cost, CountFlags::EVENT.counts(1)));
                }
            }
        }
        Ok(())
    }
}
