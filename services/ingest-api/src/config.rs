//! Settings of the ingest API: a TOML file of its own
//! (`meter ingest-api --api-config FILE`; example with every key:
//! `services/ingest-api/ingest-api.example.toml`). Unknown keys are refused.
//! Kafka brokers and topic names come from the meter configuration
//! (`meter --config`), like every other service.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use meter_config::ListenAddr;
use std::path::Path;

use meter_auth::TokenTable;
use serde::{Deserialize, Serialize};

use crate::IngestError;

/// Tokens shorter than this are refused: a bearer token is a password
/// (the rules are [`meter_auth`]'s, shared with the supervision collector).
pub const MIN_TOKEN_CHARS: usize = meter_auth::MIN_TOKEN_CHARS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestApiConfig {
    /// Address the API listens on. Default "127.0.0.1:8088".
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the /metrics endpoint ("" disables it). Default "127.0.0.1:9603".
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: ListenAddr,
    /// Largest request body accepted, in bytes; larger ones get 413. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most events in one batch; longer batches get 413. Default 1000.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Longest time a request may take, reading its body included; slower
    /// ones get 408. Default 30.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// Requests handled at once; the others wait for a slot (within the
    /// timeout). Default 64.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// The collectors allowed to send, each with its bearer token and tenants.
    #[serde(default)]
    pub collectors: Vec<CollectorAccess>,
}

/// One collector's credentials and rights.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorAccess {
    /// Name of the collector, in logs (not a secret). Required, unique.
    pub name: String,
    /// The bearer token, here or ...
    #[serde(default)]
    pub token: Option<String>,
    /// ... in this environment variable (keep secrets out of files).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Tenants whose events it may send, or `["*"]` for any tenant.
    pub tenants: Vec<String>,
    /// CloudEvent `source`s it may send events as, or `["*"]` for any.
    /// Required: deduplication keys on (tenant, source, id), so a collector
    /// free to pick the source could shadow another collector's events.
    pub sources: Vec<String>,
}

impl fmt::Debug for CollectorAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorAccess")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("tenants", &self.tenants)
            .field("sources", &self.sources)
            .finish()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}
fn default_metrics_listen() -> ListenAddr {
    ListenAddr::local(9603)
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_batch_events() -> usize {
    1000
}
fn default_request_timeout_seconds() -> u64 {
    30
}
fn default_max_concurrent_requests() -> usize {
    64
}

impl Default for IngestApiConfig {
    fn default() -> Self {
        IngestApiConfig {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_batch_events: default_max_batch_events(),
            request_timeout_seconds: default_request_timeout_seconds(),
            max_concurrent_requests: default_max_concurrent_requests(),
            collectors: Vec::new(),
        }
    }
}

impl IngestApiConfig {
    /// Reads the file and checks it (tokens from `token_env` included).
    pub fn load(path: &Path) -> Result<Self, IngestError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| IngestError::Read { path: shown.clone(), source })?;
        let config: IngestApiConfig =
            toml::from_str(&text).map_err(|e| IngestError::Config { path: shown.clone(), message: e.to_string() })?;
        config.tokens().map_err(|message| IngestError::Config { path: shown, message })?;
        Ok(config)
    }

    /// Checks the values and builds the token table; the message names the key.
    pub fn tokens(&self) -> Result<Tokens, String> {
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(format!("max_body_bytes must be between 1024 and 67108864, got {}", self.max_body_bytes));
        }
        if !(1..=100_000).contains(&self.max_batch_events) {
            return Err(format!("max_batch_events must be between 1 and 100000, got {}", self.max_batch_events));
        }
        if !(1..=3600).contains(&self.request_timeout_seconds) {
            return Err(format!("request_timeout_seconds must be between 1 and 3600, got {}", self.request_timeout_seconds));
        }
        if !(1..=100_000).contains(&self.max_concurrent_requests) {
            return Err(format!("max_concurrent_requests must be between 1 and 100000, got {}", self.max_concurrent_requests));
        }
        if self.collectors.is_empty() {
            return Err("no [[collectors]]: every request would be refused; declare at least one".into());
        }
        let mut table = TokenTable::new();
        let mut names = BTreeSet::new();
        for (i, c) in self.collectors.iter().enumerate() {
            let at = format!("collectors[{i}]");
            if c.name.trim().is_empty() {
                return Err(format!("{at}.name must not be empty"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(format!("{at}.name {:?} is used twice", c.name));
            }
            let token = match (&c.token, &c.token_env) {
                (Some(token), None) => token.clone(),
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| format!("{at} ({}): environment variable {var} (token_env) is not set", c.name))?,
                _ => return Err(format!("{at} ({}): set exactly one of token and token_env", c.name)),
            };
            let tenants = TenantRights::parse(&c.tenants).map_err(|e| format!("{at}.tenants ({}): {e}", c.name))?;
            let sources = TenantRights::parse(&c.sources).map_err(|e| format!("{at}.sources ({}): {e}", c.name))?;
            let access = Access { collector: c.name.clone(), tenants, sources };
            table.insert(&c.name, &token, access).map_err(|e| match e {
                meter_auth::TokenError::Duplicate(other) => {
                    format!("{at} ({}): the same token is given to two collectors ({other:?} has it too)", c.name)
                }
                e => format!("{at} ({}): {e}", c.name),
            })?;
        }
        Ok(Tokens { table })
    }
}

/// The tenants (or the sources) a collector may write for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRights {
    Any,
    Only(BTreeSet<String>),
}

impl TenantRights {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        if list.is_empty() {
            return Err("list at least one, or \"*\" for any".into());
        }
        if list.iter().any(|t| t == "*") {
            return if list.len() == 1 { Ok(TenantRights::Any) } else { Err("\"*\" must be alone".into()) };
        }
        if list.iter().any(|t| t.trim().is_empty()) {
            return Err("an entry must not be empty".into());
        }
        Ok(TenantRights::Only(list.iter().cloned().collect()))
    }

    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantRights::Any => true,
            TenantRights::Only(set) => set.contains(tenant),
        }
    }
}

/// Who a token belongs to and what it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub collector: String,
    pub tenants: TenantRights,
    /// The CloudEvent sources it may use.
    pub sources: TenantRights,
}

/// Bearer tokens ([`meter_auth::TokenTable`]: SHA-256 digests compared in
/// constant time).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    table: TokenTable<Access>,
}

impl Tokens {
    /// The access of the `Authorization` header's value, if it is
    /// `Bearer <known token>` (the scheme is case-insensitive).
    pub fn authorize(&self, authorization: Option<&str>) -> Option<&Access> {
        self.table.authorize(authorization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(name: &str, token: &str, tenants: &[&str]) -> CollectorAccess {
        CollectorAccess {
            name: name.into(),
            token: Some(token.into()),
            token_env: None,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            sources: vec!["*".into()],
        }
    }

    fn config(collectors: Vec<CollectorAccess>) -> IngestApiConfig {
        IngestApiConfig { collectors, ..IngestApiConfig::default() }
    }

    #[test]
    fn the_example_file_loads_with_its_documented_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest-api.example.toml");
        std::env::set_var("METER_INGEST_TOKEN_VMWARE", "a-token-from-the-environment-0001");
        let config = IngestApiConfig::load(&path).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:9603");
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.max_batch_events, 1000);
        assert_eq!((config.request_timeout_seconds, config.max_concurrent_requests), (30, 64));
        let tokens = config.tokens().unwrap();
        let vmware = tokens.authorize(Some("Bearer a-token-from-the-environment-0001")).unwrap();
        assert_eq!(vmware.tenants, TenantRights::Any);
        // Every default is what an empty file gives.
        let empty: IngestApiConfig = toml::from_str("").unwrap();
        assert_eq!((empty.listen, empty.metrics_listen), (config.listen, config.metrics_listen));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<IngestApiConfig>("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<IngestApiConfig>(
            "[[collectors]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\ntenant = [\"acme\"]\ntenants = [\"acme\"]\nsources = [\"*\"]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn tokens_map_to_their_collector_and_tenants() {
        let tokens = config(vec![
            collector("icinga", "icinga-token-0123456789", &["acme", "globex"]),
            collector("vmware", "vmware-token-0123456789", &["*"]),
        ])
        .tokens()
        .unwrap();
        let icinga = tokens.authorize(Some("Bearer icinga-token-0123456789")).unwrap();
        assert_eq!(icinga.collector, "icinga");
        assert!(icinga.tenants.allows("acme") && icinga.tenants.allows("globex"));
        assert!(!icinga.tenants.allows("initech"));
        assert!(!icinga.tenants.allows("ACME"), "tenant ids are compared exactly");
        let vmware = tokens.authorize(Some("bearer vmware-token-0123456789")).unwrap();
        assert_eq!(vmware.collector, "vmware");
        assert!(vmware.tenants.allows("initech"));
        for refused in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("icinga-token-0123456789"),
            Some("Basic icinga-token-0123456789"),
            Some("Bearer icinga-token-012345678"),
            Some("Bearer icinga-token-0123456789x"),
        ] {
            assert!(tokens.authorize(refused).is_none(), "{refused:?} must not authorize");
        }
    }

    #[test]
    fn bad_access_lists_are_refused_with_the_key() {
        let cases = [
            (config(vec![]), "no [[collectors]]"),
            (config(vec![collector("a", "short", &["acme"])]), "at least 16"),
            (config(vec![collector("a", "0123456789abcdef", &[])]), "collectors[0].tenants"),
            (config(vec![collector("a", "0123456789abcdef", &["*", "acme"])]), "must be alone"),
            (config(vec![collector("a", "0123456789abcde ", &["acme"])]), "spaces"),
            (config(vec![CollectorAccess { sources: vec![], ..collector("a", "0123456789abcdef", &["acme"]) }]), "collectors[0].sources"),
            (
                config(vec![collector("a", "0123456789abcdef", &["acme"]), collector("b", "0123456789abcdef", &["acme"])]),
                "same token",
            ),
            (
                config(vec![collector("a", "0123456789abcdef", &["acme"]), collector("a", "0123456789abcdeg", &["acme"])]),
                "used twice",
            ),
            (
                config(vec![CollectorAccess { token_env: Some("X".into()), ..collector("a", "0123456789abcdef", &["acme"]) }]),
                "exactly one of token and token_env",
            ),
            (
                config(vec![CollectorAccess {
                    token: None,
                    token_env: Some("METER_TEST_SURELY_UNSET_VARIABLE".into()),
                    ..collector("a", "", &["acme"])
                }]),
                "is not set",
            ),
            (
                IngestApiConfig { max_batch_events: 0, ..config(vec![collector("a", "0123456789abcdef", &["acme"])]) },
                "max_batch_events",
            ),
        ];
        // Addresses are parsed with the file: a wrong one names its key.
        for bad in ["listen = \"8088\"", "metrics_listen = \"localhost:9603\""] {
            let err = toml::from_str::<IngestApiConfig>(bad).unwrap_err().to_string();
            assert!(err.contains(bad.split(' ').next().unwrap_or_default()), "{err}");
        }
        for (config, expected) in cases {
            let err = config.tokens().unwrap_err();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    #[test]
    fn sources_are_required_and_bound_to_the_token() {
        let err = toml::from_str::<IngestApiConfig>("[[collectors]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\ntenants = [\"acme\"]")
            .unwrap_err();
        assert!(err.to_string().contains("sources"), "{err}");
        let tokens = config(vec![CollectorAccess {
            sources: vec!["glpi-main".into()],
            ..collector("glpi", "glpi-token-0123456789", &["acme"])
        }])
        .tokens()
        .unwrap();
        let access = tokens.authorize(Some("Bearer glpi-token-0123456789")).unwrap();
        assert!(access.sources.allows("glpi-main"));
        assert!(!access.sources.allows("icinga"), "a token only sends as its own sources");
    }

    #[test]
    fn debug_output_hides_tokens() {
        let shown = format!("{:?}", collector("a", "super-secret-token-value", &["acme"]));
        assert!(!shown.contains("super-secret"), "{shown}");
    }
}
