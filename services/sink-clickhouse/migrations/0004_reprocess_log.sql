-- Who re-rated which tenant's period, why, and what it produced.
CREATE TABLE IF NOT EXISTS {db}.reprocess_log
(
    requested_at DateTime,
    requested_by String,
    reason String,
    tenant String,
    period_from Date,
    period_to Date,
    events_read UInt64,
    aggregates_emitted UInt64,
    revision Int64,
    price_book_version String
)
ENGINE = MergeTree
ORDER BY (tenant, requested_at);
