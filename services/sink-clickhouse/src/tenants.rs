//! Tenant isolation that works on ClickHouse 18.16 and current versions:
//! each tenant gets its own database, filled by materialized views from the
//! shared tables (and back-filled once), holding its own copy of the analyst
//! views, readable only by the tenant's read-only user (`allow_databases`).
//!
//! Row filters and views across databases are not used: 18.16 ignores the
//! former and runs views with the caller's rights.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::migrations::{statements, MigrationError, MIGRATIONS};

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant id {0:?} must be letters, digits, '-' or '_'")]
    BadId(String),
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("cannot write {path}: {source} (check clickhouse.users_d_dir)")]
    Write { path: String, source: std::io::Error },
}

/// Shared tables copied per tenant (all have a `tenant` column).
const TENANT_TABLES: [&str; 7] =
    ["aggregates", "ticket_tasks", "check_runs", "vm_usage_events", "contracts", "contract_days", "contract_spike_factors"];
/// Migrations creating those tables, and the views.
const TABLE_MIGRATIONS: [u32; 4] = [1, 3, 5, 8];
const VIEW_MIGRATIONS: [u32; 3] = [2, 6, 9];
/// Re-keys the detail tables by event identity; applied to a tenant database
/// once (while its `ticket_tasks.version` is still UInt8).
const IDENTITY_MIGRATION: u32 = 7;

fn checked(tenant: &str) -> Result<String, TenantError> {
    if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(TenantError::BadId(tenant.to_string()));
    }
    Ok(tenant.replace('-', "_"))
}

/// The tenant's database: `<database>_tenant_<id>`.
pub fn tenant_database(database: &str, tenant: &str) -> Result<String, TenantError> {
    Ok(format!("{database}_tenant_{}", checked(tenant)?))
}

/// The tenant's read-only user: `<database>_<id>`.
pub fn tenant_user(database: &str, tenant: &str) -> Result<String, TenantError> {
    Ok(format!("{database}_{}", checked(tenant)?))
}

/// Creates (idempotently) the tenant's database, tables, feeding views and
/// analyst views, back-fills it the first time, and writes its user to
/// `users_d_dir` (ClickHouse reloads users files on its own).
pub async fn provision(
    client: &clickhouse::Client,
    database: &str,
    tenant: &str,
    password: &str,
    users_d_dir: &Path,
) -> Result<(String, String), TenantError> {
    let db = tenant_database(database, tenant)?;
    let user = tenant_user(database, tenant)?;
    let tenant_literal = tenant.replace('\'', "");
    client.query(&format!("CREATE DATABASE IF NOT EXISTS {db}")).execute().await?;
    for m in MIGRATIONS.iter().filter(|m| TABLE_MIGRATIONS.contains(&m.version)) {
        for sql in statements(m.sql, &db) {
            client.query(&sql).execute().await.map_err(|source| MigrationError::Statement { name: format!("{db}: {}", m.name), source })?;
        }
    }
    let old_detail_keys: u8 = client
        .query("SELECT count() > 0 FROM system.columns WHERE database = ? AND table = 'ticket_tasks' AND name = 'version' AND type = 'UInt8'")
        .bind(&db)
        .fetch_one()
        .await?;
    if old_detail_keys > 0 {
        for m in MIGRATIONS.iter().filter(|m| m.version == IDENTITY_MIGRATION) {
            for sql in statements(m.sql, &db) {
                client.query(&sql).execute().await.map_err(|source| MigrationError::Statement { name: format!("{db}: {}", m.name), source })?;
            }
        }
    }
    for table in TENANT_TABLES {
        let feed = format!("{table}_feed");
        let exists: u8 = client
            .query("SELECT count() > 0 FROM system.tables WHERE database = ? AND name = ?")
            .bind(&db)
            .bind(&feed)
            .fetch_one()
            .await?;
        if exists == 0 {
            // Feed first, back-fill second: a row inserted in between lands
            // twice and collapses (same sorting key and version).
            client
                .query(&format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{feed} TO {db}.{table} AS SELECT * FROM {database}.{table} WHERE tenant = '{tenant_literal}'"
                ))
                .execute()
                .await?;
            client
                .query(&format!("INSERT INTO {db}.{table} SELECT * FROM {database}.{table} WHERE tenant = '{tenant_literal}'"))
                .execute()
                .await?;
        }
    }
    for m in MIGRATIONS.iter().filter(|m| VIEW_MIGRATIONS.contains(&m.version)) {
        for sql in statements(m.sql, &db) {
            client.query(&sql).execute().await.map_err(|source| MigrationError::Statement { name: format!("{db}: {}", m.name), source })?;
        }
    }
    write_user(users_d_dir, &user, password, &db)?;
    tracing::info!(%tenant, database = %db, %user, "tenant provisioned");
    Ok((db, user))
}

/// The users.d file of a tenant user: read-only, its database only, loopback.
pub fn user_xml(user: &str, password: &str, db: &str) -> String {
    let hash = hex::encode(Sha256::digest(password.as_bytes()));
    format!(
        "<?xml version=\"1.0\"?>\n<!-- Written by `meter tenants provision`: read-only access to {db} only. -->\n<yandex>\n  <users>\n    <{user}>\n      <password_sha256_hex>{hash}</password_sha256_hex>\n      <networks>\n        <ip>127.0.0.1</ip>\n        <ip>::1</ip>\n      </networks>\n      <profile>readonly</profile>\n      <quota>default</quota>\n      <allow_databases>\n        <database>{db}</database>\n      </allow_databases>\n    </{user}>\n  </users>\n</yandex>\n"
    )
}

fn write_user(dir: &Path, user: &str, password: &str, db: &str) -> Result<(), TenantError> {
    let path = dir.join(format!("{user}.xml"));
    let io = |source| TenantError::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("xml.tmp");
    std::fs::write(&tmp, user_xml(user, password, db)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_and_checked() {
        assert_eq!(tenant_database("meter", "acme-fr").unwrap(), "meter_tenant_acme_fr");
        assert_eq!(tenant_user("meter", "acme").unwrap(), "meter_acme");
        assert!(tenant_database("meter", "acme'; DROP").is_err());
        assert!(tenant_user("meter", "").is_err());
    }

    #[test]
    fn the_user_file_limits_to_one_database_read_only() {
        let xml = user_xml("meter_acme", "secret", "meter_tenant_acme");
        assert!(xml.contains("<profile>readonly</profile>"));
        assert!(xml.contains("<database>meter_tenant_acme</database>"));
        assert!(!xml.contains("secret"), "only the hash is written");
        assert!(xml.contains(&hex::encode(Sha256::digest(b"secret"))));
    }
}
