"""Deterministic fixture rows for the shared ClickHouse tables, built from the
DOMAIN.md figures: two tenants over two Januaries (acme: 16 days of ticket
time in January 2025, 27 in January 2026, 9/8 then 20/7 incidents/requests),
their check runs and VM usage, and their contracts (263 days a year revised
to 200 then 300, 5.25 days a week; 7 k euros a year; tickets).

`fixture_inserts()` returns INSERT statements (explicit column lists, VALUES
literals both ClickHouse 18.16 and current versions read the same way) for a
database. The aggregates are computed here from the ticket tasks, check runs
and VM events, as the aggregator would, so that views joining aggregates and
detail tables see consistent data. Older revisions and late events are
included so that the views' FINAL has something to collapse.
"""

import calendar
import datetime as dt
import hashlib
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

MICRO = Decimal("0.000001")

# Technician hourly rates (euros), billed to the minute.
RATES = {"ADMINISTRATOR": Decimal("60"), "ENGINEER": Decimal("85"), "CONSULTANT": Decimal("110"), "ARCHITECT": Decimal("140")}

CATEGORIES = [
    (["RUN", "MCO", "backups"], "infrastructure", True, ""),
    (["RUN", "MCO", "servers", "Hyper-V"], "infrastructure", True, ""),
    (["RUN", "MCO", "servers"], "infrastructure", True, ""),
    (["RUN", "workstations"], "workstation", True, ""),
    (["RUN", "applications"], "software", True, "Sage"),
    (["hors périmètre", "projects"], "network", False, ""),
]
PROFILES = ["ENGINEER", "ADMINISTRATOR", "CONSULTANT", "ARCHITECT"]
TECHNICIANS = ["bob", "alice", "chloé", "dmitri"]

# (tenant, year) -> (minutes in January, incidents, requests)
TICKET_PLAN = {
    ("acme", 2025): (16 * 480, 9, 8),
    ("acme", 2026): (27 * 480, 20, 7),
    ("initech", 2025): (5 * 420, 4, 3),
    ("initech", 2026): (7 * 420 + 45, 6, 2),
}
SUBSIDIARIES = {"acme": ["acme-fr", "acme-de"], "initech": ["initech-us"]}
TIME_ZONES = {"acme": "Europe/Paris", "initech": "UTC"}


def q(value):
    """A SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(q(v) for v in value) + "]"
    if isinstance(value, dt.datetime):
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
    if isinstance(value, dt.date):
        return "'" + value.isoformat() + "'"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def insert(db, table, rows):
    columns = list(rows[0].keys())
    values = ",\n".join("(" + ", ".join(q(r[c]) for c in columns) + ")" for r in rows)
    return f"INSERT INTO {db}.{table} ({', '.join(columns)}) VALUES\n{values}"


def january_workdays(year):
    return [d for d in (dt.date(year, 1, n) for n in range(1, 32)) if d.weekday() < 5]


def monday(d):
    return d - dt.timedelta(days=d.weekday())


def ticket_tasks():
    """Ticket tasks: per tenant and January, the planned minutes, tickets of
    each type, one to three tasks a ticket, spread over the workdays."""
    tasks = []
    for (tenant, year), (minutes, incidents, requests) in sorted(TICKET_PLAN.items()):
        tickets = ["INCIDENT"] * incidents + ["REQUEST"] * requests
        days = january_workdays(year)
        plan = []
        for i, ticket_type in enumerate(tickets):
            for t in range(1 + (i * 7) % 3):
                plan.append((i, ticket_type, t))
        share, remainder = divmod(minutes, len(plan))
        for n, (i, ticket_type, t) in enumerate(plan):
            path, domain, in_scope, application = CATEGORIES[i % len(CATEGORIES)]
            day = days[(i * 5 + t * 3) % len(days)]
            start = dt.datetime(day.year, day.month, day.day, 8 + (n % 8), (n * 13) % 60)
            worked = share + (1 if n < remainder else 0)
            profile = PROFILES[(i + t) % len(PROFILES)]
            tasks.append({
                "tenant": tenant,
                "subsidiary": SUBSIDIARIES[tenant][i % len(SUBSIDIARIES[tenant])],
                "domain": domain,
                "local_date": day,
                "source": "glpi-main",
                "event_id": f"{tenant}-{year}-{i:03d}-{t}",
                "event_time": start + dt.timedelta(minutes=worked),
                "ingest_time": dt.datetime(year, 2, 1, 12, 0, 0),
                "ticket_id": f"{year}-{tenant}-{i:03d}",
                "task_id": str(t + 1),
                "ticket_type": ticket_type,
                "category": " > ".join(path),
                "category_path": path,
                "in_scope": in_scope,
                "requester": ["marie.dupont", "paul.martin", "li.wei"][i % 3],
                "technician": TECHNICIANS[(i + t) % len(TECHNICIANS)],
                "technician_profile": profile,
                "application": application,
                "country": "FR" if tenant == "acme" else "US",
                "minutes_worked": worked,
                "start_time": start,
                "accounting": "counted",
                "version": 1,
            })
    return tasks


def late_tasks():
    """A task set aside as too late (replaces its counted row by version) and
    a late one that never was counted: neither is in the aggregates."""
    late = []
    for tenant, year in [("acme", 2026), ("initech", 2025)]:
        day = dt.date(year, 1, 30)
        late.append({
            "tenant": tenant, "subsidiary": SUBSIDIARIES[tenant][0], "domain": "infrastructure", "local_date": day,
            "source": "glpi-main", "event_id": f"{tenant}-{year}-late", "event_time": dt.datetime(year, 1, 30, 17, 0),
            "ingest_time": dt.datetime(year, 2, 9, 9, 0), "ticket_id": f"{year}-{tenant}-late", "task_id": "1",
            "ticket_type": "INCIDENT", "category": "RUN > MCO > backups", "category_path": ["RUN", "MCO", "backups"],
            "in_scope": True, "requester": "marie.dupont", "technician": "bob", "technician_profile": "ENGINEER",
            "application": "", "country": "FR", "minutes_worked": 95, "start_time": dt.datetime(year, 1, 30, 15, 25),
            "accounting": "late", "version": 2,
        })
    return late


def check_runs():
    """Weekly Exchange and firewall checks and daily backup checks in the two
    Januaries: one KO with its ticket, one missed run."""
    runs = []
    for tenant in sorted(SUBSIDIARIES):
        for year in (2025, 2026):
            for day in (dt.date(year, 1, n) for n in range(1, 32)):
                checks = [("backup-daily", "Backup jobs", "DAILY")]
                if day.weekday() == 0:
                    checks += [("exchange-weekly", "Exchange", "WEEKLY"), ("firewall-weekly", "Firewall", "WEEKLY")]
                for check_id, name, frequency in checks:
                    scheduled = dt.datetime(day.year, 1, day.day, 6, 0)
                    status, ticket, executed = "OK", "", scheduled + dt.timedelta(minutes=4)
                    if check_id == "exchange-weekly" and day.day in (12, 13):
                        status, ticket = "KO", f"{year}-{tenant}-ko-exchange"
                    if check_id == "firewall-weekly" and day.day in (19, 20):
                        status, executed = "MISSED", None
                    if check_id == "backup-daily" and day.day == 7:
                        status = "WARNING"
                    if check_id == "backup-daily" and day.day in (14, 15):
                        # Two KO in one week: ko_tickets has two elements.
                        status, ticket = "KO", f"{year}-{tenant}-ko-backup-{day.day}"
                    runs.append({
                        "tenant": tenant, "subsidiary": SUBSIDIARIES[tenant][0], "domain": "infrastructure",
                        "local_date": day, "source": "icinga", "event_id": f"{check_id}-{tenant}-{day.isoformat()}",
                        "event_time": executed or scheduled + dt.timedelta(hours=1), "ingest_time": dt.datetime(year, 2, 1, 12, 0),
                        "check_id": check_id, "check_name": name, "target": f"srv-{tenant}-01", "frequency": frequency,
                        "scheduled_time": scheduled, "executed_time": executed, "status": status, "ticket_ref": ticket,
                        "time_spent_minutes": 10 if frequency == "WEEKLY" else 2, "output": f"{status}: {name}",
                        "accounting": "counted", "version": 1,
                    })
    return runs


def vm_events():
    runs = []
    for tenant in sorted(SUBSIDIARIES):
        for day in (dt.date(2026, 1, 5), dt.date(2026, 1, 20)):
            runs.append({
                "tenant": tenant, "subsidiary": SUBSIDIARIES[tenant][0], "domain": "infrastructure", "local_date": day,
                "source": "libvirt", "event_id": f"vm-{tenant}-{day.isoformat()}", "event_time": dt.datetime(2026, 1, day.day, 10, 0),
                "ingest_time": dt.datetime(2026, 1, day.day, 10, 0, 5), "vm_id": f"vm-{tenant}-1", "vcpu": 4, "ram_mib": 8192,
                "storage_gb": 100, "bandwidth_mbps": 100, "guaranteed_bandwidth": day.day == 20, "public_ips": 1,
                "sla_tier": "SLA_99_9", "options": ["backup", "firewall"], "datacenter": "par1",
                "transition": "START" if day.day == 5 else "RESIZE", "sample_interval_seconds": 0,
                "accounting": "counted", "version": 1,
            })
    return runs


def windows(day):
    return {
        "DAY": (day, day + dt.timedelta(days=1)),
        "WEEK": (monday(day), monday(day) + dt.timedelta(days=7)),
        "MONTH": (day.replace(day=1), (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)),
        "YEAR": (day.replace(month=1, day=1), day.replace(year=day.year + 1, month=1, day=1)),
    }


def aggregate_rows():
    """The aggregates of the ticket tasks, check runs and VM events, every
    period, with the dimensions of the aggregator, and an older revision of
    some to be collapsed by FINAL."""
    groups = {}

    def add(kind, row, metric, unit, dims, quantity, cost, counts):
        for period, (start, end) in windows(row["local_date"]).items():
            key = (row["tenant"], row["subsidiary"], row["domain"], kind, period, start, metric, unit, tuple(sorted(dims.items())))
            g = groups.setdefault(key, {"quantity": Decimal(0), "cost": Decimal(0), "end": end, "events": 0,
                                        "incident": 0, "request": 0, "ok": 0, "warning": 0, "ko": 0, "unknown": 0, "missed": 0})
            g["quantity"] += quantity
            g["cost"] += cost
            g["events"] += 1
            for c in counts:
                g[c] += 1

    for t in ticket_tasks():
        dims = {"ticket_type": t["ticket_type"], "category": t["category"], "in_scope": "true" if t["in_scope"] else "false",
                "application": t["application"], "requester": t["requester"], "technician": t["technician"],
                "technician_profile": t["technician_profile"], "country": t["country"]}
        cost = RATES[t["technician_profile"]] * t["minutes_worked"] / 60
        add("TICKET_TIME", t, "ticket.time", "minute", dims, Decimal(t["minutes_worked"]), cost, [t["ticket_type"].lower()])
    for r in check_runs():
        dims = {"check_id": r["check_id"], "frequency": r["frequency"]}
        add("CHECK_RESULT", r, "check.runs", "run", dims, Decimal(1), Decimal("4.5") if r["status"] != "MISSED" else Decimal(0),
            [r["status"].lower()])
    for v in vm_events():
        add("VM_USAGE", v, "vm.vcpu", "vCPU-hour", {}, Decimal(v["vcpu"] * 14), Decimal("0.021") * v["vcpu"] * 14, [])
        add("VM_USAGE", v, "vm.option", "option-hour", {"option": "backup"}, Decimal(14), Decimal("0.35"), [])

    rows = []
    for n, (key, g) in enumerate(sorted(groups.items(), key=lambda kv: repr(kv[0]))):
        tenant, subsidiary, domain, kind, period, start, metric, unit, dims = key
        aggregate_id = hashlib.sha256(repr(key).encode()).hexdigest()
        revision = 1000 + n
        row = {
            "aggregate_id": aggregate_id, "revision": revision, "is_final": 1, "version": revision * 2 + 1,
            "kind": kind, "tenant": tenant, "subsidiary": subsidiary, "domain": domain, "period": period,
            "time_zone": TIME_ZONES[tenant], "window_start": dt.datetime(start.year, start.month, start.day),
            "window_end": dt.datetime(g["end"].year, g["end"].month, g["end"].day), "window_date": start,
            "metric": metric, "unit": unit, "dimension_keys": [k for k, _ in dims], "dimension_values": [v for _, v in dims],
            "quantity": g["quantity"].quantize(MICRO), "event_count": g["events"], "incident_count": g["incident"],
            "request_count": g["request"], "ok_count": g["ok"], "warning_count": g["warning"], "ko_count": g["ko"],
            "unknown_count": g["unknown"], "missed_count": g["missed"],
            "cost": g["cost"].quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), "currency": "EUR",
            # Architects' aggregates re-rated by a later price book: two
            # versions in some invoice lines.
            "price_book_version": f"{start.year}-01" + ("-b" if ("technician_profile", "ARCHITECT") in dims else ""),
            "emitted_at": dt.datetime(2026, 2, 2, 6, 0),
        }
        rows.append(row)
        if n % 7 == 0:
            # An earlier, not final revision with other figures: FINAL drops it.
            older = dict(row, revision=revision - 500, is_final=0, version=(revision - 500) * 2,
                         quantity=(g["quantity"] / 2).quantize(MICRO), cost=Decimal("1.23"), price_book_version="2024-12")
            rows.append(older)
    return rows


CONTRACTS = [
    # tenant, id, unit, yearly amount, hours a day, start, end, weekly average, revisions (from month, amount)
    ("acme", "acme-mco-2025", "days", Decimal("200"), Decimal("8"), dt.date(2025, 1, 1), dt.date(2025, 12, 31), None, []),
    ("acme", "acme-mco-2026", "days", Decimal("263"), Decimal("8"), dt.date(2026, 1, 1), dt.date(2026, 12, 31), Decimal("5.25"),
     [(dt.date(2026, 4, 1), Decimal("200")), (dt.date(2026, 9, 1), Decimal("300"))]),
    ("initech", "initech-iaas-2026", "euros", Decimal("7000"), Decimal("8"), dt.date(2026, 1, 1), dt.date(2026, 12, 31), None, []),
    ("initech", "initech-tickets-2025", "tickets", Decimal("120"), Decimal("7"), dt.date(2024, 7, 1), dt.date(2025, 6, 30), None, []),
    # Budget forecast cases: a two-year contract of 12 days (7-hour days)
    # whose forecast January 2027 uses it up; a small one already used up.
    ("initech", "initech-mco-2025-27", "days", Decimal("12"), Decimal("7"), dt.date(2025, 6, 1), dt.date(2027, 5, 31), None, []),
    ("acme", "acme-small-2026", "days", Decimal("10"), Decimal("8"), dt.date(2026, 1, 1), dt.date(2026, 12, 31), None, []),
]


def expected_per_day(start, end, yearly, revisions):
    """As `contracts::expected_per_day`: a month's amount is the yearly amount
    in force x the month's contract days / the contract's days, to 6
    decimals, spread in micro-units over its days."""
    total_days = (end - start).days + 1
    out = []
    month = start.replace(day=1)
    while month <= end:
        last_of_month = month.replace(day=calendar.monthrange(month.year, month.month)[1])
        first, last = max(month, start), min(last_of_month, end)
        days = (last - first).days + 1
        amount = yearly
        for from_month, revised in sorted(revisions):
            if from_month <= month:
                amount = revised
        micros = int((amount * days / total_days).quantize(MICRO, rounding=ROUND_HALF_EVEN) * 1_000_000)
        share, remainder = divmod(micros, days)
        for i in range(days):
            out.append((first + dt.timedelta(days=i), Decimal(share + (1 if i < remainder else 0)) / 1_000_000))
        month = last_of_month + dt.timedelta(days=1)
    return out


def contract_rows():
    contracts, days = [], []
    for tenant, cid, unit, yearly, hours, start, end, weekly, revisions in CONTRACTS:
        total_days = (end - start).days + 1
        weekly = weekly if weekly is not None else (yearly * 7 / total_days).quantize(MICRO, rounding=ROUND_HALF_EVEN)
        row = {"tenant": tenant, "contract_id": cid, "unit": unit, "yearly_amount": yearly, "hours_per_day": hours,
               "weekly_average": weekly, "start_date": start, "end_date": end, "loaded_at": dt.datetime(2026, 11, 20, 10, 0)}
        # A first load with another amount, replaced by the later one.
        contracts.append(dict(row, yearly_amount=yearly + 1, loaded_at=dt.datetime(2026, 11, 1, 10, 0)))
        contracts.append(row)
        for day, expected in expected_per_day(start, end, yearly, revisions):
            days.append({"tenant": tenant, "contract_id": cid, "day": day, "expected": expected.quantize(MICRO, rounding=ROUND_DOWN),
                         "loaded_at": dt.datetime(2026, 11, 20, 10, 0)})
    return contracts, days


# Spike factors (contract_spike_factors): acme's 2026 contract flags weeks
# above 1.25 x 5.25 days; the tickets contract has none (no spike row).
SPIKE_FACTORS = {"acme-mco-2025": Decimal("1.5"), "acme-mco-2026": Decimal("1.25"), "initech-iaas-2026": Decimal("1.1")}


def spike_factor_rows():
    return [{"tenant": tenant, "contract_id": cid, "spike_factor": SPIKE_FACTORS[cid], "loaded_at": dt.datetime(2026, 11, 20, 10, 0)}
            for tenant, cid, *_ in CONTRACTS if cid in SPIKE_FACTORS]


# Capacity installed (datacenter_capacity): par1 holds both tenants' VMs
# (4 vCPU, 8 GiB, 100 GB each: 80 % of its vCPU on a full day); lyo1 sells
# nothing (no fill-rate row). A first load is replaced by the later one.
CAPACITY = {"par1": (10, 32, 500), "lyo1": (64, 256, 10000)}


def capacity_rows():
    rows = []
    for name, (vcpu, ram, storage) in sorted(CAPACITY.items()):
        row = {"datacenter": name, "vcpu": vcpu, "ram_gib": ram, "storage_gb": storage, "loaded_at": dt.datetime(2026, 11, 20, 10, 0)}
        rows += [dict(row, vcpu=vcpu * 2, loaded_at=dt.datetime(2026, 11, 1, 10, 0)), row]
    return rows


def fixture_inserts(db):
    """INSERT statements loading every fixture row into `db`."""
    contracts, days = contract_rows()
    statements = []
    for table, rows in [
        ("aggregates", aggregate_rows()),
        ("ticket_tasks", ticket_tasks() + late_tasks()),
        ("check_runs", check_runs()),
        ("vm_usage_events", vm_events()),
        ("contracts", contracts),
        ("contract_days", days),
        ("contract_spike_factors", spike_factor_rows()),
        ("datacenter_capacity", capacity_rows()),
    ]:
        # Small batches: one part each, so that FINAL merges across parts.
        for i in range(0, len(rows), 400):
            statements.append(insert(db, table, rows[i:i + 400]))
    # The counted row of the late task, older (version 1): replaced by the late one.
    counted = [dict(t, accounting="counted", version=1) for t in late_tasks()]
    statements.append(insert(db, "ticket_tasks", counted))
    return statements
