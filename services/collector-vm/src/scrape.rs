//! Scraping: the exposition text is parsed with `prometheus-parse`, grouped
//! per VM ([`parse_exposition`]), turned into samples ([`plan_scrape`]: pure,
//! given the state and the scrape time) and published ([`scrape_once`]).
//!
//! The state ([`ScrapeState`], in memory) keeps, per VM, the unix time of the
//! last scrape that saw it, running or stopped. It is updated only once every
//! sample of a scrape is acknowledged by the broker, so a failed publish or
//! scrape leaves the next sample covering the gap. A VM absent from a
//! scrape is forgotten (its next sample is a first one). A VM whose metrics
//! are incomplete keeps its previous time.

use collector_runtime::{InternalEvent, RecordsRead, RecordsSkipped};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use collector_runtime::{CollectorMetrics, Publisher};
use meter_config::MeterConfig;
use meter_model::{DeadLetter, Event, EventHeader, EventKind, VmTransition, VmUsage};
use rdkafka::producer::FutureProducer;

use crate::config::{MetricNames, Settings};
use crate::{VmError, METRIC_SOURCE};

/// What one scrape says about one VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmObservation {
    /// Every label seen on the VM's metrics (the first value of each name wins).
    pub labels: BTreeMap<String, String>,
    pub state: Option<f64>,
    pub vcpu: Option<f64>,
    pub memory_bytes: Option<f64>,
    /// Sum over the VM's devices.
    pub storage_bytes: f64,
}

fn number(value: &prometheus_parse::Value) -> Option<f64> {
    use prometheus_parse::Value::*;
    match value {
        Counter(v) | Gauge(v) | Untyped(v) => Some(*v),
        Histogram(_) | Summary(_) => None,
    }
}

/// Groups the samples of an exposition text by VM (the `vm_label` value);
/// samples without it are ignored.
pub fn parse_exposition(text: &str, names: &MetricNames) -> Result<BTreeMap<String, VmObservation>, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
    let mut vms: BTreeMap<String, VmObservation> = BTreeMap::new();
    for sample in scrape.samples {
        let Some(vm) = sample.labels.get(&names.vm_label).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let observation = vms.entry(vm.to_string()).or_default();
        for (name, value) in sample.labels.iter() {
            observation.labels.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let Some(value) = number(&sample.value) else { continue };
        let metric = sample.metric.as_str();
        if metric == names.vcpu {
            observation.vcpu = Some(value);
        } else if metric == names.memory_bytes {
            observation.memory_bytes = Some(value);
        } else if !names.state.is_empty() && metric == names.state {
            observation.state = Some(value);
        } else if !names.storage_bytes.is_empty() && metric == names.storage_bytes && value.is_finite() {
            observation.storage_bytes += value;
        }
    }
    Ok(vms)
}

#[derive(Debug, Default)]
struct Inner {
    /// VM id -> unix time of the last scrape that saw it.
    last_seen: HashMap<String, i64>,
    /// Unmapped VMs already logged.
    warned: HashSet<String>,
}

/// The scraper's memory between scrapes (see the module documentation).
#[derive(Debug, Default)]
pub struct ScrapeState {
    inner: Mutex<Inner>,
}

impl ScrapeState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the VM was last seen (unix seconds), for tests and logs.
    pub fn last_seen(&self, vm: &str) -> Option<i64> {
        self.lock().last_seen.get(vm).copied()
    }
}

/// The samples of one scrape and what was left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapePlan {
    pub samples: Vec<VmUsage>,
    /// VMs seen not running.
    pub stopped: Vec<String>,
    /// VMs no rule maps.
    pub unmapped: Vec<String>,
    /// VMs with a missing or unusable metric, and why.
    pub incomplete: Vec<(String, String)>,
    /// VM ids whose time the state records once the samples are published.
    seen: Vec<String>,
    now: i64,
}

fn whole(value: Option<f64>, what: &str, divisor: f64) -> Result<i64, String> {
    match value {
        None => Err(format!("no {what} metric")),
        Some(v) if !v.is_finite() || v < 0.0 => Err(format!("{what} is {v}")),
        Some(v) => Ok((v / divisor).ceil() as i64),
    }
}

/// Turns one scrape's observations into samples at `now` (whole seconds).
pub fn plan_scrape(settings: &Settings, state: &ScrapeState, vms: &BTreeMap<String, VmObservation>, now: DateTime<Utc>) -> ScrapePlan {
    let config = &settings.config;
    let names = &config.metrics;
    let now_s = now.timestamp();
    let event_time = DateTime::<Utc>::from_timestamp(now_s, 0).unwrap_or(now);
    let inner = state.lock();
    let mut plan = ScrapePlan { now: now_s, ..Default::default() };
    for (vm, o) in vms {
        let running = if names.state.is_empty() {
            true
        } else {
            match o.state {
                None => {
                    plan.incomplete.push((vm.clone(), format!("no {} metric", names.state)));
                    continue;
                }
                Some(s) => names.running_states.iter().any(|r| *r as f64 == s),
            }
        };
        let Some(rule) = settings.rule_for(vm, &o.labels) else {
            plan.unmapped.push(vm.clone());
            plan.seen.push(vm.clone());
            continue;
        };
        if !running {
            plan.stopped.push(vm.clone());
            plan.seen.push(vm.clone());
            continue;
        }
        let sizes = whole(o.vcpu, "vcpu", 1.0).and_then(|vcpu| {
            let ram = whole(o.memory_bytes, "memory", 1024.0 * 1024.0)?;
            let storage = whole(Some(o.storage_bytes), "storage", names.storage_unit_bytes as f64)?;
            Ok((vcpu, ram, storage))
        });
        let (vcpu, ram_mib, storage_gb) = match sizes {
            Ok(s) => s,
            Err(e) => {
                plan.incomplete.push((vm.clone(), e));
                continue;
            }
        };
        let interval = match inner.last_seen.get(vm) {
            Some(previous) => now_s - previous,
            None => config.interval_seconds as i64,
        };
        plan.seen.push(vm.clone());
        if interval <= 0 {
            // Scraped again within the same second: the earlier sample covers it.
            continue;
        }
        plan.samples.push(VmUsage {
            header: EventHeader {
                event_id: format!("{}:{vm}:{now_s}", config.source),
                source: config.source.clone(),
                tenant: rule.tenant.clone(),
                subsidiary: rule.subsidiary.clone(),
                domain: rule.domain.clone(),
                event_time,
                ingest_time: DateTime::<Utc>::UNIX_EPOCH,
                version: 0,
                deleted: false,
            },
            vm_id: vm.clone(),
            vcpu: i32::try_from(vcpu).unwrap_or(i32::MAX),
            ram_mib,
            storage_gb,
            bandwidth_mbps: rule.bandwidth_mbps,
            guaranteed_bandwidth: rule.guaranteed_bandwidth,
            public_ips: rule.public_ips,
            sla_tier: rule.sla_tier,
            options: rule.options.clone(),
            datacenter: rule.datacenter.clone(),
            transition: VmTransition::Sample,
            sample_interval_seconds: i32::try_from(interval).unwrap_or(i32::MAX),
        });
    }
    plan
}

fn commit(state: &ScrapeState, plan: &ScrapePlan, vms: &BTreeMap<String, VmObservation>) {
    let mut inner = state.lock();
    inner.last_seen.retain(|vm, _| vms.contains_key(vm));
    for vm in &plan.seen {
        inner.last_seen.insert(vm.clone(), plan.now);
    }
    for vm in &plan.unmapped {
        if inner.warned.insert(vm.clone()) {
            tracing::warn!(vm = %vm.escape_debug(), "VM matches no rule of the VM mapping: its usage is dead-lettered, not published");
        }
    }
}

/// The outcome of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeReport {
    pub vms: usize,
    pub published: usize,
    pub stopped: Vec<String>,
    pub unmapped: Vec<String>,
    pub incomplete: Vec<(String, String)>,
}

impl fmt::Display for ScrapeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} VMs, {} samples published, {} stopped, {} unmapped, {} incomplete",
            self.vms,
            self.published,
            self.stopped.len(),
            self.unmapped.len(),
            self.incomplete.len()
        )
    }
}

/// The dead-letter component of the scraper.
pub const SCRAPE_COMPONENT: &str = "collector-vm";

/// Largest metrics answer read; a longer one is an error, never held whole.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

async fn fetch(settings: &Settings) -> Result<String, VmError> {
    let url = settings.config.url.to_string();
    let response = settings.client.get(&url).send().await.map_err(|source| VmError::Http { url: url.clone(), source })?;
    let status = response.status();
    let body = collector_runtime::read_body_capped(response, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
        collector_runtime::CappedBodyError::Http(source) => VmError::Http { url: url.clone(), source },
        e => VmError::Status { url: url.clone(), status: status.as_u16(), body: e.to_string() },
    })?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        let body: String = body.chars().take(500).collect();
        return Err(VmError::Status { url, status: status.as_u16(), body });
    }
    Ok(body)
}

/// Scrapes once at `now`, publishes the samples (acknowledged) and then
/// updates `state`. An unreachable endpoint or broker is an error and
/// changes nothing.
pub async fn scrape_once(
    meter: &MeterConfig,
    settings: &Settings,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
    state: &ScrapeState,
    now: DateTime<Utc>,
) -> Result<ScrapeReport, VmError> {
    let text = fetch(settings).await?;
    let vms = parse_exposition(&text, &settings.config.metrics)
        .map_err(|message| VmError::Exposition { url: settings.config.url.to_string(), message })?;
    let mut plan = plan_scrape(settings, state, &vms, now);
    let kind = EventKind::VmUsage;
    let kind_label = kind.slug();
    let publisher = Publisher::new(meter, producer.clone(), metrics.clone(), METRIC_SOURCE);
    let letter = |reason: &str, error: String, original: Vec<u8>| {
        DeadLetter::from_request(SCRAPE_COMPONENT, settings.config.url.as_str(), None, reason, error, original).of_kind(kind)
    };
    // Nothing dropped without a trace: an unmapped VM's usage over the
    // interval, and an invalid sample, are dead-lettered (replayable once
    // the mapping is fixed); a VM with incomplete metrics is not marked seen
    // (its next sample covers the time) and is counted.
    for vm in &plan.unmapped {
        let interval = match state.last_seen(vm) {
            Some(previous) => plan.now - previous,
            None => settings.config.interval_seconds as i64,
        };
        if interval <= 0 {
            continue;
        }
        let o = vms.get(vm).cloned().unwrap_or_default();
        let original = serde_json::json!({
            "vm_id": vm, "labels": o.labels, "state": o.state, "vcpu": o.vcpu, "memory_bytes": o.memory_bytes,
            "storage_bytes": o.storage_bytes, "scraped_at": now.to_rfc3339(), "sample_interval_seconds": interval,
        });
        let error = format!("VM {vm:?} matches no rule of the VM mapping: {interval} s of its usage are not published");
        publisher.dead_letter(&letter("unmapped_vm", error, original.to_string().into_bytes())).await?;
    }
    let mut batch = publisher.batch();
    let mut invalid = Vec::new();
    for sample in &plan.samples {
        let event = Event::VmUsage(sample.clone());
        if let Err(e) = event.validate() {
            tracing::warn!(vm = %sample.vm_id.escape_debug(), error = %e, "sample not published: dead-lettered");
            let original = serde_json::to_vec(sample).unwrap_or_default();
            publisher.dead_letter(&letter("invalid_event", e.to_string(), original)).await?;
            invalid.push(sample.vm_id.clone());
            continue;
        }
        batch.push(event).await?;
    }
    let published = batch.finish().await? as usize;
    // An invalid sample's VM keeps its previous time: its next valid sample covers the interval.
    plan.seen.retain(|vm| !invalid.contains(vm));
    commit(state, &plan, &vms);
    RecordsRead { kind: kind_label, count: vms.len() as u64 }.emit(&metrics);
    RecordsSkipped { kind: kind_label, reason: "incomplete_metrics", count: plan.incomplete.len() as u64 }.emit(&metrics);
    publisher.succeeded();
    for (vm, why) in &plan.incomplete {
        tracing::warn!(vm = %vm.escape_debug(), reason = %why.escape_debug(), "VM sample skipped: incomplete metrics (its next sample covers the time)");
    }
    Ok(ScrapeReport { vms: vms.len(), published, stopped: plan.stopped, unmapped: plan.unmapped, incomplete: plan.incomplete })
}

/// Scrapes every `interval_seconds` until Ctrl-C; a failed scrape is logged
/// and the next one covers its time.
pub async fn run(meter: &MeterConfig, settings: &Settings, metrics: &CollectorMetrics) -> Result<(), VmError> {
    let producer = meter_kafka::producer(&meter.kafka)?;
    let state = ScrapeState::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(settings.config.interval_seconds));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                match scrape_once(meter, settings, &producer, metrics, &state, Utc::now()).await {
                    Ok(report) => tracing::info!(url = %settings.config.url, %report, "scraped"),
                    Err(e) => tracing::warn!(error = %e, "scrape failed; the next one covers its time"),
                }
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("stopping the VM scraper");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmCollectorConfig;

    pub(crate) const CONFIG: &str = include_str!("../vm.example.toml");

    fn settings() -> Settings {
        let config: VmCollectorConfig = toml::from_str(CONFIG).unwrap();
        Settings::new(config).unwrap()
    }

    const TEXT: &str = r#"# HELP libvirt_domain_info_virtual_cpus Number of virtual CPUs for the domain.
# TYPE libvirt_domain_info_virtual_cpus gauge
libvirt_domain_info_virtual_cpus{domain="acme-web01"} 2
libvirt_domain_info_virtual_cpus{domain="globex-db01"} 8
libvirt_domain_info_virtual_cpus{domain="lab-test"} 1
libvirt_domain_info_virtual_cpus{domain="acme-old"} 4
# TYPE libvirt_domain_info_maximum_memory_bytes gauge
libvirt_domain_info_maximum_memory_bytes{domain="acme-web01"} 4.294967296e+09
libvirt_domain_info_maximum_memory_bytes{domain="globex-db01"} 17179869184
libvirt_domain_info_maximum_memory_bytes{domain="lab-test"} 1073741824
libvirt_domain_info_maximum_memory_bytes{domain="acme-old"} 1073741824
# TYPE libvirt_domain_info_state gauge
libvirt_domain_info_state{domain="acme-web01"} 1
libvirt_domain_info_state{domain="globex-db01"} 1
libvirt_domain_info_state{domain="lab-test"} 1
libvirt_domain_info_state{domain="acme-old"} 5
# TYPE libvirt_domain_block_stats_capacity_bytes gauge
libvirt_domain_block_stats_capacity_bytes{domain="acme-web01",target_device="vda"} 2.147483648e+10
libvirt_domain_block_stats_capacity_bytes{domain="acme-web01",target_device="vdb"} 107374182400
libvirt_domain_block_stats_capacity_bytes{domain="globex-db01",target_device="vda"} 53687091200
# TYPE libvirt_domain_openstack_info gauge
libvirt_domain_openstack_info{domain="globex-db01",project_name="globex"} 1
# TYPE libvirt_up gauge
libvirt_up 1
"#;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn exposition_is_grouped_by_vm() {
        let vms = parse_exposition(TEXT, &MetricNames::default()).unwrap();
        assert_eq!(vms.keys().collect::<Vec<_>>(), ["acme-old", "acme-web01", "globex-db01", "lab-test"]);
        let web = &vms["acme-web01"];
        assert_eq!((web.vcpu, web.memory_bytes, web.state), (Some(2.0), Some(4294967296.0), Some(1.0)));
        assert_eq!(web.storage_bytes, 120.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(vms["globex-db01"].labels.get("project_name").map(String::as_str), Some("globex"));
    }

    #[test]
    fn mapping_by_name_pattern_and_by_label() {
        let s = settings();
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        assert_eq!(s.rule_for("acme-web01", &labels(&[])).map(|r| r.tenant.as_str()), Some("acme"));
        assert_eq!(s.rule_for("db01", &labels(&[("project_name", "globex")])).map(|r| r.tenant.as_str()), Some("globex"));
        assert!(s.rule_for("db01", &labels(&[("project_name", "initech")])).is_none());
        assert!(s.rule_for("lab-test", &labels(&[])).is_none());
    }

    #[test]
    fn samples_intervals_stopped_and_unmapped() {
        let s = settings();
        let state = ScrapeState::default();
        let vms = parse_exposition(TEXT, &s.config.metrics).unwrap();
        let plan = plan_scrape(&s, &state, &vms, at(1_767_225_600));
        assert_eq!(plan.stopped, ["acme-old"]);
        assert_eq!(plan.unmapped, ["lab-test"]);
        assert!(plan.incomplete.is_empty());
        let got: Vec<(&str, &str, i32, i64, i64, i32)> = plan
            .samples
            .iter()
            .map(|v| (v.header.event_id.as_str(), v.header.tenant.as_str(), v.vcpu, v.ram_mib, v.storage_gb, v.sample_interval_seconds))
            .collect();
        assert_eq!(
            got,
            [
                ("hv1-libvirt:acme-web01:1767225600", "acme", 2, 4096, 120, 60),
                ("hv1-libvirt:globex-db01:1767225600", "globex", 8, 16384, 50, 60),
            ]
        );
        let web = &plan.samples[0];
        assert_eq!(web.transition, VmTransition::Sample);
        assert_eq!(web.header.event_time, at(1_767_225_600));
        assert_eq!((web.sla_tier, web.datacenter.as_str(), web.options.clone()), (meter_model::SlaTier::Sla99_9, "par1", vec!["backup".to_string()]));
        assert!(Event::VmUsage(web.clone()).validate().is_ok());

        // Not yet committed (publish not acknowledged): the next plan still sees first samples.
        let again = plan_scrape(&s, &state, &vms, at(1_767_225_690));
        assert_eq!(again.samples[0].sample_interval_seconds, 60);
        commit(&state, &plan, &vms);
        // 90 s later (a scrape failed in between): the interval covers the gap.
        let next = plan_scrape(&s, &state, &vms, at(1_767_225_690));
        assert_eq!(next.samples.iter().map(|v| v.sample_interval_seconds).collect::<Vec<_>>(), [90, 90]);
        // The same second again publishes nothing new.
        assert!(plan_scrape(&s, &state, &vms, at(1_767_225_600)).samples.is_empty());
        assert_eq!(state.last_seen("acme-old"), Some(1_767_225_600), "a stopped VM is remembered");
    }

    #[test]
    fn a_vm_started_after_being_stopped_is_charged_from_the_stopped_scrape() {
        let s = settings();
        let state = ScrapeState::default();
        let stopped = parse_exposition(TEXT, &s.config.metrics).unwrap();
        let plan = plan_scrape(&s, &state, &stopped, at(1000));
        commit(&state, &plan, &stopped);
        let started = parse_exposition(&TEXT.replace(r#"state{domain="acme-old"} 5"#, r#"state{domain="acme-old"} 1"#), &s.config.metrics).unwrap();
        let plan = plan_scrape(&s, &state, &started, at(1030));
        let old = plan.samples.iter().find(|v| v.vm_id == "acme-old").unwrap();
        assert_eq!((old.sample_interval_seconds, old.vcpu), (30, 4));
        // A VM absent from a scrape is forgotten.
        let without: BTreeMap<_, _> = started.iter().filter(|(k, _)| *k != "acme-old").map(|(k, v)| (k.clone(), v.clone())).collect();
        commit(&state, &plan_scrape(&s, &state, &without, at(1060)), &without);
        assert_eq!(state.last_seen("acme-old"), None);
    }

    #[test]
    fn missing_metrics_are_reported_not_guessed() {
        let s = settings();
        let text = TEXT.replace(r#"libvirt_domain_info_maximum_memory_bytes{domain="acme-web01"} 4.294967296e+09"#, "");
        let vms = parse_exposition(&text, &s.config.metrics).unwrap();
        let plan = plan_scrape(&s, &ScrapeState::default(), &vms, at(1000));
        assert_eq!(plan.incomplete, [("acme-web01".to_string(), "no memory metric".to_string())]);
        assert_eq!(plan.samples.len(), 1);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut config: VmCollectorConfig = toml::from_str(CONFIG).unwrap();
        config.vms[0].name_pattern = Some("(".into());
        assert!(Settings::new(config.clone()).unwrap_err().contains("vms[0].name_pattern"));
        config.vms[0].name_pattern = None;
        config.vms[0].labels.clear();
        assert!(Settings::new(config).unwrap_err().contains("vms[0] needs name_pattern or labels"));
        let err = toml::from_str::<VmCollectorConfig>(&format!("{CONFIG}\nintervall = 3\n")).unwrap_err().to_string();
        assert!(err.contains("intervall"), "{err}");
    }
}
