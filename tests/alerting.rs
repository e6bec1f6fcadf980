//! A contract overrun driven through the real pipeline fires its alert on
//! the real Prometheus of the local stack: demo ticket time -> Kafka ->
//! aggregator -> ClickHouse -> `meter contracts metrics` -> Prometheus
//! scrape -> rule MeterContractOverrun -> /api/v1/alerts. And the exporter
//! serves this week's consumption over each contract's spike threshold (the
//! series rule MeterConsumptionSpike reads), as ClickHouse computes it.

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
    env.config.contracts.metrics_listen = meter_config::ListenAddr::local(9605); // the port the local Prometheus scrapes
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

#[tokio::test(flavor = "multi_thread")]
async fn the_exporter_serves_this_weeks_consumption_over_the_spike_threshold() {
    let mut env = TestEnv::new("spike").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.config.contracts.metrics_listen = meter_config::ListenAddr::local(port);
    env.config.contracts.refresh_seconds = 1;
    std::fs::write(&env.config_path, toml::to_string(&env.config).unwrap()).unwrap();
    env.meter(&["migrate"]);

    // 3600 minutes of ticket time today: 7.5 days of 8 hours this week.
    let today = chrono::Utc::now().date_naive();
    let ch = env.clickhouse();
    ch.query(&format!(
        "INSERT INTO aggregates (aggregate_id, revision, is_final, version, kind, tenant, period, window_date, metric, unit, quantity, cost) \
         VALUES ('spike-day', 1, 0, 2, 'TICKET_TIME', 'acme', 'DAY', '{today}', 'ticket.time', 'minute', 3600, 0)"
    ))
    .execute()
    .await
    .unwrap();
    // 5.25 days a week: 1.25 puts the threshold at 6.5625 days (a spike),
    // 2 at 10.5 (none).
    let (spiking, quiet) = (format!("spiking-{}", env.name), format!("quiet-{}", env.name));
    let contracts = env.dir.path().join("contracts.toml");
    let year = chrono::Datelike::year(&today);
    let contract = |id: &str, factor: &str| {
        format!(
            "[[contracts]]\ntenant = \"acme\"\nid = \"{id}\"\nunit = \"days\"\nyearly_amount = \"263\"\nstart = \"{year}-01-01\"\n\
             end = \"{year}-12-31\"\nweekly_average = \"5.25\"\nspike_factor = \"{factor}\"\n\n"
        )
    };
    std::fs::write(&contracts, contract(&spiking, "1.25") + &contract(&quiet, "2")).unwrap();
    env.meter(&["contracts", "load", contracts.to_str().unwrap()]);
    let _exporter = Supervised::start(&env, &["contracts", "metrics"]);

    let series = |id: &str| format!("meter_tenant_contract_week_spike_ratio{{contract=\"{id}\",tenant=\"acme\",unit=\"days\"}} ");
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(&series(&spiking)) && text.contains(&series(&quiet)) {
            break text;
        }
        assert!(Instant::now() < deadline, "no spike gauges on /metrics within 60 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let value = |id: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&series(id))).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (ratio, consumed, threshold): (String, String, String) = ch
        .query("SELECT toString(spike_ratio), toString(consumed), toString(threshold) FROM contract_weekly_spikes WHERE contract_id = ? AND week = toMonday(today())")
        .bind(&spiking)
        .fetch_one()
        .await
        .unwrap();
    let dec = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
    assert_eq!((dec(&consumed), dec(&threshold)), (dec("7.5"), dec("6.5625")));
    assert!((value(&spiking) - ratio.parse::<f64>().unwrap()).abs() < 1e-6 && value(&spiking) > 1.0, "{ratio} vs {}", value(&spiking));
    assert!((value(&quiet) - 7.5 / 10.5).abs() < 1e-5, "{}", value(&quiet));
    // The week is a spike for one contract only.
    let spikes: Vec<String> = ch.query("SELECT contract_id FROM consumption_spikes WHERE week = toMonday(today())").fetch_all().await.unwrap();
    assert_eq!(spikes, vec![spiking]);
}
