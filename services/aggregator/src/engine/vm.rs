//! VM timelines: lifecycle transitions kept while their month is open, and
//! the bill they make for open time.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use meter_model::{VmTransition, VmUsage};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::rating::Rater;
use super::{encoding, AggKey, Change, Counts, Opening, Refusal};

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
    #[serde(with = "encoding::instant")]
    pub at: DateTime<Utc>,
    pub offset: i64,
    #[serde(with = "encoding::vm_usage")]
    pub usage: VmUsage,
}

impl Transition {
    /// Order of transitions: by instant, then STOP after START at the same
    /// instant (so a START and a STOP at one instant bill nothing, in either
    /// arrival order), then arrival.
    pub fn sort_key(&self) -> (DateTime<Utc>, u8, i64) {
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
    #[serde(with = "encoding::decimal")]
    pub base: Decimal,
    #[serde(with = "encoding::decimal")]
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
    #[serde(with = "encoding::vm_usage::state")]
    pub initial: Option<(VmUsage, bool)>,
    pub transitions: Vec<Transition>,
    pub billed: BTreeMap<AggKey, Billed>,
    /// Latest month with activity (samples mode: forgotten once it closes).
    #[serde(with = "encoding::date")]
    pub last_month: NaiveDate,
    /// Changed since the last checkpoint.
    #[serde(skip)]
    pub unsaved: bool,
}

impl VmTimeline {
    pub fn new(tenant: &str, mode: VmMode, month: NaiveDate) -> Self {
        VmTimeline { tenant: tenant.to_string(), mode, initial: None, transitions: Vec::new(), billed: BTreeMap::new(), last_month: month, unsaved: false }
    }
}

/// The next state of a VM after a transition: (configuration, running).
pub fn next_state(state: Option<(VmUsage, bool)>, usage: &VmUsage) -> Option<(VmUsage, bool)> {
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

/// A VM timeline's bill for open time: aggregate -> (amounts, how to open it).
pub type Bill = BTreeMap<AggKey, (Billed, Opening)>;

pub fn vm_bill(vm: &VmTimeline, frontier: Option<DateTime<Utc>>, cut: Option<DateTime<Utc>>, rater: &mut Rater<'_>) -> Result<Bill, Refusal> {
    let mut bill = Bill::new();
    let mut state = vm.initial.clone();
    let mut since = frontier;
    let clip = |from: DateTime<Utc>| frontier.map_or(from, |f| from.max(f));
    for t in &vm.transitions {
        if let (Some((usage, true)), Some(from)) = (&state, since) {
            bill_interval(usage, clip(from), t.at, rater, &mut bill)?;
        }
        state = next_state(state, &t.usage);
        since = Some(t.at);
    }
    if let (Some((usage, true)), Some(from), Some(cut)) = (&state, since, cut) {
        bill_interval(usage, clip(from), cut, rater, &mut bill)?;
    }
    Ok(bill)
}

fn bill_interval(usage: &VmUsage, from: DateTime<Utc>, to: DateTime<Utc>, rater: &mut Rater<'_>, bill: &mut Bill) -> Result<(), Refusal> {
    if from >= to {
        return Ok(());
    }
    let tenant = &usage.header.tenant;
    let zone = rater.settings.calendar.zone(tenant);
    // Priced piece by piece at each price change.
    let mut cuts = vec![from];
    cuts.extend(rater.book.change_instants(tenant).into_iter().filter(|t| *t > from && *t < to));
    cuts.push(to);
    let mut changes = Vec::new();
    for piece in cuts.windows(2) {
        let prices = rater.book.prices_at(tenant, piece[0])?;
        rater.vm_changes(usage, &prices, zone, piece[0], piece[1], &mut changes)?;
    }
    for c in changes {
        let Some(open) = c.open else { continue };
        let entry = bill.entry(c.key).or_insert_with(|| (Billed::default(), open));
        entry.0.base = entry.0.base.checked_add(c.base).ok_or(Refusal::Overflow)?;
        entry.0.cost = entry.0.cost.checked_add(c.cost).ok_or(Refusal::Overflow)?;
        entry.0.pieces += 1;
    }
    Ok(())
}

/// The changes that turn what a VM billed into what it should have billed.
pub fn bill_changes(billed: &BTreeMap<AggKey, Billed>, desired: &Bill) -> Vec<Change> {
    let mut out = Vec::new();
    for (key, (want, open)) in desired {
        let had = billed.get(key).cloned().unwrap_or_default();
        if had != *want {
            let counts = Counts { events: want.pieces - had.pieces, ..Counts::default() };
            out.push(Change::new(*key, Some(*open), want.base - had.base, want.cost - had.cost, counts));
        }
    }
    for (key, had) in billed {
        if !desired.contains_key(key) {
            out.push(Change::new(*key, None, -had.base, -had.cost, Counts { events: -had.pieces, ..Counts::default() }));
        }
    }
    out
}

/// The bill as kept in the timeline (without how to open each aggregate).
pub fn billed_of(desired: Bill) -> BTreeMap<AggKey, Billed> {
    desired.into_iter().map(|(key, (b, _))| (key, b)).collect()
}
