//! Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order
//! once each, recorded in `<db>.schema_migrations`. `{db}` in a file is the
//! configured database. Statements are separated by `;` at a line end.

use clickhouse::Client;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("ClickHouse at {url}: {source} (is it running? `meter stack status`)")]
    ClickHouse { url: String, source: clickhouse::error::Error },
    #[error("migration {name} failed: {source}")]
    Statement { name: String, source: clickhouse::error::Error },
}

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "aggregates", sql: include_str!("../migrations/0001_aggregates.sql") },
    Migration { version: 2, name: "daily_totals_view", sql: include_str!("../migrations/0002_daily_totals_view.sql") },
    Migration { version: 3, name: "detail_tables", sql: include_str!("../migrations/0003_detail_tables.sql") },
    Migration { version: 4, name: "reprocess_log", sql: include_str!("../migrations/0004_reprocess_log.sql") },
    Migration { version: 5, name: "contracts", sql: include_str!("../migrations/0005_contracts.sql") },
    Migration { version: 6, name: "analyst_views", sql: include_str!("../migrations/0006_analyst_views.sql") },
    Migration { version: 7, name: "event_identity_and_period_closes", sql: include_str!("../migrations/0007_event_identity_and_period_closes.sql") },
    Migration { version: 8, name: "contract_spike_factors", sql: include_str!("../migrations/0008_contract_spike_factors.sql") },
    Migration { version: 9, name: "consumption_spikes", sql: include_str!("../migrations/0009_consumption_spikes.sql") },
    Migration { version: 10, name: "budget_forecast", sql: include_str!("../migrations/0010_budget_forecast.sql") },
    Migration { version: 11, name: "provider_fill_rate", sql: include_str!("../migrations/0011_provider_fill_rate.sql") },
];

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Applied {
    version: u32,
}

/// Splits a migration into statements, dropping comment-only parts.
pub fn statements(sql: &str, database: &str) -> Vec<String> {
    sql.replace("{db}", database)
        .split(";\n")
        .map(|s| s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n"))
        .map(|s| s.trim().trim_end_matches(';').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Applies the migrations not yet recorded. Returns the versions applied now.
pub async fn migrate(client: &Client, url: &url::Url, database: &str) -> Result<Vec<u32>, MigrationError> {
    let server = |source| MigrationError::ClickHouse { url: url.to_string(), source };
    client.query(&format!("CREATE DATABASE IF NOT EXISTS {database}")).execute().await.map_err(server)?;
    client
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {database}.schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now()) \
             ENGINE = MergeTree ORDER BY version"
        ))
        .execute()
        .await
        .map_err(server)?;
    let applied: Vec<Applied> = client
        .query(&format!("SELECT version FROM {database}.schema_migrations"))
        .fetch_all()
        .await
        .map_err(server)?;
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if applied.iter().any(|a| a.version == m.version) {
            continue;
        }
        for statement in statements(m.sql, database) {
            client
                .query(&statement)
                .execute()
                .await
                .map_err(|source| MigrationError::Statement { name: format!("{:04}_{}", m.version, m.name), source })?;
        }
        client
            .query(&format!("INSERT INTO {database}.schema_migrations (version, name) VALUES ({}, '{}')", m.version, m.name))
            .execute()
            .await
            .map_err(server)?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        done.push(m.version);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_split_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| format!("{:04}_{}.sql", m.version, m.name)).collect();
        assert_eq!(listed, files, "every file of migrations/ is listed, in order, as NNNN_name");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert!(i == 0 || MIGRATIONS[i - 1].version < m.version, "versions increase: {}", m.version);
            let parts = statements(m.sql, "meter_test");
            assert!(!parts.is_empty());
            for p in parts {
                assert!(!p.contains("{db}") && !p.ends_with(';'), "{p}");
                // Schema statements, and the copy-and-swap of a re-keyed table.
                assert!(["CREATE", "INSERT INTO", "RENAME TABLE"].iter().any(|s| p.starts_with(s)), "{p}");
            }
        }
    }
}
