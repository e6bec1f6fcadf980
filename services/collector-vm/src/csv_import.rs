//! VM lifecycle events and samples from CSV files (`meter collect vm-csv FILE...`).
//!
//! The first line is the header, with these columns in any order (RFC 4180
//! quoting, UTF-8); each row is one vm-usage event with the same fields:
//!
//! `event_id,source,tenant,subsidiary,domain,event_time,vm_id,vcpu,ram_mib,storage_gb,bandwidth_mbps,guaranteed_bandwidth,public_ips,sla_tier,options,datacenter,transition,sample_interval_seconds`
//!
//! - `event_time`: RFC 3339 (`2026-01-12T10:00:00Z`);
//! - `guaranteed_bandwidth`: `true`/`false` (or `1`/`0`; empty: false);
//!   `public_ips`, `sample_interval_seconds`: empty is 0;
//! - `sla_tier`: `SLA_99_7`, `SLA_99_9`, `SLA_99_99`;
//! - `options`: `;`-separated (`backup;monitoring`), empty for none;
//! - `transition`: `SAMPLE` (needs `sample_interval_seconds` > 0: it covers
//!   `[event_time - sample_interval_seconds, event_time)`), or `CREATE`,
//!   `START`, `RESIZE`, `STOP`, `DELETE` (with `sample_interval_seconds` 0).
//!
//! A bad row is reported with its line number (the header is line 1) and
//! reason (`malformed_row`, `bad_field`, `invalid_event`), dead-lettered
//! (component `collector-vm-csv`, its original bytes, file and line) when
//! published, and the other rows go on.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use collector_runtime::CollectorMetrics;
use meter_config::MeterConfig;
use meter_model::codec::to_millis;
use meter_model::{Event, EventHeader, EventKind, SlaTier, VmTransition, VmUsage};
use rdkafka::producer::FutureProducer;

use crate::VmError;

/// The columns a CSV file must have (in any order).
pub const CSV_COLUMNS: [&str; 18] = [
    "event_id",
    "source",
    "tenant",
    "subsidiary",
    "domain",
    "event_time",
    "vm_id",
    "vcpu",
    "ram_mib",
    "storage_gb",
    "bandwidth_mbps",
    "guaranteed_bandwidth",
    "public_ips",
    "sla_tier",
    "options",
    "datacenter",
    "transition",
    "sample_interval_seconds",
];

/// The dead-letter component of CSV rows.
pub const CSV_COMPONENT: &str = "collector-vm-csv";

pub use collector_file::csv_table::CsvRejection;

/// What a file holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CsvImport {
    /// Data rows read (not counting the header and blank lines).
    pub rows: u64,
    /// The events, with the line each came from.
    pub events: Vec<(u64, VmUsage)>,
    pub rejections: Vec<CsvRejection>,
}

/// The outcome of publishing one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CsvReport {
    pub rows: u64,
    pub published: u64,
    pub rejections: Vec<CsvRejection>,
}

fn text(value: &str) -> String {
    value.trim().to_string()
}

fn integer<T: std::str::FromStr>(name: &str, value: &str, empty_is_zero: bool) -> Result<T, String> {
    let v = value.trim();
    let v = if v.is_empty() && empty_is_zero { "0" } else { v };
    v.parse().map_err(|_| format!("{name} must be a whole number, got {value:?}"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(format!("guaranteed_bandwidth must be true or false, got {other:?}")),
    }
}

fn sla_tier(value: &str) -> Result<SlaTier, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "SLA_99_7" => Ok(SlaTier::Sla99_7),
        "SLA_99_9" => Ok(SlaTier::Sla99_9),
        "SLA_99_99" => Ok(SlaTier::Sla99_99),
        other => Err(format!("sla_tier must be SLA_99_7, SLA_99_9 or SLA_99_99, got {other:?}")),
    }
}

fn transition(value: &str) -> Result<VmTransition, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "SAMPLE" => Ok(VmTransition::Sample),
        "CREATE" => Ok(VmTransition::Create),
        "START" => Ok(VmTransition::Start),
        "RESIZE" => Ok(VmTransition::Resize),
        "STOP" => Ok(VmTransition::Stop),
        "DELETE" => Ok(VmTransition::Delete),
        other => Err(format!("transition must be SAMPLE, CREATE, START, RESIZE, STOP or DELETE, got {other:?}")),
    }
}

/// The fields of one row, by column name.
struct Fields<'a> {
    index: &'a HashMap<String, usize>,
    values: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> &'a str {
        self.index.get(name).and_then(|i| self.values.get(*i).copied()).unwrap_or("")
    }
}

fn row_to_event(row: &Fields<'_>) -> Result<VmUsage, (&'static str, String)> {
    let get = |name: &str| row.get(name);
    let bad = |e: String| ("bad_field", e);
    let event_time = DateTime::parse_from_rfc3339(get("event_time").trim())
        .map_err(|_| bad(format!("event_time must be RFC 3339, got {:?}", get("event_time"))))?
        .with_timezone(&Utc);
    let options = get("options").split(';').map(str::trim).filter(|o| !o.is_empty()).map(str::to_string).collect();
    let event = VmUsage {
        header: EventHeader {
            event_id: text(get("event_id")),
            source: text(get("source")),
            tenant: text(get("tenant")),
            subsidiary: text(get("subsidiary")),
            domain: text(get("domain")),
            event_time: to_millis(event_time),
            ingest_time: DateTime::<Utc>::UNIX_EPOCH,
            version: 0,
            deleted: false,
        },
        vm_id: text(get("vm_id")),
        vcpu: integer("vcpu", get("vcpu"), false).map_err(bad)?,
        ram_mib: integer("ram_mib", get("ram_mib"), false).map_err(bad)?,
        storage_gb: integer("storage_gb", get("storage_gb"), false).map_err(bad)?,
        bandwidth_mbps: integer("bandwidth_mbps", get("bandwidth_mbps"), false).map_err(bad)?,
        guaranteed_bandwidth: boolean(get("guaranteed_bandwidth")).map_err(bad)?,
        public_ips: integer("public_ips", get("public_ips"), true).map_err(bad)?,
        sla_tier: sla_tier(get("sla_tier")).map_err(bad)?,
        options,
        datacenter: text(get("datacenter")),
        transition: transition(get("transition")).map_err(bad)?,
        sample_interval_seconds: integer("sample_interval_seconds", get("sample_interval_seconds"), true).map_err(bad)?,
    };
    let event = Event::VmUsage(event);
    event.validate().map_err(|e| ("invalid_event", e.to_string()))?;
    match event {
        Event::VmUsage(v) => Ok(v),
        _ => Err(("invalid_event", "not a vm-usage event".into())),
    }
}

/// Reads a CSV file of VM events (format: module documentation). A file
/// without the documented header is an error; a bad row is a rejection.
pub fn read_csv(path: &Path) -> Result<CsvImport, VmError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| VmError::Read { path: shown.clone(), source })?;
    let header_error = |message: String| VmError::Config { path: shown.clone(), message };
    let table = collector_file::csv_table::read_csv_table(&data, &CSV_COLUMNS).map_err(header_error)?;
    let mut import = CsvImport { rows: table.rows.len() as u64, ..CsvImport::default() };
    for row in table.rows {
        let line = row.line;
        let reject = |reason: &'static str, error: String| CsvRejection { line, reason, error, original: row.original.clone() };
        let values: Vec<&str> = match &row.values {
            Ok(values) => values.iter().map(String::as_str).collect(),
            Err(error) => {
                import.rejections.push(reject("malformed_row", error.clone()));
                continue;
            }
        };
        match row_to_event(&Fields { index: &table.index, values }) {
            Ok(event) => import.events.push((line, event)),
            Err((reason, error)) => import.rejections.push(reject(reason, error)),
        }
    }
    Ok(import)
}

/// Reads `path` with [`read_csv`], dead-letters its bad rows and publishes
/// its events (acknowledged), keyed by tenant.
pub async fn publish_csv(meter: &MeterConfig, producer: &FutureProducer, metrics: &CollectorMetrics, path: &Path) -> Result<CsvReport, VmError> {
    let mut import = read_csv(path)?;
    let file_name = path.display().to_string();
    let import_target = collector_file::FileImport {
        component: CSV_COMPONENT,
        kind: EventKind::VmUsage,
        source_label: "vm-csv",
        file_name: &file_name,
        rows: import.rows,
    };
    let events = std::mem::take(&mut import.events).into_iter().map(|(_, e)| Event::VmUsage(e)).collect();
    let published = import_target.publish(meter, producer, metrics, events, &import.rejections).await?;
    tracing::info!(file = %file_name, rows = import.rows, published, rejected = import.rejections.len(), "VM CSV collected");
    Ok(CsvReport { rows: import.rows, published, rejections: import.rejections })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const HEADER: &str = "event_id,source,tenant,subsidiary,domain,event_time,vm_id,vcpu,ram_mib,storage_gb,bandwidth_mbps,guaranteed_bandwidth,public_ips,sla_tier,options,datacenter,transition,sample_interval_seconds";

    fn read(text: &str) -> Result<CsvImport, VmError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vms.csv");
        std::fs::write(&path, text).unwrap();
        read_csv(&path)
    }

    #[test]
    fn rows_become_events_and_bad_rows_are_reported_with_their_line() {
        let text = [
            HEADER,
            "vm-1-create,vmware,acme,acme-fr,infrastructure,2026-01-05T08:00:00Z,acme-web01,2,4096,120,100,true,1,SLA_99_9,backup;monitoring,par1,CREATE,",
            "vm-1-s1,vmware,acme,acme-fr,infrastructure,2026-01-05T09:00:00Z,acme-web01,2,4096,120,100,false,1,sla_99_9,,par1,sample,3600",
            "vm-1-s2,vmware,acme,acme-fr,infrastructure,2026-01-05T10:00:00Z,acme-web01,two,4096,120,100,false,1,SLA_99_9,,par1,SAMPLE,3600",
            "",
            "vm-1-s3,vmware,acme,acme-fr,infrastructure,2026-01-05T11:00:00Z,acme-web01,2,4096,120,100,false,1,SLA_99_9,,par1,SAMPLE,0",
            "vm-1-s4,vmware,acme,acme-fr",
            "vm-1-stop,vmware,acme,acme-fr,infrastructure,2026-01-05T12:00:00Z,acme-web01,2,4096,120,100,false,1,SLA_99_9,,par1,STOP,0",
        ]
        .join("\n")
            + "\n";
        let import = read(&text).unwrap();
        assert_eq!(import.rows, 6);
        let lines: Vec<(u64, &str)> = import.rejections.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(lines, [(4, "bad_field"), (6, "invalid_event"), (7, "malformed_row")]);
        assert!(import.rejections[1].error.contains("sample_interval_seconds"), "{:?}", import.rejections[1]);
        assert_eq!(import.rejections[2].original, b"vm-1-s4,vmware,acme,acme-fr".to_vec());
        let events: Vec<(u64, &str, VmTransition, i32)> =
            import.events.iter().map(|(l, e)| (*l, e.header.event_id.as_str(), e.transition, e.sample_interval_seconds)).collect();
        assert_eq!(
            events,
            [(2, "vm-1-create", VmTransition::Create, 0), (3, "vm-1-s1", VmTransition::Sample, 3600), (8, "vm-1-stop", VmTransition::Stop, 0)]
        );
        let create = &import.events[0].1;
        assert_eq!(create.options, ["backup", "monitoring"]);
        assert!(create.guaranteed_bandwidth);
        assert_eq!((create.vcpu, create.ram_mib, create.storage_gb, create.public_ips), (2, 4096, 120, 1));
        assert_eq!(import.events[1].1.sla_tier, SlaTier::Sla99_9);
        assert!(import.events[1].1.options.is_empty());
    }

    #[test]
    fn a_file_without_the_documented_header_is_refused() {
        let err = read("vm,vcpu\n1,2\n").unwrap_err().to_string();
        assert!(err.contains("unknown column \"vm\""), "{err}");
        let err = read(&format!("{}\n", HEADER.replace(",datacenter", ""))).unwrap_err().to_string();
        assert!(err.contains("missing columns datacenter"), "{err}");
    }
}
