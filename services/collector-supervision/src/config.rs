//! The supervision collector's file (`meter collect supervision
//! --supervision-config FILE`; every key, documented:
//! `config/supervision.example.toml`). Unknown keys are refused.
//!
//! [`SupervisionConfig`] is the file as written; [`Settings`] is it checked
//! and resolved (tokens read from the environment, patterns compiled, the
//! schedule's time zones and targets looked up).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use meter_auth::TokenTable;
use meter_config::MeterConfig;
use meter_model::CheckFrequency;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::schedule::{Due, Schedule, ScheduledCheck};
use crate::SupervisionError;

/// The key under `[checks]` that host check results (type Host) are looked up with.
pub const HOST_CHECK_KEY: &str = "_host";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// `source` of the events (with the event id, what deduplication keys
    /// on). One name per supervision system; never change it. Default "supervision".
    #[serde(default = "default_source")]
    pub source: String,
    /// Address of the HTTP endpoint. Default "127.0.0.1:9610".
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted, in bytes. Default 1048576.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most check results in one NRDP request; more get 413. Default 1000.
    #[serde(default = "default_max_results_per_request")]
    pub max_results_per_request: usize,
    /// Longest time a request may take, reading its body included; slower
    /// ones get 408. Default 30.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// Requests handled at once; the others wait for a slot (within the
    /// timeout). Default 64.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Regular expression finding a ticket reference in plugin output; the
    /// first capture group is the reference.
    #[serde(default = "default_ticket_pattern")]
    pub ticket_pattern: String,
    #[serde(default)]
    pub missed: MissedConfig,
    /// The Icinga 2 event stream to follow (none when absent).
    #[serde(default)]
    pub icinga: Option<IcingaConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Host name -> who pays for its checks.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostTarget>,
    /// Hosts by name pattern, for hosts not listed in `hosts`; the first
    /// matching group wins.
    #[serde(default)]
    pub host_groups: Vec<HostGroup>,
    /// Service name (or "host!service", which wins; or "_host" for host
    /// checks) -> the check it is.
    #[serde(default)]
    pub checks: BTreeMap<String, CheckMapping>,
    /// The checks each contract schedules (missed runs become MISSED events).
    #[serde(default)]
    pub schedule: Vec<ScheduleEntry>,
}

fn default_source() -> String {
    "supervision".into()
}
fn default_listen() -> String {
    "127.0.0.1:9610".into()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_results_per_request() -> usize {
    1000
}
fn default_request_timeout_seconds() -> u64 {
    30
}
fn default_max_concurrent_requests() -> usize {
    64
}
/// `ticket #12345`, `ticket: INC-42`, `[TICKET:12345]` (any case).
pub fn default_ticket_pattern() -> String {
    r"(?i)(?:\bticket\s*(?:#|:|n°)\s*|\[ticket:\s*)([A-Za-z0-9][A-Za-z0-9_-]*)".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissedConfig {
    /// Publish MISSED events for scheduled runs that never reported.
    pub enabled: bool,
    /// How often the schedule is evaluated, in seconds.
    pub interval_seconds: u64,
    /// Deadlines up to this many hours back are evaluated.
    pub lookback_hours: u64,
}

impl Default for MissedConfig {
    fn default() -> Self {
        MissedConfig { enabled: true, interval_seconds: 60, lookback_hours: 72 }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcingaConfig {
    /// Base URL of the Icinga 2 API, without /v1 (e.g. "https://icinga.example.com:5665").
    #[serde(with = "meter_config::typed::http_url")]
    pub url: url::Url,
    /// API user with the `events/*` permission. Default "meter".
    #[serde(default = "default_icinga_user")]
    pub user: String,
    /// Its password; `METER_ICINGA_PASSWORD` wins (keep secrets out of files).
    #[serde(default)]
    pub password: String,
    /// Event queue name (one per collector instance). Default "meter-supervision".
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Optional Icinga filter expression on the events (e.g. `match("meter-*", event.service)`).
    #[serde(default)]
    pub filter: Option<String>,
    /// PEM file of the CA that signed the Icinga API certificate
    /// (`/var/lib/icinga2/certs/ca.crt` on the Icinga master).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Check that the certificate names the host of `url`. Default true; set
    /// false with `ca_file` when connecting by IP address to a certificate
    /// issued to the node name.
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
    /// LOCAL TESTING ONLY: accept any certificate (no verification at all).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Longest wait between reconnections, in seconds. Default 60.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_seconds: u64,
}

impl IcingaConfig {
    /// Its TLS keys as the setting every collector client shares.
    pub fn tls(&self) -> meter_config::TlsConfig {
        meter_config::TlsConfig {
            ca_file: self.ca_file.clone(),
            verify_hostname: self.verify_hostname,
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

/// What `Debug` shows of a secret.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for IcingaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcingaConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { REDACTED })
            .field("queue", &self.queue)
            .field("filter", &self.filter)
            .field("ca_file", &self.ca_file)
            .field("verify_hostname", &self.verify_hostname)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("reconnect_max_seconds", &self.reconnect_max_seconds)
            .finish()
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("token_env", &self.token_env)
            .field("tenants", &self.tenants)
            .finish()
    }
}

fn default_icinga_user() -> String {
    "meter".into()
}
fn default_queue() -> String {
    "meter-supervision".into()
}
fn default_true() -> bool {
    true
}
fn default_reconnect_max() -> u64 {
    60
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who uses it (for logs).
    pub name: String,
    /// The secret, or...
    #[serde(default)]
    pub token: Option<String>,
    /// ...the environment variable holding it.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Tenants it may write results for; "*" for all.
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTarget {
    pub tenant: String,
    pub subsidiary: String,
    /// Technical domain: infrastructure, workstation, network, software, security.
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostGroup {
    pub name: String,
    /// Host name patterns, `*` matching any characters ("*.acme.local").
    pub hosts: Vec<String>,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckMapping {
    pub check_id: String,
    pub check_name: String,
    pub frequency: CheckFrequency,
    /// Technician minutes a run represents (billed with the run). Default 0.
    #[serde(default)]
    pub time_spent_minutes: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    pub check_id: String,
    /// The host the check runs on (must be mapped by `hosts` or `host_groups`).
    pub host: String,
    pub frequency: CheckFrequency,
    /// Local due time, "HH:MM".
    pub due_time: String,
    /// WEEKLY: "MON".."SUN".
    #[serde(default)]
    pub due_weekday: Option<String>,
    /// MONTHLY, SEMESTRIAL, YEARLY: day of the month, 1 to 31 (clamped to the month's last day).
    #[serde(default)]
    pub due_day: Option<u32>,
    /// SEMESTRIAL: 1 to 6 (and six months later); YEARLY: 1 to 12.
    #[serde(default)]
    pub due_month: Option<u32>,
    /// Minutes after the deadline a run still counts. Default 0.
    #[serde(default)]
    pub grace_minutes: u32,
    /// IANA zone of the due time. Default: the tenant's `time_zone` in the
    /// meter config, else `aggregator.default_time_zone`.
    #[serde(default, with = "meter_config::typed::zone::option")]
    pub time_zone: Option<Tz>,
    /// First local day the schedule applies ("2026-01-01").
    #[serde(default)]
    pub starts: Option<NaiveDate>,
    /// Default: the `check_name` of the `[checks]` entry with this check_id.
    #[serde(default)]
    pub check_name: Option<String>,
}

/// Who may write results for which tenants (its secret is kept only as a
/// digest, in [`meter_auth::TokenTable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    /// `None`: every tenant.
    tenants: Option<BTreeSet<String>>,
}

impl Token {
    pub fn allows(&self, tenant: &str) -> bool {
        match &self.tenants {
            None => true,
            Some(t) => t.contains(tenant),
        }
    }
}

/// The checked, resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: String,
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_results_per_request: usize,
    pub request_timeout: std::time::Duration,
    pub max_concurrent_requests: usize,
    pub missed: MissedConfig,
    pub icinga: Option<IcingaConfig>,
    pub schedule: Schedule,
    ticket: Regex,
    tokens: TokenTable<Token>,
    hosts: BTreeMap<String, HostTarget>,
    groups: Vec<(Regex, HostTarget)>,
    checks: BTreeMap<String, CheckMapping>,
}

fn glob(pattern: &str) -> Result<Regex, String> {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join(".*"))).map_err(|e| format!("host pattern {pattern:?}: {e}"))
}

fn non_empty(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{what} must not be empty"))
    } else {
        Ok(())
    }
}

fn target_ok(what: &str, t: &HostTarget) -> Result<(), String> {
    non_empty(&format!("{what}.tenant"), &t.tenant)?;
    non_empty(&format!("{what}.subsidiary"), &t.subsidiary)?;
    non_empty(&format!("{what}.domain"), &t.domain)
}

fn weekday(text: &str) -> Result<Weekday, String> {
    text.parse::<Weekday>().map_err(|_| format!("due_weekday {text:?} is not a week day (MON..SUN)"))
}

impl SupervisionConfig {
    /// Reads and checks the file (see [`Settings::resolve`]).
    pub fn load(path: &Path) -> Result<Self, SupervisionError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SupervisionError::Read { path: shown.clone(), source })?;
        toml::from_str(&text).map_err(|e| SupervisionError::Config { path: shown, message: e.to_string() })
    }
}

impl Settings {
    /// Reads, checks and resolves the file against the meter configuration
    /// (tenant time zones).
    pub fn load(path: &Path, meter: &MeterConfig) -> Result<Self, SupervisionError> {
        let config = SupervisionConfig::load(path)?;
        Settings::resolve(config, meter)
            .map_err(|message| SupervisionError::Config { path: path.display().to_string(), message })
    }

    /// Checks the values and resolves them; the message names the key.
    pub fn resolve(config: SupervisionConfig, meter: &MeterConfig) -> Result<Self, String> {
        non_empty("source", &config.source)?;
        if !(1024..=64 * 1024 * 1024).contains(&config.max_body_bytes) {
            return Err(format!("max_body_bytes must be between 1024 and 67108864, got {}", config.max_body_bytes));
        }
        if !(1..=100_000).contains(&config.max_results_per_request) {
            return Err(format!("max_results_per_request must be between 1 and 100000, got {}", config.max_results_per_request));
        }
        if !(1..=3600).contains(&config.request_timeout_seconds) {
            return Err(format!("request_timeout_seconds must be between 1 and 3600, got {}", config.request_timeout_seconds));
        }
        if !(1..=100_000).contains(&config.max_concurrent_requests) {
            return Err(format!("max_concurrent_requests must be between 1 and 100000, got {}", config.max_concurrent_requests));
        }
        let ticket = Regex::new(&config.ticket_pattern).map_err(|e| format!("ticket_pattern: {e}"))?;
        if ticket.captures_len() < 2 {
            return Err("ticket_pattern needs a capture group: the ticket reference".into());
        }
        if config.missed.interval_seconds == 0 || config.missed.lookback_hours == 0 {
            return Err("missed.interval_seconds and missed.lookback_hours must be at least 1".into());
        }
        let mut icinga = config.icinga.clone();
        if let Some(i) = icinga.as_mut() {
            if let Ok(password) = std::env::var("METER_ICINGA_PASSWORD") {
                i.password = password;
            }
            non_empty("icinga.user", &i.user)?;
            non_empty("icinga.queue", &i.queue)?;
            if i.reconnect_max_seconds == 0 {
                return Err("icinga.reconnect_max_seconds must be at least 1".into());
            }
        }
        let mut tokens = TokenTable::new();
        for t in &config.tokens {
            let secret = match (&t.token, &t.token_env) {
                (Some(s), None) => s.clone(),
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| format!("tokens {:?}: environment variable {var} is not set", t.name))?,
                _ => return Err(format!("tokens {:?}: give exactly one of token and token_env", t.name)),
            };
            if t.tenants.is_empty() {
                return Err(format!("tokens {:?}: list the tenants it may write for (or \"*\")", t.name));
            }
            let tenants = if t.tenants.iter().any(|x| x == "*") { None } else { Some(t.tenants.iter().cloned().collect()) };
            tokens
                .insert(&t.name, &secret, Token { name: t.name.clone(), tenants })
                .map_err(|e| format!("tokens {:?}: {e}", t.name))?;
        }
        for (host, target) in &config.hosts {
            target_ok(&format!("hosts.{host:?}"), target)?;
        }
        let mut groups = Vec::new();
        for g in &config.host_groups {
            let target = HostTarget { tenant: g.tenant.clone(), subsidiary: g.subsidiary.clone(), domain: g.domain.clone() };
            target_ok(&format!("host_groups {:?}", g.name), &target)?;
            if g.hosts.is_empty() {
                return Err(format!("host_groups {:?}: hosts must list at least one pattern", g.name));
            }
            for p in &g.hosts {
                groups.push((glob(p)?, target.clone()));
            }
        }
        for (key, c) in &config.checks {
            non_empty(&format!("checks.{key:?}.check_id"), &c.check_id)?;
            non_empty(&format!("checks.{key:?}.check_name"), &c.check_name)?;
            if c.time_spent_minutes < 0 {
                return Err(format!("checks.{key:?}.time_spent_minutes must not be negative"));
            }
        }
        let mut settings = Settings {
            source: config.source.clone(),
            listen: config.listen.clone(),
            max_body_bytes: config.max_body_bytes,
            max_results_per_request: config.max_results_per_request,
            request_timeout: std::time::Duration::from_secs(config.request_timeout_seconds),
            max_concurrent_requests: config.max_concurrent_requests,
            missed: config.missed.clone(),
            icinga,
            schedule: Schedule { source: config.source.clone(), checks: Vec::new() },
            ticket,
            tokens,
            hosts: config.hosts.clone(),
            groups,
            checks: config.checks.clone(),
        };
        for (i, entry) in config.schedule.iter().enumerate() {
            let check = settings
                .scheduled_check(entry, meter)
                .map_err(|e| format!("schedule entry {} ({} on {}): {e}", i + 1, entry.check_id, entry.host))?;
            if settings.schedule.find(&check.check_id, &check.host).is_some() {
                return Err(format!("schedule entry {}: {} on {} is scheduled twice", i + 1, entry.check_id, entry.host));
            }
            settings.schedule.checks.push(check);
        }
        Ok(settings)
    }

    fn scheduled_check(&self, e: &ScheduleEntry, meter: &MeterConfig) -> Result<ScheduledCheck, String> {
        non_empty("check_id", &e.check_id)?;
        let target = self.target(&e.host).ok_or("the host is not mapped by hosts or host_groups")?.clone();
        let time = NaiveTime::parse_from_str(&e.due_time, "%H:%M").map_err(|_| format!("due_time {:?} is not HH:MM", e.due_time))?;
        let only = |name: &str, present: bool, wanted: bool| -> Result<(), String> {
            match (present, wanted) {
                (true, false) => Err(format!("{name} does not apply to {:?}", e.frequency)),
                (false, true) => Err(format!("{name} is required for {:?}", e.frequency)),
                _ => Ok(()),
            }
        };
        use CheckFrequency::*;
        only("due_weekday", e.due_weekday.is_some(), e.frequency == Weekly)?;
        only("due_day", e.due_day.is_some(), matches!(e.frequency, Monthly | Semestrial | Yearly))?;
        only("due_month", e.due_month.is_some(), matches!(e.frequency, Semestrial | Yearly))?;
        let day = e.due_day.unwrap_or(1);
        if !(1..=31).contains(&day) {
            return Err(format!("due_day must be 1 to 31, got {day}"));
        }
        let month = e.due_month.unwrap_or(1);
        let due = match e.frequency {
            Daily => Due::Daily { time },
            Weekly => Due::Weekly { weekday: weekday(e.due_weekday.as_deref().unwrap_or_default())?, time },
            Monthly => Due::Monthly { day, time },
            Semestrial if (1..=6).contains(&month) => Due::Semestrial { month, day, time },
            Semestrial => return Err(format!("due_month of a SEMESTRIAL check is 1 to 6 (and six months later), got {month}")),
            Yearly if (1..=12).contains(&month) => Due::Yearly { month, day, time },
            Yearly => return Err(format!("due_month must be 1 to 12, got {month}")),
        };
        let grace = Duration::minutes(i64::from(e.grace_minutes));
        if grace >= due.shortest_period() {
            return Err(format!("grace_minutes ({}) must be shorter than the period", e.grace_minutes));
        }
        let time_zone = e.time_zone.unwrap_or_else(|| meter.calendar().zone(&target.tenant));
        let check_name = match &e.check_name {
            Some(n) => n.clone(),
            None => self
                .checks
                .values()
                .find(|c| c.check_id == e.check_id)
                .map(|c| c.check_name.clone())
                .ok_or("no [checks] entry has this check_id: give check_name")?,
        };
        Ok(ScheduledCheck {
            check_id: e.check_id.clone(),
            check_name,
            host: e.host.clone(),
            tenant: target.tenant,
            subsidiary: target.subsidiary,
            domain: target.domain,
            due,
            grace,
            time_zone,
            starts: e.starts,
        })
    }

    /// Who pays for a host's checks: `hosts`, else the first matching host group.
    pub fn target(&self, host: &str) -> Option<&HostTarget> {
        self.hosts.get(host).or_else(|| self.groups.iter().find(|(re, _)| re.is_match(host)).map(|(_, t)| t))
    }

    /// The check a service of a host is ("host!service" first, then
    /// "service"; host checks use [`HOST_CHECK_KEY`]).
    pub fn check(&self, host: &str, service: Option<&str>) -> Option<&CheckMapping> {
        let key = service.unwrap_or(HOST_CHECK_KEY);
        self.checks.get(&format!("{host}!{key}")).or_else(|| self.checks.get(key))
    }

    /// The token presented, if it is one of the configured ones (digests
    /// compared in constant time, every one of them: [`meter_auth`]).
    pub fn token(&self, presented: &str) -> Option<&Token> {
        self.tokens.find(presented)
    }

    /// The token of an `Authorization: Bearer TOKEN` header value.
    pub fn bearer_token(&self, authorization: Option<&str>) -> Option<&Token> {
        self.tokens.authorize(authorization)
    }

    /// The ticket reference in plugin output, if the pattern finds one.
    pub fn ticket_in(&self, output: &str) -> Option<String> {
        self.ticket.captures(output).and_then(|c| c.get(1)).map(|m| m.as_str().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../config/supervision.example.toml");

    fn meter() -> MeterConfig {
        let mut m = MeterConfig::default();
        m.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: chrono_tz::Europe::Paris, period_grace_days: None });
        m
    }

    fn resolve(text: &str) -> Result<Settings, String> {
        Settings::resolve(toml::from_str(text).map_err(|e| e.to_string())?, &meter())
    }

    const BASE: &str = r#"
[[tokens]]
name = "acme"
token = "acme-secret-0000001"
tenants = ["acme"]

[hosts."dc01.acme.local"]
tenant = "acme"
subsidiary = "acme-fr"
domain = "infrastructure"

[[host_groups]]
name = "acme-de"
hosts = ["*.acme.de", "fw-de-*"]
tenant = "acme"
subsidiary = "acme-de"
domain = "network"

[checks.ad-health]
check_id = "acme-ad"
check_name = "Active Directory"
frequency = "WEEKLY"

[checks."dc01.acme.local!backup"]
check_id = "acme-backup-dc01"
check_name = "Backup jobs"
frequency = "DAILY"

[checks.backup]
check_id = "acme-backup"
check_name = "Backup jobs"
frequency = "DAILY"
"#;

    #[test]
    fn the_example_file_parses_and_resolves() {
        std::env::set_var("METER_SUPERVISION_TOKEN_PROVIDER", "provider-secret-from-env");
        let settings = resolve(EXAMPLE).unwrap();
        assert!(!settings.schedule.checks.is_empty());
        assert!(settings.icinga.is_some());
        assert!(settings.token("provider-secret-from-env").is_some_and(|t| t.allows("anyone")));
    }

    #[test]
    fn omitted_keys_take_the_documented_defaults() {
        let c: SupervisionConfig = toml::from_str("").unwrap();
        assert_eq!((c.source.as_str(), c.listen.as_str(), c.max_body_bytes), ("supervision", "127.0.0.1:9610", 1048576));
        assert_eq!((c.max_results_per_request, c.request_timeout_seconds, c.max_concurrent_requests), (1000, 30, 64));
        assert_eq!(c.missed, MissedConfig { enabled: true, interval_seconds: 60, lookback_hours: 72 });
        let i: IcingaConfig = toml::from_str("url = \"https://127.0.0.1:5665\"").unwrap();
        assert_eq!((i.user.as_str(), i.queue.as_str(), i.verify_hostname, i.insecure_skip_verify), ("meter", "meter-supervision", true, false));
    }

    #[test]
    fn hosts_groups_and_checks_are_looked_up_most_specific_first() {
        let s = resolve(BASE).unwrap();
        assert_eq!(s.target("dc01.acme.local").unwrap().subsidiary, "acme-fr");
        assert_eq!(s.target("sql.acme.de").unwrap().subsidiary, "acme-de");
        assert_eq!(s.target("fw-de-01").unwrap().domain, "network");
        assert!(s.target("acme.de").is_none(), "*.acme.de needs a dot before");
        assert!(s.target("unknown").is_none());
        assert_eq!(s.check("dc01.acme.local", Some("backup")).unwrap().check_id, "acme-backup-dc01");
        assert_eq!(s.check("sql.acme.de", Some("backup")).unwrap().check_id, "acme-backup");
        assert!(s.check("sql.acme.de", None).is_none());
    }

    #[test]
    fn tokens_are_bound_to_their_tenants() {
        let s = resolve(BASE).unwrap();
        let t = s.token("acme-secret-0000001").unwrap();
        assert!(t.allows("acme") && !t.allows("globex"));
        assert!(s.token("acme-secret-0000002").is_none());
        assert!(s.token("").is_none());
        assert_eq!(s.bearer_token(Some("Bearer acme-secret-0000001")).map(|t| t.name.as_str()), Some("acme"));
        assert!(s.bearer_token(Some("Basic acme-secret-0000001")).is_none());
    }

    #[test]
    fn debug_output_hides_tokens_and_the_icinga_password() {
        let text = format!("[icinga]\nurl = \"https://127.0.0.1:5665\"\npassword = \"icinga-api-password\"\n{BASE}");
        let config: SupervisionConfig = toml::from_str(&text).unwrap();
        let settings = Settings::resolve(config.clone(), &meter()).unwrap();
        for shown in [format!("{config:?}"), format!("{settings:?}")] {
            assert!(!shown.contains("acme-secret-0000001"), "{shown}");
            assert!(!shown.contains("icinga-api-password"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn ticket_references_are_found_in_output() {
        let s = resolve(BASE).unwrap();
        assert_eq!(s.ticket_in("CRITICAL: backup failed, ticket #12345 opened").as_deref(), Some("12345"));
        assert_eq!(s.ticket_in("KO [TICKET:2026-001] disk full").as_deref(), Some("2026-001"));
        assert_eq!(s.ticket_in("Ticket: INC-42").as_deref(), Some("INC-42"));
        assert_eq!(s.ticket_in("OK: all jobs done"), None);
        assert_eq!(s.ticket_in("ticketing system reachable"), None);
        let custom = resolve(&format!("ticket_pattern = 'GLPI-(\\d+)'\n{BASE}")).unwrap();
        assert_eq!(custom.ticket_in("KO, see GLPI-77").as_deref(), Some("77"));
        assert!(resolve(&format!("ticket_pattern = 'GLPI-\\d+'\n{BASE}")).unwrap_err().contains("capture group"));
    }

    #[test]
    fn schedule_entries_are_checked_and_take_the_tenant_zone() {
        let ok = format!(
            "{BASE}\n[[schedule]]\ncheck_id = \"acme-ad\"\nhost = \"dc01.acme.local\"\nfrequency = \"WEEKLY\"\ndue_time = \"10:00\"\ndue_weekday = \"MON\"\ngrace_minutes = 60\n"
        );
        let s = resolve(&ok).unwrap();
        let c = &s.schedule.checks[0];
        assert_eq!((c.time_zone, c.check_name.as_str(), c.subsidiary.as_str()), (chrono_tz::Europe::Paris, "Active Directory", "acme-fr"));
        for (from, to, why) in [
            ("due_weekday = \"MON\"", "due_weekday = \"LUN\"", "week day"),
            ("due_weekday = \"MON\"\n", "", "due_weekday is required"),
            ("due_time = \"10:00\"", "due_time = \"10h\"", "HH:MM"),
            ("host = \"dc01.acme.local\"", "host = \"nowhere\"", "not mapped"),
            ("grace_minutes = 60", "grace_minutes = 20000", "shorter than the period"),
            ("check_id = \"acme-ad\"\nhost", "check_id = \"acme-x\"\nhost", "give check_name"),
            ("grace_minutes = 60", "grace_minutes = 60\ndue_day = 3", "does not apply"),
            ("grace_minutes = 60", "grace_minutes = 60\ntime_zone = \"Paris\"", "unknown time zone"),
        ] {
            let text = ok.replace(from, to);
            let e = resolve(&text).unwrap_err();
            assert!(e.contains(why), "{to}: {e}");
        }
        let twice = format!("{ok}\n{}", &ok[ok.find("[[schedule]]").unwrap()..]);
        assert!(resolve(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_key() {
        assert!(toml::from_str::<SupervisionConfig>("sourc = \"x\"").is_err());
        // The rules of the ingest API (meter_auth): 16 characters at least, no spaces, never shared.
        assert!(resolve(&BASE.replace("acme-secret-0000001", "acme-secret-1")).unwrap_err().contains("at least 16 characters"));
        assert!(resolve(&BASE.replace("acme-secret-0000001", "acme secret 0000001")).unwrap_err().contains("spaces"));
        let shared = format!("{BASE}\n[[tokens]]\nname = \"other\"\ntoken = \"acme-secret-0000001\"\ntenants = [\"globex\"]\n");
        assert!(resolve(&shared).unwrap_err().contains("already given"));
        assert!(resolve(&BASE.replace("tenants = [\"acme\"]", "tenants = []")).unwrap_err().contains("tenants"));
        assert!(resolve(&BASE.replace("token = \"acme-secret-0000001\"", "token_env = \"METER_TEST_UNSET_VAR_XYZ\""))
            .unwrap_err()
            .contains("METER_TEST_UNSET_VAR_XYZ"));
        assert!(resolve(&BASE.replace("subsidiary = \"acme-fr\"", "subsidiary = \"\"")).unwrap_err().contains("subsidiary"));
        let url = resolve(&format!("[icinga]\nurl = \"127.0.0.1:5665\"\n{BASE}")).unwrap_err();
        assert!(url.contains("127.0.0.1:5665") && url.contains("http(s) URL"), "{url}");
    }
}
