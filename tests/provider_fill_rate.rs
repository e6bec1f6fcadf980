//! The provider fill rate through the real pipeline: the demo's VM usage
//! (PAR1) and a VM that ran all of yesterday in a datacenter of this test,
//! collected, aggregated and sunk into ClickHouse; the capacity loaded with
//! `meter capacity load`. The views are checked against the VM events walked
//! here, and `meter contracts metrics` serves yesterday's fill rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use meter_tests::{Supervised, TestEnv};
use rust_decimal::Decimal;
use serde_json::{json, Value};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// vCPU-seconds per (datacenter, UTC day): a SAMPLE covers the interval
/// before its time; a START runs until the VM's next event; a STOP ends it.
fn vcpu_seconds(events: &[Value]) -> BTreeMap<(String, NaiveDate), i64> {
    let mut per_vm: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in events {
        per_vm.entry(format!("{}/{}", e["tenant"], e["vm_id"])).or_default().push(e);
    }
    let time = |e: &Value| e["event_time"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let mut sold = BTreeMap::new();
    for vm in per_vm.values_mut() {
        vm.sort_by_key(|e| time(e));
        for (i, e) in vm.iter().enumerate() {
            let (from, to) = match e["transition"].as_str().unwrap() {
                "SAMPLE" => (time(e) - chrono::Duration::seconds(e["sample_interval_seconds"].as_i64().unwrap()), time(e)),
                "START" => (time(e), vm.get(i + 1).map(|n| time(n)).expect("the demo stops what it starts")),
                "STOP" => continue,
                other => panic!("not in the demo: {other}"),
            };
            let mut t = from;
            while t < to {
                let midnight = t.date_naive().succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
                let end = to.min(midnight);
                *sold.entry((e["datacenter"].as_str().unwrap().to_string(), t.date_naive())).or_default() +=
                    e["vcpu"].as_i64().unwrap() * (end - t).num_seconds();
                t = end;
            }
        }
    }
    sold
}

#[tokio::test(flavor = "multi_thread")]
async fn fill_rate_views_and_gauges_follow_the_vms() {
    let mut env = TestEnv::new("fillrate").await;
    env.config.contracts.metrics_listen = meter_config::ListenAddr::local(19617);
    env.config.contracts.refresh_seconds = 1;
    env.save_config();
    let dir = env.dir.path().join("demo");
    env.meter(&["migrate"]);
    env.meter(&["demo", "generate", "--out", dir.to_str().unwrap()]);
    // A VM of 4 vCPU, 8 GiB, 100 GB sampled every hour of yesterday in this test's datacenter.
    let datacenter = format!("DC-{}", env.name);
    let yesterday = Utc::now().date_naive().pred_opt().unwrap();
    let mut extra = String::new();
    for hour in 1..=24 {
        let at = yesterday.and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::Duration::hours(hour);
        extra.push_str(
            &json!({
                "event_id": format!("yesterday-{hour}"), "source": "fill-test", "tenant": "initech", "subsidiary": "initech-hq",
                "domain": "infrastructure", "event_time": at.to_rfc3339(), "vm_id": "steady-1", "vcpu": 4, "ram_mib": 8192,
                "storage_gb": 100, "bandwidth_mbps": 100, "guaranteed_bandwidth": false, "public_ips": 1, "sla_tier": "SLA_99_9",
                "options": [], "datacenter": datacenter, "transition": "SAMPLE", "sample_interval_seconds": 3600,
            })
            .to_string(),
        );
        extra.push('\n');
    }
    let extra_path = env.dir.path().join("yesterday.jsonl");
    std::fs::write(&extra_path, extra).unwrap();
    env.meter(&["collect", "file", "--kind", "vm-usage", dir.join("vm-usage.jsonl").to_str().unwrap()]);
    env.meter(&["collect", "file", "--kind", "vm-usage", extra_path.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    let capacity = env.dir.path().join("capacity.toml");
    std::fs::write(
        &capacity,
        format!(
            "[[datacenters]]\nname = \"PAR1\"\nvcpu = 16\nram_gib = 64\nstorage_gb = 1000\n\n\
             [[datacenters]]\nname = \"{datacenter}\"\nvcpu = 8\nram_gib = 32\nstorage_gb = 400\n"
        ),
    )
    .unwrap();
    env.meter(&["capacity", "load", capacity.to_str().unwrap()]);
    // A typo in the file is refused, with the key named.
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, "[[datacenters]]\nname = \"PAR1\"\nvcpus = 16\n").unwrap();
    let refused = env.meter_status(&["capacity", "load", bad.to_str().unwrap()]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("vcpus"));

    // Daily: the demo's VMs in PAR1 (16 vCPU installed), to the micro-vCPU.
    let sold = vcpu_seconds(&lines(&dir.join("vm-usage.jsonl")));
    let ch = env.clickhouse();
    let daily: Vec<(String, String, String)> = ch
        .query("SELECT toString(day), toString(vcpu_sold), toString(vcpu_fill_rate) FROM provider_fill_rate_daily WHERE datacenter = 'PAR1' ORDER BY day")
        .fetch_all()
        .await
        .unwrap();
    let want: Vec<(String, i64)> = sold.iter().filter(|((dc, _), _)| dc == "PAR1").map(|((_, d), s)| (d.to_string(), *s)).collect();
    assert!(want.len() >= 3, "the demo's VMs run over several days: {want:?}");
    assert_eq!(daily.iter().map(|(d, _, _)| d.clone()).collect::<Vec<_>>(), want.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>());
    let micro = Decimal::new(1, 6);
    for ((day, vcpu, rate), (_, seconds)) in daily.iter().zip(&want) {
        let vcpu_want = Decimal::from(*seconds) / Decimal::from(86400);
        assert!((vcpu.parse::<Decimal>().unwrap() - vcpu_want).abs() < micro, "{day}: {vcpu} vs {vcpu_want}");
        assert!((rate.parse::<Decimal>().unwrap() - vcpu_want / Decimal::from(16)).abs() < micro, "{day}: rate {rate}");
    }
    // Monthly: January's vCPU-seconds over 31 days of 16 vCPU.
    let (month_rate, days): (String, i64) = ch
        .query("SELECT toString(vcpu_fill_rate), days FROM provider_fill_rate_monthly WHERE datacenter = 'PAR1' AND month = '2026-01-01'")
        .fetch_one()
        .await
        .unwrap();
    let january: i64 = want.iter().filter(|(d, _)| d.starts_with("2026-01")).map(|(_, s)| s).sum();
    assert_eq!(days, 31);
    let month_want = Decimal::from(january) / Decimal::from(86400 * 31 * 16);
    assert!((month_rate.parse::<Decimal>().unwrap() - month_want).abs() < micro, "{month_rate} vs {month_want}");

    // Yesterday in this test's datacenter: 4 of 8 vCPU, 8 of 32 GiB, 100 of 400 GB.
    let (vcpu, ram, storage): (String, String, String) = ch
        .query("SELECT toString(vcpu_fill_rate), toString(ram_fill_rate), toString(storage_fill_rate) FROM provider_fill_rate_daily WHERE datacenter = ? AND day = yesterday()")
        .bind(&datacenter)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((vcpu.parse::<Decimal>().unwrap(), ram.parse::<Decimal>().unwrap(), storage.parse::<Decimal>().unwrap()), (Decimal::new(5, 1), Decimal::new(25, 2), Decimal::new(25, 2)));

    // The exporter serves it for the alert rules (below 0.75: MeterProviderFillRateBelowTarget's input).
    let _exporter = Supervised::start(&env, &["contracts", "metrics"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let want_line = format!("meter_provider_fill_ratio{{datacenter=\"{datacenter}\",resource=\"vcpu\"}} 0.5");
    loop {
        let body = match reqwest::get("http://127.0.0.1:19617/metrics").await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains(&want_line) {
            assert!(body.contains(&format!("meter_provider_fill_ratio{{datacenter=\"{datacenter}\",resource=\"ram\"}} 0.25")), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no {want_line} within 60 s:\n{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
