//! CloudEvents 1.0 in the JSON format (structured mode and batch mode) and
//! their mapping to meter events.
//!
//! - Required attributes: `specversion` ("1.0"), `id`, `source`, `type`
//!   (non-empty strings). `type` names the kind: see `meter_model::KINDS`.
//! - `data` is a JSON object: the event as the file collector reads it
//!   (README, "Input files") without `event_id` and `source`, which are the
//!   CloudEvent's `id` and `source`. When `data` has them anyway they must be
//!   equal to the attributes.
//! - `time` (optional, RFC 3339) is the `event_time` when `data` has none;
//!   when both are given they must be the same instant.
//! - `datacontenttype`, when given, must be JSON (`application/json`,
//!   `text/json` or `*/*+json`). `data_base64` is refused: send JSON.
//! - `subject`, `dataschema` and extension attributes are accepted and
//!   ignored; an attribute name must be lower-case letters and digits, as
//!   the specification requires (so `event_id` beside `id` is an error that
//!   says fields go in `data`).

use chrono::{DateTime, Utc};
use meter_model::{Event, EventKind};
use serde_json::{Map, Value};


/// `Content-Type` of one event (structured mode).
pub const STRUCTURED: &str = "application/cloudevents+json";
/// `Content-Type` of a batch (a JSON array of events).
pub const BATCH: &str = "application/cloudevents-batch+json";

/// The kind a CloudEvents `type` names (the kinds table, `meter_model::KINDS`).
pub fn kind_of_type(ce_type: &str) -> Option<EventKind> {
    EventKind::from_cloudevents_type(ce_type)
}

pub fn type_of_kind(kind: EventKind) -> &'static str {
    kind.spec().cloudevents_type
}

/// How a request carries its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
}

/// The mode of a `Content-Type` value (parameters such as `charset` ignored).
pub fn mode_of_content_type(content_type: &str) -> Option<Mode> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(STRUCTURED) {
        Some(Mode::Structured)
    } else if media.eq_ignore_ascii_case(BATCH) {
        Some(Mode::Batch)
    } else {
        None
    }
}

/// Why one CloudEvent was refused. `reason` is a bounded code (a metric label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeError {
    pub reason: &'static str,
    pub error: String,
    /// The kind, when the `type` was readable.
    pub kind: Option<EventKind>,
}

impl CeError {
    fn new(reason: &'static str, error: impl Into<String>, kind: Option<EventKind>) -> Self {
        CeError { reason, error: error.into(), kind }
    }
}

/// The `id` of a CloudEvent, when it has a string one (for error reports).
pub fn id_of(value: &Value) -> Option<&str> {
    value.get("id").and_then(Value::as_str)
}

/// The tenant `data` claims, read before any validation, so that a request
/// for a tenant the caller may not write for is refused as such.
pub fn claimed_tenant(value: &Value) -> Option<&str> {
    value.get("data").and_then(|d| d.get("tenant")).and_then(Value::as_str)
}

/// The `source` attribute, read before any validation: a token may only
/// send as the sources it is bound to.
pub fn claimed_source(value: &Value) -> Option<&str> {
    value.get("source").and_then(Value::as_str)
}

fn required_string<'a>(object: &'a Map<String, Value>, name: &str, kind: Option<EventKind>) -> Result<&'a str, CeError> {
    match object.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(CeError::new("malformed_cloudevent", format!("attribute `{name}` must not be empty"), kind)),
        Some(other) => Err(CeError::new(
            "malformed_cloudevent",
            format!("attribute `{name}` must be a string, got {}", type_name(other)),
            kind,
        )),
        None => Err(CeError::new("malformed_cloudevent", format!("required attribute `{name}` is missing"), kind)),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_json_media_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Checks one CloudEvent and turns it into a valid meter event.
pub fn to_event(value: &Value) -> Result<Event, CeError> {
    let Some(object) = value.as_object() else {
        return Err(CeError::new("malformed_cloudevent", format!("a CloudEvent is a JSON object, got {}", type_name(value)), None));
    };
    // The kind first, so that every later error is counted under it.
    let kind = match object.get("type").and_then(Value::as_str) {
        Some(t) => Some(kind_of_type(t).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.spec().cloudevents_type).collect();
            CeError::new("unknown_type", format!("unknown event type {t:?}, expected one of: {}", known.join(", ")), None)
        })?),
        None => None,
    };
    let specversion = required_string(object, "specversion", kind)?;
    if specversion != "1.0" {
        return Err(CeError::new("malformed_cloudevent", format!("specversion must be \"1.0\", got {specversion:?}"), kind));
    }
    let id = required_string(object, "id", kind)?;
    let source = required_string(object, "source", kind)?;
    required_string(object, "type", kind)?;
    let kind = kind.ok_or_else(|| CeError::new("malformed_cloudevent", "required attribute `type` is missing", None))?;
    for name in object.keys() {
        if name == "data_base64" {
            return Err(CeError::new("malformed_cloudevent", "data_base64 is not accepted: send `data` as a JSON object", Some(kind)));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(CeError::new(
                "malformed_cloudevent",
                format!("`{name}` is not a CloudEvents attribute name (lower-case letters and digits); event fields go in `data`"),
                Some(kind),
            ));
        }
    }
    if let Some(ct) = object.get("datacontenttype") {
        match ct.as_str() {
            Some(ct) if is_json_media_type(ct) => {}
            _ => {
                return Err(CeError::new(
                    "malformed_cloudevent",
                    format!("datacontenttype must be application/json, got {ct}"),
                    Some(kind),
                ))
            }
        }
    }
    let time = match object.get("time") {
        None => None,
        Some(Value::String(t)) => Some((
            t.clone(),
            parse_time(t).ok_or_else(|| {
                CeError::new("malformed_cloudevent", format!("time must be an RFC 3339 timestamp, got {t:?}"), Some(kind))
            })?,
        )),
        Some(other) => {
            return Err(CeError::new(
                "malformed_cloudevent",
                format!("time must be an RFC 3339 string, got {}", type_name(other)),
                Some(kind),
            ))
        }
    };
    let mut data = match object.get("data") {
        Some(Value::Object(data)) => data.clone(),
        Some(other) => {
            return Err(CeError::new("malformed_data", format!("data must be a JSON object, got {}", type_name(other)), Some(kind)))
        }
        None => return Err(CeError::new("malformed_data", "data is missing", Some(kind))),
    };
    for (field, attribute, value, reason) in
        [("event_id", "id", id, "id_mismatch"), ("source", "source", source, "source_mismatch")]
    {
        match data.get(field) {
            None => {
                data.insert(field.into(), Value::String(value.into()));
            }
            Some(Value::String(s)) if s == value => {}
            Some(other) => {
                return Err(CeError::new(
                    reason,
                    format!("data.{field} is {other} but the CloudEvent's {attribute} is {value:?}: leave it out of data"),
                    Some(kind),
                ))
            }
        }
    }
    if let Some((text, instant)) = time {
        match data.get("event_time") {
            None => {
                data.insert("event_time".into(), Value::String(text));
            }
            Some(Value::String(s)) if parse_time(s) == Some(instant) => {}
            Some(Value::String(s)) if parse_time(s).is_some() => {
                return Err(CeError::new(
                    "time_mismatch",
                    format!("data.event_time {s:?} and the CloudEvent's time {text:?} differ: give one of them"),
                    Some(kind),
                ))
            }
            // Not a timestamp: the event's own parsing reports it.
            Some(_) => {}
        }
    }
    let json = Value::Object(data).to_string();
    collector_file::parse_line(kind, &json).map_err(|(reason, error)| {
        // The document is JSON already: a parse error here is about data's fields.
        let reason = if reason == "malformed_json" { "malformed_data" } else { reason };
        CeError::new(reason, format!("data: {error}"), Some(kind))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::TicketType;
    use serde_json::json;

    fn ticket_data() -> Value {
        json!({
            "tenant": "acme", "subsidiary": "acme-fr", "domain": "infrastructure",
            "event_time": "2026-01-12T10:45:00Z", "ticket_id": "2026-001", "task_id": "7",
            "ticket_type": "INCIDENT", "category_path": ["RUN", "MCO", "backups"], "requester": "marie.dupont",
            "technician": "bob", "technician_profile": "ENGINEER", "minutes_worked": 165,
            "start_time": "2026-01-12T08:00:00Z"
        })
    }

    fn ticket_event() -> Value {
        json!({
            "specversion": "1.0", "id": "task-7", "source": "glpi-main", "type": "io.meter.ticket_time",
            "datacontenttype": "application/json", "data": ticket_data()
        })
    }

    fn with(mut event: Value, path: &[&str], value: Option<Value>) -> Value {
        let mut target = &mut event;
        for key in &path[..path.len() - 1] {
            target = target.get_mut(*key).unwrap();
        }
        let object = target.as_object_mut().unwrap();
        match value {
            Some(v) => object.insert(path[path.len() - 1].into(), v),
            None => object.remove(path[path.len() - 1]),
        };
        event
    }

    #[test]
    fn types_map_to_kinds_both_ways() {
        for kind in EventKind::ALL {
            assert_eq!(kind_of_type(type_of_kind(kind)), Some(kind));
        }
        assert_eq!(kind_of_type("io.meter.ticket-time"), None);
    }

    #[test]
    fn content_types_select_the_mode() {
        assert_eq!(mode_of_content_type("application/cloudevents+json"), Some(Mode::Structured));
        assert_eq!(mode_of_content_type("application/cloudevents+json; charset=utf-8"), Some(Mode::Structured));
        assert_eq!(mode_of_content_type("Application/CloudEvents-Batch+JSON"), Some(Mode::Batch));
        assert_eq!(mode_of_content_type("application/json"), None);
        assert_eq!(mode_of_content_type(""), None);
    }

    #[test]
    fn a_ticket_cloudevent_becomes_the_ticket_event() {
        let event = to_event(&ticket_event()).unwrap();
        let Event::TicketTime(t) = &event else { panic!("{event:?}") };
        assert_eq!(t.header.event_id, "task-7");
        assert_eq!(t.header.source, "glpi-main");
        assert_eq!(t.header.tenant, "acme");
        assert_eq!(t.header.event_time.to_rfc3339(), "2026-01-12T10:45:00+00:00");
        assert_eq!(t.ticket_type, TicketType::Incident);
        assert_eq!(t.minutes_worked, 165);
        // Exactly what the file collector makes of the same line.
        let mut line = ticket_data();
        line["event_id"] = json!("task-7");
        line["source"] = json!("glpi-main");
        assert_eq!(event, collector_file::parse_line(EventKind::TicketTime, &line.to_string()).unwrap());
    }

    #[test]
    fn time_is_the_event_time_when_data_has_none() {
        let ce = with(ticket_event(), &["data", "event_time"], None);
        let ce = with(ce, &["time"], Some(json!("2026-01-12T11:45:00+01:00")));
        let event = to_event(&ce).unwrap();
        assert_eq!(event.header().event_time.to_rfc3339(), "2026-01-12T10:45:00+00:00");
        // Both given and equal (as instants): fine. Different: refused.
        assert!(to_event(&with(ticket_event(), &["time"], Some(json!("2026-01-12T10:45:00Z")))).is_ok());
        let err = to_event(&with(ticket_event(), &["time"], Some(json!("2026-01-12T10:46:00Z")))).unwrap_err();
        assert_eq!(err.reason, "time_mismatch");
        // Neither: the event has no time.
        let err = to_event(&with(ticket_event(), &["data", "event_time"], None)).unwrap_err();
        assert_eq!(err.reason, "malformed_data");
        assert!(err.error.contains("event_time"), "{}", err.error);
    }

    #[test]
    fn id_and_source_in_data_must_match_the_attributes() {
        let same = with(ticket_event(), &["data", "event_id"], Some(json!("task-7")));
        let same = with(same, &["data", "source"], Some(json!("glpi-main")));
        assert!(to_event(&same).is_ok());
        let err = to_event(&with(ticket_event(), &["data", "event_id"], Some(json!("task-8")))).unwrap_err();
        assert_eq!((err.reason, err.kind), ("id_mismatch", Some(EventKind::TicketTime)));
        let err = to_event(&with(ticket_event(), &["data", "source"], Some(json!("other")))).unwrap_err();
        assert_eq!(err.reason, "source_mismatch");
    }

    #[test]
    fn required_attributes_and_their_values_are_checked() {
        for (name, bad, expected) in [
            ("specversion", None, "required attribute `specversion`"),
            ("specversion", Some(json!("0.3")), "specversion must be \"1.0\""),
            ("id", None, "required attribute `id`"),
            ("id", Some(json!("")), "`id` must not be empty"),
            ("id", Some(json!(7)), "`id` must be a string"),
            ("source", None, "required attribute `source`"),
            ("type", None, "required attribute `type`"),
            ("time", Some(json!("yesterday")), "RFC 3339"),
            ("datacontenttype", Some(json!("application/xml")), "datacontenttype"),
            ("data_base64", Some(json!("e30=")), "data_base64"),
            ("event_id", Some(json!("task-7")), "event fields go in `data`"),
        ] {
            let err = to_event(&with(ticket_event(), &[name], bad.clone())).unwrap_err();
            assert_eq!(err.reason, "malformed_cloudevent", "{name} = {bad:?}: {err:?}");
            assert!(err.error.contains(expected), "{name} = {bad:?}: {:?} should contain {expected:?}", err.error);
        }
        let err = to_event(&with(ticket_event(), &["type"], Some(json!("com.example.other")))).unwrap_err();
        assert_eq!((err.reason, err.kind), ("unknown_type", None));
        assert!(err.error.contains("io.meter.ticket_time"), "{}", err.error);
        assert_eq!(to_event(&json!([1])).unwrap_err().reason, "malformed_cloudevent");
        // Extensions and optional attributes are fine.
        let extended = with(ticket_event(), &["traceparent"], Some(json!("00-abc")));
        assert!(to_event(&with(extended, &["subject"], Some(json!("task 7")))).is_ok());
    }

    #[test]
    fn data_is_checked_like_a_collector_line() {
        assert_eq!(to_event(&with(ticket_event(), &["data"], None)).unwrap_err().reason, "malformed_data");
        assert_eq!(to_event(&with(ticket_event(), &["data"], Some(json!("text")))).unwrap_err().reason, "malformed_data");
        let err = to_event(&with(ticket_event(), &["data", "domian"], Some(json!("x")))).unwrap_err();
        assert_eq!(err.reason, "unknown_field");
        let err = to_event(&with(ticket_event(), &["data", "minutes_worked"], Some(json!(-3)))).unwrap_err();
        assert_eq!(err.reason, "invalid_event");
        assert!(err.error.contains("minutes_worked"), "{}", err.error);
        let err = to_event(&with(ticket_event(), &["data", "minutes_worked"], Some(json!("lots")))).unwrap_err();
        assert_eq!(err.reason, "malformed_data");
        // A ticket's data under the VM type is refused by the VM schema.
        let err = to_event(&with(ticket_event(), &["type"], Some(json!("io.meter.vm_usage")))).unwrap_err();
        assert_eq!((err.reason, err.kind), ("unknown_field", Some(EventKind::VmUsage)));
    }

    #[test]
    fn the_other_kinds_map_too() {
        let vm = json!({
            "specversion": "1.0", "id": "vm-1-s1", "source": "vmware", "type": "io.meter.vm_usage",
            "time": "2026-01-12T10:00:00Z",
            "data": { "tenant": "acme", "subsidiary": "acme-fr", "domain": "hosting", "vm_id": "vm-1", "vcpu": 4,
                "ram_mib": 8192, "storage_gb": 100, "bandwidth_mbps": 100, "sla_tier": "SLA_99_9",
                "datacenter": "par1", "transition": "SAMPLE", "sample_interval_seconds": 3600 }
        });
        assert_eq!(to_event(&vm).unwrap().kind(), EventKind::VmUsage);
        let check = json!({
            "specversion": "1.0", "id": "run-1", "source": "icinga", "type": "io.meter.check_result",
            "data": { "tenant": "acme", "subsidiary": "acme-fr", "domain": "supervision", "event_time": "2026-01-12T10:00:00Z",
                "check_id": "backup", "check_name": "Backup", "target": "srv-1", "frequency": "DAILY",
                "executed_time": "2026-01-12T10:00:00Z", "status": "OK" }
        });
        assert_eq!(to_event(&check).unwrap().kind(), EventKind::CheckResult);
    }

    #[test]
    fn the_claimed_tenant_is_read_before_validation() {
        let ce = with(ticket_event(), &["data", "minutes_worked"], Some(json!(-3)));
        assert_eq!(claimed_tenant(&ce), Some("acme"));
        assert_eq!(claimed_tenant(&json!({"data": "x"})), None);
        assert_eq!(id_of(&ce), Some("task-7"));
    }
}
