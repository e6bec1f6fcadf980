//! The VM collector against the real broker of the local stack: an HTTP
//! server in this process serves libvirt-exporter text that changes between
//! scrapes (a VM resized, a VM stopped then started again, an unmapped VM, a
//! failed scrape); `scrape_once` runs at injected times and the vm-usage
//! topic must then hold exactly the expected SAMPLE events. Then a CSV file
//! of lifecycle events with a bad row: the good rows on the topic, the bad
//! one on the dead-letter topic with its line and bytes.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use collector_runtime::CollectorMetrics;
use collector_vm::{ScrapeState, Settings, VmCollectorConfig};
use meter_model::{DeadLetter, Event, EventCodec, EventKind, SlaTier, VmTransition, VmUsage};
use meter_tests::TestEnv;

const SOURCE: &str = "hv-test";

fn exposition(vms: &[(&str, u32, u64, u64, u32)]) -> String {
    let mut text = String::from("# TYPE libvirt_up gauge\nlibvirt_up 1\n");
    for (metric, pick) in [
        ("libvirt_domain_info_virtual_cpus", 0usize),
        ("libvirt_domain_info_maximum_memory_bytes", 1),
        ("libvirt_domain_block_stats_capacity_bytes", 2),
        ("libvirt_domain_info_state", 3),
    ] {
        text.push_str(&format!("# TYPE {metric} gauge\n"));
        for (vm, vcpu, mem_gib, disk_gib, state) in vms {
            let value = match pick {
                0 => vcpu.to_string(),
                1 => (mem_gib << 30).to_string(),
                2 => (disk_gib << 30).to_string(),
                _ => state.to_string(),
            };
            let device = if pick == 2 { ",target_device=\"vda\"" } else { "" };
            text.push_str(&format!("{metric}{{domain=\"{vm}\"{device}}} {value}\n"));
        }
    }
    text
}

fn settings(url: String) -> Settings {
    let config: VmCollectorConfig = toml::from_str(&format!(
        r#"
url = "{url}"
source = "{SOURCE}"
interval_seconds = 60

[[vms]]
name_pattern = "^acme-"
tenant = "acme"
subsidiary = "acme-fr"
domain = "infrastructure"
sla_tier = "SLA_99_9"
datacenter = "par1"
options = ["backup"]
bandwidth_mbps = 100
public_ips = 1
"#
    ))
    .expect("config parses");
    Settings::new(config).expect("config is valid")
}

/// (event_id, vm, vcpu, ram_mib, storage_gb, interval, event_time)
type Row = (String, String, i32, i64, i64, i32, DateTime<Utc>);

fn row(v: &VmUsage) -> Row {
    (v.header.event_id.clone(), v.vm_id.clone(), v.vcpu, v.ram_mib, v.storage_gb, v.sample_interval_seconds, v.header.event_time)
}

fn vm_events(env: &TestEnv) -> Vec<VmUsage> {
    env.read_topic(&env.config.topics.vm_usage)
        .into_iter()
        .map(|(key, payload, _)| {
            let Event::VmUsage(v) = EventCodec::decode_event(EventKind::VmUsage, &payload).expect("vm usage decodes") else {
                panic!("not a VM event")
            };
            assert_eq!(key.as_deref(), Some(v.header.tenant.as_str()), "keyed by tenant");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_publish_time_weighted_samples_and_csv_rows_with_a_bad_one() {
    let env = TestEnv::new("vm_collector").await;
    let body = Arc::new(Mutex::new((200u16, String::new())));
    let served = body.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let served = served.clone();
            async move {
                let (status, text) = served.lock().expect("lock").clone();
                (axum::http::StatusCode::from_u16(status).expect("status"), text)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    let settings = settings(format!("http://{address}/metrics"));
    let producer = meter_kafka::producer(&env.config.kafka).expect("producer");
    let metrics = CollectorMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let state = ScrapeState::default();
    let t0: DateTime<Utc> = "2026-01-05T10:00:00Z".parse().expect("time");
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let set = |status: u16, text: String| *body.lock().expect("lock") = (status, text);

    // 1: two running acme VMs and an unmapped one.
    set(200, exposition(&[("acme-web01", 2, 4, 20, 1), ("acme-db01", 4, 8, 50, 1), ("lab-x", 1, 1, 10, 1)]));
    let r = collector_vm::scrape_once(&env.config, &settings, &producer, &metrics, &state, at(0)).await.expect("scrape 1");
    assert_eq!((r.vms, r.published, r.unmapped.clone()), (3, 2, vec!["lab-x".to_string()]));
    // 2: web01 resized, db01 stopped.
    set(200, exposition(&[("acme-web01", 4, 8, 20, 1), ("acme-db01", 4, 8, 50, 5), ("lab-x", 1, 1, 10, 1)]));
    let r = collector_vm::scrape_once(&env.config, &settings, &producer, &metrics, &state, at(60)).await.expect("scrape 2");
    assert_eq!((r.published, r.stopped.clone()), (1, vec!["acme-db01".to_string()]));
    // A failed scrape publishes nothing and changes nothing.
    set(503, "exporter restarting".into());
    let err = collector_vm::scrape_once(&env.config, &settings, &producer, &metrics, &state, at(120)).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    // 3: db01 started again; 90 s since the scrape that last saw both VMs.
    set(200, exposition(&[("acme-web01", 4, 8, 20, 1), ("acme-db01", 4, 8, 50, 1), ("lab-x", 1, 1, 10, 1)]));
    let r = collector_vm::scrape_once(&env.config, &settings, &producer, &metrics, &state, at(150)).await.expect("scrape 3");
    assert_eq!(r.published, 2);
    // The same instant again (a retried run) publishes nothing more.
    let r = collector_vm::scrape_once(&env.config, &settings, &producer, &metrics, &state, at(150)).await.expect("scrape 3 again");
    assert_eq!(r.published, 0);

    let events = vm_events(&env);
    assert!(events.iter().all(|v| v.transition == VmTransition::Sample && v.header.source == SOURCE && v.header.tenant == "acme"));
    assert!(events.iter().all(|v| v.sla_tier == SlaTier::Sla99_9 && v.datacenter == "par1" && v.options == ["backup"] && v.bandwidth_mbps == 100 && v.public_ips == 1));
    let mut got: Vec<Row> = events.iter().map(row).collect();
    got.sort();
    let id = |vm: &str, s: i64| format!("{SOURCE}:{vm}:{}", at(s).timestamp());
    let mut want: Vec<Row> = vec![
        (id("acme-web01", 0), "acme-web01".into(), 2, 4096, 20, 60, at(0)),
        (id("acme-db01", 0), "acme-db01".into(), 4, 8192, 50, 60, at(0)),
        (id("acme-web01", 60), "acme-web01".into(), 4, 8192, 20, 60, at(60)),
        (id("acme-web01", 150), "acme-web01".into(), 4, 8192, 20, 90, at(150)),
        (id("acme-db01", 150), "acme-db01".into(), 4, 8192, 50, 90, at(150)),
    ];
    want.sort();
    assert_eq!(got, want);
    // The unmapped VM's usage is dead-lettered with its interval (not dropped), once per
    // scrape that covers time: 60 s, 60 s, 90 s (the retried instant covers none).
    assert_eq!(metrics.rejected_count("vm-usage", "unmapped_vm"), 3);

    // CSV: two good rows and a bad one (line 3).
    let csv = env.dir.path().join("vms.csv");
    let bad = "csv-2,vmware,acme,acme-fr,infrastructure,2026-01-05T11:00:00Z,acme-app01,2,4096,40,100,false,0,SLA_99_99,,par2,SAMPLE,0";
    std::fs::write(
        &csv,
        [
            "event_id,source,tenant,subsidiary,domain,event_time,vm_id,vcpu,ram_mib,storage_gb,bandwidth_mbps,guaranteed_bandwidth,public_ips,sla_tier,options,datacenter,transition,sample_interval_seconds",
            "csv-1,vmware,acme,acme-fr,infrastructure,2026-01-05T10:00:00Z,acme-app01,2,4096,40,100,true,1,SLA_99_99,backup;monitoring,par2,CREATE,0",
            bad,
            "csv-3,vmware,acme,acme-fr,infrastructure,2026-01-05T11:00:00Z,acme-app01,2,4096,40,100,true,1,SLA_99_99,backup;monitoring,par2,SAMPLE,3600",
        ]
        .join("\n"),
    )
    .expect("write csv");
    let report = collector_vm::publish_csv(&env.config, &producer, &metrics, &csv).await.expect("csv");
    assert_eq!((report.rows, report.published), (3, 2));
    assert_eq!(report.rejections.iter().map(|r| (r.line, r.reason)).collect::<Vec<_>>(), [(3, "invalid_event")]);

    let csv_events: Vec<VmUsage> = vm_events(&env).into_iter().filter(|v| v.header.source == "vmware").collect();
    let mut got: Vec<(String, VmTransition, i32, Vec<String>, bool)> = csv_events
        .iter()
        .map(|v| (v.header.event_id.clone(), v.transition, v.sample_interval_seconds, v.options.clone(), v.guaranteed_bandwidth))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let opts = vec!["backup".to_string(), "monitoring".to_string()];
    assert_eq!(got, [("csv-1".into(), VmTransition::Create, 0, opts.clone(), true), ("csv-3".into(), VmTransition::Sample, 3600, opts, true)]);

    let letters: Vec<DeadLetter> = env
        .read_topic(&env.config.topics.dead_letters)
        .into_iter()
        .map(|(_, payload, _)| EventCodec::decode(&payload).expect("dead letter decodes"))
        .collect();
    let (scraped, letters): (Vec<DeadLetter>, Vec<DeadLetter>) = letters.into_iter().partition(|d| d.component == "collector-vm");
    let mut intervals: Vec<i64> = scraped
        .iter()
        .map(|d| {
            assert_eq!(d.error_kind, "unmapped_vm");
            let o: serde_json::Value = serde_json::from_slice(&d.original).expect("JSON");
            assert_eq!(o["vm_id"], "lab-x");
            o["sample_interval_seconds"].as_i64().expect("interval")
        })
        .collect();
    intervals.sort();
    assert_eq!(intervals, [60, 60, 90], "every second of the unmapped VM is in a dead letter");
    assert_eq!(letters.len(), 1);
    let d = &letters[0];
    assert_eq!((d.component.as_str(), d.error_kind.as_str(), d.source_line), ("collector-vm-csv", "invalid_event", Some(3)));
    assert_eq!(d.original, bad.as_bytes());
    assert_eq!(d.source_file.as_deref(), Some(csv.display().to_string().as_str()));
}
