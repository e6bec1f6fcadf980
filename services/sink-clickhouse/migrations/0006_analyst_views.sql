-- Analyst views, one per question of DOMAIN.md. All read the latest
-- revision of each aggregate (FINAL). Periods are the tenant's local ones.
-- They run on ClickHouse 18.16 and current versions with the same rows: a
-- joined subquery always has an alias (current analyzer), and joins are ALL
-- against right sides unique per key (ANY INNER JOIN keeps one row per key
-- on current versions, every left row on 18.16).

-- Seasonality: ticket time per month with the dimensions analysts filter on;
-- compare a month with the same month of earlier years
-- (WHERE month_of_year = 1 ... GROUP BY year).
CREATE VIEW IF NOT EXISTS {db}.seasonality_monthly AS
SELECT
    tenant,
    subsidiary,
    domain,
    toYear(window_date) AS year,
    toMonth(window_date) AS month_of_year,
    window_date AS month,
    dimension_values[indexOf(dimension_keys, 'category')] AS category,
    dimension_values[indexOf(dimension_keys, 'application')] AS application,
    dimension_values[indexOf(dimension_keys, 'ticket_type')] AS ticket_type,
    dimension_values[indexOf(dimension_keys, 'in_scope')] AS in_scope,
    quantity AS minutes,
    cost,
    incident_count AS incident_tasks,
    request_count AS request_tasks
FROM {db}.aggregates FINAL
WHERE period = 'MONTH' AND kind = 'TICKET_TIME';

-- Tickets (not tasks) per month and type, for the incident/request counts.
CREATE VIEW IF NOT EXISTS {db}.tickets_monthly AS
SELECT
    tenant,
    subsidiary,
    domain,
    toYear(local_date) AS year,
    toMonth(local_date) AS month_of_year,
    toStartOfMonth(local_date) AS month,
    category,
    application,
    ticket_type,
    uniqExact(ticket_id) AS tickets,
    sum(minutes_worked) AS minutes
FROM {db}.ticket_tasks FINAL
WHERE accounting = 'counted'
GROUP BY tenant, subsidiary, domain, year, month_of_year, month, category, application, ticket_type;

-- Re-billing: cost and quantity per subsidiary per month, one invoice line
-- per metric.
CREATE VIEW IF NOT EXISTS {db}.rebilling_monthly AS
SELECT
    tenant,
    subsidiary,
    window_date AS month,
    kind,
    metric,
    unit,
    sum(quantity) AS quantity,
    sum(cost) AS cost,
    any(currency) AS currency,
    min(is_final) AS is_final,
    arraySort(groupUniqArray(price_book_version)) AS price_book_versions
FROM {db}.aggregates FINAL
WHERE period = 'MONTH'
GROUP BY tenant, subsidiary, month, kind, metric, unit;

-- Daily consumption of each contract: days of ticket time (all
-- subsidiaries, in and out of scope: "hors périmètre" is billed from the
-- same budget), euros of cost, or tickets. `consumed_base` is exact in the
-- base unit (minutes, euros, tickets); divide sums by `base_per_unit` once,
-- so a month of 12960 minutes is exactly 27 days of 8 hours (a quotient
-- that does not end is truncated to 6 decimals, a micro-day).
CREATE VIEW IF NOT EXISTS {db}.contract_daily AS
SELECT
    tenant,
    contract_id,
    unit,
    day,
    expected,
    multiIf(unit = 'days', toDecimal64(minutes, 6), unit = 'euros', toDecimal64(cost, 6), toDecimal64(tickets, 6)) AS consumed_base,
    if(unit = 'days', hours_per_day * 60, toDecimal64(1, 6)) AS base_per_unit,
    consumed_base / base_per_unit AS consumed
FROM
(
    SELECT tenant, contract_id, unit, hours_per_day, day, expected, minutes, cost
    FROM
    (
        SELECT tenant, contract_id, unit, hours_per_day, day, expected
        FROM {db}.contract_days FINAL
        ALL INNER JOIN (SELECT tenant, contract_id, unit, hours_per_day FROM {db}.contracts FINAL) AS contract USING (tenant, contract_id)
    ) AS contract_day
    ALL LEFT JOIN
    (
        SELECT tenant, window_date AS day, sum(quantity) AS minutes, sum(cost) AS cost
        FROM {db}.aggregates FINAL
        WHERE period = 'DAY' AND kind = 'TICKET_TIME'
        GROUP BY tenant, day
    ) AS day_time USING (tenant, day)
) AS contract_day_time
ALL LEFT JOIN
(
    SELECT tenant, local_date AS day, uniqExact(ticket_id) AS tickets
    FROM {db}.ticket_tasks FINAL
    WHERE accounting = 'counted'
    GROUP BY tenant, day
) AS day_tickets USING (tenant, day);

-- Contract burn per month and per week: expected (pro rata of the revised
-- amounts) against consumed, the difference, and both to date.
CREATE VIEW IF NOT EXISTS {db}.contract_burn_monthly AS
SELECT
    tenant, contract_id, unit, month,
    toDecimal128(expected_period_micros, 6) / 1000000 AS expected,
    toDecimal128(consumed_period_micros, 6) / 1000000 / base_per_unit AS consumed,
    consumed - expected AS difference,
    toDecimal128(expected_micros, 6) / 1000000 AS expected_to_date,
    toDecimal128(consumed_micros, 6) / 1000000 / base_per_unit AS consumed_to_date,
    multiIf(consumed_to_date > expected_to_date, 'overrun', consumed_to_date < expected_to_date, 'under', 'on track') AS status
FROM
(
    -- Amounts travel as Int64 micro-units: 18.16 cannot put decimals in
    -- arrays (arrayCumSum refuses them, groupArray of Decimal128 crashes).
    SELECT tenant, contract_id, unit, any(per_unit) AS base_per_unit, groupArray(m) AS ms
    FROM (SELECT tenant, contract_id, unit, any(base_per_unit) AS per_unit,
                 (toStartOfMonth(day), toInt64(sum(expected) * 1000000), toInt64(sum(consumed_base) * 1000000)) AS m
          FROM {db}.contract_daily GROUP BY tenant, contract_id, unit, toStartOfMonth(day))
    GROUP BY tenant, contract_id, unit
)
ARRAY JOIN
    arrayMap(x -> x.1, arraySort(ms)) AS month,
    arrayMap(x -> x.2, arraySort(ms)) AS expected_period_micros,
    arrayMap(x -> x.3, arraySort(ms)) AS consumed_period_micros,
    arrayCumSum(arrayMap(x -> x.2, arraySort(ms))) AS expected_micros,
    arrayCumSum(arrayMap(x -> x.3, arraySort(ms))) AS consumed_micros;

CREATE VIEW IF NOT EXISTS {db}.contract_burn_weekly AS
SELECT
    tenant, contract_id, unit, week,
    toDecimal128(expected_period_micros, 6) / 1000000 AS expected,
    toDecimal128(consumed_period_micros, 6) / 1000000 / base_per_unit AS consumed,
    consumed - expected AS difference,
    weekly_average,
    consumed > weekly_average AS above_weekly_average,
    toDecimal128(expected_micros, 6) / 1000000 AS expected_to_date,
    toDecimal128(consumed_micros, 6) / 1000000 / base_per_unit AS consumed_to_date
FROM
(
    -- Amounts travel as Int64 micro-units: 18.16 cannot put decimals in
    -- arrays (arrayCumSum refuses them, groupArray of Decimal128 crashes).
    SELECT tenant, contract_id, unit, any(per_unit) AS base_per_unit, groupArray(w) AS ws
    FROM (SELECT tenant, contract_id, unit, any(base_per_unit) AS per_unit,
                 (toMonday(day), toInt64(sum(expected) * 1000000), toInt64(sum(consumed_base) * 1000000)) AS w
          FROM {db}.contract_daily GROUP BY tenant, contract_id, unit, toMonday(day))
    GROUP BY tenant, contract_id, unit
)
ARRAY JOIN
    arrayMap(x -> x.1, arraySort(ws)) AS week,
    arrayMap(x -> x.2, arraySort(ws)) AS expected_period_micros,
    arrayMap(x -> x.3, arraySort(ws)) AS consumed_period_micros,
    arrayCumSum(arrayMap(x -> x.2, arraySort(ws))) AS expected_micros,
    arrayCumSum(arrayMap(x -> x.3, arraySort(ws))) AS consumed_micros
ALL LEFT JOIN (SELECT tenant, contract_id, weekly_average FROM {db}.contracts FINAL) AS contract USING (tenant, contract_id);

-- Where each contract stands today: expected and consumed to date, the
-- difference, and a straight-line projection to the contract's end.
CREATE VIEW IF NOT EXISTS {db}.contract_status AS
SELECT
    tenant, contract_id, unit, yearly_amount, start_date, end_date,
    expected_to_date, consumed_to_date, consumed_to_date - expected_to_date AS difference,
    elapsed_days, total_days,
    if(elapsed_days > 0, consumed_to_date / elapsed_days * total_days, toDecimal64(0, 6)) AS projected_at_end
FROM
(
    SELECT tenant, contract_id, unit,
        sumIf(expected, day <= today()) AS expected_to_date,
        sumIf(consumed_base, day <= today()) / any(base_per_unit) AS consumed_to_date,
        countIf(day <= today()) AS elapsed_days,
        count() AS total_days
    FROM {db}.contract_daily
    GROUP BY tenant, contract_id, unit
) AS to_date
ALL LEFT JOIN (SELECT tenant, contract_id, yearly_amount, start_date, end_date FROM {db}.contracts FINAL) AS contract USING (tenant, contract_id);

-- Drill-down: the ticket tasks behind any ticket aggregate, with the window
-- keys of each period, so an aggregate's filters select its tasks.
CREATE VIEW IF NOT EXISTS {db}.ticket_task_lines AS
SELECT
    tenant, subsidiary, domain,
    local_date AS day, toMonday(local_date) AS week, toStartOfMonth(local_date) AS month, toStartOfYear(local_date) AS year,
    ticket_id, task_id, ticket_type, category, application, requester, technician, technician_profile, country,
    in_scope, minutes_worked, start_time, event_time, source, event_id
FROM {db}.ticket_tasks FINAL
WHERE accounting = 'counted';

CREATE VIEW IF NOT EXISTS {db}.check_run_lines AS
SELECT
    tenant, subsidiary, domain,
    local_date AS day, toMonday(local_date) AS week, toStartOfMonth(local_date) AS month,
    check_id, check_name, target, frequency, status, ticket_ref, scheduled_time, executed_time, time_spent_minutes, output
FROM {db}.check_runs FINAL
WHERE accounting = 'counted';

-- Check compliance per week: runs scheduled (reported, including missed),
-- done, OK, KO with their tickets, missed.
CREATE VIEW IF NOT EXISTS {db}.check_compliance_weekly AS
SELECT
    tenant,
    subsidiary,
    toMonday(local_date) AS week,
    check_name,
    frequency,
    count() AS scheduled,
    countIf(status != 'MISSED') AS done,
    countIf(status = 'OK') AS ok,
    countIf(status = 'WARNING') AS warning,
    countIf(status = 'KO') AS ko,
    countIf(status = 'MISSED') AS missed,
    arraySort(groupUniqArrayIf(ticket_ref, status = 'KO' AND ticket_ref != '')) AS ko_tickets
FROM {db}.check_runs FINAL
WHERE accounting = 'counted'
GROUP BY tenant, subsidiary, week, check_name, frequency;

-- Return on investment: the yearly cost and time of incidents per domain and
-- category. Payback of an investment X (years) = X / yearly_incident_cost.
CREATE VIEW IF NOT EXISTS {db}.incident_cost_yearly AS
SELECT
    tenant,
    domain,
    dimension_values[indexOf(dimension_keys, 'category')] AS category,
    toYear(window_date) AS year,
    sum(cost) AS yearly_incident_cost,
    sum(quantity) AS yearly_incident_minutes,
    sum(incident_count) AS incident_tasks
FROM {db}.aggregates FINAL
WHERE period = 'YEAR' AND kind = 'TICKET_TIME' AND dimension_values[indexOf(dimension_keys, 'ticket_type')] = 'INCIDENT'
GROUP BY tenant, domain, category, year;
