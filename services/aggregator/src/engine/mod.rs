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
//!
//! **Representation.** What the engine keeps grows with the events of open
//! months, so it is kept small: identities are keyed 128-bit hashes
//! ([`identity`]), an aggregate is keyed by its interned scope, period and
//! window start ([`scopes`]), its SHA-256 `aggregate_id` is computed once,
//! when it opens, and a ticket or check run keeps one scope, four window
//! starts and one amount pair. Calendar arithmetic is memoised ([`calendar`]).
//! [`PartitionState::take_changes`] gives what changed since the last
//! checkpoint, so a checkpoint writes the changes, not the whole state.

mod calendar;
mod encoding;
mod identity;
mod parts;
pub(crate) mod legacy;
mod rating;
mod scopes;
mod vm;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use meter_config::{MeterConfig, TenantCalendar};
use meter_model::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use identity::{EventId, IdentityKey};
pub use parts::{Part, Parts};
pub use scopes::{ScopeData, ScopeId};
pub use vm::{Billed, Transition, VmMode, VmTimeline};

use crate::pricing::{PriceBook, RatingError};
use crate::windows::{next_period_first_day, period_first_day, start_of_local_day, Window};
use calendar::{period_index, Calendar};
use identity::IdMap;
use rating::Rater;
use scopes::Scopes;
use vm::{bill_changes, billed_of, next_state, vm_bill};

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

/// Which counters one event adds one to (every count of an event is 0 or 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountFlags(u8);

impl CountFlags {
    pub const EVENT: CountFlags = CountFlags(1);
    pub const INCIDENT: CountFlags = CountFlags(1 << 1);
    pub const REQUEST: CountFlags = CountFlags(1 << 2);
    pub const OK: CountFlags = CountFlags(1 << 3);
    pub const WARNING: CountFlags = CountFlags(1 << 4);
    pub const KO: CountFlags = CountFlags(1 << 5);
    pub const UNKNOWN: CountFlags = CountFlags(1 << 6);
    pub const MISSED: CountFlags = CountFlags(1 << 7);

    pub const fn with(self, other: CountFlags) -> CountFlags {
        CountFlags(self.0 | other.0)
    }

    /// The counts, each `sign` or 0.
    pub fn counts(self, sign: i64) -> Counts {
        Counts::from_fields(std::array::from_fn(|i| if self.0 & (1 << i) != 0 { sign } else { 0 }))
    }
}

/// An open aggregate's key: its scope, period and window start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AggKey {
    pub scope: ScopeId,
    pub period: Period,
    /// Window start, milliseconds since the epoch.
    pub start_ms: i64,
}

/// One open aggregate and its exact accumulators (what it shares with its
/// siblings is in its scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateState {
    /// `aggregate_id`, computed when it opened.
    pub id: String,
    pub period: Period,
    #[serde(with = "encoding::zone")]
    pub time_zone: Tz,
    #[serde(with = "encoding::instant")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "encoding::instant")]
    pub window_end: DateTime<Utc>,
    /// Local date of the window's first day (its label).
    #[serde(with = "encoding::date")]
    pub first_day: NaiveDate,
    /// The month (first day) of the window's last local day: the window is
    /// final once that month is closed.
    #[serde(with = "encoding::date")]
    pub last_month: NaiveDate,
    /// Quantity = base / quantity_divisor; cost = round(cost_numerator / divisor).
    #[serde(with = "encoding::decimal")]
    pub base_quantity: Decimal,
    #[serde(with = "encoding::decimal")]
    pub cost_numerator: Decimal,
    pub counts: Counts,
    pub revision: i64,
    /// Timestamp of the record that made the revision (emitted as `emitted_at`).
    #[serde(with = "encoding::instant")]
    pub revision_time: DateTime<Utc>,
    /// Changed since it was last emitted.
    #[serde(skip)]
    dirty: bool,
    /// Changed since the last checkpoint.
    #[serde(skip)]
    unsaved: bool,
}

/// Interned tenant names (what counted events refer to).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tenants {
    names: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32, foldhash::fast::RandomState>,
}

impl PartialEq for Tenants {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl Eq for Tenants {}

impl Tenants {
    fn id(&mut self, tenant: &str) -> u32 {
        if let Some(id) = self.index.get(tenant) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(tenant.to_string());
        self.index.insert(tenant.to_string(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    fn len(&self) -> u32 {
        self.names.len() as u32
    }

    fn reindex(&mut self) {
        self.index = self.names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
    }
}

/// An event counted in an open month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedEvent {
    pub version: i64,
    /// Month (first day, tenant's zone) the event belongs to.
    #[serde(with = "encoding::date")]
    pub month: NaiveDate,
    /// Its tenant, in [`Tenants`].
    pub tenant: u32,
    pub deleted: bool,
    /// Same counts in every aggregate it counted in.
    pub counts: CountFlags,
    pub parts: Parts,
}

impl CountedEvent {
    /// The changes that take the event's contribution back.
    fn retractions(&self, out: &mut Vec<Change>) {
        let counts = self.counts.counts(-1);
        self.parts.for_each(|key, base, cost, counted| {
            out.push(Change::new(key, None, -base, -cost, if counted { counts.clone() } else { Counts::default() }));
        });
    }
}

/// An event of a closed month: its version and the clock at its close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedEvent {
    pub version: i64,
    #[serde(with = "encoding::instant")]
    pub closed_at: DateTime<Utc>,
}

/// Where the changes since the last checkpoint are recorded.
#[derive(Debug, Clone, Default)]
struct Journal {
    aggregates: Vec<AggKey>,
    events: Vec<EventId>,
    vms: Vec<String>,
    /// Tenant names already saved.
    tenants_saved: usize,
    /// Something was removed (a close): the next checkpoint is a full one.
    structural: bool,
}

/// Buffers reused from event to event.
#[derive(Debug, Clone, Default)]
struct Scratch {
    changes: Vec<Change>,
    vm_key: String,
}

/// Everything the aggregator keeps for one input partition; checkpointed
/// together with `next_offset` so a restart resumes exactly after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionState {
    /// First offset not yet applied.
    pub next_offset: i64,
    /// Latest wall clock recorded in this partition (CLOCK control records).
    #[serde(with = "encoding::instant::option")]
    pub clock: Option<DateTime<Utc>>,
    /// Explicit closes: tenant -> last closed month (first day).
    pub closed_through: BTreeMap<String, NaiveDate>,
    identity: IdentityKey,
    scopes: Scopes,
    aggregates: HashMap<AggKey, AggregateState, foldhash::fast::RandomState>,
    tenants: Tenants,
    /// Events counted in open months, by identity.
    events: IdMap<CountedEvent>,
    /// Identities of events of closed months: a re-send counts as a
    /// duplicate, a correction goes late.
    closed_events: IdMap<ClosedEvent>,
    /// VMs by (tenant, vm_id).
    vms: BTreeMap<String, VmTimeline>,
    /// Open aggregates per tenant (the per-tenant cap), counted again on load.
    #[serde(skip)]
    open_per_tenant: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Finals produced by a close, emitted at the next flush (a checkpoint
    /// is only written after they are acknowledged).
    #[serde(skip)]
    pending_finals: Vec<Aggregate>,
    /// Aggregates changed since the last emission, in the order they changed.
    #[serde(skip)]
    dirty: Vec<AggKey>,
    #[serde(skip)]
    journal: Option<Journal>,
    #[serde(skip)]
    calendar: Calendar,
    #[serde(skip)]
    scratch: Scratch,
    /// Each tenant's first open month (by tenant id) when the events were
    /// last swept for closed months; empty after a load (the next control
    /// record sweeps).
    #[serde(skip)]
    swept_first_open: Vec<Option<NaiveDate>>,
}

impl Default for PartitionState {
    fn default() -> Self {
        PartitionState {
            next_offset: 0,
            clock: None,
            closed_through: BTreeMap::new(),
            identity: IdentityKey::random(),
            scopes: Scopes::default(),
            aggregates: HashMap::default(),
            tenants: Tenants::default(),
            events: IdMap::default(),
            closed_events: IdMap::default(),
            vms: BTreeMap::new(),
            open_per_tenant: HashMap::default(),
            pending_finals: Vec::new(),
            dirty: Vec::new(),
            journal: None,
            calendar: Calendar::default(),
            scratch: Scratch::default(),
            swept_first_open: Vec::new(),
        }
    }
}

/// Two states are equal when they hold the same things (memos, buffers and
/// what awaits emission aside).
impl PartialEq for PartitionState {
    fn eq(&self, o: &Self) -> bool {
        self.next_offset == o.next_offset
            && self.clock == o.clock
            && self.closed_through == o.closed_through
            && self.identity == o.identity
            && self.scopes == o.scopes
            && self.aggregates == o.aggregates
            && self.tenants == o.tenants
            && self.events == o.events
            && self.closed_events == o.closed_events
            && self.vms == o.vms
    }
}

impl Eq for PartitionState {}

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

/// How to open an aggregate that is not open yet.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    zone: Tz,
    window: Window,
}

/// One change to one aggregate, computed before anything is mutated.
#[derive(Debug, Clone)]
pub struct Change {
    key: AggKey,
    /// How to open the aggregate if it is not open (None: it must be).
    open: Option<Opening>,
    base: Decimal,
    cost: Decimal,
    counts: Counts,
    /// The aggregate's amounts after the change (set when it is checked).
    totals: (Decimal, Decimal),
}

impl Change {
    fn new(key: AggKey, open: Option<Opening>, base: Decimal, cost: Decimal, counts: Counts) -> Change {
        Change { key, open, base, cost, counts, totals: (Decimal::ZERO, Decimal::ZERO) }
    }
}

/// What changed since the last checkpoint.
pub enum Changes {
    /// Something was removed (a month closed): write the whole state.
    Structural,
    /// Only additions and updates: write them.
    Delta(Box<Delta>),
}

/// The changes of a state since its last checkpoint, applied in order onto
/// the state of that checkpoint by [`PartitionState::apply_delta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub next_offset: i64,
    #[serde(with = "encoding::instant::option")]
    pub clock: Option<DateTime<Utc>>,
    pub closed_through: BTreeMap<String, NaiveDate>,
    /// Tenant names from index `first_tenant` on.
    first_tenant: u32,
    tenants: Vec<String>,
    scopes: Vec<(ScopeId, ScopeData)>,
    aggregates: Vec<(AggKey, AggregateState)>,
    events: Vec<(EventId, CountedEvent)>,
    vms: Vec<(String, VmTimeline)>,
}

impl Delta {
    /// Records it carries (for logs and metrics).
    pub fn len(&self) -> usize {
        self.scopes.len() + self.aggregates.len() + self.events.len() + self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

fn vm_key_into(out: &mut String, tenant: &str, vm_id: &str) {
    out.clear();
    out.push_str(tenant);
    out.push('\u{1f}');
    out.push_str(vm_id);
}

fn open_aggregate(scope: &ScopeData, key: AggKey, open: &Opening) -> AggregateState {
    let id = AggregateScope::new(scope.kind, &scope.tenant, &scope.subsidiary, &scope.domain).id(key.period, open.window.start, &scope.metric, &scope.dimensions);
    AggregateState {
        id,
        period: key.period,
        time_zone: open.zone,
        window_start: open.window.start,
        window_end: open.window.end,
        first_day: open.window.first_day,
        last_month: month_of(open.zone, calendar::last_instant(&open.window)),
        base_quantity: Decimal::ZERO,
        cost_numerator: Decimal::ZERO,
        counts: Counts::default(),
        revision: 0,
        revision_time: DateTime::<Utc>::UNIX_EPOCH,
        dirty: false,
        unsaved: false,
    }
}

impl PartitionState {
    /// Marks that an offset was consumed without effect (dead-lettered or late).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = offset + 1;
    }

    /// Open aggregates.
    pub fn open_aggregates(&self) -> usize {
        self.aggregates.len()
    }

    /// VMs whose billing is followed (timelines and sampled VMs).
    pub fn tracked_vms(&self) -> usize {
        self.vms.len()
    }

    /// Events of open months kept for deduplication and corrections.
    pub fn open_events(&self) -> usize {
        self.events.len()
    }

    fn tenant_first_open(&self, tenant: &str, settings: &EngineSettings) -> Option<NaiveDate> {
        if settings.everything_open {
            return None;
        }
        let c = &settings.calendar;
        first_open_month(c.zone(tenant), c.grace_days(tenant), self.clock, self.closed_through.get(tenant).copied())
    }

    /// Whether `month` of `tenant` is closed for an event stamped at `ingest`.
    fn is_closed(&mut self, tenant: &str, month: NaiveDate, ingest: DateTime<Utc>, settings: &EngineSettings) -> bool {
        if settings.everything_open {
            return false;
        }
        let (clock, closed_through) = (self.clock, &self.closed_through);
        let t = self.calendar.tenant(tenant, &settings.calendar);
        // Memoised until the next control record.
        let first_open = t.first_open(|zone, grace| first_open_month(zone, grace, clock, closed_through.get(tenant).copied()));
        if first_open.is_some_and(|open| month < open) {
            return true;
        }
        // The event's own stamp is a clock recorded in the stream too: an
        // event received after its month closed is late even before the
        // partition's next clock record.
        t.close_instant(month).is_some_and(|at| ingest >= at)
    }

    /// Applies the event at `offset`, whose record was written at `at`.
    /// The caller guarantees offsets arrive in increasing order.
    pub fn apply(&mut self, offset: i64, at: DateTime<Utc>, event: &Event, settings: &EngineSettings, book: &PriceBook) -> Outcome {
        self.next_offset = offset + 1;
        let outcome = self.apply_event(offset, at, event, settings, book);
        // Scopes interned for a record that opened nothing leave with it.
        self.scopes.sweep_recent();
        outcome
    }

    fn apply_event(&mut self, offset: i64, at: DateTime<Utc>, event: &Event, settings: &EngineSettings, book: &PriceBook) -> Outcome {
        let h = event.header();
        if let Err(e) = event.validate_with(&settings.limits) {
            return Outcome::Refused(Refusal::Invalid(e));
        }
        if h.ingest_time == DateTime::<Utc>::UNIX_EPOCH && !settings.everything_open {
            return Outcome::Refused(Refusal::Unstamped);
        }
        let tz = self.calendar.tenant(&h.tenant, &settings.calendar).zone;
        let earliest = match event {
            Event::VmUsage(v) if v.transition == VmTransition::Sample => {
                h.event_time - Duration::seconds(i64::from(v.sample_interval_seconds))
            }
            _ => h.event_time,
        };
        let month = self.calendar.windows(tz, earliest)[period_index(Period::Month)].first_day;
        let id = self.identity.of(h);
        if let Some(closed) = self.closed_events.get(&id) {
            // An event of a closed month sent again: the same version was
            // counted; a newer one cannot change a closed month.
            return if h.version <= closed.version && !h.deleted { Outcome::Duplicate } else { Outcome::Late(LateReason::ClosedEventResent) };
        }
        if self.is_closed(&h.tenant, month, h.ingest_time, settings) {
            return Outcome::Late(LateReason::PeriodClosed);
        }
        // One look-up of the identity: the previous version's retractions
        // are taken now, into the buffer the event's changes join.
        let mut changes = std::mem::take(&mut self.scratch.changes);
        changes.clear();
        let previous = self.events.get(&id);
        let is_resend = previous.is_some();
        if let Some(prev) = previous {
            let newer = h.version > prev.version || (h.version == prev.version && h.deleted && !prev.deleted);
            if !newer {
                self.scratch.changes = changes;
                return Outcome::Duplicate;
            }
            prev.retractions(&mut changes);
        }
        let result = match event {
            Event::VmUsage(v) if v.transition != VmTransition::Sample => self.apply_transition(offset, at, v, id, month, is_resend, settings, book),
            _ => self.apply_self_contained(offset, at, event, id, month, tz, is_resend, settings, book, &mut changes),
        };
        changes.clear();
        self.scratch.changes = changes;
        match result {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn rater<'a>(scopes: &'a mut Scopes, settings: &'a EngineSettings, book: &'a PriceBook) -> Rater<'a> {
        Rater { settings, book, scopes }
    }

    /// Tickets, checks and VM samples: each event owns its contribution.
    #[allow(clippy::too_many_arguments)]
    fn apply_self_contained(
        &mut self,
        offset: i64,
        at: DateTime<Utc>,
        event: &Event,
        id: EventId,
        month: NaiveDate,
        tz: Tz,
        had_previous: bool,
        settings: &EngineSettings,
        book: &PriceBook,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, Refusal> {
        let h = event.header();
        if let Event::VmUsage(v) = event {
            vm_key_into(&mut self.scratch.vm_key, &h.tenant, &v.vm_id);
            if let Some(vm) = self.vms.get(self.scratch.vm_key.as_str()) {
                if vm.mode != VmMode::Samples {
                    return Err(Refusal::VmModeConflict { vm_id: v.vm_id.clone(), mode: "lifecycle transitions" });
                }
            }
        }
        self.count_self_contained(offset, at, event, id, month, tz, had_previous, settings, book, changes)
    }

    #[allow(clippy::too_many_arguments)]
    fn count_self_contained(
        &mut self,
        offset: i64,
        at: DateTime<Utc>,
        event: &Event,
        id: EventId,
        month: NaiveDate,
        tz: Tz,
        had_previous: bool,
        settings: &EngineSettings,
        book: &PriceBook,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, Refusal> {
        let h = event.header();
        let (counts, parts) = if h.deleted {
            (CountFlags::default(), Parts::none())
        } else {
            let windows = self.calendar.windows(tz, h.event_time);
            Self::rater(&mut self.scopes, settings, book).contributions(event, tz, &windows, changes)?
        };
        self.commit(&h.tenant, offset, at, changes, settings)?;
        let outcome = match (had_previous, h.deleted) {
            (false, _) => Outcome::Counted,
            (true, false) => Outcome::Corrected,
            (true, true) => Outcome::Retracted,
        };
        let tenant = self.tenants.id(&h.tenant);
        self.events.insert(id, CountedEvent { version: h.version, deleted: h.deleted, month, tenant, counts, parts });
        if let Some(journal) = &mut self.journal {
            journal.events.push(id);
        }
        if let Event::VmUsage(v) = event {
            vm_key_into(&mut self.scratch.vm_key, &h.tenant, &v.vm_id);
            let (vm, changed) = match self.vms.get_mut(self.scratch.vm_key.as_str()) {
                Some(vm) => {
                    let later = vm.last_month < month;
                    vm.last_month = vm.last_month.max(month);
                    (vm, later)
                }
                None => (self.vms.entry(self.scratch.vm_key.clone()).or_insert_with(|| VmTimeline::new(&h.tenant, VmMode::Samples, month)), true),
            };
            if let (Some(journal), true, false) = (&mut self.journal, changed, vm.unsaved) {
                vm.unsaved = true;
                journal.vms.push(self.scratch.vm_key.clone());
            }
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
        event_id: EventId,
        month: NaiveDate,
        is_resend: bool,
        settings: &EngineSettings,
        book: &PriceBook,
    ) -> Result<Outcome, Refusal> {
        let h = &v.header;
        if is_resend || h.deleted {
            return Err(Refusal::VmTransitionCorrection);
        }
        let mut key = String::new();
        vm_key_into(&mut key, &h.tenant, &v.vm_id);
        let mut timeline = match self.vms.get(&key) {
            Some(vm) if vm.mode == VmMode::Samples => {
                return Err(Refusal::VmModeConflict { vm_id: v.vm_id.clone(), mode: "SAMPLEs" });
            }
            Some(vm) => vm.clone(),
            None => VmTimeline::new(&h.tenant, VmMode::Lifecycle, month),
        };
        // A transition that runs the VM must be rateable when it opens its
        // interval, whatever the clock says (so it never wedges the VM later).
        if matches!(v.transition, VmTransition::Create | VmTransition::Start | VmTransition::Resize) {
            let prices = book.prices_at(&h.tenant, h.event_time)?;
            let mut probe = Vec::new();
            Self::rater(&mut self.scopes, settings, book).vm_changes(
                v,
                &prices,
                settings.calendar.zone(&h.tenant),
                h.event_time,
                h.event_time + Duration::seconds(1),
                &mut probe,
            )?;
        }
        let transition = Transition { at: h.event_time, offset, usage: v.clone() };
        let position = timeline.transitions.partition_point(|t| t.sort_key() <= transition.sort_key());
        timeline.transitions.insert(position, transition);
        timeline.last_month = timeline.last_month.max(month);
        let frontier = self.frontier(&h.tenant, settings);
        let cut = self.vm_cut(&h.tenant, settings);
        let desired = vm_bill(&timeline, frontier, cut, &mut Self::rater(&mut self.scopes, settings, book))?;
        let mut changes = bill_changes(&timeline.billed, &desired);
        self.commit(&h.tenant, offset, at, &mut changes, settings)?;
        timeline.billed = billed_of(desired);
        self.save_vm(key, timeline);
        let tenant = self.tenants.id(&h.tenant);
        self.events.insert(event_id, CountedEvent { version: h.version, deleted: false, month, tenant, counts: CountFlags::default(), parts: Parts::none() });
        if let Some(journal) = &mut self.journal {
            journal.events.push(event_id);
        }
        Ok(Outcome::Counted)
    }

    fn save_vm(&mut self, key: String, mut timeline: VmTimeline) {
        if let Some(journal) = &mut self.journal {
            if !timeline.unsaved {
                timeline.unsaved = true;
                journal.vms.push(key.clone());
            }
        }
        self.vms.insert(key, timeline);
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
    /// none. `changes` is left empty.
    fn commit(&mut self, tenant: &str, offset: i64, at: DateTime<Utc>, changes: &mut Vec<Change>, settings: &EngineSettings) -> Result<(), Refusal> {
        // Changes of one aggregate merged (a stable sort keeps their arrival
        // order, so the first opening wins).
        changes.sort_by_key(|c| c.key);
        let mut merge_overflow = false;
        changes.dedup_by(|later, kept| {
            if later.key != kept.key {
                return false;
            }
            match (kept.base.checked_add(later.base), kept.cost.checked_add(later.cost)) {
                (Some(base), Some(cost)) => {
                    kept.base = base;
                    kept.cost = cost;
                }
                _ => merge_overflow = true,
            }
            kept.counts = kept.counts.combine(&later.counts, 1);
            if kept.open.is_none() {
                kept.open = later.open;
            }
            true
        });
        if merge_overflow {
            changes.clear();
            return Err(Refusal::Overflow);
        }
        // One look-up per aggregate to check (and sum), one to apply. The
        // tenant cap is judged before an overflow (the reason a sender sees first).
        let mut fresh = 0;
        let mut overflow = false;
        for c in changes.iter_mut() {
            let Some(bounds) = self.scopes.bounds(c.key.scope) else {
                overflow = true;
                continue;
            };
            let (base, cost) = match (self.aggregates.get(&c.key), &c.open) {
                (Some(a), _) => (a.base_quantity, a.cost_numerator),
                (None, Some(_)) => {
                    fresh += 1;
                    (Decimal::ZERO, Decimal::ZERO)
                }
                // A retraction of an aggregate that is not open: a defect,
                // refused rather than half applied.
                (None, None) => {
                    fresh += 1;
                    overflow = true;
                    continue;
                }
            };
            match (base.checked_add(c.base), cost.checked_add(c.cost)) {
                (Some(base), Some(cost)) if bounds.admit(base, cost) => c.totals = (base, cost),
                _ => overflow = true,
            }
        }
        let open = self.open_per_tenant.get(tenant).copied().unwrap_or(0);
        if fresh > 0 && open + fresh > settings.max_open_aggregates_per_tenant {
            changes.clear();
            return Err(Refusal::TenantAggregateLimit { tenant: tenant.to_string(), limit: settings.max_open_aggregates_per_tenant });
        }
        if overflow {
            changes.clear();
            return Err(Refusal::Overflow);
        }
        for c in changes.drain(..) {
            let unchanged = c.base.is_zero() && c.cost.is_zero() && c.counts.is_zero();
            let entry = match self.aggregates.entry(c.key) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    if unchanged {
                        continue;
                    }
                    o.into_mut()
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    let (Some(open), Some(scope)) = (c.open, self.scopes.get(c.key.scope)) else { continue };
                    let state = open_aggregate(scope, c.key, &open);
                    self.scopes.retain(c.key.scope);
                    match self.open_per_tenant.get_mut(tenant) {
                        Some(n) => *n += 1,
                        None => {
                            self.open_per_tenant.insert(tenant.to_string(), 1);
                        }
                    }
                    v.insert(state)
                }
            };
            (entry.base_quantity, entry.cost_numerator) = c.totals;
            entry.counts = entry.counts.combine(&c.counts, 1);
            entry.revision = offset + 1;
            entry.revision_time = at;
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(c.key);
            }
            if let (Some(journal), false) = (&mut self.journal, entry.unsaved) {
                entry.unsaved = true;
                journal.aggregates.push(c.key);
            }
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
        self.calendar.clock_moved();
        let revision_time = control.clock;
        let mut removed = 0usize;
        // 1. Running VMs are billed up to the new cut, within the old open time.
        let keys: Vec<String> = self.vms.iter().filter(|(_, vm)| vm.mode == VmMode::Lifecycle).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            let Some(vm) = self.vms.get(key) else { continue };
            let tenant = vm.tenant.clone();
            let frontier = old.get(&tenant).copied().flatten();
            let cut = self.vm_cut(&tenant, settings);
            match vm_bill(vm, frontier, cut, &mut Self::rater(&mut self.scopes, settings, book)) {
                Ok(desired) => {
                    let mut changes = bill_changes(&vm.billed, &desired);
                    match self.commit(&tenant, offset, revision_time, &mut changes, settings) {
                        Ok(()) => {
                            if let Some(vm) = self.vms.get_mut(key) {
                                vm.billed = billed_of(desired);
                            }
                        }
                        Err(e) => tracing::warn!(vm = %key, error = %e, "running VM not billed at this clock record"),
                    }
                }
                Err(e) => tracing::warn!(vm = %key, error = %e, "running VM not billed at this clock record"),
            }
        }
        // 2. Finals of the windows whose last month closed, in id order.
        let mut first_open: HashMap<ScopeId, Option<NaiveDate>> = HashMap::new();
        let mut closed: Vec<(String, AggKey)> = Vec::new();
        for (key, a) in &self.aggregates {
            let open = *first_open.entry(key.scope).or_insert_with(|| {
                self.scopes.get(key.scope).and_then(|s| self.tenant_first_open(&s.tenant, settings))
            });
            if open.is_some_and(|open| a.last_month < open) {
                closed.push((a.id.clone(), *key));
            }
        }
        closed.sort();
        for (_, key) in closed {
            if let Some(mut a) = self.aggregates.remove(&key) {
                removed += 1;
                let Some(scope) = self.scopes.get(key.scope) else { continue };
                if let Some(n) = self.open_per_tenant.get_mut(&scope.tenant) {
                    *n = n.saturating_sub(1);
                }
                a.revision = offset + 1;
                a.revision_time = revision_time;
                self.pending_finals.push(render(&a, scope, true, book));
                self.scopes.release(key.scope);
            }
        }
        self.open_per_tenant.retain(|_, n| *n > 0);
        self.dirty.retain(|k| self.aggregates.contains_key(k));
        // 3. Events of closed months leave; their ids are kept for a while.
        let clock = self.clock.unwrap_or(revision_time);
        // Events are admitted only into open months and a tenant's first
        // open month only moves forward, so the events need a look only when
        // some tenant's first open month moved since they were last looked
        // at (not at every clock record: that is a pass over every event).
        let tenant_open: Vec<Option<NaiveDate>> =
            (0..self.tenants.len()).map(|id| self.tenant_first_open(self.tenants.name(id), settings)).collect();
        let moved = tenant_open.len() != self.swept_first_open.len() || tenant_open != self.swept_first_open;
        let closed_ids: Vec<EventId> = if moved {
            self.events
                .iter()
                .filter(|(_, e)| tenant_open.get(e.tenant as usize).copied().flatten().is_some_and(|open| e.month < open))
                .map(|(k, _)| *k)
                .collect()
        } else {
            Vec::new()
        };
        self.swept_first_open = tenant_open;
        for id in closed_ids {
            if let Some(e) = self.events.remove(&id) {
                removed += 1;
                self.closed_events.insert(id, ClosedEvent { version: e.version, closed_at: clock });
            }
        }
        let horizon = clock - settings.closed_event_retention;
        let before = self.closed_events.len();
        self.closed_events.retain(|_, e| e.closed_at >= horizon);
        removed += before - self.closed_events.len();
        // 4. VM timelines start again at the new open time.
        let tenants: BTreeSet<String> = self.vms.values().map(|vm| vm.tenant.clone()).collect();
        let frontiers: HashMap<String, Option<DateTime<Utc>>> = tenants.iter().map(|t| (t.clone(), self.frontier(t, settings))).collect();
        let cuts: HashMap<String, Option<DateTime<Utc>>> = tenants.iter().map(|t| (t.clone(), self.vm_cut(t, settings))).collect();
        let first_open: HashMap<String, Option<NaiveDate>> = tenants.iter().map(|t| (t.clone(), self.tenant_first_open(t, settings))).collect();
        let vms_before = self.vms.len();
        let mut folded = 0usize;
        let mut vms = std::mem::take(&mut self.vms);
        vms.retain(|_, vm| {
            let frontier = frontiers.get(&vm.tenant).copied().flatten();
            let open = first_open.get(&vm.tenant).copied().flatten();
            match vm.mode {
                VmMode::Samples => open.is_none_or(|open| vm.last_month >= open),
                VmMode::Lifecycle => {
                    let Some(frontier) = frontier else { return true };
                    let kept = vm.transitions.partition_point(|t| t.at < frontier);
                    if kept > 0 {
                        folded += 1;
                        let done: Vec<Transition> = vm.transitions.drain(..kept).collect();
                        let mut state = vm.initial.take();
                        for t in &done {
                            state = next_state(state, &t.usage);
                        }
                        vm.initial = state;
                    }
                    let cut = cuts.get(&vm.tenant).copied().flatten();
                    if let Ok(desired) = vm_bill(vm, Some(frontier), cut, &mut Self::rater(&mut self.scopes, settings, book)) {
                        vm.billed = billed_of(desired);
                    }
                    vm.initial.is_some() || !vm.transitions.is_empty()
                }
            }
        });
        self.vms = vms;
        removed += folded + (vms_before - self.vms.len());
        self.scopes.sweep_all();
        if let Some(journal) = &mut self.journal {
            // Running VMs were billed: their timelines changed.
            for (key, vm) in self.vms.iter_mut().filter(|(_, vm)| vm.mode == VmMode::Lifecycle) {
                if !vm.unsaved {
                    vm.unsaved = true;
                    journal.vms.push(key.clone());
                }
            }
            if removed > 0 || matches!(control.action, PeriodAction::Close) {
                journal.structural = true;
            }
        }
        if removed > 0 {
            self.forget_unused_tenants();
        }
        Outcome::Control
    }

    /// Tenant names no counted event refers to any more are dropped (the
    /// table would otherwise grow with every tenant ever seen).
    fn forget_unused_tenants(&mut self) {
        let mut used = vec![false; self.tenants.names.len()];
        for e in self.events.values() {
            if let Some(u) = used.get_mut(e.tenant as usize) {
                *u = true;
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut renumber = vec![u32::MAX; used.len()];
        let mut names = Vec::new();
        for (i, name) in std::mem::take(&mut self.tenants.names).into_iter().enumerate() {
            if used[i] {
                renumber[i] = names.len() as u32;
                names.push(name);
            }
        }
        self.tenants.names = names;
        self.tenants.reindex();
        for e in self.events.values_mut() {
            e.tenant = renumber.get(e.tenant as usize).copied().unwrap_or(u32::MAX);
        }
        if let Some(journal) = &mut self.journal {
            journal.structural = true;
        }
    }

    fn clone_frontiers(&self, settings: &EngineSettings) -> HashMap<String, Option<DateTime<Utc>>> {
        self.vms.values().map(|vm| (vm.tenant.clone(), self.frontier(&vm.tenant, settings))).collect()
    }

    /// Takes the aggregates to emit now: the finals of closed months, then
    /// every changed open one.
    pub fn take_emissions(&mut self, book: &PriceBook) -> Vec<Aggregate> {
        let mut out = std::mem::take(&mut self.pending_finals);
        out.reserve(self.dirty.len());
        for key in self.dirty.drain(..) {
            let (Some(state), Some(scope)) = (self.aggregates.get_mut(&key), self.scopes.get(key.scope)) else { continue };
            if state.dirty {
                state.dirty = false;
                out.push(render(state, scope, false, book));
            }
        }
        out
    }

    /// Reprocessing: bills running VMs up to `cut` (the end of the re-rated
    /// range) and renders every aggregate, final, in id order.
    pub fn render_all_until(&mut self, cut: DateTime<Utc>, revision: i64, at: DateTime<Utc>, settings: &EngineSettings, book: &PriceBook) -> Vec<Aggregate> {
        let keys: Vec<String> = self.vms.keys().cloned().collect();
        for key in keys {
            let Some(vm) = self.vms.get(&key) else { continue };
            if vm.mode != VmMode::Lifecycle {
                continue;
            }
            let tenant = vm.tenant.clone();
            if let Ok(desired) = vm_bill(vm, None, Some(cut), &mut Self::rater(&mut self.scopes, settings, book)) {
                let mut changes = bill_changes(&vm.billed, &desired);
                if self.commit(&tenant, revision - 1, at, &mut changes, settings).is_ok() {
                    if let Some(vm) = self.vms.get_mut(&key) {
                        vm.billed = billed_of(desired);
                    }
                }
            }
        }
        let mut out: Vec<Aggregate> = self
            .aggregates
            .iter()
            .filter_map(|(key, a)| {
                let scope = self.scopes.get(key.scope)?;
                let mut a = a.clone();
                a.revision = revision;
                a.revision_time = at;
                Some(render(&a, scope, true, book))
            })
            .collect();
        out.sort_by(|a, b| a.aggregate_id.cmp(&b.aggregate_id));
        out
    }

    pub fn has_pending(&self) -> bool {
        !self.pending_finals.is_empty() || !self.dirty.is_empty()
    }

    /// Whether a clock record at `now` would close a month that holds open
    /// aggregates, or bill a new day of a VM.
    pub fn clock_record_due(&self, now: DateTime<Utc>, settings: &EngineSettings) -> bool {
        let Some(clock) = self.clock else { return true };
        let c = &settings.calendar;
        let mut first_open: HashMap<ScopeId, Option<NaiveDate>> = HashMap::new();
        let closes = self.aggregates.iter().any(|(key, a)| {
            let open = *first_open.entry(key.scope).or_insert_with(|| {
                self.scopes.get(key.scope).and_then(|s| first_open_month(c.zone(&s.tenant), c.grace_days(&s.tenant), Some(now), None))
            });
            open.is_some_and(|open| a.last_month < open)
        });
        closes
            || self.vms.values().any(|vm| {
                let tz = c.zone(&vm.tenant);
                vm.mode == VmMode::Lifecycle && now.with_timezone(&tz).date_naive() != clock.with_timezone(&tz).date_naive()
            })
    }

    // ------------------------------------------------------- checkpoints ---

    /// Starts recording changes for [`Self::take_changes`] (a state that is
    /// checkpointed; others, such as a reprocess, record nothing).
    pub fn track_changes(&mut self) {
        if self.journal.is_none() {
            self.journal = Some(Journal { tenants_saved: self.tenants.names.len(), ..Journal::default() });
        }
    }

    /// What changed since the last call (or since tracking started), and
    /// starts recording anew.
    pub fn take_changes(&mut self) -> Changes {
        let Some(journal) = self.journal.take() else { return Changes::Structural };
        self.journal = Some(Journal { tenants_saved: self.tenants.names.len(), ..Journal::default() });
        if journal.structural {
            self.mark_all_saved();
            return Changes::Structural;
        }
        let aggregates = saved_copies(journal.aggregates, |k| {
            let a = self.aggregates.get_mut(k)?;
            a.unsaved = false;
            Some(a.clone())
        });
        // Not sorted: an event corrected within one flush is recorded twice
        // with its latest value, which applies the same twice.
        let events = journal.events.into_iter().filter_map(|id| self.events.get(&id).map(|e| (id, e.clone()))).collect();
        let vms = saved_copies(journal.vms, |k| {
            let vm = self.vms.get_mut(k)?;
            vm.unsaved = false;
            Some(vm.clone())
        });
        let first_tenant = journal.tenants_saved.min(self.tenants.names.len());
        Changes::Delta(Box::new(Delta {
            next_offset: self.next_offset,
            clock: self.clock,
            closed_through: self.closed_through.clone(),
            first_tenant: first_tenant as u32,
            tenants: self.tenants.names[first_tenant..].to_vec(),
            scopes: self.scopes.take_unsaved(),
            aggregates,
            events,
            vms,
        }))
    }

    fn mark_all_saved(&mut self) {
        for a in self.aggregates.values_mut() {
            a.unsaved = false;
        }
        for vm in self.vms.values_mut() {
            vm.unsaved = false;
        }
        self.scopes.clear_unsaved();
    }

    /// Applies a checkpoint's delta onto the state it was taken after.
    pub fn apply_delta(&mut self, delta: Delta) {
        self.next_offset = delta.next_offset;
        self.clock = delta.clock;
        self.closed_through = delta.closed_through;
        self.tenants.names.truncate(delta.first_tenant as usize);
        self.tenants.names.extend(delta.tenants);
        self.scopes.put_all(delta.scopes);
        self.aggregates.extend(delta.aggregates);
        self.events.extend(delta.events);
        self.vms.extend(delta.vms);
    }

    /// Rebuilds what is derived from the saved state (indexes, counts),
    /// after a checkpoint was read.
    pub fn restore_derived(&mut self) {
        self.tenants.reindex();
        self.scopes.reset_refs();
        self.open_per_tenant.clear();
        for key in self.aggregates.keys() {
            self.scopes.retain(key.scope);
            if let Some(scope) = self.scopes.get(key.scope) {
                *self.open_per_tenant.entry(scope.tenant.clone()).or_insert(0) += 1;
            }
        }
        self.calendar = Calendar::default();
    }
}

/// What `save` gives for each journalled key, once per key, in key order.
fn saved_copies<K: Ord, V>(mut keys: Vec<K>, mut save: impl FnMut(&K) -> Option<V>) -> Vec<(K, V)> {
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().filter_map(|k| save(&k).map(|v| (k, v))).collect()
}

fn render(s: &AggregateState, scope: &ScopeData, is_final: bool, book: &PriceBook) -> Aggregate {
    Aggregate {
        aggregate_id: s.id.clone(),
        revision: s.revision,
        is_final,
        kind: scope.kind,
        tenant: scope.tenant.clone(),
        subsidiary: scope.subsidiary.clone(),
        domain: scope.domain.clone(),
        period: s.period,
        time_zone: s.time_zone.name().to_string(),
        window_start: s.window_start,
        window_end: s.window_end,
        window_label: s.first_day.format("%Y-%m-%d").to_string(),
        metric: scope.metric.clone(),
        unit: scope.unit.clone(),
        dimensions: scope.dimensions.to_map(),
        quantity: (s.base_quantity / scope.quantity_divisor).round_dp(6),
        event_count: s.counts.events,
        incident_count: s.counts.incidents,
        request_count: s.counts.requests,
        ok_count: s.counts.ok,
        warning_count: s.counts.warning,
        ko_count: s.counts.ko,
        unknown_count: s.counts.unknown,
        missed_count: s.counts.missed,
        cost: book.round(s.cost_numerator / scope.divisor),
        currency: book.currency.clone(),
        price_book_version: book.version.clone(),
        emitted_at: meter_model::codec::to_millis(s.revision_time),
    }
}

/// Analyst dimensions of ticket time.
pub fn ticket_dimensions(t: &TicketTime) -> BTreeMap<String, String> {
    EncodedDimensions::from_pairs(&rating::ticket_dimensions(t)).to_map()
}
