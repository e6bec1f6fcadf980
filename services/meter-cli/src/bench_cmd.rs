//! `meter bench clickhouse`: loads years of aggregates for many tenants
//! into a separate database and times the analyst views on them.

use std::time::Instant;

use anyhow::Result;
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use clap::Args;
use meter_config::MeterConfig;
use sink_clickhouse::writer::AggregateRow;

#[derive(Args)]
pub struct BenchArgs {
    /// Tenants to load.
    #[arg(long, default_value_t = 500)]
    tenants: usize,
    /// Subsidiaries per tenant.
    #[arg(long, default_value_t = 3)]
    subsidiaries: usize,
    /// Years of history (ending 2026-12-31).
    #[arg(long, default_value_t = 3)]
    years: i32,
    /// Database created (dropped first) for the benchmark.
    #[arg(long, default_value = "meter_bench")]
    database: String,
    /// Runs of each query; the median is printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const DOMAINS: [&str; 2] = ["infrastructure", "workstation"];
const CATEGORIES: [&str; 2] = ["RUN > MCO > backups", "RUN > support > workstations"];

fn row(tenant: &str, sub: &str, domain: &str, category: &str, period: &str, first: NaiveDate, next: NaiveDate, minutes: i64) -> AggregateRow {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let secs = |d: NaiveDate| u32::try_from(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()).timestamp()).unwrap_or(0);
    let id = format!("{tenant}|{sub}|{domain}|{category}|{period}|{first}");
    AggregateRow {
        aggregate_id: id,
        revision: 1,
        is_final: 1,
        version: 3,
        kind: "TICKET_TIME".into(),
        tenant: tenant.into(),
        subsidiary: sub.into(),
        domain: domain.into(),
        period: period.into(),
        time_zone: "Europe/Paris".into(),
        window_start: secs(first),
        window_end: secs(next),
        window_date: u16::try_from((first - epoch).num_days()).unwrap_or(0),
        metric: "ticket.time".into(),
        unit: "minute".into(),
        dimension_keys: vec!["category".into(), "ticket_type".into()],
        dimension_values: vec![category.into(), "INCIDENT".into()],
        quantity: minutes * 1_000_000,
        event_count: 1,
        incident_count: 1,
        request_count: 0,
        ok_count: 0,
        warning_count: 0,
        ko_count: 0,
        unknown_count: 0,
        missed_count: 0,
        cost: minutes * 1_250_000,
        currency: "EUR".into(),
        price_book_version: "bench".into(),
        emitted_at: secs(first),
    }
}

pub async fn run(config: &MeterConfig, args: BenchArgs) -> Result<()> {
    let admin = sink_clickhouse::client(&config.clickhouse);
    admin.query(&format!("DROP DATABASE IF EXISTS {}", args.database)).execute().await?;
    sink_clickhouse::migrations::migrate(&admin, &config.clickhouse.url, &args.database).await?;
    let client = admin.clone().with_database(&args.database);
    let first_day = NaiveDate::from_ymd_opt(2026 - args.years + 1, 1, 1).unwrap_or_default();
    let end = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
    let started = Instant::now();
    let mut rows = 0u64;
    for t in 0..args.tenants {
        let tenant = format!("tenant{t:04}");
        let mut insert = client.insert::<AggregateRow>("aggregates").await?;
        for s in 0..args.subsidiaries {
            let sub = format!("{tenant}-sub{s}");
            for (d, domain) in DOMAINS.iter().enumerate() {
                let category = CATEGORIES[d];
                let mut day = first_day;
                let mut month_minutes = 0i64;
                let mut year_minutes = 0i64;
                while day < end {
                    // Deterministic, seasonal-looking minutes.
                    let minutes = 30 + ((t * 7 + s * 13 + d * 17) as i64 + i64::from(day.ordinal())) % 240;
                    let next = day + Duration::days(1);
                    insert.write(&row(&tenant, &sub, domain, category, "DAY", day, next, minutes)).await?;
                    rows += 1;
                    month_minutes += minutes;
                    year_minutes += minutes;
                    if next.day() == 1 {
                        let month = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
                        insert.write(&row(&tenant, &sub, domain, category, "MONTH", month, next, month_minutes)).await?;
                        rows += 1;
                        month_minutes = 0;
                    }
                    if next.ordinal() == 1 {
                        let year = NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day);
                        insert.write(&row(&tenant, &sub, domain, category, "YEAR", year, next, year_minutes)).await?;
                        rows += 1;
                        year_minutes = 0;
                    }
                    day = next;
                }
            }
        }
        insert.end().await?;
    }
    println!("loaded {rows} aggregates ({} tenants x {} subsidiaries x {} domains x {} years) in {:.1} s",
        args.tenants, args.subsidiaries, DOMAINS.len(), args.years, started.elapsed().as_secs_f64());
    admin.query(&format!("OPTIMIZE TABLE {}.aggregates FINAL", args.database)).execute().await?;

    // Analysts read through their tenant's database (`meter tenants provision`),
    // which holds only their rows; admins read the shared views.
    let tenant = format!("tenant{:04}", args.tenants / 2);
    let t0 = Instant::now();
    let tenant_db = sink_clickhouse::tenants::provision(&admin, &args.database, &tenant, "bench-only", &config.clickhouse.users_d_dir).await?.database;
    println!("provisioned {tenant_db} (back-fill) in {:.1} s", t0.elapsed().as_secs_f64());
    let queries = [
        ("seasonality (a month vs earlier years)", format!("SELECT year, sum(minutes) FROM {{db}}.seasonality_monthly WHERE tenant = '{tenant}' AND month_of_year = 1 GROUP BY year")),
        ("seasonality filtered by category", format!("SELECT year, sum(minutes) FROM {{db}}.seasonality_monthly WHERE tenant = '{tenant}' AND month_of_year = 1 AND category LIKE '%backups%' GROUP BY year")),
        ("re-billing (a month per subsidiary)", format!("SELECT subsidiary, sum(cost) FROM {{db}}.rebilling_monthly WHERE tenant = '{tenant}' AND month = '2026-01-01' GROUP BY subsidiary")),
        ("daily totals (a month)", format!("SELECT day, sum(cost) FROM {{db}}.daily_totals WHERE tenant = '{tenant}' AND day >= '2026-01-01' AND day < '2026-02-01' GROUP BY day")),
        ("incident cost per year (ROI)", format!("SELECT year, sum(yearly_incident_cost) FROM {{db}}.incident_cost_yearly WHERE tenant = '{tenant}' GROUP BY year")),
    ];
    println!("{:<42} {:>14} {:>14}", "view, one tenant (median ms)", "tenant db", "shared db");
    for (name, sql) in queries {
        let mut medians = Vec::new();
        for db in [tenant_db.as_str(), args.database.as_str()] {
            let sql = sql.replace("{db}", db);
            let mut times = Vec::new();
            for _ in 0..args.runs.max(1) {
                let t = Instant::now();
                admin.query(&sql).fetch_bytes("TSV")?.collect().await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            medians.push(times[times.len() / 2]);
        }
        println!("{name:<42} {:>14.1} {:>14.1}", medians[0], medians[1]);
    }
    Ok(())
}
