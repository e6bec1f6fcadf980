-- Every revision of every aggregate. ReplacingMergeTree keeps, per sorting
-- key, the row with the highest `version` (= revision * 2 + is_final), so a
-- replayed revision (same content) or an older one never wins. Query with
-- FINAL (or argMax on version) to read the latest revision.
-- SQL kept to what ClickHouse 18.16 and current versions both run.
CREATE TABLE IF NOT EXISTS {db}.aggregates
(
    aggregate_id String,
    revision Int64,
    is_final UInt8,
    version UInt64,
    kind String,
    tenant String,
    subsidiary String,
    domain String,
    period String,
    time_zone String,
    window_start DateTime,
    window_end DateTime,
    window_date Date,
    metric String,
    unit String,
    dimension_keys Array(String),
    dimension_values Array(String),
    quantity Decimal(18, 6),
    event_count UInt64,
    incident_count UInt64,
    request_count UInt64,
    ok_count UInt64,
    warning_count UInt64,
    ko_count UInt64,
    unknown_count UInt64,
    missed_count UInt64,
    cost Decimal(18, 6),
    currency String,
    price_book_version String,
    emitted_at DateTime,
    inserted_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_date)
ORDER BY (tenant, period, window_date, subsidiary, domain, kind, metric, aggregate_id);
