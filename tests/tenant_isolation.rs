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

/// Runs `meter ARGS` with the test's config; its exit status and output, failure allowed.
fn meter_may_fail(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(meter_tests::meter_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args(args)
        .current_dir(meter_tests::repo_root())
        .output()
        .expect("meter runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Where `meter tenants provision` writes users.d files for this test.
fn users_d_dir(env: &TestEnv) -> std::path::PathBuf {
    let dir = &env.config.clickhouse.users_d_dir;
    if dir.is_absolute() {
        dir.clone()
    } else {
        std::env::var_os("METER_CLICKHOUSE__USERS_D_DIR").map(Into::into).unwrap_or_else(|| meter_tests::repo_root().join(dir))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_take_over_another_by_a_colliding_id_nor_share_a_password() {
    let env = TestEnv::new("tenant_collide").await;
    env.meter(&["migrate"]);
    // One --password for two tenants: refused before anything is created.
    let (ok, out) = meter_may_fail(&env, &["tenants", "provision", "--tenant", "acme", "--tenant", "initech", "--password", "shared-pw"]);
    assert!(!ok && out.contains("share it"), "{out}");
    // Two colliding ids in one call: refused before anything is created.
    let (ok, out) = meter_may_fail(&env, &["tenants", "provision", "--tenant", "acme-fr", "--tenant", "acme_fr"]);
    assert!(!ok && out.contains("would share one database"), "{out}");
    let db = &env.config.clickhouse.database;
    let admin = sink_clickhouse::client(&env.config.clickhouse);
    let exists: u8 = admin.query("SELECT count() > 0 FROM system.databases WHERE name = ?").bind(format!("{db}_tenant_acme_fr")).fetch_one().await.unwrap();
    assert_eq!(exists, 0, "nothing was created");
    // acme-fr provisioned; acme_fr later, alone: refused, acme-fr's user file untouched.
    env.meter(&["tenants", "provision", "--tenant", "acme-fr", "--password", "acme-fr-password"]);
    let file = users_d_dir(&env).join(format!("{db}_acme_fr.xml"));
    let before = std::fs::read_to_string(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "users.d files are not world-readable");
    }
    let (ok, out) = meter_may_fail(&env, &["tenants", "provision", "--tenant", "acme_fr", "--password", "attacker-password"]);
    assert!(!ok && out.contains("\"acme-fr\""), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "the first tenant's user is unchanged");
    // acme-fr itself may provision again.
    env.meter(&["tenants", "provision", "--tenant", "acme-fr", "--password", "acme-fr-password"]);
    let _ = std::fs::remove_file(&file);
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
    let out = env.meter(&["tenants", "provision", "--tenant", "acme", "--password", "s3cret-test"]);
    env.meter(&["tenants", "provision", "--tenant", "initech", "--password", "initech-s3cret"]);
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
