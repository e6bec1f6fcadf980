-- Detail rows keyed by the event's identity, so that a corrected event
-- (a higher version, possibly on another day or month) replaces its earlier
-- version instead of standing beside it: sorting key (tenant, source,
-- event_id), one partition per tenant-independent table (ReplacingMergeTree
-- only collapses rows inside a partition).
--
-- `version` = event version * 4 + accounting class, so the latest event
-- version wins, and for one version: 1 'counted' (read from the event
-- topic) < 2 'late' (its month was closed) < 3 'counted' again (a reprocess
-- or a backfill counted it). A deleted event has accounting 'deleted'.
-- The old tables are kept as <name>_before_0007.

CREATE TABLE IF NOT EXISTS {db}.ticket_tasks_0007
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
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, source, event_id);

INSERT INTO {db}.ticket_tasks_0007 SELECT * FROM {db}.ticket_tasks;

RENAME TABLE {db}.ticket_tasks TO {db}.ticket_tasks_before_0007, {db}.ticket_tasks_0007 TO {db}.ticket_tasks;

CREATE TABLE IF NOT EXISTS {db}.check_runs_0007
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
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, source, event_id);

INSERT INTO {db}.check_runs_0007 SELECT * FROM {db}.check_runs;

RENAME TABLE {db}.check_runs TO {db}.check_runs_before_0007, {db}.check_runs_0007 TO {db}.check_runs;

CREATE TABLE IF NOT EXISTS {db}.vm_usage_events_0007
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
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, source, event_id);

INSERT INTO {db}.vm_usage_events_0007 SELECT * FROM {db}.vm_usage_events;

RENAME TABLE {db}.vm_usage_events TO {db}.vm_usage_events_before_0007, {db}.vm_usage_events_0007 TO {db}.vm_usage_events;

-- Explicit closes of billing months (`meter periods close`): who, when, why.
-- The close itself is a control record in the event partitions; this table
-- is the register analysts and `meter periods list` read.
CREATE TABLE IF NOT EXISTS {db}.period_closes
(
    tenant String,
    month Date,
    closed_at DateTime,
    requested_by String,
    reason String
)
ENGINE = ReplacingMergeTree(closed_at)
ORDER BY (tenant, month);
