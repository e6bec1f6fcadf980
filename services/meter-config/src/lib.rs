//! Configuration shared by every service: one TOML file (see
//! `config/meter.toml`, which lists every key with its default), overridden
//! by environment variables `METER_<SECTION>__<KEY>` (for example
//! `METER_KAFKA__BROKERS=kafka:9092`, `METER_CLICKHOUSE__URL=...`).

pub mod capacity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use meter_model::EventKind;
use serde::{Deserialize, Serialize};
use url::Url;

pub mod typed;

pub use typed::ListenAddr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist; pass --config with an existing file, or omit it to use the defaults")]
    Missing { path: PathBuf },
    #[error("invalid configuration: {0}\n(hint: every key and its default is listed in config/meter.toml; environment overrides are METER_<SECTION>__<KEY>)")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Invalid(e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeterConfig {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub clickhouse: ClickHouseConfig,
    pub collector: CollectorConfig,
    pub aggregator: AggregatorConfig,
    pub sink: SinkConfig,
    pub retry: RetryConfig,
    pub contracts: ContractsConfig,
    pub log: LogConfig,
    /// Path of the price book used to rate usage into costs.
    pub price_book: PathBuf,
    /// Per-tenant settings, by tenant id.
    pub tenants: BTreeMap<String, TenantConfig>,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            kafka: KafkaConfig::default(),
            topics: TopicsConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            collector: CollectorConfig::default(),
            aggregator: AggregatorConfig::default(),
            sink: SinkConfig::default(),
            retry: RetryConfig::default(),
            contracts: ContractsConfig::default(),
            log: LogConfig::default(),
            price_book: PathBuf::from("config/price-book.toml"),
            tenants: BTreeMap::new(),
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Enable the idempotent producer (no duplicates on producer retries).
    pub idempotence: bool,
    /// How clients authenticate: "plaintext" (no authentication, the local
    /// stack), "sasl_plaintext" or "sasl_ssl" (SASL with `sasl_mechanism`).
    pub security_protocol: KafkaSecurityProtocol,
    /// SASL mechanism: SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN.
    pub sasl_mechanism: String,
    /// SASL user (a broker ACL principal `User:<name>`).
    pub sasl_username: String,
    /// SASL password: set it from the environment (METER_KAFKA__SASL_PASSWORD);
    /// redacted in logs and `meter config check`.
    pub sasl_password: String,
    /// Extra librdkafka properties passed as they are (e.g. ssl.ca.location).
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaSecurityProtocol {
    Plaintext,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaConfig {
    /// The librdkafka properties of the authentication settings (none for
    /// plaintext); `properties` may still override them.
    pub fn security_properties(&self) -> Vec<(&'static str, String)> {
        match self.security_protocol {
            KafkaSecurityProtocol::Plaintext => Vec::new(),
            protocol => vec![
                ("security.protocol", if protocol == KafkaSecurityProtocol::SaslSsl { "sasl_ssl" } else { "sasl_plaintext" }.into()),
                ("sasl.mechanism", self.sasl_mechanism.clone()),
                ("sasl.username", self.sasl_username.clone()),
                ("sasl.password", self.sasl_password.clone()),
            ],
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            idempotence: true,
            security_protocol: KafkaSecurityProtocol::Plaintext,
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub vm_usage: String,
    pub check_result: String,
    pub ticket_time: String,
    pub dead_letters: String,
    pub late_events: String,
    pub aggregates: String,
}

impl TopicsConfig {
    /// The topic carrying events of one kind.
    pub fn event(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::VmUsage => &self.vm_usage,
            EventKind::CheckResult => &self.check_result,
            EventKind::TicketTime => &self.ticket_time,
        }
    }

    /// The event kind a topic carries, if it is one of the event topics.
    pub fn kind_of(&self, topic: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| self.event(*k) == topic)
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            vm_usage: EventKind::VmUsage.spec().default_topic.into(),
            check_result: EventKind::CheckResult.spec().default_topic.into(),
            ticket_time: EventKind::TicketTime.spec().default_topic.into(),
            dead_letters: "meter.dead-letters".into(),
            late_events: "meter.late-events".into(),
            aggregates: "meter.aggregates".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClickHouseCompression {
    None,
    Lz4,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint.
    pub url: Url,
    pub database: String,
    pub user: String,
    pub password: String,
    /// Row-type validation against the server schema (needs a recent server;
    /// false for ClickHouse 18.x).
    pub validation: bool,
    /// HTTP compression: "none" or "lz4" (18.x returns empty results with lz4).
    pub compression: ClickHouseCompression,
    /// Folder of the server's `users.d`, where `meter tenants provision`
    /// writes each tenant's read-only user.
    pub users_d_dir: PathBuf,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: Url::parse("http://127.0.0.1:8123").expect("a valid literal URL"),
            database: "meter".into(),
            user: "default".into(),
            password: String::new(),
            validation: false,
            compression: ClickHouseCompression::None,
            users_d_dir: PathBuf::from(".stack/clickhouse/users.d"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address of the collector's /metrics endpoint ("" disables it).
    pub metrics_listen: ListenAddr,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig { metrics_listen: ListenAddr::local(9604) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// Consumer group shared by aggregator instances.
    pub group_id: String,
    /// Address of its /metrics endpoint ("" disables it).
    pub metrics_listen: ListenAddr,
    /// Time zone used for tenants without their own (IANA name).
    #[serde(with = "typed::zone")]
    pub default_time_zone: Tz,
    /// A tenant's billing month stays open (events revise its windows) until
    /// the wall clock passes its end plus this many days, in the tenant's
    /// zone; `[tenants.<id>] period_grace_days` overrides it.
    pub default_period_grace_days: u32,
    /// How far an event's `event_time` may be ahead of its `ingest_time`;
    /// further is a wrong clock or a unit mistake: dead-lettered.
    pub max_clock_skew_seconds: u64,
    /// How often the aggregator records its wall clock in each partition it
    /// owns (a control record): months close and running VMs are billed up to
    /// the day boundary at these records, so a rebuild decides the same.
    pub clock_record_seconds: u64,
    /// Open aggregates one tenant may hold in memory; an event that would
    /// open more is dead-lettered (free-text dimensions must not exhaust
    /// the aggregator).
    pub max_open_aggregates_per_tenant: usize,
    /// How long after a month closes its event ids are remembered, so that a
    /// correction of a closed event goes to the late topic instead of being
    /// counted as new.
    pub closed_event_retention_days: u32,
    /// How often changed aggregates are emitted (and the checkpoint saved).
    /// Half of it is the mean wait an event adds before it is visible.
    pub flush_interval_ms: u64,
    /// Flush interval while a partition is more than 20,000 records behind
    /// its end (a backlog or a replay): each flush costs about the same
    /// whatever it carries, so fewer of them replay faster. Not less than
    /// `flush_interval_ms`.
    pub catch_up_flush_interval_ms: u64,
    /// Longest time the broker may hold a fetch of the aggregator's consumer
    /// (librdkafka `fetch.wait.max.ms`; a `kafka.properties` entry wins):
    /// a broker that holds every fetch that long (Tansu) delays each event
    /// by up to this much.
    pub fetch_wait_max_ms: u64,
    /// Where per-partition state (windows, event ids, offsets) is checkpointed.
    pub state_dir: PathBuf,
    /// A partition of the group's topics that no instance of this one owns,
    /// with lag and no committed progress for this long, makes the instance
    /// leave and rejoin the group: the broker then rebuilds the assignment
    /// (some brokers keep a dead member's partitions assigned to it).
    pub stalled_partition_seconds: u64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            group_id: "meter-aggregator".into(),
            metrics_listen: ListenAddr::local(9601),
            default_time_zone: Tz::UTC,
            default_period_grace_days: 5,
            max_clock_skew_seconds: 3600,
            clock_record_seconds: 300,
            max_open_aggregates_per_tenant: 200_000,
            closed_event_retention_days: 62,
            flush_interval_ms: 250,
            catch_up_flush_interval_ms: 2000,
            fetch_wait_max_ms: 100,
            state_dir: PathBuf::from(".stack/aggregator-state"),
            stalled_partition_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Consumer group of the ClickHouse sink.
    pub group_id: String,
    /// Address of its /metrics endpoint ("" disables it).
    pub metrics_listen: ListenAddr,
    /// Rows of one flush at most, over the four tables (one INSERT per
    /// table per flush). ClickHouse writes a part per INSERT: fewer, larger
    /// ones cost it far less than many small ones.
    pub batch_rows: usize,
    /// Longest wait before a partial batch is written.
    pub flush_interval_ms: u64,
    /// Longest time the broker may hold a fetch of the sink's consumer
    /// (librdkafka `fetch.wait.max.ms`; a `kafka.properties` entry wins). A
    /// broker that holds every fetch that long even when records are there
    /// (Tansu) serves one fetch per wait: librdkafka's 500 ms kept the sink
    /// near 60,000 aggregates/s. Brokers that answer at once are unaffected,
    /// apart from an idle consumer's fetches.
    pub fetch_wait_max_ms: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            group_id: "meter-sink-clickhouse".into(),
            metrics_listen: ListenAddr::local(9602),
            batch_rows: 100_000,
            flush_interval_ms: 500,
            fetch_wait_max_ms: 100,
        }
    }
}

/// How an HTTPS client verifies the server it collects from (GLPI, Icinga,
/// VM metric endpoints): one setting, one client builder
/// (`collector_runtime::http_client`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of a CA to trust besides the system's (a company CA, Icinga's
    /// `/var/lib/icinga2/certs/ca.crt`). Default: none.
    pub ca_file: Option<PathBuf>,
    /// Check that the certificate names the host of the URL. Default true;
    /// false with `ca_file` when connecting by IP address to a certificate
    /// issued to a node name.
    pub verify_hostname: bool,
    /// LOCAL TESTING ONLY: accept any certificate (no verification at all).
    pub insecure_skip_verify: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { ca_file: None, verify_hostname: true, insecure_skip_verify: false }
    }
}

/// How every client retries a server that fails (ClickHouse inserts, GLPI
/// and Icinga requests, VM metric scrapes): one setting for all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First wait after a failure.
    pub min_delay_ms: u64,
    /// Longest wait between two attempts (the wait doubles up to it).
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { min_delay_ms: 100, max_delay_ms: 10_000 }
    }
}

impl RetryConfig {
    /// Exponential backoff with jitter, without a limit on attempts: callers
    /// hold their position while the server is down and go on when it is back.
    pub fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(self.min_delay_ms))
            .with_max_delay(std::time::Duration::from_millis(self.max_delay_ms))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContractsConfig {
    /// /metrics of `meter contracts metrics` (contract burn per tenant).
    pub metrics_listen: ListenAddr,
    /// How often the burn is read again from ClickHouse.
    pub refresh_seconds: u64,
}

impl Default for ContractsConfig {
    fn default() -> Self {
        ContractsConfig { metrics_listen: ListenAddr::local(9605), refresh_seconds: 30 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "text" for people, "json" for log shippers.
    pub format: LogFormat,
    /// tracing filter, e.g. "info" or "info,aggregator=debug" (RUST_LOG wins).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// IANA time zone the tenant's days, weeks, months and years are cut in.
    #[serde(with = "typed::zone")]
    pub time_zone: Tz,
    /// Days after a month's end during which its events still count
    /// (default: `aggregator.default_period_grace_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_grace_days: Option<u32>,
}

/// Each tenant's zone and billing grace, parsed once from the configuration
/// and shared by the aggregator, the sink and the collectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCalendar {
    default_zone: Tz,
    default_grace_days: u32,
    tenants: std::collections::HashMap<String, (Tz, u32)>,
}

impl TenantCalendar {
    /// One zone and grace for every tenant (tests, tools).
    pub fn uniform(zone: Tz, grace_days: u32) -> Self {
        TenantCalendar { default_zone: zone, default_grace_days: grace_days, tenants: Default::default() }
    }

    /// The zone a tenant's periods are cut in.
    pub fn zone(&self, tenant: &str) -> Tz {
        self.tenants.get(tenant).map(|t| t.0).unwrap_or(self.default_zone)
    }

    /// Days after a month's end during which its events still count.
    pub fn grace_days(&self, tenant: &str) -> u32 {
        self.tenants.get(tenant).map(|t| t.1).unwrap_or(self.default_grace_days)
    }

    /// Whether the tenant is configured (bounds metric labels).
    pub fn knows(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }
}

const SECTIONS: [&str; 11] =
    ["kafka", "topics", "clickhouse", "collector", "aggregator", "sink", "retry", "contracts", "log", "price_book", "tenants"];

impl MeterConfig {
    /// Loads defaults, then the file (if given), then `METER_*` overrides,
    /// and checks the values.
    pub fn load(path: Option<&Path>) -> Result<MeterConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(MeterConfig::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Missing { path: path.to_path_buf() });
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only keys under a known section: scripts use other METER_* variables.
        figment = figment.merge(
            Env::prefixed("METER_")
                .split("__")
                .filter(|key| {
                    // Keys arrive as written (METER_KAFKA__BROKERS -> KAFKA.BROKERS).
                    let section = key.as_str().split('.').next().unwrap_or_default();
                    SECTIONS.iter().any(|s| section.eq_ignore_ascii_case(s))
                })
                .map(|key| key.as_str().to_ascii_lowercase().into()),
        );
        let config: MeterConfig = figment.extract()?;
        config.check()?;
        check_database_name(&config.clickhouse.database)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.aggregator.clock_record_seconds == 0 || self.aggregator.clock_record_seconds > 3600 {
            return Err(ConfigError::Invalid("aggregator.clock_record_seconds must be between 1 and 3600".into()));
        }
        if self.aggregator.max_open_aggregates_per_tenant == 0 {
            return Err(ConfigError::Invalid("aggregator.max_open_aggregates_per_tenant must be at least 1".into()));
        }
        if self.retry.min_delay_ms == 0 || self.retry.max_delay_ms < self.retry.min_delay_ms {
            return Err(ConfigError::Invalid("retry.min_delay_ms must be at least 1 and at most retry.max_delay_ms".into()));
        }
        if self.sink.batch_rows == 0 {
            return Err(ConfigError::Invalid("sink.batch_rows must be at least 1".into()));
        }
        if self.aggregator.fetch_wait_max_ms == 0 {
            return Err(ConfigError::Invalid("aggregator.fetch_wait_max_ms must be at least 1".into()));
        }
        if self.sink.fetch_wait_max_ms == 0 {
            return Err(ConfigError::Invalid("sink.fetch_wait_max_ms must be at least 1".into()));
        }
        Ok(())
    }

    /// Every tenant's zone and grace, resolved once: the one tenant-zone map
    /// the aggregator, the sink and the collectors share.
    pub fn calendar(&self) -> TenantCalendar {
        let default_zone = self.aggregator.default_time_zone;
        let default_grace_days = self.aggregator.default_period_grace_days;
        let tenants = self
            .tenants
            .iter()
            .map(|(id, t)| {
                (id.clone(), (t.time_zone, t.period_grace_days.unwrap_or(default_grace_days)))
            })
            .collect();
        TenantCalendar { default_zone, default_grace_days, tenants }
    }

    /// The default configuration as TOML, for `meter config defaults`.
    pub fn defaults_toml() -> String {
        toml::to_string_pretty(&MeterConfig::default()).unwrap_or_default()
    }
}

/// What `Debug` and `meter config check` show instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether a librdkafka property holds a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...).
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "credential", "key.pem", "keystore", "private"].iter().any(|k| key.contains(k))
}

fn redacted_properties(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .map(|(k, v)| (k.clone(), if is_secret_property(k) { REDACTED.to_string() } else { v.clone() }))
        .collect()
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("idempotence", &self.idempotence)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &if self.sasl_password.is_empty() { "" } else { REDACTED })
            .field("properties", &redacted_properties(&self.properties))
            .finish()
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { REDACTED })
            .field("validation", &self.validation)
            .field("compression", &self.compression)
            .field("users_d_dir", &self.users_d_dir)
            .finish()
    }
}

impl MeterConfig {
    /// The configuration with its secrets replaced by [`REDACTED`] (the
    /// ClickHouse password, secret Kafka properties): what `meter config
    /// check` prints.
    pub fn redacted(&self) -> MeterConfig {
        let mut c = self.clone();
        if !c.clickhouse.password.is_empty() {
            c.clickhouse.password = REDACTED.into();
        }
        if !c.kafka.sasl_password.is_empty() {
            c.kafka.sasl_password = REDACTED.into();
        }
        c.kafka.properties = redacted_properties(&c.kafka.properties);
        c
    }
}

/// `clickhouse.database` goes into SQL statements, users.d XML and file
/// names: like tenant ids, it must be a plain name (ASCII letters, digits,
/// `_`, not starting with a digit, at most 64 characters).
pub fn check_database_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "clickhouse.database {name:?} must be ASCII letters, digits and '_' (not starting with a digit, at most 64 characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_debug_and_the_printed_config() {
        let mut c = MeterConfig::default();
        c.clickhouse.password = "ch-pass-123".into();
        c.kafka.properties.insert("sasl.password".into(), "kafka-pass-456".into());
        c.kafka.properties.insert("sasl.username".into(), "meter-collector".into());
        c.kafka.properties.insert("ssl.key.password".into(), "key-pass-789".into());
        c.kafka.sasl_password = "scram-pass-000".into();
        let printed = toml::to_string_pretty(&c.redacted()).unwrap();
        for shown in [format!("{c:?}"), format!("{:?}", c.clickhouse), format!("{:?}", c.kafka), printed.clone()] {
            for secret in ["ch-pass-123", "kafka-pass-456", "key-pass-789", "scram-pass-000"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains(REDACTED), "{shown}");
        }
        for shown in [format!("{c:?}"), format!("{:?}", c.kafka), printed] {
            assert!(shown.contains("meter-collector"), "what is not secret stays visible: {shown}");
        }
        assert_eq!(c.redacted().clickhouse.url, c.clickhouse.url);
    }

    #[test]
    fn sasl_settings_come_from_the_environment_and_become_client_properties() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("METER_KAFKA__SECURITY_PROTOCOL", "sasl_plaintext");
            jail.set_env("METER_KAFKA__SASL_USERNAME", "meter-aggregator");
            jail.set_env("METER_KAFKA__SASL_PASSWORD", "from-the-env-0123456789");
            let c = MeterConfig::load(None).map_err(|e| e.to_string())?;
            let props: BTreeMap<&str, String> = c.kafka.security_properties().into_iter().collect();
            assert_eq!(props["security.protocol"], "sasl_plaintext");
            assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-512");
            assert_eq!(props["sasl.username"], "meter-aggregator");
            assert_eq!(props["sasl.password"], "from-the-env-0123456789");
            assert!(!format!("{:?}", c.kafka).contains("from-the-env"));
            assert!(MeterConfig::default().kafka.security_properties().is_empty(), "the local stack is plaintext");
            Ok(())
        });
    }

    #[test]
    fn the_database_name_is_a_plain_identifier() {
        for good in ["meter", "test_tenants_123_456", "_m2"] {
            assert!(check_database_name(good).is_ok(), "{good}");
        }
        for bad in ["", "meter-prod", "meter; DROP DATABASE x", "m`x", "1meter", "meter.db", "../etc", "m</yandex>", &"m".repeat(65)] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("METER_CLICKHOUSE__DATABASE", "meter; DROP TABLE x");
            let err = MeterConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("clickhouse.database"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn shipped_example_file_equals_the_defaults_plus_its_tenants() {
        figment::Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/meter.toml");
            let loaded = MeterConfig::load(Some(&path)).map_err(|e| e.to_string())?;
            let mut expected = MeterConfig::default();
            expected.tenants = loaded.tenants.clone();
            assert_eq!(loaded, expected, "config/meter.toml must document the real defaults");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_zones_are_refused_with_a_hint() {
        figment::Jail::expect_with(|jail| {
            let file = jail.directory().join("m.toml");
            std::fs::write(&file, "[kafka]\nbroker = 'x'\n").map_err(|e| e.to_string())?;
            let err = MeterConfig::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("broker") && err.contains("config/meter.toml"), "{err}");
            std::fs::write(&file, "[tenants.acme]\ntime_zone = 'Europe/Pariss'\n").map_err(|e| e.to_string())?;
            let err = MeterConfig::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("Europe/Pariss"), "{err}");
            assert!(matches!(MeterConfig::load(Some(&jail.directory().join("nope.toml"))), Err(ConfigError::Missing { .. })));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_apply_and_unknown_ones_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("METER_KAFKA__BROKERS", "kafka:9092");
            jail.set_env("METER_CLICKHOUSE__COMPRESSION", "lz4");
            jail.set_env("METER_PRICE_BOOK", "/etc/meter/price-book.toml");
            jail.set_env("METER_STACK_DIR", "/tmp/not-a-config-key");
            let c = MeterConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.brokers, "kafka:9092");
            assert_eq!(c.clickhouse.compression, ClickHouseCompression::Lz4);
            assert_eq!(c.price_book, PathBuf::from("/etc/meter/price-book.toml"));
            jail.set_env("METER_KAFKA__BROKERX", "typo");
            let err = MeterConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("brokerx"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn tenant_zone_falls_back_to_the_default() {
        let mut c = MeterConfig::default();
        c.tenants.insert("acme".into(), TenantConfig { time_zone: chrono_tz::Europe::Paris, period_grace_days: Some(400) });
        let calendar = c.calendar();
        assert_eq!(calendar.zone("other"), chrono_tz::UTC);
        assert_eq!(calendar.zone("acme"), chrono_tz::Europe::Paris);
        assert_eq!(calendar.grace_days("acme"), 400);
        assert_eq!(calendar.grace_days("other"), 5);
        assert!(calendar.knows("acme") && !calendar.knows("other"));
    }
}
