//! A check result as every input writes it ([`Incoming`]), and how it
//! becomes a check-result event: status, ticket, identity, mapping.

use chrono::{DateTime, TimeZone, Utc};
use meter_model::codec::to_millis;
use meter_model::{CheckResult, CheckStatus, Event, EventHeader};

use crate::config::Settings;
use crate::event_ids::digest;
use crate::perfdata::{parse_perfdata, PerfdataError};

/// Whether a result is about a host or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Host,
    Service,
}

/// How an input numbers states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCode {
    /// Plugin exit status / service state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Service(i64),
    /// Host state as the Icinga 2 API and NRDP take it: 0 UP, 1 DOWN, 2 UNREACHABLE.
    Host(i64),
    /// A host check's plugin exit status, as in the Icinga 2 event stream:
    /// 0 and 1 are UP, 2 and 3 DOWN.
    HostPluginExit(i64),
}

/// The meter status of a state: OK, WARNING, KO (CRITICAL, DOWN,
/// UNREACHABLE) or UNKNOWN.
pub fn status_of(code: StateCode) -> Result<CheckStatus, String> {
    match code {
        StateCode::Service(0) => Ok(CheckStatus::Ok),
        StateCode::Service(1) => Ok(CheckStatus::Warning),
        StateCode::Service(2) => Ok(CheckStatus::Ko),
        StateCode::Service(3) => Ok(CheckStatus::Unknown),
        StateCode::Service(n) => Err(format!("a service state is 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN), got {n}")),
        StateCode::Host(0) => Ok(CheckStatus::Ok),
        StateCode::Host(1 | 2) => Ok(CheckStatus::Ko),
        StateCode::Host(n) => Err(format!("a host state is 0 (UP), 1 (DOWN) or 2 (UNREACHABLE), got {n}")),
        StateCode::HostPluginExit(0 | 1) => Ok(CheckStatus::Ok),
        StateCode::HostPluginExit(2 | 3) => Ok(CheckStatus::Ko),
        StateCode::HostPluginExit(n) => Err(format!("a plugin exit status is 0 to 3, got {n}")),
    }
}

/// A whole number from a JSON number written as an integer or a float (`2.0`).
pub fn whole(value: f64, what: &str) -> Result<i64, String> {
    if value.fract() != 0.0 || !value.is_finite() || value.abs() > 1e6 {
        return Err(format!("{what} must be a whole number, got {value}"));
    }
    Ok(value as i64)
}

/// Unix seconds (with a fraction) as an instant, to the millisecond.
pub fn unix_seconds(value: f64, what: &str) -> Result<DateTime<Utc>, String> {
    // 2000-01-01 to 2100-01-01: anything else is a unit mistake.
    if !value.is_finite() || !(946_684_800.0..4_102_444_800.0).contains(&value) {
        return Err(format!("{what} must be Unix seconds between 2000 and 2100, got {value}"));
    }
    Utc.timestamp_millis_opt((value * 1000.0).round() as i64)
        .single()
        .ok_or_else(|| format!("{what}: {value} is not an instant"))
}

/// One check result, whichever input it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub host: String,
    /// `None` for a host check.
    pub service: Option<String>,
    pub status: CheckStatus,
    /// The plugin output, without performance data.
    pub output: String,
    /// Performance data items (each one or more `label=value...`).
    pub perfdata: Vec<String>,
    pub check_source: Option<String>,
    pub execution_start: Option<DateTime<Utc>>,
    pub execution_end: Option<DateTime<Utc>>,
    /// A ticket reference given explicitly (wins over the output's).
    pub ticket: Option<String>,
}

impl Incoming {
    /// "host!service", or the host for a host check.
    pub fn object_name(&self) -> String {
        match &self.service {
            Some(s) => format!("{}!{s}", self.host),
            None => self.host.clone(),
        }
    }

    /// The result alone as JSON: what a dead letter of it carries (never the
    /// rest of its request, which may hold the sender's token).
    pub fn to_json(&self) -> Vec<u8> {
        let time = |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        serde_json::json!({
            "host": self.host,
            "service": self.service,
            "status": self.status,
            "output": self.output,
            "perfdata": self.perfdata,
            "check_source": self.check_source,
            "execution_start": time(&self.execution_start),
            "execution_end": time(&self.execution_end),
            "ticket": self.ticket,
        })
        .to_string()
        .into_bytes()
    }

    /// When the check ran: its end, else its start, else `received`.
    pub fn executed(&self, received: DateTime<Utc>) -> DateTime<Utc> {
        to_millis(self.execution_end.or(self.execution_start).unwrap_or(received))
    }

    /// Reads the performance data; what cannot be read is returned as the error.
    pub fn perfdata_items(&self) -> Result<std::collections::BTreeMap<String, crate::perfdata::PerfValue>, PerfdataError> {
        let mut all = std::collections::BTreeMap::new();
        for item in &self.perfdata {
            all.extend(parse_perfdata(item)?);
        }
        Ok(all)
    }
}

/// A name from the network (host, service) as it may be logged: control
/// characters escaped, so a newline cannot forge a log line.
pub fn loggable(text: &str) -> String {
    text.escape_debug().to_string()
}

/// The event id of a run: from the source, "host!service" and the execution
/// time, so the same result sent again (a retried POST, or the event stream
/// and a POST of the same run) counts once.
pub fn run_event_id(source: &str, object_name: &str, executed: DateTime<Utc>) -> String {
    format!("run-{}", digest(&[source, object_name, &executed.timestamp_millis().to_string()]))
}

/// Why a well-formed result cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmapped {
    UnknownHost { host: String },
    UnknownCheck { host: String, service: Option<String> },
    Invalid { message: String },
}

impl Unmapped {
    /// The bounded reason code (metric label, dead-letter `error_kind`).
    pub fn reason(&self) -> &'static str {
        match self {
            Unmapped::UnknownHost { .. } => "unknown_host",
            Unmapped::UnknownCheck { .. } => "unknown_check",
            Unmapped::Invalid { .. } => "invalid_event",
        }
    }
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmapped::UnknownHost { host } => write!(
                f,
                "host {host:?} is not in the supervision mapping: add it under [hosts] or a [[host_groups]] pattern"
            ),
            Unmapped::UnknownCheck { host, service: Some(s) } => write!(
                f,
                "service {s:?} of host {host:?} is not in the supervision mapping: add [checks.{s:?}] (or [checks.\"{host}!{s}\"])"
            ),
            Unmapped::UnknownCheck { host, service: None } => write!(
                f,
                "host checks of {host:?} are not in the supervision mapping: add [checks.\"_host\"] (or [checks.\"{host}!_host\"])"
            ),
            Unmapped::Invalid { message } => f.write_str(message),
        }
    }
}

/// The check-result event of a result received at `received` (its
/// `ingest_time` is left at the epoch: set when published).
pub fn to_event(settings: &Settings, incoming: &Incoming, received: DateTime<Utc>) -> Result<CheckResult, Unmapped> {
    let target = settings.target(&incoming.host).ok_or_else(|| Unmapped::UnknownHost { host: incoming.host.clone() })?;
    let check = settings
        .check(&incoming.host, incoming.service.as_deref())
        .ok_or_else(|| Unmapped::UnknownCheck { host: incoming.host.clone(), service: incoming.service.clone() })?;
    let executed = incoming.executed(received);
    let ticket = incoming
        .ticket
        .clone()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| settings.ticket_in(&incoming.output));
    let scheduled = settings
        .schedule
        .find(&check.check_id, &incoming.host)
        .and_then(|c| c.period_of_run(executed))
        .map(|(_, _, deadline)| deadline);
    let result = CheckResult {
        header: EventHeader {
            event_id: run_event_id(&settings.source, &incoming.object_name(), executed),
            source: settings.source.clone(),
            tenant: target.tenant.clone(),
            subsidiary: target.subsidiary.clone(),
            domain: target.domain.clone(),
            event_time: executed,
            ingest_time: DateTime::<Utc>::UNIX_EPOCH,
            version: 0,
            deleted: false,
        },
        check_id: check.check_id.clone(),
        check_name: check.check_name.clone(),
        target: incoming.host.clone(),
        frequency: check.frequency,
        scheduled_time: scheduled,
        executed_time: Some(executed),
        status: incoming.status,
        ticket_ref: ticket,
        time_spent_minutes: check.time_spent_minutes,
        output: Some(incoming.output.clone()).filter(|o| !o.is_empty()),
    };
    Event::CheckResult(result.clone()).validate().map_err(|e| Unmapped::Invalid { message: e.to_string() })?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_config::MeterConfig;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn settings() -> Settings {
        let text = r#"
source = "icinga-par1"
[hosts."dc01.acme.local"]
tenant = "acme"
subsidiary = "acme-fr"
domain = "infrastructure"
[checks.backup]
check_id = "acme-backup"
check_name = "Backup jobs"
frequency = "DAILY"
time_spent_minutes = 5
[checks._host]
check_id = "acme-ping"
check_name = "Host alive"
frequency = "DAILY"
[[schedule]]
check_id = "acme-backup"
host = "dc01.acme.local"
frequency = "DAILY"
due_time = "08:00"
grace_minutes = 30
time_zone = "Europe/Paris"
"#;
        Settings::resolve(toml::from_str(text).unwrap(), &MeterConfig::default()).unwrap()
    }

    fn incoming() -> Incoming {
        Incoming {
            host: "dc01.acme.local".into(),
            service: Some("backup".into()),
            status: CheckStatus::Ko,
            output: "CRITICAL: job failed, ticket #4711".into(),
            perfdata: vec!["time=3s".into()],
            check_source: Some("sat1".into()),
            execution_start: Some(utc("2026-01-12T06:00:00Z")),
            execution_end: Some(utc("2026-01-12T06:00:03.250Z")),
            ticket: None,
        }
    }

    #[test]
    fn exit_statuses_map_to_meter_statuses() {
        use CheckStatus::*;
        let service: Vec<_> = (0..4).map(|n| status_of(StateCode::Service(n)).unwrap()).collect();
        assert_eq!(service, vec![Ok, Warning, Ko, Unknown]);
        let host: Vec<_> = (0..3).map(|n| status_of(StateCode::Host(n)).unwrap()).collect();
        assert_eq!(host, vec![Ok, Ko, Ko]);
        let plugin: Vec<_> = (0..4).map(|n| status_of(StateCode::HostPluginExit(n)).unwrap()).collect();
        assert_eq!(plugin, vec![Ok, Ok, Ko, Ko]);
        assert!(status_of(StateCode::Service(4)).unwrap_err().contains("got 4"));
        assert!(status_of(StateCode::Service(-1)).is_err());
        assert!(status_of(StateCode::Host(3)).is_err());
        assert_eq!(whole(2.0, "exit_status"), Result::Ok(2));
        assert!(whole(1.5, "exit_status").is_err());
    }

    #[test]
    fn unix_seconds_keep_milliseconds_and_refuse_unit_mistakes() {
        assert_eq!(unix_seconds(1768197603.2504, "t").unwrap(), utc("2026-01-12T06:00:03.250Z"));
        assert!(unix_seconds(1768197603250.0, "t").is_err(), "milliseconds");
        assert!(unix_seconds(f64::NAN, "t").is_err());
    }

    #[test]
    fn a_result_becomes_the_mapped_event() {
        let s = settings();
        let e = to_event(&s, &incoming(), utc("2026-01-12T06:01:00Z")).unwrap();
        assert_eq!(e.header.tenant, "acme");
        assert_eq!(e.header.subsidiary, "acme-fr");
        assert_eq!(e.header.source, "icinga-par1");
        assert_eq!(e.header.event_time, utc("2026-01-12T06:00:03.250Z"));
        assert_eq!(e.executed_time, Some(utc("2026-01-12T06:00:03.250Z")));
        assert_eq!(e.scheduled_time, Some(utc("2026-01-12T07:00:00Z")), "08:00 Paris, the deadline of its window");
        assert_eq!((e.check_id.as_str(), e.check_name.as_str(), e.target.as_str()), ("acme-backup", "Backup jobs", "dc01.acme.local"));
        assert_eq!((e.status, e.ticket_ref.as_deref(), e.time_spent_minutes), (CheckStatus::Ko, Some("4711"), 5));
        assert_eq!(e.output.as_deref(), Some("CRITICAL: job failed, ticket #4711"));
        assert_eq!(e.header.event_id, run_event_id("icinga-par1", "dc01.acme.local!backup", utc("2026-01-12T06:00:03.250Z")));
    }

    #[test]
    fn the_event_id_depends_on_the_run_only() {
        let s = settings();
        let a = to_event(&s, &incoming(), utc("2026-01-12T06:01:00Z")).unwrap();
        let b = to_event(&s, &incoming(), utc("2026-01-12T07:30:00Z")).unwrap();
        assert_eq!(a.header.event_id, b.header.event_id, "received twice, one run");
        let mut later = incoming();
        later.execution_end = Some(utc("2026-01-12T06:00:04Z"));
        assert_ne!(to_event(&s, &later, utc("2026-01-12T06:01:00Z")).unwrap().header.event_id, a.header.event_id);
        // Without execution times, the run is timestamped when received.
        let mut bare = incoming();
        bare.execution_start = None;
        bare.execution_end = None;
        assert_eq!(to_event(&s, &bare, utc("2026-01-12T06:05:00Z")).unwrap().executed_time, Some(utc("2026-01-12T06:05:00Z")));
    }

    #[test]
    fn an_explicit_ticket_wins_and_host_checks_use_the_host_key() {
        let s = settings();
        let mut i = incoming();
        i.ticket = Some(" GLPI-9 ".into());
        assert_eq!(to_event(&s, &i, utc("2026-01-12T06:01:00Z")).unwrap().ticket_ref.as_deref(), Some("GLPI-9"));
        let mut host = incoming();
        host.service = None;
        let e = to_event(&s, &host, utc("2026-01-12T06:01:00Z")).unwrap();
        assert_eq!((e.check_id.as_str(), e.scheduled_time), ("acme-ping", None));
    }

    #[test]
    fn names_are_logged_escaped_and_dead_letters_carry_the_result_alone() {
        assert_eq!(loggable("dc01\nINFO forged line"), "dc01\\nINFO forged line");
        assert!(!loggable("a\r\nb\u{1b}[31m").chars().any(char::is_control));
        let json: serde_json::Value = serde_json::from_slice(&incoming().to_json()).unwrap();
        assert_eq!((json["host"].as_str(), json["service"].as_str(), json["status"].as_str()), (Some("dc01.acme.local"), Some("backup"), Some("KO")));
        assert_eq!(json["execution_end"], "2026-01-12T06:00:03.250Z");
    }

    #[test]
    fn unknown_hosts_and_checks_say_what_to_add() {
        let s = settings();
        let mut i = incoming();
        i.host = "web9.globex.local".into();
        let e = to_event(&s, &i, utc("2026-01-12T06:01:00Z")).unwrap_err();
        assert_eq!(e.reason(), "unknown_host");
        assert!(e.to_string().contains("web9.globex.local") && e.to_string().contains("[hosts]"), "{e}");
        let mut i = incoming();
        i.service = Some("ssh".into());
        let e = to_event(&s, &i, utc("2026-01-12T06:01:00Z")).unwrap_err();
        assert_eq!(e.reason(), "unknown_check");
        assert!(e.to_string().contains("[checks.\"ssh\"]"), "{e}");
    }
}
