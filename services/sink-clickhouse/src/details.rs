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
    fn label(self, deleted: bool) -> &'static str {
        match (self, deleted) {
            (_, true) => "deleted",
            (Accounting::Late, false) => "late",
            (Accounting::Counted | Accounting::Reprocessed, false) => "counted",
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

// Symbols and labels are `&'static str`: no allocation per row for them.
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
    pub ticket_type: &'static str,
    pub category: String,
    pub category_path: Vec<String>,
    pub in_scope: u8,
    pub requester: String,
    pub technician: String,
    pub technician_profile: &'static str,
    pub application: String,
    pub country: String,
    pub minutes_worked: u32,
    pub start_time: u32,
    pub accounting: &'static str,
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
    pub frequency: &'static str,
    pub scheduled_time: Option<u32>,
    pub executed_time: Option<u32>,
    pub status: &'static str,
    pub ticket_ref: String,
    pub time_spent_minutes: u32,
    pub output: String,
    pub accounting: &'static str,
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
    pub sla_tier: &'static str,
    pub options: Vec<String>,
    pub datacenter: String,
    pub transition: &'static str,
    pub sample_interval_seconds: u32,
    pub accounting: &'static str,
    pub version: u64,
}

// The builders take the event by value: its strings move into the row.
fn ticket(t: TicketTime, tz: Tz, a: Accounting) -> TicketTaskRow {
    let h = t.header;
    TicketTaskRow {
        local_date: days(h.event_time, tz),
        event_time: secs(h.event_time),
        ingest_time: secs(h.ingest_time),
        accounting: a.label(h.deleted),
        version: a.version(h.version),
        tenant: h.tenant,
        subsidiary: h.subsidiary,
        domain: h.domain,
        source: h.source,
        event_id: h.event_id,
        ticket_id: t.ticket_id,
        task_id: t.task_id,
        ticket_type: t.ticket_type.avro_symbol(),
        category: t.category_path.join(" > "),
        category_path: t.category_path,
        in_scope: u8::from(t.in_scope),
        requester: t.requester,
        technician: t.technician,
        technician_profile: t.technician_profile.avro_symbol(),
        application: t.application.unwrap_or_default(),
        country: t.country.unwrap_or_default(),
        minutes_worked: u32::try_from(t.minutes_worked).unwrap_or(0),
        start_time: secs(t.start_time),
    }
}

fn check(c: CheckResult, tz: Tz, a: Accounting) -> CheckRunRow {
    let h = c.header;
    CheckRunRow {
        local_date: days(h.event_time, tz),
        event_time: secs(h.event_time),
        ingest_time: secs(h.ingest_time),
        accounting: a.label(h.deleted),
        version: a.version(h.version),
        tenant: h.tenant,
        subsidiary: h.subsidiary,
        domain: h.domain,
        source: h.source,
        event_id: h.event_id,
        check_id: c.check_id,
        check_name: c.check_name,
        target: c.target,
        frequency: c.frequency.avro_symbol(),
        scheduled_time: c.scheduled_time.map(secs),
        executed_time: c.executed_time.map(secs),
        status: c.status.avro_symbol(),
        ticket_ref: c.ticket_ref.unwrap_or_default(),
        time_spent_minutes: u32::try_from(c.time_spent_minutes).unwrap_or(0),
        output: c.output.unwrap_or_default(),
    }
}

fn vm(v: VmUsage, tz: Tz, a: Accounting) -> VmUsageRow {
    let h = v.header;
    VmUsageRow {
        local_date: days(h.event_time, tz),
        event_time: secs(h.event_time),
        ingest_time: secs(h.ingest_time),
        accounting: a.label(h.deleted),
        version: a.version(h.version),
        tenant: h.tenant,
        subsidiary: h.subsidiary,
        domain: h.domain,
        source: h.source,
        event_id: h.event_id,
        vm_id: v.vm_id,
        vcpu: u32::try_from(v.vcpu).unwrap_or(0),
        ram_mib: u64::try_from(v.ram_mib).unwrap_or(0),
        storage_gb: u64::try_from(v.storage_gb).unwrap_or(0),
        bandwidth_mbps: u32::try_from(v.bandwidth_mbps).unwrap_or(0),
        guaranteed_bandwidth: u8::from(v.guaranteed_bandwidth),
        public_ips: u32::try_from(v.public_ips).unwrap_or(0),
        sla_tier: v.sla_tier.avro_symbol(),
        options: v.options,
        datacenter: v.datacenter,
        transition: v.transition.avro_symbol(),
        sample_interval_seconds: u32::try_from(v.sample_interval_seconds).unwrap_or(0),
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
        self.push_owned(event.clone(), tz, accounting);
    }

    /// [`DetailBatch::push`] without copies: the event's strings move into its row.
    pub fn push_owned(&mut self, event: Event, tz: Tz, accounting: Accounting) {
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
