-- Detail tables for drill-down: one row per event, deduplicated by
-- (source, event_id) through the sorting key. `accounting` says whether the
-- event is in the aggregates ('counted') or was set aside as too late
-- ('late', written with a higher version so it replaces 'counted').
-- `local_date` is the event's day in the tenant's time zone, as in aggregates.
CREATE TABLE IF NOT EXISTS {db}.ticket_tasks
(
    tenant String,
    subsidiary String,
    domain String,
    local_date Date,
    source String,
    event_id String,
    event_time DateTime,
    ingest_time DateTime,
    ticket_id String,
    task_id String,
    ticket_type String,
    category String,
    category_path Array(String),
    in_scope UInt8,
    requester String,
    technician String,
    technician_profile String,
    application String,
    country String,
    minutes_worked UInt32,
    start_time DateTime,
    accounting String,
    version UInt8
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(local_date)
ORDER BY (tenant, local_date, source, event_id);

CREATE TABLE IF NOT EXISTS {db}.check_runs
(
    tenant String,
    subsidiary String,
    domain String,
    local_date Date,
    source String,
    event_id String,
    event_time DateTime,
    ingest_time DateTime,
    check_id String,
    check_name String,
    target String,
    frequency String,
    scheduled_time Nullable(DateTime),
    executed_time Nullable(DateTime),
    status String,
    ticket_ref String,
    time_spent_minutes UInt32,
    output String,
    accounting String,
    version UInt8
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(local_date)
ORDER BY (tenant, local_date, source, event_id);

CREATE TABLE IF NOT EXISTS {db}.vm_usage_events
(
    tenant String,
    subsidiary String,
    domain String,
    local_date Date,
    source String,
    event_id String,
    event_time DateTime,
    ingest_time DateTime,
    vm_id String,
    vcpu UInt32,
    ram_mib UInt64,
    storage_gb UInt64,
    bandwidth_mbps UInt32,
    guaranteed_bandwidth UInt8,
    public_ips UInt32,
    sla_tier String,
    options Array(String),
    datacenter String,
    transition String,
    sample_interval_seconds UInt32,
    accounting String,
    version UInt8
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(local_date)
ORDER BY (tenant, local_date, source, event_id);
