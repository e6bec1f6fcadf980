//! Tenant isolation that works on ClickHouse 18.16 and current versions:
//! each tenant gets its own database, filled by materialized views from the
//! shared tables (and back-filled once), holding its own copy of the analyst
//! views, readable only by the tenant's read-only user (`allow_databases`).
//!
//! On current ClickHouse (21 and later) the user also gets the shared
//! database under row filters (row policies, in its users.d file): every
//! shared table with a `tenant` column filtered on its tenant, every other
//! table on `0` (no row), so the shared views serve it its rows only, without
//! copies (a view applies its caller's row policies to the tables it reads).
//! 18.16 ignores row filters: there the user keeps its tenant database only.
//! Run provisioning again after `meter migrate`: a table created later has
//! no filter until then.

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
    #[error("tenant {tenant:?} would use the database and user of tenant {owner:?} ({database}): refused (ids that differ only by '-' and '_' cannot both be provisioned)")]
    Collision { tenant: String, owner: String, database: String },
}

/// The table of a tenant database naming the tenant it was provisioned for.
const OWNER_TABLE: &str = "meter_tenant_owner";

/// Two of `tenants` that would share a database and user (`acme-fr` and
/// `acme_fr`), if any.
pub fn colliding<'a>(database: &str, tenants: &'a [String]) -> Result<Option<(&'a str, &'a str)>, TenantError> {
    let mut seen: std::collections::BTreeMap<String, &'a str> = std::collections::BTreeMap::new();
    for t in tenants {
        let db = tenant_database(database, t)?;
        match seen.get(&db) {
            Some(first) if *first != t.as_str() => return Ok(Some((*first, t.as_str()))),
            _ => {
                seen.insert(db, t);
            }
        }
    }
    Ok(None)
}

/// Shared tables copied per tenant (all have a `tenant` column): the
/// aggregates, every event kind's detail table, the contracts.
pub fn tenant_tables() -> Vec<&'static str> {
    let details = meter_model::KINDS.iter().map(|k| k.detail_table);
    std::iter::once(AGGREGATES_TABLE).chain(details).chain(CONTRACT_TABLES).collect()
}
const AGGREGATES_TABLE: &str = "aggregates";
const CONTRACT_TABLES: [&str; 3] = ["contracts", "contract_days", "contract_spike_factors"];
/// Migrations creating those tables, and the views.
const TABLE_MIGRATIONS: [u32; 4] = [1, 3, 5, 8];
const VIEW_MIGRATIONS: [u32; 4] = [2, 6, 9, 10];
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

/// What `provision` made for a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub database: String,
    pub user: String,
    /// The user also reads the shared database under row filters (current versions).
    pub row_filters: bool,
}

/// Whether a server version (`SELECT version()`) applies users.d row
/// filters, through views too: 21 and later (tested on 26.9); not 18.16.
pub fn supports_row_filters(version: &str) -> bool {
    version.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_some_and(|major| major >= 21)
}

/// A shared table's row filter for a tenant user: its tenant's rows, or
/// none for a table without a tenant column (capacity, migrations' log).
pub fn row_filter(has_tenant_column: bool, tenant: &str) -> String {
    if has_tenant_column {
        format!("tenant = '{}'", tenant.replace(['\\', '\''], ""))
    } else {
        "0".to_string()
    }
}

/// Creates (idempotently) the tenant's database, tables, feeding views and
/// analyst views, back-fills it the first time, and writes its user to
/// `users_d_dir` (ClickHouse reloads users files on its own); on current
/// versions the user also gets the shared database under row filters.
pub async fn provision(
    client: &clickhouse::Client,
    database: &str,
    tenant: &str,
    password: &str,
    users_d_dir: &Path,
) -> Result<Provisioned, TenantError> {
    let db = tenant_database(database, tenant)?;
    let user = tenant_user(database, tenant)?;
    let tenant_literal = tenant.replace('\'', "");
    client.query(&format!("CREATE DATABASE IF NOT EXISTS {db}")).execute().await?;
    // The database remembers its tenant: another id mapping to the same
    // names (acme-fr, acme_fr) must not take it (nor its user) over.
    client.query(&format!("CREATE TABLE IF NOT EXISTS {db}.{OWNER_TABLE} (tenant String) ENGINE = TinyLog")).execute().await?;
    let owners: Vec<String> = client.query(&format!("SELECT tenant FROM {db}.{OWNER_TABLE}")).fetch_all().await?;
    match owners.first() {
        Some(owner) if owner != tenant => {
            return Err(TenantError::Collision { tenant: tenant.to_string(), owner: owner.clone(), database: db });
        }
        Some(_) => {}
        None => {
            client.query(&format!("INSERT INTO {db}.{OWNER_TABLE} (tenant) VALUES ('{tenant_literal}')")).execute().await?;
        }
    }
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
    for table in tenant_tables() {
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
    let version: String = client.query("SELECT version()").fetch_one().await?;
    let shared = if supports_row_filters(&version) {
        let tables: Vec<String> = client
            .query("SELECT name FROM system.tables WHERE database = ? AND engine NOT IN ('View', 'MaterializedView') ORDER BY name")
            .bind(database)
            .fetch_all()
            .await?;
        let with_tenant: Vec<String> =
            client.query("SELECT DISTINCT table FROM system.columns WHERE database = ? AND name = 'tenant'").bind(database).fetch_all().await?;
        let filters: Vec<(String, String)> = tables.into_iter().map(|t| {
            let filter = row_filter(with_tenant.contains(&t), tenant);
            (t, filter)
        }).collect();
        Some(SharedAccess { database: database.to_string(), filters })
    } else {
        None
    };
    write_user(users_d_dir, &user, password, &db, tenant, shared.as_ref())?;
    tracing::info!(%tenant, database = %db, %user, row_filters = shared.is_some(), "tenant provisioned");
    Ok(Provisioned { database: db, user, row_filters: shared.is_some() })
}

/// The shared database a tenant user reads under row filters: (table, filter).
pub struct SharedAccess {
    pub database: String,
    pub filters: Vec<(String, String)>,
}

/// The users.d file of a tenant user: read-only, loopback, its database
/// only, plus (current versions) the shared database under row filters.
pub fn user_xml(user: &str, password: &str, db: &str, shared: Option<&SharedAccess>) -> String {
    let hash = hex::encode(Sha256::digest(password.as_bytes()));
    let (what, shared_allow, filters) = match shared {
        None => (format!("{db} only"), String::new(), String::new()),
        Some(s) => {
            let tables: String = s.filters.iter().map(|(t, f)| format!("          <{t}><filter>{f}</filter></{t}>\n")).collect();
            (
                format!("{db}, and {} under row filters", s.database),
                format!("        <database>{}</database>\n", s.database),
                format!("      <databases>\n        <{0}>\n{tables}        </{0}>\n      </databases>\n", s.database),
            )
        }
    };
    format!(
        "<?xml version=\"1.0\"?>\n<!-- Written by `meter tenants provision`: read-only access to {what}. -->\n<yandex>\n  <users>\n    <{user}>\n      <password_sha256_hex>{hash}</password_sha256_hex>\n      <networks>\n        <ip>127.0.0.1</ip>\n        <ip>::1</ip>\n      </networks>\n      <profile>readonly</profile>\n      <quota>default</quota>\n      <allow_databases>\n        <database>{db}</database>\n{shared_allow}      </allow_databases>\n{filters}    </{user}>\n  </users>\n</yandex>\n"
    )
}

/// Mode of users.d files: the password hash is readable by the owner and
/// the server's group only.
pub const USER_FILE_MODE: u32 = 0o640;

fn write_user(dir: &Path, user: &str, password: &str, db: &str, tenant: &str, shared: Option<&SharedAccess>) -> Result<(), TenantError> {
    let path = dir.join(format!("{user}.xml"));
    let io = |source| TenantError::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("xml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, USER_FILE_MODE);
    let mut file = options.open(&tmp).map_err(io)?;
    // The umask may have taken bits off the mode: set it exactly.
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(USER_FILE_MODE)).map_err(io)?;
    let xml = user_xml(user, password, db, shared).replace("-->\n<yandex>", &format!("-->\n<!-- tenant: {} -->\n<yandex>", tenant.replace("--", "")));
    std::io::Write::write_all(&mut file, xml.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
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
    fn ids_that_differ_by_dash_and_underscore_collide() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(colliding("meter", &ids(&["acme", "acme-fr", "acme_fr"])).unwrap(), Some(("acme-fr", "acme_fr")));
        assert_eq!(colliding("meter", &ids(&["acme", "acme-fr", "acme"])).unwrap(), None, "the same tenant twice is no collision");
        assert!(colliding("meter", &ids(&["acme", "x'y"])).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_user_file_is_not_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write_user(dir.path(), "meter_acme", "secret", "meter_tenant_acme", "acme", None).unwrap();
        let mode = std::fs::metadata(dir.path().join("meter_acme.xml")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let text = std::fs::read_to_string(dir.path().join("meter_acme.xml")).unwrap();
        assert!(text.contains("<!-- tenant: acme -->") && !text.contains("secret"), "{text}");
        // Written again (a new password): still 0640.
        write_user(dir.path(), "meter_acme", "other", "meter_tenant_acme", "acme", None).unwrap();
        let mode = std::fs::metadata(dir.path().join("meter_acme.xml")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn the_user_file_limits_to_one_database_read_only() {
        let xml = user_xml("meter_acme", "secret", "meter_tenant_acme", None);
        assert!(xml.contains("<profile>readonly</profile>"));
        assert!(xml.contains("<database>meter_tenant_acme</database>"));
        assert_eq!(xml.matches("<database>").count(), 1, "18.16: its database only");
        assert!(!xml.contains("<filter>"));
        assert!(!xml.contains("secret"), "only the hash is written");
        assert!(xml.contains(&hex::encode(Sha256::digest(b"secret"))));
    }

    #[test]
    fn current_versions_get_the_shared_database_under_row_filters() {
        assert!(!supports_row_filters("18.16.1"));
        assert!(supports_row_filters("26.9.1.1") && supports_row_filters("24.8.4.13") && supports_row_filters("21.3.1"));
        assert!(!supports_row_filters("garbage"));
        assert_eq!(row_filter(true, "acme"), "tenant = 'acme'");
        assert_eq!(row_filter(true, "ac'me"), "tenant = 'acme'");
        assert_eq!(row_filter(false, "acme"), "0");
        let shared = SharedAccess {
            database: "meter".into(),
            filters: vec![("aggregates".into(), row_filter(true, "acme")), ("datacenter_capacity".into(), row_filter(false, "acme"))],
        };
        let xml = user_xml("meter_acme", "secret", "meter_tenant_acme", Some(&shared));
        assert!(xml.contains("<database>meter_tenant_acme</database>") && xml.contains("<database>meter</database>"), "{xml}");
        assert!(xml.contains("<databases>\n        <meter>\n          <aggregates><filter>tenant = 'acme'</filter></aggregates>"), "{xml}");
        assert!(xml.contains("<datacenter_capacity><filter>0</filter></datacenter_capacity>"), "{xml}");
        assert!(xml.contains("<profile>readonly</profile>"));
    }
}
