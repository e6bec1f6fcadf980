//! Icinga 2: the `process-check-result` action body (as the Icinga 2 API
//! documents it: `type`, `filter` or `service`/`host`, `exit_status`,
//! `plugin_output`, `performance_data`, `check_source`, `execution_start`,
//! `execution_end`, plus meter's `ticket` extension), and the client of the
//! event stream (`POST /v1/events?types=CheckResult&queue=NAME`,
//! newline-delimited JSON).

use collector_runtime::{InternalEvent, RecordsSkipped};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::config::IcingaConfig;
use crate::app::AppState;
use crate::publish::Location;
use crate::results::{loggable, status_of, unix_seconds, whole, Incoming, StateCode};
use crate::perfdata::split_plugin_output;
use crate::SupervisionError;

/// `performance_data`: an array of items or one string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerfdataField {
    List(Vec<Value>),
    Text(String),
}

impl PerfdataField {
    fn items(self) -> (Vec<String>, Vec<String>) {
        match self {
            PerfdataField::Text(t) => (vec![t].into_iter().filter(|t| !t.trim().is_empty()).collect(), Vec::new()),
            PerfdataField::List(values) => {
                let mut items = Vec::new();
                let mut notes = Vec::new();
                for v in values {
                    match v {
                        Value::String(s) if !s.trim().is_empty() => items.push(s),
                        Value::String(_) => {}
                        other => notes.push(format!("performance data item {other} is not a string; ignored")),
                    }
                }
                (items, notes)
            }
        }
    }
}

/// A string or a number (`"ticket": 4711`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TextOrNumber {
    Text(String),
    Number(serde_json::Number),
}

impl TextOrNumber {
    fn text(self) -> String {
        match self {
            TextOrNumber::Text(t) => t,
            TextOrNumber::Number(n) => n.to_string(),
        }
    }
}

/// The body of `POST /v1/actions/process-check-result`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessCheckResult {
    #[serde(rename = "type", default)]
    pub object_type: Option<String>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub filter_vars: Option<Value>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    pub exit_status: f64,
    pub plugin_output: String,
    #[serde(default)]
    pub performance_data: Option<PerfdataField>,
    /// Accepted and ignored (Icinga keeps it for display).
    #[serde(default)]
    pub check_command: Option<Value>,
    #[serde(default)]
    pub check_source: Option<String>,
    #[serde(default)]
    pub execution_start: Option<f64>,
    #[serde(default)]
    pub execution_end: Option<f64>,
    /// Accepted and ignored (freshness checking is Icinga's business).
    #[serde(default)]
    pub ttl: Option<f64>,
    /// Accepted and ignored.
    #[serde(default)]
    pub pretty: Option<bool>,
    /// meter's extension: the ticket opened for this result.
    #[serde(default)]
    pub ticket: Option<TextOrNumber>,
}

fn filter_term() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r#"(host|service)\.name\s*==\s*"((?:[^"\\]|\\.)*)""#).expect("valid regex"))
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `host.name=="H" && service.name=="S"` (either order, or only the
/// host), the filters Icinga clients send with process-check-result.
pub fn parse_filter(filter: &str) -> Result<(Option<String>, Option<String>), String> {
    let (mut host, mut service) = (None, None);
    for c in filter_term().captures_iter(filter) {
        let slot = if &c[1] == "host" { &mut host } else { &mut service };
        if slot.is_some() {
            return Err(format!("filter names the {} twice", &c[1]));
        }
        *slot = Some(unescape(&c[2]));
    }
    let rest = filter_term().replace_all(filter, "");
    let rest = rest.replace("&&", "");
    if host.is_none() || !rest.trim().is_empty() {
        return Err(format!(
            "unsupported filter {filter:?}: use host.name==\"HOST\" && service.name==\"SERVICE\" (or \"service\": \"HOST!SERVICE\")"
        ));
    }
    Ok((host, service))
}

/// Reads a process-check-result body into a result; the notes are about
/// performance data that is not readable (the result still counts).
pub fn parse_action(body: &[u8]) -> Result<(Incoming, Vec<String>), String> {
    let action: ProcessCheckResult = serde_json::from_slice(body).map_err(|e| format!("invalid process-check-result body: {e}"))?;
    if action.filter_vars.is_some() {
        return Err("filter_vars is not supported: write the names in the filter, or use \"service\": \"HOST!SERVICE\"".into());
    }
    let object_type = match action.object_type.as_deref() {
        Some("Service") => Some(true),
        Some("Host") => Some(false),
        Some(other) => return Err(format!("type must be \"Service\" or \"Host\", got {other:?}")),
        None => None,
    };
    let (host, service) = match (&action.filter, &action.service, &action.host) {
        (Some(f), None, None) => parse_filter(f)?,
        (None, Some(s), None) => match s.split_once('!') {
            Some((h, s)) if !h.is_empty() && !s.is_empty() => (Some(h.to_string()), Some(s.to_string())),
            _ => return Err(format!("service must be \"HOST!SERVICE\", got {s:?}")),
        },
        (None, None, Some(h)) => (Some(h.clone()), None),
        (None, None, None) => return Err("name the checked object: filter, service (\"HOST!SERVICE\") or host".into()),
        _ => return Err("give only one of filter, service and host".into()),
    };
    let host = host.filter(|h| !h.trim().is_empty()).ok_or("the host name is empty")?;
    let is_service = match (object_type, &service) {
        (Some(true), None) => return Err("type is \"Service\" but no service is named".into()),
        (Some(false), Some(_)) => return Err("type is \"Host\" but a service is named".into()),
        (_, s) => s.is_some(),
    };
    let exit = whole(action.exit_status, "exit_status")?;
    let status = status_of(if is_service { StateCode::Service(exit) } else { StateCode::Host(exit) })?;
    let execution_start = action.execution_start.map(|t| unix_seconds(t, "execution_start")).transpose()?;
    let execution_end = action.execution_end.map(|t| unix_seconds(t, "execution_end")).transpose()?;
    if let (Some(s), Some(e)) = (execution_start, execution_end) {
        if e < s {
            return Err("execution_end is before execution_start".into());
        }
    }
    let (output, perfdata, notes) = match action.performance_data {
        Some(p) => {
            let (items, notes) = p.items();
            (action.plugin_output, items, notes)
        }
        // No separate performance data: the output may carry it after '|'.
        None => {
            let split = split_plugin_output(&action.plugin_output);
            (split.text, vec![split.perfdata].into_iter().filter(|p| !p.is_empty()).collect(), Vec::new())
        }
    };
    Ok((
        Incoming {
            host,
            service,
            status,
            output,
            perfdata,
            check_source: action.check_source,
            execution_start,
            execution_end,
            ticket: action.ticket.map(TextOrNumber::text),
        },
        notes,
    ))
}

#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    host: String,
    #[serde(default)]
    service: Option<String>,
    check_result: StreamCheckResult,
}

#[derive(Debug, Deserialize)]
struct StreamCheckResult {
    #[serde(default)]
    exit_status: Option<f64>,
    #[serde(default)]
    state: Option<f64>,
    #[serde(default)]
    output: String,
    #[serde(default)]
    performance_data: Option<PerfdataField>,
    #[serde(default)]
    check_source: Option<String>,
    #[serde(default)]
    execution_start: Option<f64>,
    #[serde(default)]
    execution_end: Option<f64>,
}

/// Reads one line of the event stream. `Ok(None)` for events that are not
/// check results.
pub fn parse_stream_line(line: &[u8]) -> Result<Option<Incoming>, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("invalid event stream line: {e}"))?;
    if value.get("type").and_then(Value::as_str) != Some("CheckResult") {
        return Ok(None);
    }
    let event: StreamEvent = serde_json::from_value(value).map_err(|e| format!("invalid CheckResult event: {e}"))?;
    debug_assert_eq!(event.kind, "CheckResult");
    let cr = event.check_result;
    // `state` is the service state the plugin's exit code gave (0..3), for hosts too.
    let code = cr.state.or(cr.exit_status).ok_or("the check result has neither state nor exit_status")?;
    let code = whole(code, "state")?;
    let service = event.service.filter(|s| !s.is_empty());
    let status = status_of(if service.is_some() { StateCode::Service(code) } else { StateCode::HostPluginExit(code) })?;
    let (perfdata, _) = cr.performance_data.map(PerfdataField::items).unwrap_or_default();
    Ok(Some(Incoming {
        host: event.host,
        service,
        status,
        output: cr.output,
        perfdata,
        check_source: cr.check_source,
        execution_start: cr.execution_start.filter(|t| *t > 0.0).map(|t| unix_seconds(t, "execution_start")).transpose()?,
        execution_end: cr.execution_end.filter(|t| *t > 0.0).map(|t| unix_seconds(t, "execution_end")).transpose()?,
        ticket: None,
    }))
}

fn client(config: &IcingaConfig, streaming: bool) -> Result<reqwest::Client, SupervisionError> {
    let options = collector_runtime::HttpClientOptions {
        // The event stream stays open: no whole-request timeout for it.
        timeout: (!streaming).then_some(Duration::from_secs(30)),
        ..Default::default()
    };
    collector_runtime::http_client(&config.tls(), &options).map_err(|e| match e {
        collector_runtime::HttpClientError::Build(source) => SupervisionError::Http { url: config.url.to_string(), source },
        other => SupervisionError::Config { path: "icinga.ca_file".into(), message: other.to_string() },
    })
}

fn api(config: &IcingaConfig, path: &str) -> String {
    format!("{}/v1/{path}", config.url.as_str().trim_end_matches('/'))
}

/// The node name of the Icinga instance (`/v1/status/IcingaApplication`):
/// the name of its own host object.
pub async fn node_name(config: &IcingaConfig) -> Result<String, SupervisionError> {
    let url = api(config, "status/IcingaApplication");
    let response = client(config, false)?
        .get(&url)
        .basic_auth(&config.user, Some(&config.password))
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|source| SupervisionError::Http { url: url.clone(), source })?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|source| SupervisionError::Http { url: url.clone(), source })?;
    if !status.is_success() {
        return Err(SupervisionError::Icinga { url, status: status.as_u16(), body: body.to_string() });
    }
    body.pointer("/results/0/status/icingaapplication/app/node_name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| SupervisionError::Icinga { url, status: status.as_u16(), body: "no node_name in the answer".into() })
}

/// What one event stream session did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub lines: u64,
    pub published: u64,
    /// Results of hosts or services the mapping does not bill (skipped).
    pub unmapped: u64,
    pub dead_lettered: u64,
    pub connections: u64,
}

/// Follows the event stream until `stop` completes, reconnecting with the
/// shared backoff (exponential with jitter, 1 s doubling up to
/// `reconnect_max_seconds`) when it ends or fails. Each CheckResult of a mapped host and service is published; those
/// of unmapped ones are skipped (a supervision server watches more than is
/// billed); unreadable or invalid ones are dead-lettered.
pub async fn follow(state: AppState, stop: impl std::future::Future<Output = ()>) -> StreamReport {
    let mut report = StreamReport::default();
    tokio::pin!(stop);
    let Some(config) = state.settings().icinga.clone() else {
        return report;
    };
    // The one backoff policy of the project (backon), with the stream's own cap.
    let policy = meter_config::RetryConfig { min_delay_ms: 1000, max_delay_ms: config.reconnect_max_seconds.saturating_mul(1000) };
    let mut delays = backon::BackoffBuilder::build(policy.backoff());
    loop {
        let session = tokio::select! {
            _ = &mut stop => return report,
            r = session(&state, &config, &mut report) => r,
        };
        if session.is_ok() {
            // A stream that ran and ended starts the backoff again.
            delays = backon::BackoffBuilder::build(policy.backoff());
        }
        let backoff = delays.next().unwrap_or(Duration::from_secs(config.reconnect_max_seconds));
        match session {
            Ok(()) => tracing::warn!(url = %config.url, "Icinga event stream ended; reconnecting"),
            Err(e) => tracing::error!(url = %config.url, error = %e, retry_in = ?backoff, "Icinga event stream failed"),
        }
        tokio::select! {
            _ = &mut stop => return report,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

async fn session(state: &AppState, config: &IcingaConfig, report: &mut StreamReport) -> Result<(), SupervisionError> {
    let url = api(config, "events");
    let mut query = vec![("types", "CheckResult".to_string()), ("queue", config.queue.clone())];
    if let Some(f) = &config.filter {
        query.push(("filter", f.clone()));
    }
    let mut response = client(config, true)?
        .post(&url)
        .query(&query)
        .basic_auth(&config.user, Some(&config.password))
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|source| SupervisionError::Http { url: url.clone(), source })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let hint = match status.as_u16() {
            401 => " (check icinga.user and the password, METER_ICINGA_PASSWORD)",
            403 => " (the API user needs the events/* permission)",
            _ => "",
        };
        return Err(SupervisionError::Icinga { url, status: status.as_u16(), body: format!("{body}{hint}") });
    }
    report.connections += 1;
    tracing::info!(url = %config.url, queue = %config.queue, "following the Icinga event stream");
    let location = Location::new(format!("{url}?queue={}", config.queue));
    let mut lines = LineBuffer::new(state.settings().max_body_bytes);
    while let Some(chunk) = response.chunk().await.map_err(|source| SupervisionError::Http { url: url.clone(), source })? {
        for line in lines.push(&chunk) {
            match line {
                Line::Complete(line) => {
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    report.lines += 1;
                    handle_line(state, line, &location, report).await?;
                }
                Line::TooLong { head, bytes } => {
                    report.lines += 1;
                    let error = format!("event stream line longer than {} bytes (max_body_bytes): {bytes} bytes dropped", lines.max);
                    tracing::warn!(%error, "Icinga event stream line too long");
                    state.publisher().dead_letter("line_too_long", &error, &head, &location, None).await?;
                    report.dead_lettered += 1;
                }
            }
        }
    }
    Ok(())
}

/// A line of the event stream, or what is kept of one over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Without its `\n`.
    Complete(Vec<u8>),
    /// Its first bytes (at most 1 KiB, for the dead letter), and its length.
    TooLong { head: Vec<u8>, bytes: usize },
}

/// Cuts a byte stream into lines: each byte is scanned once (the search for
/// the newline resumes where it stopped), and no more than `max` bytes are
/// held: a longer line is given as [`Line::TooLong`] and skipped to its end.
#[derive(Debug)]
pub struct LineBuffer {
    max: usize,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a newline.
    scanned: usize,
    /// In a line over the limit: its head and bytes so far.
    discarding: Option<(Vec<u8>, usize)>,
}

const HEAD_BYTES: usize = 1024;

impl LineBuffer {
    pub fn new(max: usize) -> Self {
        LineBuffer { max, buffer: Vec::new(), scanned: 0, discarding: None }
    }

    /// Bytes held, waiting for their newline.
    pub fn held(&self) -> usize {
        self.buffer.len()
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if let Some((head, bytes)) = self.discarding.as_mut() {
                match rest.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        *bytes += end;
                        out.push(Line::TooLong { head: std::mem::take(head), bytes: *bytes });
                        self.discarding = None;
                        rest = &rest[end + 1..];
                    }
                    None => {
                        *bytes += rest.len();
                        rest = &[];
                    }
                }
                continue;
            }
            let room = self.max.saturating_sub(self.buffer.len()).max(1);
            let take = rest.len().min(room);
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let mut start = 0;
            while let Some(found) = self.buffer[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + found;
                out.push(Line::Complete(self.buffer[start..end].to_vec()));
                start = end + 1;
                self.scanned = start;
            }
            self.buffer.drain(..start);
            self.scanned = self.buffer.len();
            if self.buffer.len() >= self.max {
                let head = self.buffer[..self.buffer.len().min(HEAD_BYTES)].to_vec();
                self.discarding = Some((head, self.buffer.len()));
                self.buffer.clear();
                self.scanned = 0;
            }
        }
        out
    }
}

async fn handle_line(state: &AppState, line: &[u8], location: &Location, report: &mut StreamReport) -> Result<(), SupervisionError> {
    let incoming = match parse_stream_line(line) {
        Ok(Some(i)) => i,
        Ok(None) => return Ok(()),
        Err(e) => {
            state.publisher().dead_letter("malformed_event", &e, line, location, None).await?;
            report.dead_lettered += 1;
            return Ok(());
        }
    };
    let received = Utc::now();
    if let Err(e) = incoming.perfdata_items() {
        tracing::debug!(object = %loggable(&incoming.object_name()), error = %loggable(&e.to_string()), "performance data not readable");
    }
    match crate::results::to_event(state.settings(), &incoming, received) {
        Ok(event) => {
            state.publisher().publish(vec![event]).await?;
            report.published += 1;
        }
        Err(e @ (crate::results::Unmapped::UnknownHost { .. } | crate::results::Unmapped::UnknownCheck { .. })) => {
            // Not dead-lettered (a supervision server watches more than is
            // billed: that would be most of the stream), but counted.
            report.unmapped += 1;
            let kind = meter_model::EventKind::CheckResult.slug();
            RecordsSkipped { kind, reason: e.reason(), count: 1 }.emit(state.publisher().metrics());
            tracing::debug!(object = %loggable(&incoming.object_name()), reason = e.reason(), "not in the mapping; skipped (counted)");
        }
        Err(e) => {
            state.publisher().dead_letter(e.reason(), &e.to_string(), line, location, None).await?;
            report.dead_lettered += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::CheckStatus;

    #[test]
    fn stream_lines_are_cut_across_chunks_and_the_buffer_is_capped() {
        let mut b = LineBuffer::new(64);
        assert_eq!(b.push(b"{\"a\":1}\n{\"b\""), vec![Line::Complete(b"{\"a\":1}".to_vec())]);
        assert_eq!(b.push(b":2}\r\n\n"), vec![Line::Complete(b"{\"b\":2}\r".to_vec()), Line::Complete(Vec::new())]);
        // A line that never ends: the buffer stays within the limit, the line is reported once, cut.
        for _ in 0..1000 {
            assert!(b.push(&[b'x'; 1000]).is_empty());
            assert!(b.held() <= 64, "held {}", b.held());
        }
        let out = b.push(b"xx\n{\"c\":3}\n");
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Line::TooLong { head, bytes } if head.len() == 64 && *bytes == 1_000_002), "{out:?}");
        assert_eq!(out[1], Line::Complete(b"{\"c\":3}".to_vec()));
    }

    #[test]
    fn many_short_lines_in_one_chunk_are_cut_in_one_pass() {
        let mut b = LineBuffer::new(1 << 20);
        let chunk: Vec<u8> = b"{}\n".repeat(200_000);
        let started = std::time::Instant::now();
        assert_eq!(b.push(&chunk).len(), 200_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn filters_name_the_host_and_service_in_either_order() {
        assert_eq!(
            parse_filter(r#"host.name=="dc01.acme.local" && service.name=="backup""#).unwrap(),
            (Some("dc01.acme.local".into()), Some("backup".into()))
        );
        assert_eq!(parse_filter(r#"service.name == "a \"b\"" && host.name == "h""#).unwrap(), (Some("h".into()), Some("a \"b\"".into())));
        assert_eq!(parse_filter(r#"host.name=="h""#).unwrap(), (Some("h".into()), None));
        assert!(parse_filter(r#"host.name=="h" || service.name=="s""#).is_err());
        assert!(parse_filter(r#"match("h*", host.name)"#).is_err());
        assert!(parse_filter(r#"service.name=="s""#).is_err());
    }

    #[test]
    fn an_action_body_with_a_filter_and_perfdata_list() {
        let body = br#"{"type":"Service","filter":"host.name==\"dc01\" && service.name==\"backup\"","exit_status":2,
            "plugin_output":"CRITICAL - job failed [TICKET:881]","performance_data":["time=3s;5;10","'files copied'=0c"],
            "check_source":"sat1","execution_start":1768197600,"execution_end":1768197603.25,"ttl":300,"check_command":["check_backup"]}"#;
        let (i, notes) = parse_action(body).unwrap();
        assert!(notes.is_empty());
        assert_eq!((i.host.as_str(), i.service.as_deref(), i.status), ("dc01", Some("backup"), CheckStatus::Ko));
        assert_eq!(i.output, "CRITICAL - job failed [TICKET:881]");
        assert_eq!(i.perfdata, vec!["time=3s;5;10".to_string(), "'files copied'=0c".to_string()]);
        assert_eq!(i.perfdata_items().unwrap()["files copied"].uom, "c");
        assert_eq!(i.execution_end.unwrap().timestamp_millis(), 1768197603250);
        assert_eq!(i.check_source.as_deref(), Some("sat1"));
    }

    #[test]
    fn an_action_body_naming_the_service_with_perfdata_in_the_output() {
        let body = br#"{"type":"Service","service":"dc01!backup","exit_status":0.0,"plugin_output":"OK - 3 jobs | jobs=3;;;0","ticket":4711}"#;
        let (i, _) = parse_action(body).unwrap();
        assert_eq!((i.output.as_str(), i.perfdata.clone()), ("OK - 3 jobs", vec!["jobs=3;;;0".to_string()]));
        assert_eq!((i.status, i.ticket.as_deref()), (CheckStatus::Ok, Some("4711")));
        let (h, _) = parse_action(br#"{"type":"Host","host":"dc01","exit_status":1,"plugin_output":"DOWN","performance_data":"rta=0ms"}"#).unwrap();
        assert_eq!((h.service, h.status, h.perfdata), (None, CheckStatus::Ko, vec!["rta=0ms".to_string()]));
    }

    #[test]
    fn bad_action_bodies_say_what_is_wrong() {
        for (body, why) in [
            (r#"{"type":"Service""#, "invalid process-check-result body"),
            (r#"{"type":"Service","service":"h!s","exit_status":0,"plugin_output":"x","exit_statu":1}"#, "unknown field"),
            (r#"{"type":"Service","service":"h!s","plugin_output":"x"}"#, "exit_status"),
            (r#"{"type":"Service","service":"h!s","exit_status":7,"plugin_output":"x"}"#, "got 7"),
            (r#"{"type":"Service","service":"h!s","exit_status":1.5,"plugin_output":"x"}"#, "whole number"),
            (r#"{"type":"Service","service":"hs","exit_status":0,"plugin_output":"x"}"#, "HOST!SERVICE"),
            (r#"{"type":"Service","host":"h","exit_status":0,"plugin_output":"x"}"#, "no service"),
            (r#"{"type":"Check","host":"h","exit_status":0,"plugin_output":"x"}"#, "type must be"),
            (r#"{"exit_status":0,"plugin_output":"x"}"#, "name the checked object"),
            (r#"{"service":"h!s","host":"h","exit_status":0,"plugin_output":"x"}"#, "only one"),
            (r#"{"service":"h!s","exit_status":0,"plugin_output":"x","execution_start":1768197600000}"#, "Unix seconds"),
            (r#"{"service":"h!s","exit_status":0,"plugin_output":"x","execution_start":1768197600,"execution_end":1768197500}"#, "before"),
            (r#"{"filter":"host.name==\"h\"","filter_vars":{},"exit_status":0,"plugin_output":"x"}"#, "filter_vars"),
        ] {
            let e = parse_action(body.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn event_stream_lines_of_services_and_hosts() {
        let line = br#"{"check_result":{"active":true,"check_source":"node1","command":["/bin/true"],"execution_end":1768197603.5,"execution_start":1768197603.4,"exit_status":0.0,"output":"meter local heartbeat","performance_data":[],"schedule_end":1768197603.5,"schedule_start":1768197603.0,"state":0.0,"ttl":0.0,"type":"CheckResult","vars_after":{"attempt":1.0,"reachable":true,"state":0.0,"state_type":1.0},"vars_before":{"attempt":1.0,"reachable":true,"state":0.0,"state_type":1.0}},"downtime_depth":0.0,"host":"node1","service":"meter-heartbeat","timestamp":1768197603.5,"type":"CheckResult","acknowledgement":false}"#;
        let i = parse_stream_line(line).unwrap().unwrap();
        assert_eq!((i.host.as_str(), i.service.as_deref(), i.status), ("node1", Some("meter-heartbeat"), CheckStatus::Ok));
        assert_eq!(i.execution_end.unwrap().timestamp_millis(), 1768197603500);
        let host = br#"{"check_result":{"exit_status":2.0,"state":2.0,"output":"CRITICAL - Host Unreachable","performance_data":["rta=0ms;3000;5000;0"],"execution_start":1768197603.0,"execution_end":1768197604.0},"host":"node1","timestamp":1768197604.0,"type":"CheckResult"}"#;
        let h = parse_stream_line(host).unwrap().unwrap();
        assert_eq!((h.service, h.status, h.perfdata.len()), (None, CheckStatus::Ko, 1));
        assert_eq!(parse_stream_line(br#"{"type":"StateChange","host":"x"}"#).unwrap(), None);
        assert!(parse_stream_line(b"{not json").is_err());
    }
}
