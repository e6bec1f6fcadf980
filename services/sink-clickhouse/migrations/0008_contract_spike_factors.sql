-- Per contract, the factor over its weekly average above which a week is a
-- consumption spike (`spike_factor` in the contracts file, loaded by
-- `meter contracts load` with the contracts; a reload replaces it).
CREATE TABLE IF NOT EXISTS {db}.contract_spike_factors
(
    tenant String,
    contract_id String,
    spike_factor Decimal(18, 6),
    loaded_at DateTime
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (tenant, contract_id);
