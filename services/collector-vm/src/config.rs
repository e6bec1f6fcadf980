//! The VM scraper's file (`meter collect vm-scrape --vm-config FILE`; every
//! key, documented: `services/collector-vm/vm.example.toml`). Unknown keys
//! are refused. [`VmCollectorConfig`] is the file as written; [`Settings`] is
//! it checked, with the name patterns compiled.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use meter_model::SlaTier;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::VmError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCollectorConfig {
    /// The exposition endpoint, e.g. "http://hypervisor-1:9177/metrics". Required.
    #[serde(with = "meter_config::typed::http_url")]
    pub url: url::Url,
    /// `source` of the events (with the event id, what deduplication keys
    /// on): one name per endpoint, never changed. Default "vm-scrape".
    #[serde(default = "default_source")]
    pub source: String,
    /// Seconds between scrapes; also the interval of a VM's first sample. Default 60.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Timeout of one scrape, in seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub request_timeout_seconds: u64,
    /// How the endpoint's certificate is verified (`[tls]`: ca_file,
    /// verify_hostname, insecure_skip_verify). Default: the system's CAs.
    #[serde(default)]
    pub tls: meter_config::TlsConfig,
    /// Which metrics and labels describe a VM.
    #[serde(default)]
    pub metrics: MetricNames,
    /// Who pays for which VM; the first matching rule wins, unmatched VMs
    /// are skipped (counted, logged once) and not published.
    #[serde(default)]
    pub vms: Vec<VmRule>,
}

fn default_source() -> String {
    "vm-scrape".into()
}
fn default_interval() -> u64 {
    60
}
fn default_timeout() -> u64 {
    10
}

/// Metric and label names; the defaults are the libvirt exporter's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricNames {
    /// Label carrying the VM id on every metric. Default "domain".
    pub vm_label: String,
    /// Virtual CPUs. Default "libvirt_domain_info_virtual_cpus".
    pub vcpu: String,
    /// Memory in bytes. Default "libvirt_domain_info_maximum_memory_bytes"
    /// (the allocated size; "libvirt_domain_info_memory_usage_bytes" is what the guest uses).
    pub memory_bytes: String,
    /// VM state; "" when the endpoint lists running VMs only. Default "libvirt_domain_info_state".
    pub state: String,
    /// Values of `state` meaning running. Default [1] (libvirt's VIR_DOMAIN_RUNNING).
    pub running_states: Vec<i64>,
    /// Disk capacity in bytes, summed over the VM's devices; "" for none
    /// (storage 0). Default "libvirt_domain_block_stats_capacity_bytes".
    pub storage_bytes: String,
    /// Bytes in one storage_gb unit. Default 1073741824 (GiB).
    pub storage_unit_bytes: u64,
}

impl Default for MetricNames {
    fn default() -> Self {
        MetricNames {
            vm_label: "domain".into(),
            vcpu: "libvirt_domain_info_virtual_cpus".into(),
            memory_bytes: "libvirt_domain_info_maximum_memory_bytes".into(),
            state: "libvirt_domain_info_state".into(),
            running_states: vec![1],
            storage_bytes: "libvirt_domain_block_stats_capacity_bytes".into(),
            storage_unit_bytes: 1 << 30,
        }
    }
}

/// One mapping rule: which VMs (a name pattern and/or label values, all must
/// match) and what their samples carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRule {
    /// Regular expression searched in the VM id (anchor it with ^...$ for a whole match).
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// Label name -> exact value, looked up on any metric of the VM
    /// (e.g. `libvirt_domain_openstack_info`'s `project_name`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub sla_tier: SlaTier,
    pub datacenter: String,
    #[serde(default)]
    pub options: Vec<String>,
    /// Contracted bandwidth (not scraped). Default 0.
    #[serde(default)]
    pub bandwidth_mbps: i32,
    #[serde(default)]
    pub guaranteed_bandwidth: bool,
    #[serde(default)]
    pub public_ips: i32,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: VmCollectorConfig,
    pub(crate) patterns: Vec<Option<Regex>>,
    pub(crate) client: reqwest::Client,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, VmError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| VmError::Read { path: shown.clone(), source })?;
        let config: VmCollectorConfig =
            toml::from_str(&text).map_err(|e| VmError::Config { path: shown.clone(), message: e.to_string() })?;
        Settings::new(config).map_err(|message| VmError::Config { path: shown, message })
    }

    /// Checks the values; the message names the key.
    pub fn new(config: VmCollectorConfig) -> Result<Settings, String> {
        if config.source.trim().is_empty() {
            return Err("source must not be empty".into());
        }
        if !(1..=86_400).contains(&config.interval_seconds) {
            return Err(format!("interval_seconds must be between 1 and 86400, got {}", config.interval_seconds));
        }
        let m = &config.metrics;
        if m.vm_label.trim().is_empty() || m.vcpu.trim().is_empty() || m.memory_bytes.trim().is_empty() {
            return Err("metrics.vm_label, metrics.vcpu and metrics.memory_bytes must not be empty".into());
        }
        if m.storage_unit_bytes == 0 {
            return Err("metrics.storage_unit_bytes must be positive".into());
        }
        let mut patterns = Vec::new();
        for (i, rule) in config.vms.iter().enumerate() {
            let which = format!("vms[{i}]");
            if rule.name_pattern.is_none() && rule.labels.is_empty() {
                return Err(format!("{which} needs name_pattern or labels (a rule matching every VM is refused)"));
            }
            for (name, value) in [("tenant", &rule.tenant), ("subsidiary", &rule.subsidiary), ("domain", &rule.domain), ("datacenter", &rule.datacenter)] {
                if value.trim().is_empty() {
                    return Err(format!("{which}.{name} must not be empty"));
                }
            }
            if rule.bandwidth_mbps < 0 || rule.public_ips < 0 {
                return Err(format!("{which}: bandwidth_mbps and public_ips must not be negative"));
            }
            let pattern = match &rule.name_pattern {
                Some(p) => Some(Regex::new(p).map_err(|e| format!("{which}.name_pattern: {e}"))?),
                None => None,
            };
            patterns.push(pattern);
        }
        let options = collector_runtime::HttpClientOptions {
            timeout: Some(Duration::from_secs(config.request_timeout_seconds.max(1))),
            connect_timeout: Duration::from_secs(config.request_timeout_seconds.clamp(1, 10)),
            user_agent: concat!("meter-collector-vm/", env!("CARGO_PKG_VERSION")),
        };
        let client = collector_runtime::http_client(&config.tls, &options).map_err(|e| e.to_string())?;
        Ok(Settings { config, patterns, client })
    }

    /// The first rule matching the VM, if any.
    pub fn rule_for(&self, vm_id: &str, labels: &BTreeMap<String, String>) -> Option<&VmRule> {
        self.config.vms.iter().zip(&self.patterns).find_map(|(rule, pattern)| {
            let name_ok = pattern.as_ref().map_or(true, |p| p.is_match(vm_id));
            let labels_ok = rule.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
            (name_ok && labels_ok).then_some(rule)
        })
    }
}
