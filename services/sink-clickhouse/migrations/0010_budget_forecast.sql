-- Budget forecast: per tenant and contract, the next 12 months of
-- consumption (in the contract's unit) and cost, and when the budget runs out.
--
-- Method (the same in `meter forecast`, services/meter-cli/src/forecast_cmd.rs):
-- - The forecast starts at the first month without complete data: the
--   current month, or the month after the tenant's last data if that is earlier.
-- - History: the tenant's months from its first data to the forecast start
--   (a month without data counts as 0).
-- - 12 months of history or more ('seasonal'): forecast of month M =
--   level x average(M) / sum of the 12 averages, where level is the
--   consumption of the last 12 months and average(M) the mean of the
--   months M of history (January of every year seen). A January that was
--   high in earlier years is forecast high, scaled to the recent level.
-- - Less than 12 months ('flat'): every month is the mean month of history.
-- Amounts travel as Int64 micro-units (18.16 cannot put decimals in arrays);
-- every quotient is truncated to the micro-unit.

-- Ticket time and tickets per tenant and month, in base units: minutes and
-- euros as micro-units, tickets (distinct per day, as contract_daily counts them).
CREATE VIEW IF NOT EXISTS {db}.tenant_consumption_monthly AS
SELECT tenant, month, sum(minutes_micros) AS minutes_micros, sum(cost_micros) AS cost_micros, sum(tickets) AS tickets
FROM
(
    SELECT tenant, window_date AS month, toInt64(sum(quantity) * 1000000) AS minutes_micros, toInt64(sum(cost) * 1000000) AS cost_micros, toInt64(0) AS tickets
    FROM {db}.aggregates FINAL
    WHERE period = 'MONTH' AND kind = 'TICKET_TIME'
    GROUP BY tenant, month
    UNION ALL
    SELECT tenant, toStartOfMonth(day) AS month, toInt64(0) AS minutes_micros, toInt64(0) AS cost_micros, toInt64(sum(day_tickets)) AS tickets
    FROM
    (
        SELECT tenant, local_date AS day, uniqExact(ticket_id) AS day_tickets
        FROM {db}.ticket_tasks FINAL
        WHERE accounting = 'counted'
        GROUP BY tenant, day
    )
    GROUP BY tenant, month
)
GROUP BY tenant, month;

-- One row per contract and forecast month: the forecast in the contract's
-- unit and in euros, the level and seasonal index it comes from, and the
-- part of the month inside the contract (`contract_days` of `month_days`,
-- from the forecast start) with the consumption forecast for those days.
CREATE VIEW IF NOT EXISTS {db}.consumption_forecast AS
SELECT tenant, contract_id, unit, start_date, end_date, forecast_start, method, history_months, month, month_of_year,
    forecast, forecast_cost, yearly_level, seasonal_index, month_days, first_contract_day, contract_days, forecast_in_contract
FROM
(
SELECT
    tenant, contract_id, unit, start_date, end_date, forecast_start,
    if(history_months >= 12, 'seasonal', 'flat') AS method,
    history_months,
    addMonths(forecast_start, ahead) AS month,
    toMonth(month) AS month_of_year,
    -- (an index of 0, a month of the year without history, reads 0)
    unit_averages[indexOf(month_keys, month_of_year)] AS unit_average_micros,
    cost_averages[indexOf(month_keys, month_of_year)] AS cost_average_micros,
    arraySum(unit_averages) AS unit_average_sum,
    arraySum(cost_averages) AS cost_average_sum,
    -- (both branches of `if` are computed: never divide by zero)
    if(history_months >= 12,
       if(unit_average_sum > 0, toInt64(toDecimal128(unit_level, 0) * unit_average_micros / if(unit_average_sum > 0, unit_average_sum, 1)), toInt64(0)),
       intDiv(unit_total, greatest(history_months, 1))) AS forecast_micros,
    if(history_months >= 12,
       if(cost_average_sum > 0, toInt64(toDecimal128(cost_level, 0) * cost_average_micros / if(cost_average_sum > 0, cost_average_sum, 1)), toInt64(0)),
       intDiv(cost_total, greatest(history_months, 1))) AS forecast_cost_micros,
    toDecimal128(forecast_micros, 6) / 1000000 AS forecast,
    toDecimal128(forecast_cost_micros, 6) / 1000000 AS forecast_cost,
    toDecimal128(if(history_months >= 12, unit_level, intDiv(unit_total * 12, greatest(history_months, 1))), 6) / 1000000 AS yearly_level,
    if(history_months >= 12 AND unit_average_sum > 0,
       toDecimal128(unit_average_micros * 12, 6) / if(unit_average_sum > 0, unit_average_sum, 1), toDecimal128(1, 6)) AS seasonal_index,
    addDays(addMonths(month, 1), -1) AS last_day,
    toUInt8(toDayOfMonth(last_day)) AS month_days,
    greatest(month, start_date) AS first_contract_day,
    toUInt8(greatest(toInt64(toRelativeDayNum(least(last_day, end_date))) - toInt64(toRelativeDayNum(first_contract_day)) + 1, 0)) AS contract_days,
    toDecimal128(intDiv(forecast_micros * contract_days, month_days), 6) / 1000000 AS forecast_in_contract
FROM
(
    SELECT tenant, contract_id, unit, start_date, end_date, forecast_start, history_months,
        groupArray(month_of_year) AS month_keys,
        groupArray(intDiv(unit_sum, greatest(months_of_year, 1))) AS unit_averages,
        groupArray(intDiv(cost_sum, greatest(months_of_year, 1))) AS cost_averages,
        sum(unit_recent) AS unit_level, sum(cost_recent) AS cost_level,
        sum(unit_sum) AS unit_total, sum(cost_sum) AS cost_total
    FROM
    (
        -- Per month of the year (1-12) of history: sums, sums over the last
        -- 12 months, and how many such months the history spans.
        SELECT tenant, contract_id, unit, start_date, end_date, forecast_start, history_months, toMonth(month) AS month_of_year,
            sum(unit_micros) AS unit_sum, sumIf(unit_micros, month >= addMonths(forecast_start, -12)) AS unit_recent,
            sum(cost_micros) AS cost_sum, sumIf(cost_micros, month >= addMonths(forecast_start, -12)) AS cost_recent,
            -- months of history (from first_month, history_months long) whose month of the year is month_of_year
            (toInt64(month_of_year) - toInt64(toMonth(first_month)) + 12) % 12 AS offset,
            if(offset < history_months, intDiv(history_months - 1 - offset, 12) + 1, 0) AS months_of_year
        FROM
        (
            SELECT tenant, contract_id, unit, start_date, end_date, forecast_start, first_month, history_months, month, cost_micros,
                multiIf(unit = 'days', intDiv(minutes_micros, greatest(minutes_per_day, 1)), unit = 'euros', cost_micros, tickets * 1000000) AS unit_micros
            FROM
            (
                SELECT tenant, month, minutes_micros, cost_micros, tickets, forecast_start, first_month, history_months
                FROM {db}.tenant_consumption_monthly
                ALL INNER JOIN
                (
                    SELECT tenant, least(toStartOfMonth(today()), addMonths(max(month), 1)) AS forecast_start, min(month) AS first_month,
                        (toInt64(toYear(forecast_start)) * 12 + toMonth(forecast_start)) - (toInt64(toYear(first_month)) * 12 + toMonth(first_month)) AS history_months
                    FROM {db}.tenant_consumption_monthly
                    GROUP BY tenant
                ) AS span USING (tenant)
                WHERE month < forecast_start
            ) AS history
            ALL INNER JOIN
            (
                SELECT tenant, contract_id, unit, start_date, end_date, toInt64(hours_per_day * 60) AS minutes_per_day
                FROM {db}.contracts FINAL
            ) AS contract USING (tenant)
        ) AS contract_history
        GROUP BY tenant, contract_id, unit, start_date, end_date, forecast_start, first_month, history_months, month_of_year
    ) AS by_month_of_year
    GROUP BY tenant, contract_id, unit, start_date, end_date, forecast_start, history_months
) AS per_contract
ARRAY JOIN range(12) AS ahead
) AS forecast_month;

-- One row per contract: its budget (the revised amounts of contract_days),
-- consumed before the forecast start, remaining, the forecast consumption
-- to the contract's end (within the 12 months), the balance then, and the
-- day the forecast consumption reaches the budget (NULL if it does not
-- within the contract and the 12 months; `status` 'exhausted' if already).
CREATE VIEW IF NOT EXISTS {db}.budget_forecast AS
SELECT tenant, contract_id, unit, start_date, end_date, forecast_start, method,
    budget, consumed_before_forecast, remaining, forecast_to_end, balance_at_end, run_out_date, status
FROM
(
SELECT
    tenant, contract_id, unit, start_date, end_date, forecast_start, method,
    toDecimal128(budget_micros, 6) / 1000000 AS budget,
    toDecimal128(consumed_micros, 6) / 1000000 AS consumed_before_forecast,
    budget_micros - consumed_micros AS remaining_micros,
    toDecimal128(remaining_micros, 6) / 1000000 AS remaining,
    arrayMap(x -> x.2, arraySort(ms)) AS uses,
    arrayCumSum(uses) AS cumulative,
    toDecimal128(arraySum(uses), 6) / 1000000 AS forecast_to_end,
    toDecimal128(remaining_micros - arraySum(uses), 6) / 1000000 AS balance_at_end,
    if(remaining_micros <= 0, 0, arrayFirstIndex(c -> c >= remaining_micros, cumulative)) AS run_out_index,
    -- in the month it runs out: the first contract day, the monthly forecast, its days
    arrayMap(x -> x.4, arraySort(ms))[run_out_index] AS run_out_month_first_day,
    arrayMap(x -> x.3, arraySort(ms))[run_out_index] AS run_out_month_forecast,
    arrayMap(x -> x.5, arraySort(ms))[run_out_index] AS run_out_month_days,
    arrayMap(x -> x.6, arraySort(ms))[run_out_index] AS run_out_month_contract_days,
    -- days of that month needed: ceil(still to consume x month days / month forecast)
    (remaining_micros - (cumulative[run_out_index] - uses[run_out_index])) * run_out_month_days AS needed,
    least(intDiv(needed + run_out_month_forecast - 1, if(run_out_month_forecast > 0, run_out_month_forecast, 1)), run_out_month_contract_days) AS run_out_day_number,
    if(run_out_index > 0, toNullable(addDays(run_out_month_first_day, greatest(run_out_day_number, 1) - 1)), NULL) AS run_out_date,
    multiIf(remaining_micros <= 0, 'exhausted', run_out_index > 0, 'runs out', 'lasts') AS status
FROM
(
    SELECT tenant, contract_id, unit, start_date, end_date, forecast_start, method,
        groupArray((month, toInt64(forecast_in_contract * 1000000), toInt64(forecast * 1000000), first_contract_day, toInt64(month_days), toInt64(contract_days))) AS ms
    FROM {db}.consumption_forecast
    GROUP BY tenant, contract_id, unit, start_date, end_date, forecast_start, method
) AS forecast
ALL INNER JOIN
(
    SELECT tenant, contract_id, toInt64(sum(expected) * 1000000) AS budget_micros,
        sumIf(toInt64(consumed * 1000000), month < forecast_start) AS consumed_micros
    FROM {db}.contract_burn_monthly
    ALL INNER JOIN (SELECT DISTINCT tenant, contract_id, forecast_start FROM {db}.consumption_forecast) AS start USING (tenant, contract_id)
    GROUP BY tenant, contract_id
) AS burn USING (tenant, contract_id)
) AS contract_forecast;
