-- Provider fill rate (IaaS): capacity sold (vCPU, RAM, storage of running
-- VMs, time-weighted from the VM usage details) against the capacity
-- installed per datacenter (`meter capacity load config/capacity.toml`).
-- Days are UTC days (a datacenter is shared by tenants of every zone). A VM
-- is in the datacenter its events carry (`datacenter` of VmUsage). Same
-- rows on ClickHouse 18.16 and current versions.

-- Capacity installed per datacenter; a reload replaces a datacenter's row.
CREATE TABLE IF NOT EXISTS {db}.datacenter_capacity
(
    datacenter String,
    vcpu UInt64,
    ram_gib UInt64,
    storage_gb UInt64,
    loaded_at DateTime
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY datacenter;

-- Capacity sold per tenant, datacenter and UTC day, in resource-seconds,
-- from the counted and late VM events: a SAMPLE covers its sample_interval_seconds
-- before its time; a CREATE, START or RESIZE runs at its size until the
-- VM's next event (or the start of today, if it is still running); STOP and
-- DELETE end it. `vcpu` etc. are the day's average (resource-seconds / 86400).
CREATE VIEW IF NOT EXISTS {db}.vm_capacity_sold_daily AS
SELECT tenant, datacenter, day, vcpu_seconds, ram_mib_seconds, storage_gb_seconds,
    toDecimal128(vcpu_seconds, 6) / 86400 AS vcpu,
    toDecimal128(ram_mib_seconds, 6) / (86400 * 1024) AS ram_gib,
    toDecimal128(storage_gb_seconds, 6) / 86400 AS storage_gb
FROM
(
    SELECT tenant, datacenter, day,
        sum(toInt64(vcpu) * seconds) AS vcpu_seconds,
        sum(toInt64(ram_mib) * seconds) AS ram_mib_seconds,
        sum(toInt64(storage_gb) * seconds) AS storage_gb_seconds
    FROM
    (
        SELECT tenant, datacenter, vcpu, ram_mib, storage_gb, addDays(toDate(running_from), n) AS day,
            toInt64(least(running_to, toDateTime(day) + 86400)) - toInt64(greatest(running_from, toDateTime(day))) AS seconds
        FROM
        (
            SELECT tenant, e.6 AS datacenter, e.3 AS vcpu, e.4 AS ram_mib, e.5 AS storage_gb,
                if(e.2 = 'SAMPLE', e.1 - e.7, e.1) AS running_from,
                multiIf(e.2 = 'SAMPLE', e.1, e.2 IN ('CREATE', 'START', 'RESIZE'), if(i < length(events), events[i + 1].1, toDateTime(today())), e.1) AS running_to
            FROM
            (
                SELECT tenant, source, vm_id,
                    arraySort(groupArray((event_time, transition, vcpu, ram_mib, storage_gb, datacenter, toUInt32(sample_interval_seconds)))) AS events
                FROM {db}.vm_usage_events FINAL
                -- late events ran all the same: capacity is physical
                WHERE accounting IN ('counted', 'late')
                GROUP BY tenant, source, vm_id
            )
            ARRAY JOIN events AS e, arrayEnumerate(events) AS i
        )
        -- one row per UTC day the interval touches
        ARRAY JOIN range(toUInt32(greatest(toInt64(toRelativeDayNum(toDate(running_to - 1))) - toInt64(toRelativeDayNum(toDate(running_from))) + 1, 0))) AS n
        WHERE running_to > running_from
    )
    GROUP BY tenant, datacenter, day
);

-- Fill rate per datacenter and day: the day's average capacity sold over
-- the capacity installed (DOMAIN.md: 75 % is the target, 85 % profit, 55 %
-- eats the business). Only datacenters with a capacity loaded.
CREATE VIEW IF NOT EXISTS {db}.provider_fill_rate_daily AS
SELECT datacenter, day,
    vcpu_sold, installed_vcpu, if(installed_vcpu > 0, vcpu_sold / if(installed_vcpu > 0, installed_vcpu, 1), toDecimal128(0, 6)) AS vcpu_fill_rate,
    ram_gib_sold, installed_ram_gib, if(installed_ram_gib > 0, ram_gib_sold / if(installed_ram_gib > 0, installed_ram_gib, 1), toDecimal128(0, 6)) AS ram_fill_rate,
    storage_gb_sold, installed_storage_gb, if(installed_storage_gb > 0, storage_gb_sold / if(installed_storage_gb > 0, installed_storage_gb, 1), toDecimal128(0, 6)) AS storage_fill_rate
FROM
(
    SELECT datacenter, day,
        toDecimal128(sum(vcpu_seconds), 6) / 86400 AS vcpu_sold,
        toDecimal128(sum(ram_mib_seconds), 6) / (86400 * 1024) AS ram_gib_sold,
        toDecimal128(sum(storage_gb_seconds), 6) / 86400 AS storage_gb_sold
    FROM {db}.vm_capacity_sold_daily
    GROUP BY datacenter, day
) AS sold
ALL INNER JOIN
(
    SELECT datacenter, vcpu AS installed_vcpu, ram_gib AS installed_ram_gib, storage_gb AS installed_storage_gb
    FROM {db}.datacenter_capacity FINAL
) AS installed USING (datacenter);

-- Fill rate per datacenter and month: capacity sold over the month's days
-- (to yesterday for the current month; a day without running VMs counts as 0).
CREATE VIEW IF NOT EXISTS {db}.provider_fill_rate_monthly AS
SELECT datacenter, month, days,
    vcpu_sold, installed_vcpu, if(installed_vcpu > 0, vcpu_sold / if(installed_vcpu > 0, installed_vcpu, 1), toDecimal128(0, 6)) AS vcpu_fill_rate,
    ram_gib_sold, installed_ram_gib, if(installed_ram_gib > 0, ram_gib_sold / if(installed_ram_gib > 0, installed_ram_gib, 1), toDecimal128(0, 6)) AS ram_fill_rate,
    storage_gb_sold, installed_storage_gb, if(installed_storage_gb > 0, storage_gb_sold / if(installed_storage_gb > 0, installed_storage_gb, 1), toDecimal128(0, 6)) AS storage_fill_rate
FROM
(
    SELECT datacenter, month,
        -- days of the month, or up to yesterday for the current month (at least 1)
        toInt64(greatest(if(month = toStartOfMonth(today()), toDayOfMonth(today()) - 1, toDayOfMonth(addDays(addMonths(month, 1), -1))), 1)) AS days,
        toDecimal128(vcpu_seconds, 6) / (86400 * days) AS vcpu_sold,
        toDecimal128(ram_mib_seconds, 6) / (86400 * 1024 * days) AS ram_gib_sold,
        toDecimal128(storage_gb_seconds, 6) / (86400 * days) AS storage_gb_sold
    FROM
    (
        SELECT datacenter, toStartOfMonth(day) AS month,
            sum(vcpu_seconds) AS vcpu_seconds, sum(ram_mib_seconds) AS ram_mib_seconds, sum(storage_gb_seconds) AS storage_gb_seconds
        FROM {db}.vm_capacity_sold_daily
        GROUP BY datacenter, month
    )
) AS sold
ALL INNER JOIN
(
    SELECT datacenter, vcpu AS installed_vcpu, ram_gib AS installed_ram_gib, storage_gb AS installed_storage_gb
    FROM {db}.datacenter_capacity FINAL
) AS installed USING (datacenter);
