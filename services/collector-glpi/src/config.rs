//! The collector's settings file.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::GlpiError;

/// Settings of the GLPI collector: a TOML file of its own
/// (`meter collect glpi --glpi-config FILE`; example with every key:
/// `services/collector-glpi/glpi.example.toml`). Unknown keys are refused.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlpiCollectorConfig {
    /// Base URL of the REST API, up to `apirest.php`
    /// (e.g. "https://glpi.example.com/apirest.php"). Required.
    #[serde(with = "meter_config::typed::http_url")]
    pub url: url::Url,
    /// App-Token of the API client declared in GLPI (Setup > General > API),
    /// when GLPI requires one. Default: none. `METER_GLPI_APP_TOKEN` wins.
    #[serde(default)]
    pub app_token: Option<String>,
    /// API token ("remote access key") of the GLPI user the collector logs in
    /// as. Required, here or in `METER_GLPI_USER_TOKEN` (which wins).
    #[serde(default)]
    pub user_token: String,
    /// `source` of the events (with the event id, what deduplication keys
    /// on: one name per GLPI instance, never changed). Default "glpi".
    #[serde(default = "default_source")]
    pub source: String,
    /// Tasks per request (2 to 1000; GLPI caps it at its own list limit). Default 50.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Where the position (last task published) is kept between runs.
    /// Default ".stack/glpi-position.json".
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// The mapping file (format: `config/glpi-mapping.example.toml`).
    /// Default "config/glpi-mapping.toml".
    #[serde(default = "default_mapping_file")]
    pub mapping_file: PathBuf,
    /// IANA time zone GLPI's datetimes (`date`, `date_mod`) are written in:
    /// the GLPI server's (or, with GLPI's time zone support, the API user's)
    /// zone. Default "UTC".
    #[serde(default = "default_server_time_zone", with = "meter_config::typed::zone")]
    pub server_time_zone: Tz,
    /// Timeout of one HTTP request, in seconds. Default 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// How the GLPI certificate is verified (`[tls]`: ca_file,
    /// verify_hostname, insecure_skip_verify). Default: the system's CAs.
    #[serde(default)]
    pub tls: meter_config::TlsConfig,
}

/// `Debug` shows neither token.
impl std::fmt::Debug for GlpiCollectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |t: &str| if t.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("GlpiCollectorConfig")
            .field("url", &self.url)
            .field("app_token", &self.app_token.as_deref().map(hidden))
            .field("user_token", &hidden(&self.user_token))
            .field("source", &self.source)
            .field("page_size", &self.page_size)
            .field("state_file", &self.state_file)
            .field("mapping_file", &self.mapping_file)
            .field("server_time_zone", &self.server_time_zone)
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .finish()
    }
}

fn default_source() -> String {
    "glpi".into()
}
fn default_page_size() -> u32 {
    50
}
fn default_state_file() -> PathBuf {
    PathBuf::from(".stack/glpi-position.json")
}
fn default_mapping_file() -> PathBuf {
    PathBuf::from("config/glpi-mapping.toml")
}
fn default_server_time_zone() -> Tz {
    Tz::UTC
}
fn default_request_timeout() -> u64 {
    30
}

impl GlpiCollectorConfig {
    /// A configuration with the defaults.
    pub fn new(url: url::Url, user_token: impl Into<String>) -> Self {
        GlpiCollectorConfig {
            url,
            app_token: None,
            user_token: user_token.into(),
            source: default_source(),
            page_size: default_page_size(),
            state_file: default_state_file(),
            mapping_file: default_mapping_file(),
            server_time_zone: default_server_time_zone(),
            request_timeout_seconds: default_request_timeout(),
            tls: meter_config::TlsConfig::default(),
        }
    }

    /// Reads the file, applies `METER_GLPI_USER_TOKEN` / `METER_GLPI_APP_TOKEN`
    /// and checks the values.
    pub fn load(path: &Path) -> Result<Self, GlpiError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GlpiError::Read { path: shown.clone(), source })?;
        let mut config: GlpiCollectorConfig =
            toml::from_str(&text).map_err(|e| GlpiError::Config { path: shown.clone(), message: e.to_string() })?;
        if let Ok(token) = std::env::var("METER_GLPI_USER_TOKEN") {
            config.user_token = token;
        }
        if let Ok(token) = std::env::var("METER_GLPI_APP_TOKEN") {
            config.app_token = Some(token);
        }
        config.check().map_err(|message| GlpiError::Config { path: shown, message })?;
        Ok(config)
    }

    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.user_token.trim().is_empty() {
            return Err("user_token is required (or set METER_GLPI_USER_TOKEN)".into());
        }
        if self.source.trim().is_empty() {
            return Err("source must not be empty".into());
        }
        if !(2..=1000).contains(&self.page_size) {
            return Err(format!("page_size must be between 2 and 1000, got {}", self.page_size));
        }
        if self.request_timeout_seconds == 0 {
            return Err("request_timeout_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// The zone GLPI's datetimes are written in (checked when the file was read).
    pub fn time_zone(&self) -> Tz {
        self.server_time_zone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../glpi.example.toml");

    #[test]
    fn debug_output_hides_the_tokens() {
        let mut c = GlpiCollectorConfig::new(url::Url::parse("https://glpi.example.com/apirest.php").unwrap(), "user-token-secret-1");
        c.app_token = Some("app-token-secret-2".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("user-token-secret-1") && !shown.contains("app-token-secret-2"), "{shown}");
        assert!(shown.contains("glpi.example.com") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_example_config_parses_and_omitted_keys_take_the_documented_defaults() {
        let example: GlpiCollectorConfig = toml::from_str(EXAMPLE).unwrap();
        example.check().unwrap();
        let minimal: GlpiCollectorConfig =
            toml::from_str("url = \"https://glpi.example.com/apirest.php\"\nuser_token = \"t\"\n").unwrap();
        assert_eq!(minimal, GlpiCollectorConfig::new(url::Url::parse("https://glpi.example.com/apirest.php").unwrap(), "t"));
        let mut defaults = example.clone();
        defaults.app_token = None;
        defaults.user_token = "t".into();
        defaults.url = minimal.url.clone();
        defaults.source = default_source();
        defaults.server_time_zone = default_server_time_zone();
        assert_eq!(defaults, minimal, "the example shows the defaults except url, tokens, source and zone");
    }

    #[test]
    fn bad_configs_are_refused_with_the_key() {
        let ok = GlpiCollectorConfig::new(url::Url::parse("http://127.0.0.1/apirest.php").unwrap(), "t");
        assert!(ok.check().is_ok());
        let mut c = ok.clone();
        c.page_size = 1;
        assert!(c.check().unwrap_err().contains("page_size"));
        let zone = toml::from_str::<GlpiCollectorConfig>("url = \"http://x/apirest.php\"\nserver_time_zone = \"Europe/Pariss\"\n");
        assert!(zone.unwrap_err().to_string().contains("Europe/Pariss"));
        let mut c = ok.clone();
        c.user_token = " ".into();
        assert!(c.check().unwrap_err().contains("user_token"));
        let url = toml::from_str::<GlpiCollectorConfig>("url = \"glpi.example.com\"\nuser_token = \"t\"\n").unwrap_err().to_string();
        assert!(url.contains("url") && url.contains("glpi.example.com"), "{url}");
        assert!(toml::from_str::<GlpiCollectorConfig>("url = \"http://x\"\nuser_token = \"t\"\npagesize = 3\n").is_err());
    }
}
