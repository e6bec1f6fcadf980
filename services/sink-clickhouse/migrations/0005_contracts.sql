-- Contracts (loaded by `meter contracts load`): one row per contract, and
-- one row per contract day with the amount expected that day, computed
-- exactly from the (revised) yearly amount so that each month sums to its
-- share. `unit` is days, euros or tickets.
CREATE TABLE IF NOT EXISTS {db}.contracts
(
    tenant String,
    contract_id String,
    unit String,
    yearly_amount Decimal(18, 6),
    hours_per_day Decimal(18, 6),
    weekly_average Decimal(18, 6),
    start_date Date,
    end_date Date,
    loaded_at DateTime
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (tenant, contract_id);

CREATE TABLE IF NOT EXISTS {db}.contract_days
(
    tenant String,
    contract_id String,
    day Date,
    expected Decimal(18, 6),
    loaded_at DateTime
)
ENGINE = ReplacingMergeTree(loaded_at)
PARTITION BY toYear(day)
ORDER BY (tenant, contract_id, day);
