-- Consumption spikes: the weeks of a contract whose consumption exceeds its
-- weekly contractual average by its spike factor (263 days a year is 5.25
-- days a week; with a factor of 1.5, a week above 7.875 days), and the
-- tickets behind each of them. Same rows on ClickHouse 18.16 and current
-- versions (aliased join subqueries, ALL joins on unique right sides).

-- Every week of every contract with a spike factor: consumed against the
-- threshold; `spike_ratio` > 1 is a spike (what `meter contracts metrics`
-- serves for the current week).
CREATE VIEW IF NOT EXISTS {db}.contract_weekly_spikes AS
SELECT
    tenant, contract_id, unit, week, consumed, weekly_average, spike_factor,
    toDecimal128(weekly_average * spike_factor, 6) AS threshold,
    -- (both branches of `if` are computed: never divide by zero)
    if(threshold > 0, consumed / if(threshold > 0, threshold, toDecimal128(1, 6)), toDecimal128(0, 6)) AS spike_ratio,
    consumed > threshold AS is_spike
FROM {db}.contract_burn_weekly
ALL INNER JOIN (SELECT tenant, contract_id, spike_factor FROM {db}.contract_spike_factors FINAL) AS factor USING (tenant, contract_id);

-- The spikes only: what the weekly chart marks above the average line.
CREATE VIEW IF NOT EXISTS {db}.consumption_spikes AS
SELECT tenant, contract_id, unit, week, consumed, weekly_average, spike_factor, threshold, consumed - weekly_average AS above_average
FROM {db}.contract_weekly_spikes
WHERE is_spike = 1;

-- Drill-down: the tickets behind each spike week (the tenant's ticket time
-- that week, all subsidiaries, in and out of scope, as contract_daily
-- counts it), with their time and tasks; then ticket_task_lines for the tasks.
CREATE VIEW IF NOT EXISTS {db}.consumption_spike_tickets AS
SELECT
    tenant, contract_id, week, subsidiary, ticket_id, ticket_type, category, application, requester,
    sum(minutes_worked) AS minutes,
    count() AS tasks
FROM
(
    SELECT tenant, contract_id, week FROM {db}.consumption_spikes
) AS spike
ALL INNER JOIN
(
    SELECT tenant, week, subsidiary, ticket_id, ticket_type, category, application, requester, minutes_worked
    FROM {db}.ticket_task_lines
) AS task USING (tenant, week)
GROUP BY tenant, contract_id, week, subsidiary, ticket_id, ticket_type, category, application, requester;
