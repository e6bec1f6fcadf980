//! Everything that differs from one event kind to another, in one table.
//!
//! Adding a kind means: a variant of [`EventKind`], its row in [`KINDS`],
//! its struct in `events.rs` (the compiler then points at every `match` on
//! the event: validation, codec, rating, detail rows) and its schema file.
//! Topic names, CloudEvents types, ClickHouse tables and FOCUS categories are
//! read from the row; the local stack script, the compose file and the
//! tenant tables are checked against it by `tests/event_kinds.rs`.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Which of the event streams a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    VmUsage,
    CheckResult,
    TicketTime,
}

/// What the pipeline needs to know about one event kind.
#[derive(Debug)]
pub struct KindSpec {
    pub kind: EventKind,
    /// Avro enum symbol of the kind, also a bounded metric label.
    pub symbol: &'static str,
    /// Name on the command line, in file names and in topic names.
    pub slug: &'static str,
    /// Full name of its Avro record, and the current schema (`schemas/`).
    pub record: &'static str,
    pub schema: &'static str,
    /// The topic when `topics.<kind>` is not configured.
    pub default_topic: &'static str,
    /// CloudEvents `type` the ingest API accepts for it.
    pub cloudevents_type: &'static str,
    /// ClickHouse table of its drill-down rows (also copied per tenant).
    pub detail_table: &'static str,
    /// FOCUS `ServiceName` of its costs.
    pub focus_service: &'static str,
    /// FOCUS `ServiceCategory` of a metric of this kind.
    pub focus_category: fn(metric: &str) -> &'static str,
    /// How it is rated into a cost (the aggregator's rule, in words).
    pub rating: &'static str,
}

/// One row per kind, in [`EventKind::ALL`] order.
pub static KINDS: [KindSpec; 3] = [
    KindSpec {
        kind: EventKind::VmUsage,
        symbol: "VM_USAGE",
        slug: "vm-usage",
        record: "io.meter.events.VmUsage",
        schema: include_str!("../../../schemas/vm_usage.avsc"),
        default_topic: "meter.events.vm-usage",
        cloudevents_type: "io.meter.vm_usage",
        detail_table: "vm_usage_events",
        focus_service: "IaaS virtual machines",
        focus_category: |metric| match metric {
            "vm.storage" => "Storage",
            "vm.bandwidth" | "vm.public_ip" => "Networking",
            _ => "Compute",
        },
        rating: "per minute of each resource held while the VM runs (vCPU, RAM, disk, options), \
                 from its timeline of transitions or from samples, at the price book's unit prices",
    },
    KindSpec {
        kind: EventKind::CheckResult,
        symbol: "CHECK_RESULT",
        slug: "check-result",
        record: "io.meter.events.CheckResult",
        schema: include_str!("../../../schemas/check_result.avsc"),
        default_topic: "meter.events.check-result",
        cloudevents_type: "io.meter.check_result",
        detail_table: "check_runs",
        focus_service: "Supervision checks (MCO)",
        focus_category: |_| "Management and Governance",
        rating: "per check run at the price of its frequency (daily, weekly, monthly, semestrial, yearly)",
    },
    KindSpec {
        kind: EventKind::TicketTime,
        symbol: "TICKET_TIME",
        slug: "ticket-time",
        record: "io.meter.events.TicketTime",
        schema: include_str!("../../../schemas/ticket_time.avsc"),
        default_topic: "meter.events.ticket-time",
        cloudevents_type: "io.meter.ticket_time",
        detail_table: "ticket_tasks",
        focus_service: "Managed services (ticket time)",
        focus_category: |_| "Other",
        rating: "per minute of task time at the hourly rate of the technician's profile",
    },
];

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::VmUsage, EventKind::CheckResult, EventKind::TicketTime];

    /// This kind's row of [`KINDS`].
    pub fn spec(self) -> &'static KindSpec {
        match self {
            EventKind::VmUsage => &KINDS[0],
            EventKind::CheckResult => &KINDS[1],
            EventKind::TicketTime => &KINDS[2],
        }
    }

    /// The Avro enum symbol, also used as a bounded metric label.
    pub fn symbol(self) -> &'static str {
        self.spec().symbol
    }

    /// The name used on the command line and in config (`vm-usage`, ...).
    pub fn slug(self) -> &'static str {
        self.spec().slug
    }

    /// The kind of an Avro symbol (`VM_USAGE`) or a slug (`vm-usage`).
    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.symbol() == s || k.slug() == s)
    }

    /// The kind a CloudEvents `type` stands for.
    pub fn from_cloudevents_type(ce_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.spec().cloudevents_type == ce_type)
    }

    /// The field names of the kind's current schema: what a JSON document of
    /// this kind may contain.
    pub fn field_names(self) -> &'static [&'static str] {
        static NAMES: OnceLock<HashMap<EventKind, Vec<&'static str>>> = OnceLock::new();
        let names = NAMES.get_or_init(|| {
            EventKind::ALL
                .into_iter()
                .map(|kind| {
                    // The schemas are compiled in and parsed by the codec tests.
                    let fields = match apache_avro::Schema::parse_str(kind.spec().schema) {
                        Ok(apache_avro::Schema::Record(record)) => {
                            record.fields.iter().map(|f| &*f.name.clone().leak()).collect()
                        }
                        _ => Vec::new(),
                    };
                    (kind, fields)
                })
                .collect()
        });
        names.get(&self).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_kind_has_its_own_row_and_distinct_names() {
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(KINDS[i].kind, kind, "KINDS is in EventKind::ALL order");
            assert_eq!(kind.spec().kind, kind);
            assert_eq!(EventKind::from_symbol(kind.symbol()), Some(kind));
            assert_eq!(EventKind::from_symbol(kind.slug()), Some(kind));
            assert_eq!(EventKind::from_cloudevents_type(kind.spec().cloudevents_type), Some(kind));
            assert!(kind.field_names().contains(&"event_id"), "{kind}: {:?}", kind.field_names());
            assert!(kind.spec().schema.contains(kind.spec().record.rsplit('.').next().unwrap_or_default()));
        }
        let distinct = |f: fn(&KindSpec) -> &'static str| KINDS.iter().map(f).collect::<BTreeSet<_>>().len();
        for field in [
            (|k: &KindSpec| k.symbol) as fn(&KindSpec) -> &'static str,
            |k| k.slug,
            |k| k.record,
            |k| k.default_topic,
            |k| k.cloudevents_type,
            |k| k.detail_table,
        ] {
            assert_eq!(distinct(field), KINDS.len());
        }
    }

    #[test]
    fn focus_categories_follow_the_metric() {
        let vm = EventKind::VmUsage.spec();
        assert_eq!((vm.focus_category)("vm.storage"), "Storage");
        assert_eq!((vm.focus_category)("vm.public_ip"), "Networking");
        assert_eq!((vm.focus_category)("vm.vcpu"), "Compute");
        assert_eq!((EventKind::TicketTime.spec().focus_category)("ticket.minutes"), "Other");
    }
}
