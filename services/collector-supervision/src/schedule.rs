//! What each tenant's contract promises: checks run on a schedule, and a
//! scheduled run that never reported is itself a finding (a `MISSED` event).
//!
//! A scheduled check has one **deadline** per period (day, ISO week, month,
//! semester, year): the due time of day, on the due week day (weekly), on
//! the due day of the month (monthly, semestrial, yearly; clamped to the
//! month's last day, so 31 means "the last day"), in the due month
//! (semestrial: 1 to 6, and six months later; yearly: 1 to 12), in the
//! check's time zone (a due time that does not exist on a DST day is moved
//! forward by the gap; an ambiguous one takes its first occurrence).
//!
//! The run of the period with deadline `D(k)` is any result of the check on
//! its host executed in `[D(k-1) + grace, D(k) + grace)`: the windows follow
//! each other without gap or overlap, so one run satisfies one period. When
//! `D(k) + grace` has passed with no run in the window, the period is
//! missed: [`missed_runs`] returns a `MISSED` check result with
//! `scheduled_time = event_time = D(k)`, no `executed_time`, and an event id
//! derived from the source, check, host and deadline, so evaluating the same
//! period again yields the same event (it counts once).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use meter_model::{CheckFrequency, CheckResult, CheckStatus, EventHeader};

/// When a check is due within its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Daily { time: NaiveTime },
    Weekly { weekday: Weekday, time: NaiveTime },
    Monthly { day: u32, time: NaiveTime },
    /// `month` is 1 to 6: due in that month and six months later.
    Semestrial { month: u32, day: u32, time: NaiveTime },
    Yearly { month: u32, day: u32, time: NaiveTime },
}

impl Due {
    pub fn frequency(&self) -> CheckFrequency {
        match self {
            Due::Daily { .. } => CheckFrequency::Daily,
            Due::Weekly { .. } => CheckFrequency::Weekly,
            Due::Monthly { .. } => CheckFrequency::Monthly,
            Due::Semestrial { .. } => CheckFrequency::Semestrial,
            Due::Yearly { .. } => CheckFrequency::Yearly,
        }
    }

    /// The shortest length of a period of this frequency (a grace period
    /// must be shorter).
    pub fn shortest_period(&self) -> Duration {
        match self {
            // A DST day lasts 23 hours.
            Due::Daily { .. } => Duration::hours(23),
            Due::Weekly { .. } => Duration::days(7) - Duration::hours(1),
            Due::Monthly { .. } => Duration::days(28) - Duration::hours(1),
            Due::Semestrial { .. } => Duration::days(181) - Duration::hours(1),
            Due::Yearly { .. } => Duration::days(365) - Duration::hours(1),
        }
    }

    /// The index of the period containing a local date (days, ISO weeks,
    /// months, semesters or years counted from year 0).
    fn period_index(&self, date: NaiveDate) -> i64 {
        match self {
            Due::Daily { .. } => i64::from(date.num_days_from_ce()),
            Due::Weekly { .. } => {
                // 0001-01-01 (day 1 from CE) is a Monday.
                let monday = i64::from(date.num_days_from_ce()) - i64::from(date.weekday().num_days_from_monday());
                (monday - 1).div_euclid(7)
            }
            Due::Monthly { .. } => i64::from(date.year()) * 12 + i64::from(date.month0()),
            Due::Semestrial { .. } => i64::from(date.year()) * 2 + i64::from(date.month0() / 6),
            Due::Yearly { .. } => i64::from(date.year()),
        }
    }

    /// The local due date and time of period `index`.
    fn local_deadline(&self, index: i64) -> Option<NaiveDateTime> {
        let date = match *self {
            Due::Daily { .. } => NaiveDate::from_num_days_from_ce_opt(i32::try_from(index).ok()?)?,
            Due::Weekly { weekday, .. } => {
                let monday = index.checked_mul(7)? + 1;
                NaiveDate::from_num_days_from_ce_opt(i32::try_from(monday + i64::from(weekday.num_days_from_monday())).ok()?)?
            }
            Due::Monthly { day, .. } => {
                let year = i32::try_from(index.div_euclid(12)).ok()?;
                clamped_date(year, index.rem_euclid(12) as u32 + 1, day)?
            }
            Due::Semestrial { month, day, .. } => {
                let year = i32::try_from(index.div_euclid(2)).ok()?;
                clamped_date(year, (index.rem_euclid(2) as u32) * 6 + month, day)?
            }
            Due::Yearly { month, day, .. } => clamped_date(i32::try_from(index).ok()?, month, day)?,
        };
        let time = match *self {
            Due::Daily { time }
            | Due::Weekly { time, .. }
            | Due::Monthly { time, .. }
            | Due::Semestrial { time, .. }
            | Due::Yearly { time, .. } => time,
        };
        Some(date.and_time(time))
    }
}

/// `day` of the month, or the month's last day when it has fewer days.
fn clamped_date(year: i32, month: u32, day: u32) -> Option<NaiveDate> {
    (1..=day.min(31)).rev().find_map(|d| NaiveDate::from_ymd_opt(year, month, d))
}

/// A local time as an instant: a time skipped by a DST change is read with
/// the offset in force before the change (so it lands after the gap, moved
/// forward by the gap's length), an ambiguous one takes its first occurrence.
pub fn local_to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    use chrono::Offset;
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Twelve hours earlier the zone still had its offset from before the gap.
            let before = zone.offset_from_utc_datetime(&(local - Duration::hours(12))).fix();
            Utc.from_utc_datetime(&(local - Duration::seconds(i64::from(before.local_minus_utc()))))
        }
    }
}

/// One check a contract schedules, resolved from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledCheck {
    pub check_id: String,
    pub check_name: String,
    /// The host the check runs on: the `target` of its results.
    pub host: String,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub due: Due,
    /// How long after the deadline a run still counts for the period.
    pub grace: Duration,
    pub time_zone: Tz,
    /// First local day the schedule applies (deadlines before it are not checked).
    pub starts: Option<NaiveDate>,
}

impl ScheduledCheck {
    pub fn frequency(&self) -> CheckFrequency {
        self.due.frequency()
    }

    fn index_at(&self, t: DateTime<Utc>) -> i64 {
        self.due.period_index(t.with_timezone(&self.time_zone).date_naive())
    }

    /// The deadline of period `index`.
    pub fn deadline(&self, index: i64) -> Option<DateTime<Utc>> {
        self.due.local_deadline(index).map(|local| local_to_utc(self.time_zone, local))
    }

    /// The deadlines in `[from, to]`, in order.
    pub fn deadlines(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        if to < from {
            return Vec::new();
        }
        (self.index_at(from)..=self.index_at(to)).filter_map(|k| self.deadline(k)).filter(|d| *d >= from && *d <= to).collect()
    }

    /// The window `[D(k-1) + grace, D(k) + grace)` of the period whose
    /// deadline is `D(k)`, for the run executed at `executed`, and that deadline.
    pub fn period_of_run(&self, executed: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> {
        let k = self.index_at(executed);
        ((k - 2)..=(k + 2)).find_map(|k| {
            let (previous, deadline) = (self.deadline(k - 1)?, self.deadline(k)?);
            let (start, end) = (previous + self.grace, deadline + self.grace);
            (start <= executed && executed < end).then_some((start, end, deadline))
        })
    }

    /// The earliest instant a run can have to count for a deadline at or after `from`.
    pub fn earliest_window_start(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let k = self.index_at(from);
        self.deadline(k - 1).map(|d| d + self.grace)
    }
}

/// The checks every tenant's contract schedules, and the `source` their
/// `MISSED` events carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedule {
    pub source: String,
    pub checks: Vec<ScheduledCheck>,
}

impl Schedule {
    /// The scheduled check of a result (same check id and host), if any.
    pub fn find(&self, check_id: &str, host: &str) -> Option<&ScheduledCheck> {
        self.checks.iter().find(|c| c.check_id == check_id && c.host == host)
    }

    /// The earliest instant a run must have been seen from to evaluate
    /// deadlines from `from` on.
    pub fn earliest_window_start(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.checks.iter().filter_map(|c| c.earliest_window_start(from)).min()
    }
}

/// A run of a check, as far as the schedule cares. The tenant is part of
/// it: a run reported for another tenant's check id and host (any source
/// may publish check results) never stands for this tenant's run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeenRun {
    /// The tenant of the check result.
    pub tenant: String,
    pub check_id: String,
    /// The host (`target` of the check result).
    pub target: String,
    pub executed_time: DateTime<Utc>,
}

impl SeenRun {
    /// The run a check result reports; `None` for a `MISSED` one.
    pub fn of(result: &CheckResult) -> Option<SeenRun> {
        if result.status == CheckStatus::Missed {
            return None;
        }
        result.executed_time.map(|executed_time| SeenRun {
            tenant: result.header.tenant.clone(),
            check_id: result.check_id.clone(),
            target: result.target.clone(),
            executed_time,
        })
    }
}

/// The event id of the missed run of `check_id` on `host` due at `deadline`.
pub fn missed_event_id(source: &str, check_id: &str, host: &str, deadline: DateTime<Utc>) -> String {
    format!("missed-{}", crate::event_ids::digest(&[source, check_id, host, &deadline.timestamp_millis().to_string()]))
}

/// Every scheduled run with a deadline in `[from, to]` whose window closed
/// (deadline + grace <= `to`) without a run in `runs_seen` of the same
/// tenant, check id and host, as `MISSED`
/// check results (ordered by deadline, check id, host; `ingest_time` is the
/// Unix epoch, set when published). Deadlines before a check's `starts`
/// day are not checked.
pub fn missed_runs(schedule: &Schedule, runs_seen: &[SeenRun], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<CheckResult> {
    let mut runs: HashMap<(&str, &str, &str), Vec<DateTime<Utc>>> = HashMap::new();
    for r in runs_seen {
        runs.entry((r.tenant.as_str(), r.check_id.as_str(), r.target.as_str())).or_default().push(r.executed_time);
    }
    let mut out = Vec::new();
    for check in &schedule.checks {
        let seen = runs.get(&(check.tenant.as_str(), check.check_id.as_str(), check.host.as_str()));
        for deadline in check.deadlines(from, to) {
            if deadline + check.grace > to {
                continue;
            }
            let local_day = deadline.with_timezone(&check.time_zone).date_naive();
            if check.starts.is_some_and(|s| local_day < s) {
                continue;
            }
            let Some((start, end, _)) = check.period_of_run(deadline + check.grace - Duration::milliseconds(1)) else {
                continue;
            };
            if seen.is_some_and(|times| times.iter().any(|t| start <= *t && *t < end)) {
                continue;
            }
            out.push(CheckResult {
                header: EventHeader {
                    event_id: missed_event_id(&schedule.source, &check.check_id, &check.host, deadline),
                    source: schedule.source.clone(),
                    tenant: check.tenant.clone(),
                    subsidiary: check.subsidiary.clone(),
                    domain: check.domain.clone(),
                    event_time: deadline,
                    ingest_time: DateTime::<Utc>::UNIX_EPOCH,
                    version: 0,
                    deleted: false,
                },
                check_id: check.check_id.clone(),
                check_name: check.check_name.clone(),
                target: check.host.clone(),
                frequency: check.frequency(),
                scheduled_time: Some(deadline),
                executed_time: None,
                status: CheckStatus::Missed,
                ticket_ref: None,
                time_spent_minutes: 0,
                output: Some(format!(
                    "MISSED: no result of {} on {} between {} and {}",
                    check.check_id,
                    check.host,
                    start.to_rfc3339(),
                    end.to_rfc3339()
                )),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.header.event_time, &a.check_id, &a.target).cmp(&(b.header.event_time, &b.check_id, &b.target))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn check(due: Due, grace_minutes: i64) -> ScheduledCheck {
        ScheduledCheck {
            check_id: "acme-ad".into(),
            check_name: "Active Directory".into(),
            host: "dc01.acme.local".into(),
            tenant: "acme".into(),
            subsidiary: "acme-fr".into(),
            domain: "infrastructure".into(),
            due,
            grace: Duration::minutes(grace_minutes),
            time_zone: chrono_tz::Europe::Paris,
            starts: None,
        }
    }

    fn run(at: &str) -> SeenRun {
        SeenRun { tenant: "acme".into(), check_id: "acme-ad".into(), target: "dc01.acme.local".into(), executed_time: utc(at) }
    }

    #[test]
    fn weekly_deadlines_follow_paris_local_time_across_the_spring_dst_change() {
        // 2026-03-29: Paris goes from +01:00 to +02:00.
        let c = check(Due::Weekly { weekday: Weekday::Mon, time: t(9, 0) }, 60);
        assert_eq!(
            c.deadlines(utc("2026-03-20T00:00:00Z"), utc("2026-04-07T00:00:00Z")),
            vec![utc("2026-03-23T08:00:00Z"), utc("2026-03-30T07:00:00Z"), utc("2026-04-06T07:00:00Z")]
        );
        // And back on 2026-10-25.
        let c = check(Due::Weekly { weekday: Weekday::Sun, time: t(23, 30) }, 0);
        assert_eq!(
            c.deadlines(utc("2026-10-18T00:00:00Z"), utc("2026-10-26T00:00:00Z")),
            vec![utc("2026-10-18T21:30:00Z"), utc("2026-10-25T22:30:00Z")]
        );
    }

    #[test]
    fn weekly_periods_cross_a_year_end_on_iso_weeks() {
        // Thursday 2026-12-31 and Thursday 2027-01-07, a week apart.
        let c = check(Due::Weekly { weekday: Weekday::Thu, time: t(12, 0) }, 0);
        assert_eq!(
            c.deadlines(utc("2026-12-28T00:00:00Z"), utc("2027-01-10T00:00:00Z")),
            vec![utc("2026-12-31T11:00:00Z"), utc("2027-01-07T11:00:00Z")]
        );
    }

    #[test]
    fn a_due_time_inside_the_dst_gap_moves_forward_and_an_ambiguous_one_takes_the_first() {
        let c = check(Due::Daily { time: t(2, 30) }, 0);
        // 02:30 does not exist in Paris on 2026-03-29: 02:30 +01:00 = 01:30Z (03:30 CEST).
        assert_eq!(c.deadlines(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T12:00:00Z")), vec![utc("2026-03-29T01:30:00Z")]);
        // 02:30 happens twice on 2026-10-25: the first is 02:30 +02:00 = 00:30Z.
        assert_eq!(c.deadlines(utc("2026-10-25T00:00:00Z"), utc("2026-10-25T12:00:00Z")), vec![utc("2026-10-25T00:30:00Z")]);
    }

    #[test]
    fn monthly_deadlines_clamp_to_the_last_day_across_month_ends() {
        let c = check(Due::Monthly { day: 31, time: t(18, 0) }, 0);
        assert_eq!(
            c.deadlines(utc("2026-01-01T00:00:00Z"), utc("2026-05-01T00:00:00Z")),
            vec![
                utc("2026-01-31T17:00:00Z"),
                utc("2026-02-28T17:00:00Z"),
                utc("2026-03-31T16:00:00Z"), // after the DST change
                utc("2026-04-30T16:00:00Z"),
            ]
        );
        // 2028 is a leap year.
        let c = check(Due::Monthly { day: 30, time: t(0, 0) }, 0);
        assert_eq!(c.deadlines(utc("2028-02-01T00:00:00Z"), utc("2028-03-01T00:00:00Z")), vec![utc("2028-02-28T23:00:00Z")]);
    }

    #[test]
    fn a_monthly_deadline_at_local_midnight_of_the_first_is_in_utc_the_day_before() {
        let c = check(Due::Monthly { day: 1, time: t(0, 0) }, 0);
        assert_eq!(
            c.deadlines(utc("2026-02-15T00:00:00Z"), utc("2026-04-15T00:00:00Z")),
            vec![utc("2026-02-28T23:00:00Z"), utc("2026-03-31T22:00:00Z")]
        );
    }

    #[test]
    fn semestrial_and_yearly_deadlines() {
        let c = check(Due::Semestrial { month: 6, day: 30, time: t(12, 0) }, 0);
        assert_eq!(
            c.deadlines(utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z")),
            vec![utc("2026-06-30T10:00:00Z"), utc("2026-12-30T11:00:00Z")]
        );
        let c = check(Due::Yearly { month: 2, day: 29, time: t(12, 0) }, 0);
        assert_eq!(
            c.deadlines(utc("2027-01-01T00:00:00Z"), utc("2029-01-01T00:00:00Z")),
            vec![utc("2027-02-28T11:00:00Z"), utc("2028-02-29T11:00:00Z")]
        );
    }

    #[test]
    fn a_weekly_check_run_in_its_window_is_not_missed_and_the_others_are() {
        let c = check(Due::Weekly { weekday: Weekday::Mon, time: t(9, 0) }, 60);
        let schedule = Schedule { source: "icinga-par1".into(), checks: vec![c] };
        // Deadlines: 03-23 08:00Z, 03-30 07:00Z, 04-06 07:00Z (+1h grace each).
        let runs = vec![
            run("2026-03-23T08:30:00Z"), // late but within grace: counts for 03-23
            run("2026-04-06T07:59:00Z"), // within grace of 04-06
        ];
        let missed = missed_runs(&schedule, &runs, utc("2026-03-20T00:00:00Z"), utc("2026-04-10T00:00:00Z"));
        assert_eq!(missed.len(), 1);
        let m = &missed[0];
        assert_eq!(m.scheduled_time, Some(utc("2026-03-30T07:00:00Z")));
        assert_eq!(m.header.event_time, utc("2026-03-30T07:00:00Z"));
        assert_eq!((m.status, m.executed_time, m.frequency), (CheckStatus::Missed, None, CheckFrequency::Weekly));
        assert_eq!((m.header.tenant.as_str(), m.target.as_str()), ("acme", "dc01.acme.local"));
        assert_eq!(m.header.event_id, missed_event_id("icinga-par1", "acme-ad", "dc01.acme.local", utc("2026-03-30T07:00:00Z")));
        assert!(m.header.event_id.starts_with("missed-"));
        assert!(meter_model::Event::CheckResult(m.clone()).validate().is_ok());
        // The window is [03-23 09:00Z, 03-30 08:00Z): the run at 03-23 08:30 is the previous period's.
        assert_eq!(
            m.output.as_deref(),
            Some("MISSED: no result of acme-ad on dc01.acme.local between 2026-03-23T09:00:00+00:00 and 2026-03-30T08:00:00+00:00")
        );
    }

    #[test]
    fn a_run_after_the_grace_counts_for_the_next_period_not_the_late_one() {
        let c = check(Due::Daily { time: t(8, 0) }, 30);
        let schedule = Schedule { source: "s".into(), checks: vec![c] };
        // Due 2026-01-12 07:00Z (+30 min); the run at 07:45Z is the 13th's.
        let missed = missed_runs(&schedule, &[run("2026-01-12T07:45:00Z")], utc("2026-01-12T00:00:00Z"), utc("2026-01-13T12:00:00Z"));
        let deadlines: Vec<_> = missed.iter().map(|m| m.scheduled_time.unwrap()).collect();
        assert_eq!(deadlines, vec![utc("2026-01-12T07:00:00Z")]);
    }

    #[test]
    fn a_window_still_open_is_not_missed_yet_and_re_evaluation_gives_the_same_events() {
        let c = check(Due::Daily { time: t(8, 0) }, 60);
        let schedule = Schedule { source: "s".into(), checks: vec![c] };
        // Due 07:00Z, grace until 08:00Z.
        assert!(missed_runs(&schedule, &[], utc("2026-01-12T00:00:00Z"), utc("2026-01-12T07:59:59Z")).is_empty());
        let once = missed_runs(&schedule, &[], utc("2026-01-12T00:00:00Z"), utc("2026-01-12T08:00:00Z"));
        assert_eq!(once.len(), 1);
        let again = missed_runs(&schedule, &[], utc("2026-01-11T00:00:00Z"), utc("2026-01-12T09:00:00Z"));
        assert_eq!(again.len(), 2, "the 11th and the 12th");
        assert_eq!(again[1], once[0], "the same period gives the same event");
    }

    #[test]
    fn runs_of_other_checks_or_hosts_do_not_count_and_starts_limits_the_schedule() {
        let mut c = check(Due::Daily { time: t(8, 0) }, 0);
        c.starts = Some(NaiveDate::from_ymd_opt(2026, 1, 13).unwrap());
        let schedule = Schedule { source: "s".into(), checks: vec![c] };
        let other_host = SeenRun { target: "dc02.acme.local".into(), ..run("2026-01-13T06:00:00Z") };
        let other_check = SeenRun { check_id: "acme-backup".into(), ..run("2026-01-13T06:00:00Z") };
        let missed = missed_runs(&schedule, &[other_host, other_check], utc("2026-01-12T00:00:00Z"), utc("2026-01-13T12:00:00Z"));
        let deadlines: Vec<_> = missed.iter().map(|m| m.scheduled_time.unwrap()).collect();
        assert_eq!(deadlines, vec![utc("2026-01-13T07:00:00Z")], "the 12th is before starts");
    }

    #[test]
    fn a_run_reported_for_another_tenant_does_not_hide_a_missed_run() {
        // Tenant globex posts an OK result with acme's check id and host: acme's run is still missed.
        let c = check(Due::Daily { time: t(8, 0) }, 0);
        let schedule = Schedule { source: "s".into(), checks: vec![c] };
        let spoofed = SeenRun { tenant: "globex".into(), ..run("2026-01-13T06:00:00Z") };
        let missed = missed_runs(&schedule, &[spoofed], utc("2026-01-13T00:00:00Z"), utc("2026-01-13T12:00:00Z"));
        assert_eq!(missed.len(), 1, "globex's run does not stand for acme's");
        assert_eq!(missed[0].header.tenant, "acme");
        let own = run("2026-01-13T06:00:00Z");
        assert!(missed_runs(&schedule, &[own], utc("2026-01-13T00:00:00Z"), utc("2026-01-13T12:00:00Z")).is_empty());
    }

    #[test]
    fn monthly_windows_span_the_whole_month_between_deadlines() {
        let c = check(Due::Monthly { day: 5, time: t(12, 0) }, 0);
        // A run on 02-20 (after the 02-05 deadline) counts for 03-05.
        let (start, end, deadline) = c.period_of_run(utc("2026-02-20T00:00:00Z")).unwrap();
        assert_eq!((start, end, deadline), (utc("2026-02-05T11:00:00Z"), utc("2026-03-05T11:00:00Z"), utc("2026-03-05T11:00:00Z")));
        let schedule = Schedule { source: "s".into(), checks: vec![c] };
        let missed = missed_runs(&schedule, &[run("2026-02-20T00:00:00Z")], utc("2026-02-01T00:00:00Z"), utc("2026-04-30T00:00:00Z"));
        let deadlines: Vec<_> = missed.iter().map(|m| m.scheduled_time.unwrap()).collect();
        assert_eq!(deadlines, vec![utc("2026-02-05T11:00:00Z"), utc("2026-04-05T10:00:00Z")]);
    }
}
