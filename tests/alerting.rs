//! A contract overrun driven through the real pipeline fires its alert on
//! the real Prometheus of the local stack: demo ticket time -> Kafka ->
//! aggregator -> ClickHouse -> `meter contracts metrics` -> Prometheus
//! scrape -> rule MeterContractOverrun -> /api/v1/alerts.

use std::time::{Duration, Instant};

use meter_tests::{stack, Supervised, TestEnv};
use serde_json::Value;

fn prometheus() -> String {
    format!("http://127.0.0.1:{}", std::env::var("METER_PROMETHEUS_PORT").unwrap_or_else(|_| "9090".into()))
}

async fn get(path: &str) -> Value {
    reqwest::get(format!("{}{path}", prometheus())).await.expect("Prometheus answers").json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_contract_overrun_fires_its_alert_on_the_real_prometheus() {
    let mut env = TestEnv::new("alert").await;
    env.config.contracts.metrics_listen = "127.0.0.1:9605".into(); // the port the local Prometheus scrapes
    env.config.contracts.refresh_seconds = 2;
    std::fs::write(&env.config_path, toml::to_string(&env.config).unwrap()).unwrap();

    // The running Prometheus must have the current rules.
    let rules = get("/api/v1/rules").await.to_string();
    if !rules.contains("MeterContractOverrun") {
        stack(&["stop", "prometheus"]);
        // The port may still be held for a moment after the stop.
        let restarted = (0..5).any(|_| {
            std::thread::sleep(Duration::from_secs(2));
            std::process::Command::new("bash")
                .arg(meter_tests::repo_root().join("scripts/stack.sh"))
                .args(["start", "prometheus"])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(restarted, "Prometheus did not restart: read .stack/logs/prometheus.log");
    }

    let dir = env.dir.path().join("demo");
    env.meter(&["migrate"]);
    env.meter(&["demo", "generate", "--out", dir.to_str().unwrap()]);
    env.meter(&["collect", "file", "--kind", "ticket-time", dir.join("ticket-time.jsonl").to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    // 10 days a year cannot cover January's 27: an overrun. 100000 days can.
    let over = format!("over-{}", env.name);
    let under = format!("under-{}", env.name);
    let contracts = env.dir.path().join("contracts.toml");
    std::fs::write(
        &contracts,
        format!(
            "[[contracts]]\ntenant = \"acme\"\nid = \"{over}\"\nunit = \"days\"\nyearly_amount = \"10\"\nstart = \"2026-01-01\"\nend = \"2026-12-31\"\n\n\
             [[contracts]]\ntenant = \"acme\"\nid = \"{under}\"\nunit = \"days\"\nyearly_amount = \"100000\"\nstart = \"2026-01-01\"\nend = \"2026-12-31\"\n"
        ),
    )
    .unwrap();
    env.meter(&["contracts", "load", contracts.to_str().unwrap()]);
    let _exporter = Supervised::start(&env, &["contracts", "metrics"]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let firing = loop {
        let alerts = get("/api/v1/alerts").await;
        let found = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "MeterContractOverrun" && a["labels"]["contract"] == over.as_str() && a["state"] == "firing")
            .cloned();
        if let Some(alert) = found {
            break alert;
        }
        assert!(Instant::now() < deadline, "MeterContractOverrun for {over} did not fire within 120 s: {alerts}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(firing["labels"]["tenant"], "acme");
    assert_eq!(firing["labels"]["severity"], "ticket");

    // The ratio Prometheus saw is consumed over expected to date, as in ClickHouse.
    let query = get(&format!("/api/v1/query?query=meter_tenant_contract_consumed_ratio%7Bcontract%3D%22{over}%22%7D")).await;
    let seen: f64 = query["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    let (expected, consumed): (String, String) = env
        .clickhouse()
        .query("SELECT toString(expected_to_date), toString(consumed_to_date) FROM contract_status WHERE contract_id = ?")
        .bind(&over)
        .fetch_one()
        .await
        .unwrap();
    let want = consumed.parse::<f64>().unwrap() / expected.parse::<f64>().unwrap();
    assert!((seen - want).abs() < 1e-6 && seen > 1.10, "ratio {seen} vs {want}");

    // The contract that covers the consumption does not alert.
    let alerts = get("/api/v1/alerts").await;
    assert!(
        !alerts["data"]["alerts"].as_array().into_iter().flatten().any(|a| a["labels"]["contract"] == under.as_str()),
        "{under} must not alert: {alerts}"
    );
}
