//! Detail rows (one per event) for drill-down from an aggregate to the
//! ticket tasks, check runs and VM events behind it.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use meter_model::{CheckResult, Event, TicketTime, VmUsage};
use serde::Serialize;

/// Where the row comes from: the event topic, the late topic, or a
/// reprocess (or backfill) that counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounting {
    /// Read from its event topic: counted while its month is open.
    Counted,
    /// Set aside: its month was closed when it arrived.
    Late,
    /// Counted by `meter reprocess` or `meter collect file --backfill`.
    Reprocessed,
}

impl Accounting {
    /// The `accounting` column: a deleted event says 'deleted' whatever its origin.
    fn label(self, deleted: bool) -> String {
        match (self, deleted) {
            (_, true) => "deleted".into(),
            (Accounting::Late, false) => "late".into(),
            (Accounting::Counted | Accounting::Reprocessed, false) => "counted".into(),
        }
    }

    /// The row's version: the event's version first (the latest edit wins),
    /// then the origin (a late mark replaces the first reading; a reprocess
    /// replaces the late mark).
    fn version(self, event_version: i64) -> u64 {
        let class = match self {
            Accounting::Counted => 1,
            Accounting::Late => 2,
            Accounting::Reprocessed => 3,
        };
        (u64::try_from(event_version).unwrap_or(0).min(u64::MAX >> 3) << 2) | class
    }
}

fn secs(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

fn days(t: DateTime<Utc>, tz: Tz) -> u16 {
    let local = t.with_timezone(&tz).date_naive();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    u16::try_from((local - epoch).num_days()).unwrap_or(0)
}

#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct TicketTaskRow {
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub local_date: u16,
    pub source: String,
    pub event_id: String,
    pub event_time: u32,
    pub ingest_time: u32,
    pub ticket_id: String,
    pub task_id: String,
    pub ticket_type: String,
    pub category: String,
    pub category_path: Vec<String>,
    pub in_scope: u8,
    pub requester: String,
    pub technician: String,
    pub technician_profile: String,
    pub application: String,
    pub country: String,
    pub minutes_worked: u32,
    pub start_time: u32,
    pub accounting: String,
    pub version: u64,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct CheckRunRow {
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub local_date: u16,
    pub source: String,
    pub event_id: String,
    pub event_time: u32,
    pub ingest_time: u32,
    pub check_id: String,
    pub check_name: String,
    pub target: String,
    pub frequency: String,
    pub scheduled_time: Option<u32>,
    pub executed_time: Option<u32>,
    pub status: String,
    pub ticket_ref: String,
    pub time_spent_minutes: u32,
    pub output: String,
    pub accounting: String,
    pub version: u64,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct VmUsageRow {
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub local_date: u16,
    pub source: String,
    pub event_id: String,
    pub event_time: u32,
    pub ingest_time: u32,
    pub vm_id: String,
    pub vcpu: u32,
    pub ram_mib: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u32,
    pub guaranteed_bandwidth: u8,
    pub public_ips: u32,
    pub sla_tier: String,
    pub options: Vec<String>,
    pub datacenter: String,
    pub transition: String,
    pub sample_interval_seconds: u32,
    pub accounting: String,
    pub version: u64,
}

fn ticket(t: &TicketTime, tz: Tz, a: Accounting) -> TicketTaskRow {
    let h = &t.header;
    TicketTaskRow {
        tenant: h.tenant.clone(),
        subsidiary: h.subsidiary.clone(),
        domain: h.domain.clone(),
        local_date: days(h.event_time, tz),
        source: h.source.clone(),
        event_id: h.event_id.clone(),
        event_time: secs(h.event_time),
        ingest_time: secs(h.ingest_time),
        ticket_id: t.ticket_id.clone(),
        task_id: t.task_id.clone(),
        ticket_type: t.ticket_type.avro_symbol().into(),
        category: t.category_path.join(" > "),
        category_path: t.category_path.clone(),
        in_scope: u8::from(t.in_scope),
        requester: t.requester.clone(),
        technician: t.technician.clone(),
        technician_profile: t.technician_profile.avro_symbol().into(),
        application: t.application.clone().unwrap_or_default(),
        country: t.country.clone().unwrap_or_default(),
        minutes_worked: u32::try_from(t.minutes_worked).unwrap_or(0),
        start_time: secs(t.start_time),
        accounting: a.label(h.deleted),
        version: a.version(h.version),
    }
}

fn check(c: &CheckResult, tz: Tz, a: Accounting) -> CheckRunRow {
    let h = &c.header;
    CheckRunRow {
        tenant: h.tenant.clone(),
        subsidiary: h.subsidiary.clone(),
        domain: h.domain.clone(),
        local_date: days(h.event_time, tz),
        source: h.source.clone(),
        event_id: h.event_id.clone(),
        event_time: secs(h.event_time),
        ingest_time: secs(h.ingest_time),
        check_id: c.check_id.clone(),
        check_name: c.check_name.clone(),
        target: c.target.clone(),
        frequency: c.frequency.avro_symbol().into(),
        scheduled_time: c.scheduled_time.map(secs),
        executed_time: c.executed_time.map(secs),
        status: c.status.avro_symbol().into(),
        ticket_ref: c.ticket_ref.clone().unwrap_or_default(),
        time_spent_minutes: u32::try_from(c.time_spent_minutes).unwrap_or(0),
        output: c.output.clone().unwrap_or_default(),
        accounting: a.label(h.deleted),
        version: a.version(h.version),
    }
}

fn vm(v: &VmUsage, tz: Tz, a: Accounting) -> VmUsageRow {
    let h = &v.header;
    VmUsageRow {
        tenant: h.tenant.clone(),
        subsidiary: h.subsidiary.clone(),
        domain: h.domain.clone(),
        local_date: days(h.event_time, tz),
        source: h.source.clone(),
        event_id: h.event_id.clone(),
        event_time: secs(h.event_time),
        ingest_time: secs(h.ingest_time),
        vm_id: v.vm_id.clone(),
        vcpu: u32::try_from(v.vcpu).unwrap_or(0),
        ram_mib: u64::try_from(v.ram_mib).unwrap_or(0),
        storage_gb: u64::try_from(v.storage_gb).unwrap_or(0),
        bandwidth_mbps: u32::try_from(v.bandwidth_mbps).unwrap_or(0),
        guaranteed_bandwidth: u8::from(v.guaranteed_bandwidth),
        public_ips: u32::try_from(v.public_ips).unwrap_or(0),
        sla_tier: v.sla_tier.avro_symbol().into(),
        options: v.options.clone(),
        datacenter: v.datacenter.clone(),
        transition: v.transition.avro_symbol().into(),
        sample_interval_seconds: u32::try_from(v.sample_interval_seconds).unwrap_or(0),
        accounting: a.label(h.deleted),
        version: a.version(h.version),
    }
}

/// Rows waiting for their INSERT, one list per table.
#[derive(Default)]
pub struct DetailBatch {
    pub tickets: Vec<TicketTaskRow>,
    pub checks: Vec<CheckRunRow>,
    pub vms: Vec<VmUsageRow>,
}

impl DetailBatch {
    pub fn push(&mut self, event: &Event, tz: Tz, accounting: Accounting) {
        match event {
            Event::TicketTime(t) => self.tickets.push(ticket(t, tz, accounting)),
            Event::CheckResult(c) => self.checks.push(check(c, tz, accounting)),
            Event::VmUsage(v) => self.vms.push(vm(v, tz, accounting)),
        }
    }

    pub fn len(&self) -> usize {
        self.tickets.len() + self.checks.len() + self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_event_version_wins_then_the_origin() {
        // One version: first reading < late mark < reprocess.
        assert!(Accounting::Counted.version(5) < Accounting::Late.version(5));
        assert!(Accounting::Late.version(5) < Accounting::Reprocessed.version(5));
        // A later edit replaces any origin of an earlier one.
        assert!(Accounting::Reprocessed.version(5) < Accounting::Counted.version(6));
        // GLPI versions are epoch milliseconds.
        let glpi = 1_767_225_600_000;
        assert!(Accounting::Reprocessed.version(glpi) < Accounting::Counted.version(glpi + 1));
        assert_eq!(Accounting::Reprocessed.label(true), "deleted");
        assert_eq!(Accounting::Reprocessed.label(false), "counted");
        assert_eq!(Accounting::Late.label(false), "late");
    }
}
