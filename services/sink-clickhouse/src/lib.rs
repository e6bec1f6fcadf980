//! The ClickHouse sink: aggregate topic in, `aggregates` table out.
//!
//! Effectively exactly once without transactions: rows are inserted at
//! least once (offsets are committed only after ClickHouse acknowledged the
//! batch) and ReplacingMergeTree collapses repeats of an aggregate revision,
//! which are identical by construction.

pub mod capacity;
pub mod contract_metrics;
pub mod contracts;
pub mod details;
pub mod internal_events;
pub mod migrations;
pub mod tenants;
pub mod writer;

use meter_config::{ClickHouseCompression, ClickHouseConfig};

/// A client configured from `[clickhouse]`: 18.x needs validation off and no
/// compression, current servers take both.
pub fn client(config: &ClickHouseConfig) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(config.url.as_str())
        .with_user(&config.user)
        .with_password(&config.password)
        .with_validation(config.validation)
        .with_compression(match config.compression {
            ClickHouseCompression::None => clickhouse::Compression::None,
            ClickHouseCompression::Lz4 => clickhouse::Compression::Lz4,
        })
}
