//! Memos of calendar arithmetic on the hot path.
//!
//! Cutting an instant into its four windows in a tenant's zone takes eight
//! zone conversions; every instant of one local day has the same four
//! windows, and events come in bunches of days, so the windows are memoised
//! per (zone, local day). A tenant's zone, grace and first open month are
//! memoised until the next control record (the only thing that moves them).
//! Neither memo is state: both are rebuilt on demand after a restart.

use std::hash::BuildHasher;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use meter_model::Period;

use crate::windows::{window_of, Window};

/// The windows of every period for one local day.
#[derive(Debug, Clone, Copy)]
struct Day {
    zone: Tz,
    /// The local day, in UTC: [from, to).
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    windows: [Window; 4],
}

const DAY_SLOTS: usize = 1024;
/// Memo slots are picked by quarter hour: every zone's midnight falls on one
/// today, so a slot never mixes two local days of one zone.
const SLOT_SECONDS: i64 = 900;

/// The index of a period in [`Period::ALL`].
pub fn period_index(period: Period) -> usize {
    match period {
        Period::Day => 0,
        Period::Week => 1,
        Period::Month => 2,
        Period::Year => 3,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TenantCalendar {
    pub zone: Tz,
    pub grace_days: u32,
    /// The tenant's first open month at the state's clock and closes (None:
    /// every month open); computed on first use after a control record.
    first_open: Option<Option<NaiveDate>>,
    /// The last month asked about, and the instant it closes by the clock.
    close: Option<(NaiveDate, Option<DateTime<Utc>>)>,
}

impl TenantCalendar {
    /// The tenant's first open month, computed by `compute` (from the zone
    /// and grace) once per control record.
    pub fn first_open(&mut self, compute: impl FnOnce(Tz, u32) -> Option<NaiveDate>) -> Option<NaiveDate> {
        match self.first_open {
            Some(known) => known,
            None => {
                let open = compute(self.zone, self.grace_days);
                self.first_open = Some(open);
                open
            }
        }
    }

    /// When `month` closes by the clock (its end plus grace).
    pub fn close_instant(&mut self, month: NaiveDate) -> Option<DateTime<Utc>> {
        if let Some((m, at)) = self.close {
            if m == month {
                return at;
            }
        }
        let at = super::close_instant(self.zone, self.grace_days, month);
        self.close = Some((month, at));
        at
    }
}

pub struct Calendar {
    days: Vec<Option<Day>>,
    /// The day last computed (a new quarter hour of the same day finds it).
    last: Option<Day>,
    pick: foldhash::fast::FixedState,
    tenants: hashbrown::HashMap<String, TenantCalendar, foldhash::fast::RandomState>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar { days: vec![None; DAY_SLOTS], last: None, pick: foldhash::fast::FixedState::default(), tenants: hashbrown::HashMap::default() }
    }
}

impl Clone for Calendar {
    fn clone(&self) -> Self {
        Calendar::default()
    }
}

impl std::fmt::Debug for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Calendar(memo)")
    }
}

/// A tenant count beyond which the memo starts over (names come from events).
const MAX_TENANTS: usize = 100_000;

impl Calendar {
    /// The windows of every period containing `t` in `zone`, by period index.
    pub fn windows(&mut self, zone: Tz, t: DateTime<Utc>) -> [Window; 4] {
        let slot = (self.pick.hash_one((zone, t.timestamp().div_euclid(SLOT_SECONDS))) as usize) % DAY_SLOTS;
        if let Some(day) = &self.days[slot] {
            if day.zone == zone && day.from <= t && t < day.to {
                return day.windows;
            }
        }
        if let Some(day) = self.last.filter(|d| d.zone == zone && d.from <= t && t < d.to) {
            self.days[slot] = Some(day);
            return day.windows;
        }
        let windows = Period::ALL.map(|p| window_of(p, zone, t));
        let day = windows[period_index(Period::Day)];
        let day = Day { zone, from: day.start, to: day.end, windows };
        self.days[slot] = Some(day);
        self.last = Some(day);
        windows
    }

    /// The tenant's calendar settings and memos, resolved once (one look-up
    /// per event: the memos are read and filled through the result).
    pub fn tenant(&mut self, tenant: &str, settings: &meter_config::TenantCalendar) -> &mut TenantCalendar {
        if self.tenants.len() >= MAX_TENANTS && !self.tenants.contains_key(tenant) {
            self.tenants.clear();
        }
        self.tenants.entry_ref(tenant).or_insert_with(|| TenantCalendar {
            zone: settings.zone(tenant),
            grace_days: settings.grace_days(tenant),
            first_open: None,
            close: None,
        })
    }

    /// The clock or a close moved: first open months are computed again.
    pub fn clock_moved(&mut self) {
        for t in self.tenants.values_mut() {
            t.first_open = None;
        }
    }
}

/// The last millisecond of a window (its last local day is the day of it).
pub fn last_instant(window: &Window) -> DateTime<Utc> {
    window.end - Duration::milliseconds(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::{America::Sao_Paulo, Asia::Kathmandu, Europe::Paris};
    use proptest::prelude::*;

    proptest! {
        /// The memo gives what the window arithmetic gives, in any order of
        /// instants and zones (DST days, zones with odd offsets).
        #[test]
        fn memoised_windows_equal_computed_ones(instants in proptest::collection::vec((0i64..3_000_000_000, 0usize..3), 1..200)) {
            let zones = [Paris, Sao_Paulo, Kathmandu];
            let mut calendar = Calendar::default();
            for (secs, z) in instants {
                let t = Utc.timestamp_opt(1_000_000_000 + secs / 10, 0).unwrap();
                let zone = zones[z];
                let got = calendar.windows(zone, t);
                for p in Period::ALL {
                    prop_assert_eq!(got[period_index(p)], window_of(p, zone, t));
                }
            }
        }
    }
}
