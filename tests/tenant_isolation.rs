//! A tenant's read-only ClickHouse user sees its own rows through every view
//! of its database, and nothing else: not the shared database, not another
//! tenant's database, and it cannot write. Rows keep flowing into its
//! database after provisioning.

use std::time::{Duration, Instant};

use meter_tests::TestEnv;

async fn login(env: &TestEnv, user: &str, password: &str) -> clickhouse::Client {
    let client = sink_clickhouse::client(&env.config.clickhouse).with_user(user).with_password(password);
    // ClickHouse picks new users.d files up on its own within seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.query("SELECT 1").fetch_one::<u8>().await {
            Ok(_) => return client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{user} cannot log in: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_user_reads_only_its_own_rows_by_any_view() {
    let env = TestEnv::new("tenants").await;
    let dir = env.dir.path().join("demo");
    env.meter(&["migrate"]);
    env.meter(&["demo", "generate", "--out", dir.to_str().unwrap()]);
    for kind in ["ticket-time", "check-result", "vm-usage"] {
        env.meter(&["collect", "file", "--kind", kind, dir.join(format!("{kind}.jsonl")).to_str().unwrap()]);
    }
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    env.meter(&["contracts", "load", meter_tests::repo_root().join("config/contracts.example.toml").to_str().unwrap()]);
    let out = env.meter(&["tenants", "provision", "--tenant", "acme", "--tenant", "initech", "--password", "s3cret-test"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let db = &env.config.clickhouse.database;
    let (acme_db, acme_user) = (format!("{db}_tenant_acme"), format!("{db}_acme"));
    let initech_db = format!("{db}_tenant_initech");
    assert!(printed.contains(&acme_db) && printed.contains(&acme_user), "{printed}");
    // Provisioning again changes nothing.
    env.meter(&["tenants", "provision", "--tenant", "acme", "--password", "s3cret-test"]);

    let admin = sink_clickhouse::client(&env.config.clickhouse);
    let acme = login(&env, &acme_user, "s3cret-test").await;

    // Every relation of the tenant's database holds only its rows.
    let relations: Vec<String> =
        admin.query("SELECT name FROM system.tables WHERE database = ? ORDER BY name").bind(&acme_db).fetch_all().await.unwrap();
    for view in ["seasonality_monthly", "rebilling_monthly", "contract_burn_monthly", "check_compliance_weekly", "ticket_task_lines", "daily_totals", "incident_cost_yearly"] {
        assert!(relations.contains(&view.to_string()), "{view} missing in {acme_db}: {relations:?}");
    }
    let mut non_empty = 0;
    for relation in &relations {
        let tenants: Vec<String> =
            acme.query(&format!("SELECT DISTINCT tenant FROM {acme_db}.{relation}")).fetch_all().await.unwrap_or_else(|e| panic!("{relation}: {e}"));
        assert!(tenants.iter().all(|t| t == "acme"), "{relation} shows {tenants:?}");
        non_empty += usize::from(!tenants.is_empty());
    }
    assert!(non_empty >= 8, "the tenant's relations are filled ({non_empty} non-empty)");
    let in_tenant_db: u64 = acme.query(&format!("SELECT count() FROM {acme_db}.aggregates FINAL")).fetch_one().await.unwrap();
    let shared: u64 = admin.query(&format!("SELECT count() FROM {db}.aggregates FINAL WHERE tenant = 'acme'")).fetch_one().await.unwrap();
    assert_eq!(in_tenant_db, shared);

    // Nothing else is readable, nothing is writable.
    for forbidden in [format!("{db}.aggregates"), format!("{db}.seasonality_monthly"), format!("{initech_db}.aggregates"), format!("{initech_db}.rebilling_monthly")] {
        let denied = acme.query(&format!("SELECT count() FROM {forbidden}")).fetch_one::<u64>().await;
        assert!(denied.is_err(), "{acme_user} could read {forbidden}");
    }
    let write = acme.query(&format!("INSERT INTO {acme_db}.contracts (tenant) VALUES ('acme')")).execute().await;
    assert!(write.is_err(), "a read-only user could write");

    // New events keep flowing into the tenant's database.
    let extra = dir.join("extra.jsonl");
    std::fs::write(
        &extra,
        r#"{"event_id":"extra-1","source":"glpi-demo","tenant":"acme","subsidiary":"acme-fr","domain":"network","event_time":"2026-03-02T10:00:00Z","ticket_id":"2026-900","task_id":"900","ticket_type":"REQUEST","category_path":["RUN","MCO","network"],"requester":"marie.dupont","technician":"bob","technician_profile":"ENGINEER","minutes_worked":42,"start_time":"2026-03-02T09:18:00Z"}
"#,
    )
    .unwrap();
    env.meter(&["collect", "file", "--kind", "ticket-time", extra.to_str().unwrap()]);
    env.meter(&["aggregate", "--until-idle", "2"]);
    env.meter(&["sink", "clickhouse", "--until-idle", "2"]);
    let march: Vec<String> = acme
        .query(&format!("SELECT toString(sum(minutes_worked)) FROM {acme_db}.ticket_task_lines WHERE month = '2026-03-01'"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(march, vec!["42".to_string()]);
}
