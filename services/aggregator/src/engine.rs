//! The deterministic heart of the aggregator: applies the records of one
//! input partition, in offset order, to that partition's state.
//!
//! Determinism is the basis of the output guarantee: an aggregate's revision
//! is the input offset (+1) of the last record that changed it, and every
//! decision depends only on the partition's records and the configuration
//! (tenant zones and grace, price book). Wall-clock decisions (a month
//! closes, a running VM is billed up to a day boundary) are taken when a
//! [`PeriodControl`] record written into the partition is applied, so a
//! rebuild of the partition from its first offset emits the same revisions
//! with the same content.
//!
//! The unit that closes is the tenant's **billing month**: an event counts,
//! and revises its day, week, month and year windows, while its month is
//! open. A month closes when a recorded clock passes its end plus the
//! tenant's grace (in the tenant's zone), or on an explicit, recorded close.
//! An event whose month is closed (by the partition's records, or already by
//! its own `ingest_time`) is late: it goes to the late topic and changes
//! nothing. At a close, every aggregate whose last day lies in a closed month
//! is emitted final and forgotten.
//!
//! Events are identified by (tenant, source, event_id). While their month is
//! open, a higher `version` replaces the earlier contribution in every window
//! it touched, `deleted` retracts it, and the same version counts once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use meter_config::{MeterConfig, TenantCalendar};
use meter_model::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::pricing::{PriceBook, Prices, RatingError};
use crate::windows::{next_period_first_day, period_first_day, split_interval, start_of_local_day, window_of, Window};

/// Settings the engine needs, resolved once from the configuration.
pub struct EngineSettings {
    pub periods: Vec<Period>,
    pub calendar: TenantCalendar,
    pub limits: Limits,
    pub max_open_aggregates_per_tenant: usize,
    /// How long identities of closed events are kept (corrections of them go late).
    pub closed_event_retention: Duration,
    /// Reprocessing: no month is closed, nothing is judged late.
    pub everything_open: bool,
}

impl EngineSettings {
    pub fn from_config(config: &MeterConfig) -> Self {
        EngineSettings {
            periods: Period::ALL.to_vec(),
            calendar: config.calendar(),
            limits: Limits {
                max_clock_skew: Duration::seconds(i64::try_from(config.aggregator.max_clock_skew_seconds).unwrap_or(i64::MAX / 1000)),
            },
            max_open_aggregates_per_tenant: config.aggregator.max_open_aggregates_per_tenant,
            closed_event_retention: Duration::days(i64::from(config.aggregator.closed_event_retention_days)),
            everything_open: false,
        }
    }
}

/// The largest quantity or cost an aggregate may reach: `decimal(28, 6)`
/// holds 22 integer digits; one less leaves room for the last sum.
fn max_amount() -> Decimal {
    Decimal::from_i128_with_scale(10i128.pow(21), 0)
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
    fn fields(&self) -> [i64; 8] {
        [self.events, self.incidents, self.requests, self.ok, self.warning, self.ko, self.unknown, self.missed]
    }

    fn from_fields(f: [i64; 8]) -> Counts {
        Counts { events: f[0], incidents: f[1], requests: f[2], ok: f[3], warning: f[4], ko: f[5], unknown: f[6], missed: f[7] }
    }

    fn combine(&self, other: &Counts, sign: i64) -> Counts {
        let (a, b) = (self.fields(), other.fields());
        Counts::from_fields(std::array::from_fn(|i| a[i] + sign * b[i]))
    }

    fn is_zero(&self) -> bool {
        self.fields().iter().all(|v| *v == 0)
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
    /// The month (first day) of the window's last local day: the window is
    /// final once that month is closed.
    pub last_month: NaiveDate,
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
    /// Timestamp of the record that made the revision (emitted as `emitted_at`).
    pub revision_time: DateTime<Utc>,
    pub dirty: bool,
}

/// What an event added to one aggregate, kept so a correction or a deletion
/// can take it back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub aggregate: String,
    pub base: Decimal,
    pub cost: Decimal,
}

/// An event counted in an open month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedEvent {
    pub version: i64,
    pub deleted: bool,
    /// Month (first day, tenant's zone) the event belongs to.
    pub month: NaiveDate,
    /// Same counts for every part of the event.
    pub counts: Counts,
    /// Empty for VM lifecycle transitions (their VM's timeline bills them).
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmMode {
    /// Billed from time-weighted SAMPLEs.
    Samples,
    /// Billed from CREATE/START/RESIZE/STOP/DELETE transitions.
    Lifecycle,
}

/// A lifecycle transition kept while its month is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub offset: i64,
    pub usage: VmUsage,
}

impl Transition {
    /// Order of transitions: by instant, then STOP after START at the same
    /// instant (so a START and a STOP at one instant bill nothing, in either
    /// arrival order), then arrival.
    fn sort_key(&self) -> (DateTime<Utc>, u8, i64) {
        let rank = match self.usage.transition {
            VmTransition::Create => 0,
            VmTransition::Start => 1,
            VmTransition::Resize => 2,
            VmTransition::Stop => 3,
            VmTransition::Delete => 4,
            VmTransition::Sample => 5,
        };
        (self.at, rank, self.offset)
    }
}

/// Amounts a VM's timeline put into one open aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billed {
    pub base: Decimal,
    pub cost: Decimal,
    pub pieces: i64,
}

/// One VM's billing: its state at the start of the tenant's first open month
/// and its transitions since. Its bill for open time is a function of these
/// and of the recorded clock, recomputed on every change, so transitions may
/// arrive in any order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTimeline {
    pub tenant: String,
    pub mode: VmMode,
    /// Configuration and running flag before the first kept transition
    /// (None: the VM did not exist, or was deleted).
    pub initial: Option<(VmUsage, bool)>,
    pub transitions: Vec<Transition>,
    pub billed: BTreeMap<String, Billed>,
    /// Latest month with activity (samples mode: forgotten once it closes).
    pub last_month: NaiveDate,
}

/// Everything the aggregator keeps for one input partition; checkpointed
/// together with `next_offset` so a restart resumes exactly after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// First offset not yet applied.
    pub next_offset: i64,
    /// Latest wall clock recorded in this partition (CLOCK control records).
    pub clock: Option<DateTime<Utc>>,
    /// Explicit closes: tenant -> last closed month (first day).
    pub closed_through: BTreeMap<String, NaiveDate>,
    pub aggregates: BTreeMap<String, AggregateState>,
    /// Open aggregates per tenant (the per-tenant cap).
    pub open_per_tenant: BTreeMap<String, usize>,
    /// Events counted in open months, by identity.
    #[serde(with = "as_list")]
    pub events: IdentityMap<CountedEvent>,
    /// Identities of events of closed months -> (their version, the clock
    /// at their close): a re-send counts as a duplicate, a correction goes late.
    #[serde(with = "as_list")]
    pub closed_events: IdentityMap<(i64, DateTime<Utc>)>,
    /// VMs by (tenant, vm_id).
    pub vms: BTreeMap<String, VmTimeline>,
    /// Finals produced by a close, emitted at the next flush (a checkpoint
    /// is only written after they are acknowledged).
    #[serde(skip)]
    pending_finals: Vec<Aggregate>,
}

/// Event identities -> what is kept of them. Looked up four times per event:
/// foldhash (seeded per process, so keys chosen by a sender cannot be aimed
/// at one bucket) instead of SipHash.
pub type IdentityMap<V> = HashMap<EventKey, V, foldhash::quality::RandomState>;

mod as_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;
    use std::hash::{BuildHasher, Hash};

    pub fn serialize<K: Serialize + Ord, V: Serialize, H, S: Serializer>(map: &HashMap<K, V, H>, s: S) -> Result<S::Ok, S::Error> {
        let mut list: Vec<(&K, &V)> = map.iter().collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        list.serialize(s)
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Eq + Hash, V: Deserialize<'de>, H: BuildHasher + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<K, V, H>, D::Error> {
        let list: Vec<(K, V)> = Deserialize::deserialize(d)?;
        Ok(list.into_iter().collect())
    }
}

/// Why an event was set aside for the late topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateReason {
    /// Its billing month is closed.
    PeriodClosed,
    /// It re-sends (or corrects) an event of a closed month.
    ClosedEventResent,
}

impl LateReason {
    pub fn label(self) -> &'static str {
        match self {
            LateReason::PeriodClosed => "period_closed",
            LateReason::ClosedEventResent => "closed_event_resent",
        }
    }
}

/// Why an event was refused (dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("event is not stamped by a collector (ingest_time unset)")]
    Unstamped,
    #[error(transparent)]
    Unrated(#[from] RatingError),
    #[error("tenant {tenant} already holds {limit} open aggregates (aggregator.max_open_aggregates_per_tenant); a free-text dimension may be exploding")]
    TenantAggregateLimit { tenant: String, limit: usize },
    #[error("VM {vm_id} is billed from {mode}; a VM must send either SAMPLEs or lifecycle transitions, not both")]
    VmModeConflict { vm_id: String, mode: &'static str },
    #[error("a VM lifecycle transition cannot be corrected or deleted; send the transition that happened instead")]
    VmTransitionCorrection,
    #[error("the aggregate's quantity or cost would exceed 10^21 (an overflowing input)")]
    Overflow,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new event, added to its windows.
    Counted,
    /// A higher version replaced the earlier contribution.
    Corrected,
    /// A deletion took the earlier contribution back.
    Retracted,
    /// Same (or an older) version of a counted event.
    Duplicate,
    /// Its month is closed: kept aside for the late topic.
    Late(LateReason),
    /// Dead-letter it.
    Refused(Refusal),
    /// A control record was applied.
    Control,
}

/// What the windows of one event (or of one VM resource) share: owner,
/// metric and dimensions, with the owner's part of the aggregate id hashed
/// once and the dimensions encoded once.
#[derive(Debug)]
struct Scope {
    kind: EventKind,
    tenant: String,
    subsidiary: String,
    domain: String,
    zone: Tz,
    metric: &'static str,
    unit: &'static str,
    quantity_divisor: Decimal,
    divisor: Decimal,
    dimensions: EncodedDimensions,
    ids: AggregateScope,
}

impl Scope {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: EventKind,
        h: &EventHeader,
        zone: Tz,
        metric: &'static str,
        unit: &'static str,
        quantity_divisor: Decimal,
        divisor: Decimal,
        dimensions: EncodedDimensions,
    ) -> Rc<Scope> {
        Rc::new(Scope {
            kind,
            tenant: h.tenant.clone(),
            subsidiary: h.subsidiary.clone(),
            domain: h.domain.clone(),
            zone,
            metric,
            unit,
            quantity_divisor,
            divisor,
            dimensions,
            ids: AggregateScope::new(kind, &h.tenant, &h.subsidiary, &h.domain),
        })
    }
}

/// Where an aggregate belongs and what it measures: everything needed to
/// create it.
#[derive(Debug, Clone)]
struct Target {
    scope: Rc<Scope>,
    period: Period,
    window: Window,
}

impl Target {
    fn id(&self) -> String {
        self.scope.ids.id(self.period, self.window.start, self.scope.metric, &self.scope.dimensions)
    }

    fn open(&self) -> AggregateState {
        let s = &self.scope;
        let last_day = self.window.end - Duration::milliseconds(1);
        AggregateState {
            kind: s.kind,
            tenant: s.tenant.clone(),
            subsidiary: s.subsidiary.clone(),
            domain: s.domain.clone(),
            period: self.period,
            time_zone: s.zone.name().to_string(),
            window_start: self.window.start,
            window_end: self.window.end,
            window_label: self.window.label(),
            last_month: month_of(s.zone, last_day),
            metric: s.metric.to_string(),
            unit: s.unit.to_string(),
            dimensions: s.dimensions.to_map(),
            quantity_divisor: s.quantity_divisor,
            divisor: s.divisor,
            base_quantity: Decimal::ZERO,
            cost_numerator: Decimal::ZERO,
            counts: Counts::default(),
            revision: 0,
            revision_time: DateTime::<Utc>::UNIX_EPOCH,
            dirty: false,
        }
    }
}

/// One change to one aggregate, computed before anything is mutated.
struct Change {
    id: String,
    /// How to create the aggregate if it is not open (None: it must be).
    target: Option<Target>,
    base: Decimal,
    cost: Decimal,
    counts: Counts,
}

/// The first day of the month containing `t` in `tz`.
pub fn month_of(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    period_first_day(Period::Month, t.with_timezone(&tz).date_naive())
}

/// Parses `YYYY-MM` into the month's first day.
pub fn parse_month(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()
}

/// The instant the month starting at `month` ends, in `tz`.
pub fn month_end(tz: Tz, month: NaiveDate) -> DateTime<Utc> {
    start_of_local_day(tz, next_period_first_day(Period::Month, month))
}

/// When the month closes by the clock: its end plus the grace.
pub fn close_instant(tz: Tz, grace_days: u32, month: NaiveDate) -> Option<DateTime<Utc>> {
    month_end(tz, month).checked_add_signed(Duration::days(i64::from(grace_days)))
}

/// The first open month of a tenant given a clock and an explicit close,
/// or None when every month is open.
pub fn first_open_month(tz: Tz, grace_days: u32, clock: Option<DateTime<Utc>>, closed_through: Option<NaiveDate>) -> Option<NaiveDate> {
    // close_instant(M) <= clock  <=>  end(M) <= clock - grace  <=>  M < month_of(clock - grace)
    let by_clock = clock.and_then(|c| c.checked_sub_signed(Duration::days(i64::from(grace_days)))).map(|t| month_of(tz, t));
    let by_close = closed_through.map(|m| next_period_first_day(Period::Month, m));
    by_clock.max(by_close)
}

fn vm_key(tenant: &str, vm_id: &str) -> String {
    format!("{tenant}\u{1f}{vm_id}")
}

impl PartitionState {
    /// Marks that an offset was consumed without effect (dead-lettered or late).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = offset + 1;
    }

    fn tenant_first_open(&self, tenant: &str, settings: &EngineSettings) -> Option<NaiveDate> {
        if settings.everything_open {
            return None;
        }
        let c = &settings.calendar;
        first_open_month(c.zone(tenant), c.grace_days(tenant), self.clock, self.closed_through.get(tenant).copied())
    }

    /// Whether `month` of `tenant` is closed for an event stamped at `ingest`.
    fn is_closed(&self, tenant: &str, month: NaiveDate, ingest: DateTime<Utc>, settings: &EngineSettings) -> bool {
        if settings.everything_open {
            return false;
        }
        if self.tenant_first_open(tenant, settings).is_some_and(|open| month < open) {
            return true;
        }
        // The event's own stamp is a clock recorded in the stream too: an
        // event received after its month closed is late even before the
        // partition's next clock record.
        let c = &settings.calendar;
        close_instant(c.zone(tenant), c.grace_days(tenant), month).is_some_and(|at| ingest >= at)
    }

    /// Applies the event at `offset`, whose record was written at `at`.
    /// The caller guarantees offsets arrive in increasing order.
    pub fn apply(&mut self, offset: i64, at: DateTime<Utc>, event: &Event, settings: &EngineSettings, book: &PriceBook) -> Outcome {
        self.next_offset = offset + 1;
        let h = event.header();
        if let Err(e) = event.validate_with(&settings.limits) {
            return Outcome::Refused(Refusal::Invalid(e));
        }
        if h.ingest_time == DateTime::<Utc>::UNIX_EPOCH && !settings.everything_open {
            return Outcome::Refused(Refusal::Unstamped);
        }
        let tz = settings.calendar.zone(&h.tenant);
        let earliest = match event {
            Event::VmUsage(v) if v.transition == VmTransition::Sample => {
                h.event_time - Duration::seconds(i64::from(v.sample_interval_seconds))
            }
            _ => h.event_time,
        };
        let month = month_of(tz, earliest);
        let key = h.key();
        if let Some((version, _)) = self.closed_events.get(&key) {
            // An event of a closed month sent again: the same version was
            // counted; a newer one cannot change a closed month.
            return if h.version <= *version && !h.deleted { Outcome::Duplicate } else { Outcome::Late(LateReason::ClosedEventResent) };
        }
        if self.is_closed(&h.tenant, month, h.ingest_time, settings) {
            return Outcome::Late(LateReason::PeriodClosed);
        }
        let previous = self.events.get(&key);
        let is_resend = previous.is_some();
        if let Some(prev) = previous {
            let newer = h.version > prev.version || (h.version == prev.version && h.deleted && !prev.deleted);
            if !newer {
                return Outcome::Duplicate;
            }
        }
        let result = match event {
            Event::VmUsage(v) if v.transition != VmTransition::Sample => self.apply_transition(offset, at, v, key, month, is_resend, settings, book),
            _ => self.apply_self_contained(offset, at, event, key, month, tz, settings, book),
        };
        match result {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    /// Tickets, checks and VM samples: each event owns its contribution.
    #[allow(clippy::too_many_arguments)]
    fn apply_self_contained(
        &mut self,
        offset: i64,
        at: DateTime<Utc>,
        event: &Event,
        key: EventKey,
        month: NaiveDate,
        tz: Tz,
        settings: &EngineSettings,
        book: &PriceBook,
    ) -> Result<Outcome, Refusal> {
        let h = event.header();
        if let Event::VmUsage(v) = event {
            if let Some(vm) = self.vms.get(&vm_key(&h.tenant, &v.vm_id)) {
                if vm.mode != VmMode::Samples {
                    return Err(Refusal::VmModeConflict { vm_id: v.vm_id.clone(), mode: "lifecycle transitions" });
                }
            }
        }
        let previous = self.events.get(&key);
        let had_previous = previous.is_some();
        let mut changes = Vec::new();
        if let Some(prev) = previous {
            for part in &prev.parts {
                changes.push(Change { id: part.aggregate.clone(), target: None, base: -part.base, cost: -part.cost, counts: Counts::default().combine(&prev.counts, -1) });
            }
        }
        let (counts, new_changes) = if h.deleted { (Counts::default(), Vec::new()) } else { contributions(event, tz, settings, book)? };
        let parts: Vec<Part> = new_changes.iter().map(|c| Part { aggregate: c.id.clone(), base: c.base, cost: c.cost }).collect();
        changes.extend(new_changes);
        self.commit(&h.tenant, offset, at, changes, settings)?;
        let outcome = match (had_previous, h.deleted) {
            (false, _) => Outcome::Counted,
            (true, false) => Outcome::Corrected,
            (true, true) => Outcome::Retracted,
        };
        self.events.insert(key, CountedEvent { version: h.version, deleted: h.deleted, month, counts, parts });
        if let Event::VmUsage(v) = event {
            let vm = self.vms.entry(vm_key(&h.tenant, &v.vm_id)).or_insert_with(|| VmTimeline {
                tenant: h.tenant.clone(),
                mode: VmMode::Samples,
                initial: None,
                transitions: Vec::new(),
                billed: BTreeMap::new(),
                last_month: month,
            });
            vm.last_month = vm.last_month.max(month);
        }
        Ok(outcome)
    }

    /// A lifecycle transition: insert it in its VM's timeline and bill the
    /// difference between the timeline's new and old bill.
    #[allow(clippy::too_many_arguments)]
    fn apply_transition(
        &mut self,
        offset: i64,
        at: DateTime<Utc>,
        v: &VmUsage,
        event_key: EventKey,
        month: NaiveDate,
        is_resend: bool,
        settings: &EngineSettings,
        book: &PriceBook,
    ) -> Result<Outcome, Refusal> {
        let h = &v.header;
        if is_resend || h.deleted {
            return Err(Refusal::VmTransitionCorrection);
        }
        let key = vm_key(&h.tenant, &v.vm_id);
        let mut timeline = match self.vms.get(&key) {
            Some(vm) if vm.mode == VmMode::Samples => {
                return Err(Refusal::VmModeConflict { vm_id: v.vm_id.clone(), mode: "SAMPLEs" });
            }
            Some(vm) => vm.clone(),
            None => VmTimeline {
                tenant: h.tenant.clone(),
                mode: VmMode::Lifecycle,
                initial: None,
                transitions: Vec::new(),
                billed: BTreeMap::new(),
                last_month: month,
            },
        };
        // A transition that runs the VM must be rateable when it opens its
        // interval, whatever the clock says (so it never wedges the VM later).
        if matches!(v.transition, VmTransition::Create | VmTransition::Start | VmTransition::Resize) {
            let prices = book.prices_at(&h.tenant, h.event_time)?;
            let mut probe = Vec::new();
            vm_changes(v, &prices, settings.calendar.zone(&h.tenant), h.event_time, h.event_time + Duration::seconds(1), settings, &mut probe)?;
        }
        let transition = Transition { at: h.event_time, offset, usage: v.clone() };
        let position = timeline.transitions.partition_point(|t| t.sort_key() <= transition.sort_key());
        timeline.transitions.insert(position, transition);
        timeline.last_month = timeline.last_month.max(month);
        let frontier = self.frontier(&h.tenant, settings);
        let cut = self.vm_cut(&h.tenant, settings);
        let desired = vm_bill(&timeline, frontier, cut, settings, book)?;
        let changes = bill_changes(&timeline.billed, &desired);
        self.commit(&h.tenant, offset, at, changes, settings)?;
        timeline.billed = desired.into_iter().map(|(id, (b, _))| (id, b)).collect();
        self.vms.insert(key, timeline);
        self.events.insert(event_key, CountedEvent { version: h.version, deleted: false, month, counts: Counts::default(), parts: Vec::new() });
        Ok(Outcome::Counted)
    }

    /// The instant open time starts for a tenant (None: all time is open).
    fn frontier(&self, tenant: &str, settings: &EngineSettings) -> Option<DateTime<Utc>> {
        let tz = settings.calendar.zone(tenant);
        self.tenant_first_open(tenant, settings).map(|m| start_of_local_day(tz, m))
    }

    /// Up to where a running VM is billed: the start of the recorded clock's
    /// day in the tenant's zone, and at least the end of its closed months.
    fn vm_cut(&self, tenant: &str, settings: &EngineSettings) -> Option<DateTime<Utc>> {
        let tz = settings.calendar.zone(tenant);
        let day = self.clock.map(|c| start_of_local_day(tz, c.with_timezone(&tz).date_naive()));
        day.max(self.frontier(tenant, settings))
    }

    /// Checks every change (tenant cap, overflow), then applies them all, or
    /// none.
    fn commit(&mut self, tenant: &str, offset: i64, at: DateTime<Utc>, changes: Vec<Change>, settings: &EngineSettings) -> Result<(), Refusal> {
        // Changes of one aggregate merged, in id order (a stable sort keeps
        // their arrival order, so the first target wins as before).
        let mut changes = changes;
        changes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut merged: Vec<Change> = Vec::with_capacity(changes.len());
        for c in changes {
            match merged.last_mut() {
                Some(m) if m.id == c.id => {
                    m.base = m.base.checked_add(c.base).ok_or(Refusal::Overflow)?;
                    m.cost = m.cost.checked_add(c.cost).ok_or(Refusal::Overflow)?;
                    m.counts = m.counts.combine(&c.counts, 1);
                    if m.target.is_none() {
                        m.target = c.target;
                    }
                }
                _ => merged.push(c),
            }
        }
        // One look-up per aggregate to check, one to apply. The tenant cap is
        // judged before an overflow (the reason a sender sees first).
        let limit = max_amount();
        let mut fresh = 0;
        let mut overflow = false;
        for c in &merged {
            let (base, cost, qdiv, div) = match (self.aggregates.get(&c.id), &c.target) {
                (Some(a), _) => (a.base_quantity, a.cost_numerator, a.quantity_divisor, a.divisor),
                (None, Some(t)) => {
                    fresh += 1;
                    (Decimal::ZERO, Decimal::ZERO, t.scope.quantity_divisor, t.scope.divisor)
                }
                // A retraction of an aggregate that is not open: a defect,
                // refused rather than half applied.
                (None, None) => {
                    fresh += 1;
                    overflow = true;
                    continue;
                }
            };
            // |base / qdiv| < limit, without a division on the hot path.
            let fits = || -> Option<bool> {
                let base = base.checked_add(c.base)?;
                let cost = cost.checked_add(c.cost)?;
                Some(base.abs() < limit.checked_mul(qdiv)? && cost.abs() < limit.checked_mul(div)?)
            };
            overflow |= fits() != Some(true);
        }
        let open = self.open_per_tenant.get(tenant).copied().unwrap_or(0);
        if fresh > 0 && open + fresh > settings.max_open_aggregates_per_tenant {
            return Err(Refusal::TenantAggregateLimit { tenant: tenant.to_string(), limit: settings.max_open_aggregates_per_tenant });
        }
        if overflow {
            return Err(Refusal::Overflow);
        }
        for c in merged {
            let unchanged = c.base.is_zero() && c.cost.is_zero() && c.counts.is_zero();
            let entry = match self.aggregates.entry(c.id) {
                std::collections::btree_map::Entry::Occupied(o) => {
                    if unchanged {
                        continue;
                    }
                    o.into_mut()
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    let Some(target) = c.target else { continue };
                    *self.open_per_tenant.entry(tenant.to_string()).or_insert(0) += 1;
                    v.insert(target.open())
                }
            };
            entry.base_quantity += c.base;
            entry.cost_numerator += c.cost;
            entry.counts = entry.counts.combine(&c.counts, 1);
            entry.revision = offset + 1;
            entry.revision_time = at;
            entry.dirty = true;
        }
        Ok(())
    }

    /// Applies a control record: moves the recorded clock or records an
    /// explicit close, bills running VMs up to the new cut, emits the finals
    /// of the months that closed, and forgets them.
    pub fn apply_control(&mut self, offset: i64, control: &PeriodControl, settings: &EngineSettings, book: &PriceBook) -> Outcome {
        self.next_offset = offset + 1;
        let old = self.clone_frontiers(settings);
        match control.action {
            PeriodAction::Clock => {
                if self.clock.is_none_or(|c| control.clock > c) {
                    self.clock = Some(control.clock);
                }
            }
            PeriodAction::Close => {
                if let Some(month) = parse_month(&control.month) {
                    let entry = self.closed_through.entry(control.tenant.clone()).or_insert(month);
                    *entry = (*entry).max(month);
                }
            }
        }
        let revision_time = control.clock;
        // 1. Running VMs are billed up to the new cut, within the old open time.
        let keys: Vec<String> = self.vms.iter().filter(|(_, vm)| vm.mode == VmMode::Lifecycle).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            let Some(vm) = self.vms.get(key) else { continue };
            let tenant = vm.tenant.clone();
            let frontier = old.get(&tenant).copied().flatten();
            let cut = self.vm_cut(&tenant, settings);
            match vm_bill(vm, frontier, cut, settings, book) {
                Ok(desired) => {
                    let changes = bill_changes(&vm.billed, &desired);
                    match self.commit(&tenant, offset, revision_time, changes, settings) {
                        Ok(()) => {
                            if let Some(vm) = self.vms.get_mut(key) {
                                vm.billed = desired.into_iter().map(|(id, (b, _))| (id, b)).collect();
                            }
                        }
                        Err(e) => tracing::warn!(vm = %key, error = %e, "running VM not billed at this clock record"),
                    }
                }
                Err(e) => tracing::warn!(vm = %key, error = %e, "running VM not billed at this clock record"),
            }
        }
        // 2. Finals of the windows whose last month closed.
        let mut closed_ids = Vec::new();
        for (id, a) in &self.aggregates {
            if self.tenant_first_open(&a.tenant, settings).is_some_and(|open| a.last_month < open) {
                closed_ids.push(id.clone());
            }
        }
        for id in closed_ids {
            if let Some(mut a) = self.aggregates.remove(&id) {
                if let Some(n) = self.open_per_tenant.get_mut(&a.tenant) {
                    *n = n.saturating_sub(1);
                }
                a.revision = offset + 1;
                a.revision_time = revision_time;
                self.pending_finals.push(render(&id, &a, true, book));
            }
        }
        self.open_per_tenant.retain(|_, n| *n > 0);
        // 3. Events of closed months leave; their ids are kept for a while.
        let clock = self.clock.unwrap_or(revision_time);
        let closed_keys: Vec<EventKey> = self
            .events
            .iter()
            .filter(|(k, e)| self.tenant_first_open(&k.tenant, settings).is_some_and(|open| e.month < open))
            .map(|(k, _)| k.clone())
            .collect();
        for k in closed_keys {
            if let Some(e) = self.events.remove(&k) {
                self.closed_events.insert(k, (e.version, clock));
            }
        }
        let horizon = clock - settings.closed_event_retention;
        self.closed_events.retain(|_, (_, at)| *at >= horizon);
        // 4. VM timelines start again at the new open time.
        let tenants: BTreeSet<String> = self.vms.values().map(|vm| vm.tenant.clone()).collect();
        let frontiers: HashMap<String, Option<DateTime<Utc>>> = tenants.iter().map(|t| (t.clone(), self.frontier(t, settings))).collect();
        let cuts: HashMap<String, Option<DateTime<Utc>>> = tenants.iter().map(|t| (t.clone(), self.vm_cut(t, settings))).collect();
        let first_open: HashMap<String, Option<NaiveDate>> = tenants.iter().map(|t| (t.clone(), self.tenant_first_open(t, settings))).collect();
        self.vms.retain(|_, vm| {
            let frontier = frontiers.get(&vm.tenant).copied().flatten();
            let open = first_open.get(&vm.tenant).copied().flatten();
            match vm.mode {
                VmMode::Samples => open.is_none_or(|open| vm.last_month >= open),
                VmMode::Lifecycle => {
                    let Some(frontier) = frontier else { return true };
                    let kept = vm.transitions.partition_point(|t| t.at < frontier);
                    if kept > 0 {
                        let folded: Vec<Transition> = vm.transitions.drain(..kept).collect();
                        let mut state = vm.initial.take();
                        for t in &folded {
                            state = next_state(state, &t.usage);
                        }
                        vm.initial = state;
                    }
                    let cut = cuts.get(&vm.tenant).copied().flatten();
                    if let Ok(desired) = vm_bill(vm, Some(frontier), cut, settings, book) {
                        vm.billed = desired.into_iter().map(|(id, (b, _))| (id, b)).collect();
                    }
                    vm.initial.is_some() || !vm.transitions.is_empty()
                }
            }
        });
        Outcome::Control
    }

    fn clone_frontiers(&self, settings: &EngineSettings) -> HashMap<String, Option<DateTime<Utc>>> {
        self.vms.values().map(|vm| (vm.tenant.clone(), self.frontier(&vm.tenant, settings))).collect()
    }

    /// Takes the aggregates to emit now: the finals of closed months, then
    /// every changed open one.
    pub fn take_emissions(&mut self, book: &PriceBook) -> Vec<Aggregate> {
        let mut out = std::mem::take(&mut self.pending_finals);
        for (id, state) in self.aggregates.iter_mut() {
            if state.dirty {
                out.push(render(id, state, false, book));
                state.dirty = false;
            }
        }
        out
    }

    /// Reprocessing: bills running VMs up to `cut` (the end of the re-rated
    /// range) and renders every aggregate, final.
    pub fn render_all_until(&mut self, cut: DateTime<Utc>, revision: i64, at: DateTime<Utc>, settings: &EngineSettings, book: &PriceBook) -> Vec<Aggregate> {
        let keys: Vec<String> = self.vms.keys().cloned().collect();
        for key in keys {
            let Some(vm) = self.vms.get(&key) else { continue };
            if vm.mode != VmMode::Lifecycle {
                continue;
            }
            let tenant = vm.tenant.clone();
            if let Ok(desired) = vm_bill(vm, None, Some(cut), settings, book) {
                let changes = bill_changes(&vm.billed, &desired);
                if self.commit(&tenant, revision - 1, at, changes, settings).is_ok() {
                    if let Some(vm) = self.vms.get_mut(&key) {
                        vm.billed = desired.into_iter().map(|(id, (b, _))| (id, b)).collect();
                    }
                }
            }
        }
        self.aggregates
            .iter()
            .map(|(id, a)| {
                let mut a = a.clone();
                a.revision = revision;
                a.revision_time = at;
                render(id, &a, true, book)
            })
            .collect()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending_finals.is_empty() || self.aggregates.values().any(|a| a.dirty)
    }

    /// Whether a clock record at `now` would close a month that holds open
    /// aggregates, or bill a new day of a VM.
    pub fn clock_record_due(&self, now: DateTime<Utc>, settings: &EngineSettings) -> bool {
        let Some(clock) = self.clock else { return true };
        let c = &settings.calendar;
        let mut first_open: HashMap<&str, Option<NaiveDate>> = HashMap::new();
        let closes = self.aggregates.values().any(|a| {
            let tenant = a.tenant.as_str();
            let open = *first_open.entry(tenant).or_insert_with(|| first_open_month(c.zone(tenant), c.grace_days(tenant), Some(now), None));
            open.is_some_and(|open| a.last_month < open)
        });
        closes
            || self.vms.values().any(|vm| {
                let tz = c.zone(&vm.tenant);
                vm.mode == VmMode::Lifecycle && now.with_timezone(&tz).date_naive() != clock.with_timezone(&tz).date_naive()
            })
    }
}

/// The next state of a VM after a transition: (configuration, running).
fn next_state(state: Option<(VmUsage, bool)>, usage: &VmUsage) -> Option<(VmUsage, bool)> {
    match usage.transition {
        // A CREATE of an existing VM changes its configuration, not whether it runs.
        VmTransition::Create => Some((usage.clone(), state.map(|(_, running)| running).unwrap_or(true))),
        VmTransition::Start => Some((usage.clone(), true)),
        // A RESIZE of a stopped VM does not start it; of an unknown one, it
        // says the VM runs (a collector that starts watching mid-life).
        VmTransition::Resize => Some((usage.clone(), state.map(|(_, running)| running).unwrap_or(true))),
        VmTransition::Stop => Some((usage.clone(), false)),
        VmTransition::Delete => None,
        VmTransition::Sample => state,
    }
}

/// A VM timeline's bill for open time: aggregate id -> (amounts, how to
/// create the aggregate).
type Bill = BTreeMap<String, (Billed, Target)>;

fn vm_bill(vm: &VmTimeline, frontier: Option<DateTime<Utc>>, cut: Option<DateTime<Utc>>, settings: &EngineSettings, book: &PriceBook) -> Result<Bill, Refusal> {
    let mut bill = Bill::new();
    let mut state = vm.initial.clone();
    let mut since = frontier;
    let clip = |from: DateTime<Utc>| frontier.map_or(from, |f| from.max(f));
    for t in &vm.transitions {
        if let (Some((usage, true)), Some(from)) = (&state, since) {
            bill_interval(usage, clip(from), t.at, settings, book, &mut bill)?;
        }
        state = next_state(state, &t.usage);
        since = Some(t.at);
    }
    if let (Some((usage, true)), Some(from), Some(cut)) = (&state, since, cut) {
        bill_interval(usage, clip(from), cut, settings, book, &mut bill)?;
    }
    Ok(bill)
}

fn bill_interval(usage: &VmUsage, from: DateTime<Utc>, to: DateTime<Utc>, settings: &EngineSettings, book: &PriceBook, bill: &mut Bill) -> Result<(), Refusal> {
    if from >= to {
        return Ok(());
    }
    let tenant = &usage.header.tenant;
    let tz = settings.calendar.zone(tenant);
    // Priced piece by piece at each price change.
    let mut cuts = vec![from];
    cuts.extend(book.change_instants(tenant).into_iter().filter(|t| *t > from && *t < to));
    cuts.push(to);
    let mut changes = Vec::new();
    for piece in cuts.windows(2) {
        let prices = book.prices_at(tenant, piece[0])?;
        vm_changes(usage, &prices, tz, piece[0], piece[1], settings, &mut changes)?;
    }
    for c in changes {
        let Some(target) = c.target else { continue };
        let entry = bill.entry(c.id).or_insert_with(|| (Billed::default(), target));
        entry.0.base = entry.0.base.checked_add(c.base).ok_or(Refusal::Overflow)?;
        entry.0.cost = entry.0.cost.checked_add(c.cost).ok_or(Refusal::Overflow)?;
        entry.0.pieces += 1;
    }
    Ok(())
}

/// The changes that turn what a VM billed into what it should have billed.
fn bill_changes(billed: &BTreeMap<String, Billed>, desired: &Bill) -> Vec<Change> {
    let mut out = Vec::new();
    for (id, (want, target)) in desired {
        let had = billed.get(id).cloned().unwrap_or_default();
        if had != *want {
            out.push(Change {
                id: id.clone(),
                target: Some(target.clone()),
                base: want.base - had.base,
                cost: want.cost - had.cost,
                counts: Counts { events: want.pieces - had.pieces, ..Counts::default() },
            });
        }
    }
    for (id, had) in billed {
        if !desired.contains_key(id) {
            out.push(Change { id: id.clone(), target: None, base: -had.base, cost: -had.cost, counts: Counts { events: -had.pieces, ..Counts::default() } });
        }
    }
    out
}

fn render(id: &str, s: &AggregateState, is_final: bool, book: &PriceBook) -> Aggregate {
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
        emitted_at: meter_model::codec::to_millis(s.revision_time),
    }
}

/// Analyst dimensions of ticket time.
pub fn ticket_dimensions(t: &TicketTime) -> BTreeMap<String, String> {
    encoded_ticket_dimensions(t).to_map()
}

/// [`ticket_dimensions`] encoded for the aggregate id, without a map.
fn encoded_ticket_dimensions(t: &TicketTime) -> EncodedDimensions {
    let category = t.category_path.join(" > ");
    // In key order.
    EncodedDimensions::new([
        ("application", t.application.as_deref().unwrap_or_default()),
        ("category", category.as_str()),
        ("country", t.country.as_deref().unwrap_or_default()),
        ("in_scope", if t.in_scope { "true" } else { "false" }),
        ("requester", t.requester.as_str()),
        ("technician", t.technician.as_str()),
        ("technician_profile", t.technician_profile.avro_symbol()),
        ("ticket_type", t.ticket_type.avro_symbol()),
    ])
}

const SECONDS_PER_HOUR: i64 = 3600;

/// The contribution of a ticket, a check run or a VM sample: its counts and
/// one change per period window.
fn contributions(event: &Event, tz: Tz, settings: &EngineSettings, book: &PriceBook) -> Result<(Counts, Vec<Change>), Refusal> {
    let h = event.header();
    let target = |scope: &Rc<Scope>, period: Period| Target { scope: scope.clone(), period, window: window_of(period, tz, h.event_time) };
    let mut out = Vec::new();
    let counts = match event {
        Event::TicketTime(t) => {
            let rate = book.ticket_hour(&h.tenant, h.event_time, t.technician_profile)?;
            let minutes = Decimal::from(t.minutes_worked);
            let cost = minutes.checked_mul(rate).ok_or(Refusal::Overflow)?;
            let counts = Counts {
                events: 1,
                incidents: i64::from(t.ticket_type == TicketType::Incident),
                requests: i64::from(t.ticket_type == TicketType::Request),
                ..Counts::default()
            };
            let scope = Scope::new(event.kind(), h, tz, "ticket.time", "minute", Decimal::ONE, Decimal::from(60), encoded_ticket_dimensions(t));
            for &period in &settings.periods {
                let target = target(&scope, period);
                out.push(Change { id: target.id(), target: Some(target), base: minutes, cost, counts: counts.clone() });
            }
            counts
        }
        Event::CheckResult(c) => {
            let price = if c.status == CheckStatus::Missed {
                Decimal::ZERO // a run not done is not billed
            } else {
                book.check_run(&h.tenant, h.event_time, c.frequency)?
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
            // In key order.
            let dims = EncodedDimensions::new([("check_name", c.check_name.as_str()), ("frequency", c.frequency.avro_symbol())]);
            let scope = Scope::new(event.kind(), h, tz, "check.runs", "run", Decimal::ONE, Decimal::ONE, dims);
            for &period in &settings.periods {
                let target = target(&scope, period);
                out.push(Change { id: target.id(), target: Some(target), base: Decimal::ONE, cost: price, counts: counts.clone() });
            }
            counts
        }
        Event::VmUsage(v) => {
            let from = h.event_time - Duration::seconds(i64::from(v.sample_interval_seconds));
            let mut cuts = vec![from];
            cuts.extend(book.change_instants(&h.tenant).into_iter().filter(|t| *t > from && *t < h.event_time));
            cuts.push(h.event_time);
            for piece in cuts.windows(2) {
                let prices = book.prices_at(&h.tenant, piece[0])?;
                vm_changes(v, &prices, tz, piece[0], piece[1], settings, &mut out)?;
            }
            // Every change of a sample counts the sample once per aggregate.
            Counts { events: 1, ..Counts::default() }
        }
    };
    if let Event::VmUsage(_) = event {
        // vm_changes counted each piece; a sample is one event per aggregate.
        let mut seen = BTreeSet::new();
        for c in &mut out {
            c.counts = if seen.insert(c.id.clone()) { counts.clone() } else { Counts::default() };
        }
    }
    Ok((counts, out))
}

/// The resources of a VM over [from, to), one change per resource, period
/// window and window piece.
fn vm_changes(
    v: &VmUsage,
    prices: &Prices,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    settings: &EngineSettings,
    out: &mut Vec<Change>,
) -> Result<(), Refusal> {
    let sla = prices.sla_multiplier.get(&v.sla_tier).copied().ok_or(RatingError::UnknownSlaTier(v.sla_tier))?;
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
    let h = &v.header;
    // One scope per resource, shared by its windows.
    let scopes: Vec<Rc<Scope>> = resources
        .iter()
        .map(|(metric, unit, _, _, divisor, option)| {
            // In key order.
            let mut dims = vec![("datacenter", v.datacenter.as_str())];
            if let Some(option) = option {
                dims.push(("option", option.as_str()));
            }
            dims.push(("sla_tier", v.sla_tier.avro_symbol()));
            Scope::new(EventKind::VmUsage, h, tz, metric, unit, *divisor, *divisor, EncodedDimensions::new(dims))
        })
        .collect();
    for &period in &settings.periods {
        for (window, a, b) in split_interval(period, tz, from, to) {
            let seconds = Decimal::from((b - a).num_seconds());
            for ((_, _, amount, price, _, _), scope) in resources.iter().zip(&scopes) {
                if amount.is_zero() || seconds.is_zero() {
                    continue;
                }
                let target = Target { scope: scope.clone(), period, window };
                let base = amount.checked_mul(seconds).ok_or(Refusal::Overflow)?;
                let cost = base.checked_mul(*price).ok_or(Refusal::Overflow)?;
                out.push(Change { id: target.id(), target: Some(target), base, cost, counts: Counts { events: 1, ..Counts::default() } });
            }
        }
    }
    Ok(())
}
