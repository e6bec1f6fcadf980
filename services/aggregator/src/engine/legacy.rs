//! Reading the JSON checkpoints of earlier versions (format 1): aggregates
//! keyed by their id, events by their (tenant, source, event_id) strings.
//! Their content becomes the current representation; each aggregate's id is
//! computed again from its fields and must equal the one saved.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use meter_model::{AggregateScope, DimensionValue, EncodedDimensions, EventKey, EventKind, Period, VmUsage};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::scopes::ScopeProbe;
use super::vm::{Billed, Transition, VmMode, VmTimeline};
use super::{AggKey, AggregateState, ClosedEvent, CountFlags, CountedEvent, Counts, Part, PartitionState, Parts};

#[derive(Deserialize)]
struct OldState {
    next_offset: i64,
    clock: Option<DateTime<Utc>>,
    #[serde(default)]
    closed_through: BTreeMap<String, NaiveDate>,
    #[serde(default)]
    aggregates: BTreeMap<String, OldAggregate>,
    #[serde(default)]
    events: Vec<(EventKey, OldCountedEvent)>,
    #[serde(default)]
    closed_events: Vec<(EventKey, (i64, DateTime<Utc>))>,
    #[serde(default)]
    vms: BTreeMap<String, OldVmTimeline>,
}

#[derive(Deserialize)]
struct OldAggregate {
    kind: EventKind,
    tenant: String,
    subsidiary: String,
    domain: String,
    period: Period,
    time_zone: String,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    window_label: String,
    last_month: NaiveDate,
    metric: String,
    unit: String,
    dimensions: BTreeMap<String, String>,
    quantity_divisor: Decimal,
    divisor: Decimal,
    base_quantity: Decimal,
    cost_numerator: Decimal,
    counts: Counts,
    revision: i64,
    revision_time: DateTime<Utc>,
    #[serde(default)]
    dirty: bool,
}

#[derive(Deserialize)]
struct OldPart {
    aggregate: String,
    base: Decimal,
    cost: Decimal,
}

#[derive(Deserialize)]
struct OldCountedEvent {
    version: i64,
    deleted: bool,
    month: NaiveDate,
    counts: Counts,
    parts: Vec<OldPart>,
}

#[derive(Deserialize)]
struct OldTransition {
    at: DateTime<Utc>,
    offset: i64,
    usage: VmUsage,
}

#[derive(Deserialize)]
struct OldBilled {
    base: Decimal,
    cost: Decimal,
    pieces: i64,
}

#[derive(Deserialize)]
struct OldVmTimeline {
    tenant: String,
    mode: VmMode,
    initial: Option<(VmUsage, bool)>,
    transitions: Vec<OldTransition>,
    billed: BTreeMap<String, OldBilled>,
    last_month: NaiveDate,
}

fn flags_of(counts: &Counts) -> Result<CountFlags, String> {
    let fields = counts.fields();
    if fields.iter().any(|v| !(0..=1).contains(v)) {
        return Err(format!("an event's counts are not 0 or 1: {counts:?}"));
    }
    Ok(CountFlags(fields.iter().enumerate().fold(0u8, |acc, (i, v)| acc | ((*v as u8) << i))))
}

/// The state a format-1 JSON checkpoint holds.
pub fn upgrade(json: &[u8]) -> Result<PartitionState, String> {
    let old: OldState = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut state = PartitionState { next_offset: old.next_offset, clock: old.clock, closed_through: old.closed_through, ..PartitionState::default() };
    let mut keys: HashMap<String, AggKey> = HashMap::new();
    for (id, a) in old.aggregates {
        let dimensions = EncodedDimensions::new(a.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let recomputed = AggregateScope::new(a.kind, &a.tenant, &a.subsidiary, &a.domain).id(a.period, a.window_start, &a.metric, &dimensions);
        if recomputed != id {
            return Err(format!("aggregate {id}: its fields give the id {recomputed}"));
        }
        let pairs: Vec<(&str, DimensionValue<'_>)> = a.dimensions.iter().map(|(k, v)| (k.as_str(), DimensionValue::Text(v))).collect();
        let time_zone = a.time_zone.parse().map_err(|_| format!("aggregate {id}: unknown time zone {:?}", a.time_zone))?;
        let first_day = NaiveDate::parse_from_str(&a.window_label, "%Y-%m-%d").map_err(|e| format!("aggregate {id}: window label: {e}"))?;
        let scope = state.scopes.intern(ScopeProbe {
            kind: a.kind,
            tenant: &a.tenant,
            subsidiary: &a.subsidiary,
            domain: &a.domain,
            metric: &a.metric,
            unit: &a.unit,
            dimensions: &pairs,
            quantity_divisor: a.quantity_divisor,
            divisor: a.divisor,
        });
        let key = AggKey { scope, period: a.period, start_ms: a.window_start.timestamp_millis() };
        state.aggregates.insert(
            key,
            AggregateState {
                id: id.clone(),
                period: a.period,
                time_zone,
                window_start: a.window_start,
                window_end: a.window_end,
                first_day,
                last_month: a.last_month,
                base_quantity: a.base_quantity,
                cost_numerator: a.cost_numerator,
                counts: a.counts,
                revision: a.revision,
                revision_time: a.revision_time,
                dirty: a.dirty,
                unsaved: false,
            },
        );
        if a.dirty {
            state.dirty.push(key);
        }
        keys.insert(id, key);
    }
    let key_of = |id: &str| keys.get(id).copied().ok_or_else(|| format!("a part refers to aggregate {id}, which is not open"));
    for (key, e) in old.events {
        let id = state.identity.of_parts(&key.tenant, &key.source, &key.event_id);
        let mut parts: Vec<Part> = Vec::with_capacity(e.parts.len());
        for p in &e.parts {
            let k = key_of(&p.aggregate)?;
            match parts.iter_mut().find(|q| q.key == k) {
                Some(q) => {
                    q.base += p.base;
                    q.cost += p.cost;
                }
                None => parts.push(Part { key: k, base: p.base, cost: p.cost, counted: true }),
            }
        }
        let tenant = state.tenants.id(&key.tenant);
        let parts = Parts::List(parts.into_boxed_slice());
        state.events.insert(id, CountedEvent { version: e.version, month: e.month, tenant, deleted: e.deleted, counts: flags_of(&e.counts)?, parts });
    }
    for (key, (version, closed_at)) in old.closed_events {
        state.closed_events.insert(state.identity.of_parts(&key.tenant, &key.source, &key.event_id), ClosedEvent { version, closed_at });
    }
    for (vm_key, vm) in old.vms {
        let mut billed = BTreeMap::new();
        for (id, b) in vm.billed {
            billed.insert(key_of(&id)?, Billed { base: b.base, cost: b.cost, pieces: b.pieces });
        }
        let transitions = vm.transitions.into_iter().map(|t| Transition { at: t.at, offset: t.offset, usage: t.usage }).collect();
        state.vms.insert(
            vm_key,
            VmTimeline { tenant: vm.tenant, mode: vm.mode, initial: vm.initial, transitions, billed, last_month: vm.last_month, unsaved: false },
        );
    }
    state.scopes.clear_unsaved();
    state.scopes.forget_recent();
    Ok(state)
}
