-- Latest revision of every daily aggregate, one row per aggregate, with the
-- dimensions as a readable string: the first thing an analyst queries.
CREATE VIEW IF NOT EXISTS {db}.daily_totals AS
SELECT
    tenant,
    subsidiary,
    domain,
    kind,
    window_date AS day,
    metric,
    unit,
    arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), dimension_keys, dimension_values), ', ') AS dimensions,
    quantity,
    event_count,
    cost,
    currency,
    revision,
    is_final
FROM {db}.aggregates FINAL
WHERE period = 'DAY';
