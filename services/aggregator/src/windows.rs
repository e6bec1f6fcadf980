//! Tumbling calendar windows cut in a tenant's time zone.
//!
//! A window starts at local midnight of its first day (Monday for ISO weeks,
//! the 1st for months, 1 January for years) and ends where the next one
//! starts, so a DST change makes a day 23 or 25 hours long, as the tenant's
//! wall clock says.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use meter_model::Period;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub period: Period,
    /// Local date of the first day.
    pub first_day: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn label(&self) -> String {
        self.first_day.format("%Y-%m-%d").to_string()
    }
}

/// The first local day of the period containing `day`.
pub fn period_first_day(period: Period, day: NaiveDate) -> NaiveDate {
    match period {
        Period::Day => day,
        Period::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
        Period::Month => day.with_day(1).unwrap_or(day),
        Period::Year => NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day),
    }
}

/// The first local day of the following period.
pub fn next_period_first_day(period: Period, first_day: NaiveDate) -> NaiveDate {
    match period {
        Period::Day => first_day + Duration::days(1),
        Period::Week => first_day + Duration::days(7),
        Period::Month => first_day.checked_add_months(chrono::Months::new(1)).unwrap_or(first_day),
        Period::Year => first_day.with_year(first_day.year() + 1).unwrap_or(first_day),
    }
}

/// The instant a local day begins. Where midnight does not exist (a DST jump
/// at 00:00, as in some American zones), the day begins at the first instant
/// that does.
pub fn start_of_local_day(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earliest, _) => earliest.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward minute by minute to the first existing local time (at most a few hours).
            (1..=24 * 60)
                .find_map(|m| tz.from_local_datetime(&(midnight + Duration::minutes(m))).earliest())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
        }
    }
}

/// The window of `period` containing `instant` in zone `tz`.
pub fn window_of(period: Period, tz: Tz, instant: DateTime<Utc>) -> Window {
    let local_day = instant.with_timezone(&tz).date_naive();
    let first_day = period_first_day(period, local_day);
    let next = next_period_first_day(period, first_day);
    Window { period, first_day, start: start_of_local_day(tz, first_day), end: start_of_local_day(tz, next) }
}

/// Splits `[from, to)` exactly at the boundaries of `period` windows.
/// Returns each window with the part of the interval inside it.
pub fn split_interval(period: Period, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(Window, DateTime<Utc>, DateTime<Utc>)> {
    let mut parts = Vec::new();
    let mut cursor = from;
    while cursor < to {
        let window = window_of(period, tz, cursor);
        let part_end = window.end.min(to);
        parts.push((window, cursor, part_end));
        cursor = part_end;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::Sao_Paulo, Europe::Paris, UTC};
    use proptest::prelude::*;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn a_paris_january_starts_at_paris_midnight() {
        // 31 Dec 2023 23:30 UTC is already 1 January in Paris.
        let w = window_of(Period::Month, Paris, utc(2023, 12, 31, 23, 30));
        assert_eq!(w.label(), "2024-01-01");
        assert_eq!(w.start, utc(2023, 12, 31, 23, 0));
        assert_eq!(w.end, utc(2024, 1, 31, 23, 0));
        // The same instant is still December in UTC.
        assert_eq!(window_of(Period::Month, UTC, utc(2023, 12, 31, 23, 30)).label(), "2023-12-01");
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        let spring = window_of(Period::Day, Paris, utc(2024, 3, 31, 12, 0));
        assert_eq!(spring.end - spring.start, Duration::hours(23));
        let autumn = window_of(Period::Day, Paris, utc(2024, 10, 27, 12, 0));
        assert_eq!(autumn.end - autumn.start, Duration::hours(25));
    }

    #[test]
    fn a_day_without_midnight_starts_at_its_first_instant() {
        // Sao Paulo skipped 00:00-01:00 on 4 November 2018.
        let w = window_of(Period::Day, Sao_Paulo, utc(2018, 11, 4, 12, 0));
        assert_eq!(w.label(), "2018-11-04");
        assert_eq!(w.start, utc(2018, 11, 4, 3, 0)); // 01:00 local, UTC-2
        assert_eq!(w.end - w.start, Duration::hours(23));
    }

    #[test]
    fn iso_weeks_cross_the_year_end_from_monday() {
        // Wednesday 1 January 2025 belongs to the week of Monday 30 December 2024.
        let w = window_of(Period::Week, UTC, utc(2025, 1, 1, 10, 0));
        assert_eq!(w.label(), "2024-12-30");
        assert_eq!(w.end, utc(2025, 1, 6, 0, 0));
        // Sunday 5 January 2025 too, Monday 6 January starts the next one.
        assert_eq!(window_of(Period::Week, UTC, utc(2025, 1, 5, 23, 59)).label(), "2024-12-30");
        assert_eq!(window_of(Period::Week, UTC, utc(2025, 1, 6, 0, 0)).label(), "2025-01-06");
    }

    #[test]
    fn four_vcpu_from_22_to_02_gives_four_hours_to_each_day() {
        let parts = split_interval(Period::Day, UTC, utc(2024, 1, 8, 22, 0), utc(2024, 1, 9, 2, 0));
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].2 - parts[0].1).num_hours() * 4, 8);
        assert_eq!((parts[1].2 - parts[1].1).num_hours() * 4, 8);
        assert_eq!(parts[0].0.label(), "2024-01-08");
        assert_eq!(parts[1].0.label(), "2024-01-09");
    }

    fn period() -> impl Strategy<Value = Period> {
        prop::sample::select(Period::ALL.to_vec())
    }

    fn zone() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![UTC, Paris, Sao_Paulo, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe, chrono_tz::Asia::Kolkata])
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (1_546_300_800i64..1_924_992_000i64).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
    }

    proptest! {
        #[test]
        fn every_instant_is_in_exactly_its_window(p in period(), tz in zone(), t in instant()) {
            let w = window_of(p, tz, t);
            prop_assert!(w.start <= t && t < w.end, "{t} not in [{}, {})", w.start, w.end);
            // Windows tile time: the next window starts where this one ends.
            let next = window_of(p, tz, w.end);
            prop_assert_eq!(next.start, w.end);
            prop_assert_eq!(window_of(p, tz, w.start), w);
            if p == Period::Week {
                prop_assert_eq!(w.first_day.weekday(), chrono::Weekday::Mon);
            }
        }

        #[test]
        fn splitting_loses_and_adds_no_time(p in period(), tz in zone(), a in instant(), len in 0i64..90 * 86_400) {
            let b = a + Duration::seconds(len);
            let parts = split_interval(p, tz, a, b);
            let total: i64 = parts.iter().map(|(_, s, e)| (*e - *s).num_seconds()).sum();
            prop_assert_eq!(total, len);
            for (w, s, e) in &parts {
                prop_assert!(w.start <= *s && *e <= w.end && s < e);
            }
            for pair in parts.windows(2) {
                prop_assert_eq!(pair[0].2, pair[1].1);
            }
        }

        #[test]
        fn a_period_window_contains_its_day_windows(p in period(), tz in zone(), t in instant()) {
            let day = window_of(Period::Day, tz, t);
            let w = window_of(p, tz, t);
            prop_assert!(w.start <= day.start && day.end <= w.end);
        }
    }
}
