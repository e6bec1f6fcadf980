"""Every migration and every view runs on ClickHouse 18.16 (the local stack's
server) and on current ClickHouse (chDB, in process), and gives the same rows
on the same data.

- All of `services/sink-clickhouse/migrations/*.sql` (a glob: new files are
  included) are split into statements as `migrations.rs` does and applied to
  a fresh database on both.
- The fixture rows of `fixture_rows.py` are loaded into both.
- Every view (`system.tables` with engine 'View', so new views are covered)
  is queried on both with an ORDER BY on all its columns; the rows are
  compared with decimals normalised (18.16 prints 27.000000, current
  versions 27).
- A tenant database is provisioned on both as `tenants.rs` does (tables,
  feeding materialized views, back-fill, the views) and its views give the
  shared views' rows of that tenant.

The 18.16 server is the one `scripts/stack.sh up` runs (METER_CLICKHOUSE_HTTP_PORT,
default 8123). Run: `scripts/test.sh`, or after it
`.stack/venv/bin/python -m pytest tests/python`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("TZ", "UTC")  # chDB takes the process' zone; the stack's server runs in UTC.

import pytest  # noqa: E402
import requests  # noqa: E402
from chdb import session as chdb_session  # noqa: E402

from fixture_rows import SUBSIDIARIES, fixture_inserts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "services" / "sink-clickhouse" / "migrations"
SERVER_URL = f"http://127.0.0.1:{os.environ.get('METER_CLICKHOUSE_HTTP_PORT', '8123')}/"

TENANTS_RS = ROOT / "services" / "sink-clickhouse" / "src" / "tenants.rs"
KINDS_RS = ROOT / "services" / "meter-model" / "src" / "kinds.rs"


def tenants_rs_list(name):
    """A constant array of tenants.rs (CONTRACT_TABLES, TABLE_MIGRATIONS,
    VIEW_MIGRATIONS), so that provisioning here follows the code;
    TENANT_TABLES is what `tenant_tables()` returns: the aggregates, every
    event kind's detail table (kinds.rs), the contract tables."""
    if name == "TENANT_TABLES":
        aggregates = re.search(r'const AGGREGATES_TABLE: &str = "([a-z_]+)"', TENANTS_RS.read_text())
        assert aggregates, f"{TENANTS_RS} has no const AGGREGATES_TABLE"
        details = re.findall(r'detail_table: "([a-z_]+)"', KINDS_RS.read_text())
        assert details, f"{KINDS_RS} has no detail_table"
        return [aggregates.group(1), *details, *tenants_rs_list("CONTRACT_TABLES")]
    m = re.search(rf"const {name}: \[[^\]]+\]\s*=\s*\[([^\]]*)\]", TENANTS_RS.read_text())
    assert m, f"{TENANTS_RS} has no const {name}"
    return [item.strip().strip('"') for item in m.group(1).split(",") if item.strip()]


def statements(sql, database):
    """migrations.rs `statements`: `{db}` replaced, split at `;` + newline,
    comment lines dropped, trailing `;` trimmed, empty parts skipped."""
    out = []
    for part in sql.replace("{db}", database).split(";\n"):
        text = "\n".join(line for line in part.splitlines() if not line.lstrip().startswith("--"))
        text = text.strip().rstrip(";")
        if text:
            out.append(text)
    return out


def migration_files():
    return sorted(MIGRATIONS.glob("*.sql"))


def migration_version(path):
    return int(path.name.split("_", 1)[0])


class Server:
    """ClickHouse 18.16 over HTTP."""

    name = "ClickHouse 18.16 server"

    def __init__(self, url):
        self.url = url
        self.http = requests.Session()

    def execute(self, sql):
        r = self.http.post(self.url, data=sql.encode(), timeout=60)
        if r.status_code != 200:
            raise RuntimeError(r.text.strip())
        return r.text

    def version(self):
        return self.execute("SELECT version()").strip()


class Chdb:
    """Current ClickHouse in process (chDB), on a temporary folder."""

    name = "chDB"

    def __init__(self, path):
        self.session = chdb_session.Session(path)

    def execute(self, sql):
        # chDB raises on errors; the query text carries its own FORMAT.
        return self.session.query(sql, "TabSeparated").bytes().decode()

    def version(self):
        return self.execute("SELECT version()").strip()

    def close(self):
        self.session.close()


def apply_migrations(backend, db):
    """Applies every statement of every migration file; returns the failures."""
    failures = []
    backend.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    for path in migration_files():
        for sql in statements(path.read_text(), db):
            try:
                backend.execute(sql)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failures.append(f"{backend.name}: {path.name}: {sql.splitlines()[0]}\n    {str(e).splitlines()[0][:400]}")
    return failures


def provision_tenant(backend, db, tenant):
    """tenants.rs `provision`, without the user file: the tenant's database
    with the table migrations, a feeding materialized view and a back-fill
    per shared table, then the view migrations. Returns the database."""
    tdb = f"{db}_tenant_{tenant.replace('-', '_')}"
    backend.execute(f"CREATE DATABASE IF NOT EXISTS {tdb}")
    files = migration_files()
    table_files = [p for p in files if str(migration_version(p)) in tenants_rs_list("TABLE_MIGRATIONS")]
    view_files = [p for p in files if str(migration_version(p)) in tenants_rs_list("VIEW_MIGRATIONS")]
    for path in table_files:
        for sql in statements(path.read_text(), tdb):
            backend.execute(sql)
    # A migration tenants.rs applies once to a tenant database whose detail
    # tables still have the old keys (const IDENTITY_MIGRATION, where present).
    identity = re.search(r"const IDENTITY_MIGRATION: u32 = (\d+);", TENANTS_RS.read_text())
    old_keys = backend.execute(f"SELECT count() FROM system.columns WHERE database = '{tdb}' AND table = 'ticket_tasks' "
                               "AND name = 'version' AND type = 'UInt8' FORMAT TabSeparated").strip()
    if identity and old_keys != "0":
        for path in [p for p in files if migration_version(p) == int(identity.group(1))]:
            for sql in statements(path.read_text(), tdb):
                backend.execute(sql)
    for table in tenants_rs_list("TENANT_TABLES"):
        backend.execute(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {tdb}.{table}_feed TO {tdb}.{table} "
                        f"AS SELECT * FROM {db}.{table} WHERE tenant = '{tenant}'")
        backend.execute(f"INSERT INTO {tdb}.{table} SELECT * FROM {db}.{table} WHERE tenant = '{tenant}'")
    for path in view_files:
        for sql in statements(path.read_text(), tdb):
            backend.execute(sql)
    return tdb


def tenant_view_names():
    """The views a tenant database gets (those of tenants.rs VIEW_MIGRATIONS,
    all with a tenant column); the others (provider fill rate) are the
    provider's, in the shared database only."""
    names = []
    for path in migration_files():
        if str(migration_version(path)) in tenants_rs_list("VIEW_MIGRATIONS"):
            names += re.findall(r"CREATE VIEW IF NOT EXISTS \{db\}\.(\w+)", path.read_text())
    return sorted(names)


def views(backend, db):
    out = backend.execute(f"SELECT name FROM system.tables WHERE database = '{db}' AND engine = 'View' ORDER BY name FORMAT TabSeparated")
    return out.split()


def columns(backend, db, view):
    out = backend.execute(f"DESCRIBE TABLE {db}.{view} FORMAT TabSeparated")
    return [tuple(line.split("\t")[:2]) for line in out.splitlines() if line]


DECIMAL_LITERAL = re.compile(r"-?\d+\.\d+")


def normal_decimal(text):
    d = Decimal(text)
    if d == 0:
        return "0"
    s = format(d.normalize(), "f")
    return s


def normalise(value, type_name):
    """One TSV field, decimals without trailing zeros (also inside arrays)."""
    if value == "\\N":
        return None
    if "Decimal" in type_name:
        if type_name.startswith(("Decimal", "Nullable(Decimal")):
            return normal_decimal(value)
        return DECIMAL_LITERAL.sub(lambda m: normal_decimal(m.group(0)), value)
    return value


def rows(backend, db, view, where=""):
    """Every row of a view, ordered by all its columns, normalised."""
    cols = columns(backend, db, view)
    order = ", ".join(f"`{name}`" for name, _ in cols)
    out = backend.execute(f"SELECT * FROM {db}.{view} {where} ORDER BY {order} FORMAT TabSeparated")
    result = []
    for line in out.split("\n"):
        if line == "":
            continue
        fields = line.split("\t")
        assert len(fields) == len(cols), f"{backend.name}: {view}: {len(fields)} fields for {len(cols)} columns: {line!r}"
        result.append(tuple(normalise(v, t) for v, (_, t) in zip(fields, cols)))
    return result


@pytest.fixture(scope="module")
def engines():
    """Both engines with the migrations applied and the fixture rows loaded
    into a fresh database; the failures of migration statements."""
    server = Server(SERVER_URL)
    try:
        server.version()
    except requests.RequestException as e:
        pytest.fail(f"ClickHouse 18.16 does not answer at {SERVER_URL} ({e}): start it with `scripts/stack.sh up`")
    folder = tempfile.mkdtemp(prefix="meter-chdb-")
    current = Chdb(folder)
    db = f"meter_versions_{uuid.uuid4().hex[:10]}"
    failures = []
    try:
        for backend in (server, current):
            failures += apply_migrations(backend, db)
        if not failures:
            for sql in fixture_inserts(db):
                server.execute(sql)
                current.execute(sql)
        yield {"server": server, "current": current, "db": db, "failures": failures}
    finally:
        for tenant_db in server.execute(f"SELECT name FROM system.databases WHERE name LIKE '{db}%' FORMAT TabSeparated").split():
            server.execute(f"DROP DATABASE IF EXISTS {tenant_db}")
        current.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_every_migration_statement_runs_on_18_16_and_current(engines):
    assert migration_files(), f"no migration in {MIGRATIONS}"
    assert engines["server"].version().startswith("18.16"), engines["server"].version()
    assert not engines["failures"], "statements refused:\n" + "\n".join(engines["failures"])


def test_the_migrations_create_the_same_tables_and_views(engines):
    db = engines["db"]
    query = f"SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name FORMAT TabSeparated"
    assert engines["server"].execute(query) == engines["current"].execute(query)


def test_every_view_gives_the_same_rows(engines):
    assert not engines["failures"], "migrations failed; see the first test"
    db = engines["db"]
    server, current = engines["server"], engines["current"]
    names = views(server, db)
    assert names == views(current, db)
    assert "contract_status" in names and "daily_totals" in names, names
    problems = []
    for view in names:
        old_cols, new_cols = columns(server, db, view), columns(current, db, view)
        if [c for c, _ in old_cols] != [c for c, _ in new_cols]:
            problems.append(f"{view}: columns differ:\n  18.16:   {old_cols}\n  current: {new_cols}")
            continue
        old, new = rows(server, db, view), rows(current, db, view)
        if not old:
            problems.append(f"{view}: no row on the fixture data: extend tests/python/fixture_rows.py so that it is compared")
        if old != new:
            only_old = [r for r in old if r not in new][:3]
            only_new = [r for r in new if r not in old][:3]
            problems.append(f"{view}: {len(old)} rows on 18.16, {len(new)} on current; only on 18.16: {only_old}; only on current: {only_new}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("tenant", sorted(SUBSIDIARIES))
def test_a_tenant_database_gives_the_shared_views_rows_of_its_tenant(engines, tenant):
    assert not engines["failures"], "migrations failed; see the first test"
    db = engines["db"]
    problems = []
    for backend in (engines["server"], engines["current"]):
        tdb = provision_tenant(backend, db, tenant)
        tenant_views = views(backend, tdb)
        assert tenant_views == tenant_view_names(), f"{backend.name}: the tenant database has other views"
        assert set(tenant_views) < set(views(backend, db))
        for view in tenant_views:
            mine = rows(backend, tdb, view)
            shared = rows(backend, db, view, where=f"WHERE tenant = '{tenant}'")
            if not mine:
                problems.append(f"{backend.name}: {tdb}.{view}: no row for {tenant}")
            elif mine != shared:
                problems.append(f"{backend.name}: {tdb}.{view}: its {len(mine)} rows differ from the shared view's {len(shared)} of {tenant}")
    assert not problems, "\n".join(problems)


def test_current_clickhouse_pushes_a_tenant_filter_into_every_view_reading_final(engines):
    """On current ClickHouse a `WHERE tenant = ...` on a shared view reaches
    the primary key of every table the view reads (with FINAL, through joins
    and GROUP BY), so the shared views serve one tenant without a tenant
    database. 18.16 does not (4 s a query at 500 tenants): there, analysts
    read their tenant database (test above)."""
    assert not engines["failures"], "migrations failed; see the first test"
    db, current = engines["db"], engines["current"]
    problems = []
    for view in views(current, db):
        if "tenant" not in [name for name, _ in columns(current, db, view)]:
            continue
        plan = current.execute(f"EXPLAIN indexes = 1 SELECT * FROM {db}.{view} WHERE tenant = 'acme'")
        reads = plan.split("ReadFromMergeTree")[1:]
        if not reads:
            problems.append(f"{view}: reads no MergeTree table?\n{plan}")
        for read in reads:
            table = read.split(")")[0].strip(" (")
            key = re.search(r"PrimaryKey.*?Condition: ([^\n]*)", read.replace("\\'", "'"), re.S)
            if "FINAL: 1" in read and not (key and "(tenant in ['acme', 'acme'])" in key.group(1)):
                problems.append(f"{view}: reads {table} FINAL without the tenant condition on its primary key")
    assert not problems, "\n".join(problems)


def test_compose_runs_the_clickhouse_version_tested_here(engines):
    """docker-compose.yml's clickhouse-server is the major.minor chDB runs here."""
    compose = (ROOT / "docker-compose.yml").read_text()
    tags = re.findall(r"image:\s*clickhouse/clickhouse-server:(\S+)", compose)
    assert len(tags) == 1, f"docker-compose.yml runs clickhouse-server {tags}"
    tested = ".".join(engines["current"].version().split(".")[:2])
    assert tags[0] == tested or tags[0].startswith(tested + "."), (
        f"docker-compose.yml runs clickhouse-server:{tags[0]}, the tests run {tested} (chdb-core in tests/python/requirements.txt)")


# ------------------------------------------------------------ row policies --
# Current ClickHouse applies the caller's row policies on the tables a view
# reads, so a tenant filter on the shared tables would isolate tenants
# without tenant databases. 18.16 ignores row filters: there, isolation is
# the tenant database. Both facts are tested: which version gets which.

ROW_POLICY_USERS = """<clickhouse>
  <profiles><default/></profiles>
  <quotas><default/></quotas>
  <users>
    <default>
      <password/>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
      <databases>
        <{db}>{tables}</{db}>
      </databases>
    </default>
  </users>
</clickhouse>
"""


def provisioning_row_filters(backend, db, tenant):
    """The row filters `meter tenants provision` writes for a tenant user on
    current versions (tenants.rs `row_filter`): every table of the shared
    database with a tenant column on its tenant, every other table on 0."""
    tables = backend.execute(f"SELECT name FROM system.tables WHERE database = '{db}' AND engine NOT IN ('View', 'MaterializedView') "
                             "ORDER BY name FORMAT TabSeparated").split()
    with_tenant = set(backend.execute(f"SELECT DISTINCT table FROM system.columns WHERE database = '{db}' AND name = 'tenant' "
                                      "FORMAT TabSeparated").split())
    return {t: (f"tenant = '{tenant}'" if t in with_tenant else "0") for t in tables}


def rows_under_row_policy(db, tenant, filters):
    """In a chDB of its own (a process: its configuration is global), whose
    user has the provisioning's row filters on the shared tables: the
    migrations, the fixture rows, and every view's rows."""
    folder = tempfile.mkdtemp(prefix="meter-chdb-policy-")
    try:
        tables = "".join(f"<{t}><filter>{f}</filter></{t}>" for t, f in filters.items())
        Path(folder, "users.xml").write_text(ROW_POLICY_USERS.format(db=db, tables=tables))
        Path(folder, "config.xml").write_text(
            f"<clickhouse><user_directories><users_xml><path>{folder}/users.xml</path></users_xml></user_directories></clickhouse>")
        code = "import sys, json, test_clickhouse_versions as t; print(json.dumps(t.policy_process(*sys.argv[1:])))"
        out = subprocess.run([sys.executable, "-c", code, folder, db], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def policy_process(folder, db):
    """The child of rows_under_row_policy."""
    backend = Chdb(f"{folder}/data?config-file={folder}/config.xml")
    try:
        failures = apply_migrations(backend, db)
        assert not failures, failures
        for sql in fixture_inserts(db):
            backend.execute(sql)
        policies = backend.execute("SELECT count() FROM system.row_policies FORMAT TabSeparated").strip()
        # The fixture loads capacity rows: a filter of 0 hides them.
        unfiltered = {t: int(backend.execute(f"SELECT count() FROM {db}.{t} FORMAT TabSeparated").strip()) for t in ("datacenter_capacity",)}
        provider = {v: len(rows(backend, db, v)) for v in views(backend, db) if v not in tenant_view_names()}
        return {"policies": int(policies), "views": {v: [list(r) for r in rows(backend, db, v)] for v in tenant_view_names()},
                "tables_without_tenant": unfiltered, "provider_views": provider}
    finally:
        backend.close()


def test_current_clickhouse_applies_a_row_policy_through_every_view(engines):
    assert not engines["failures"], "migrations failed; see the first test"
    db, current = engines["db"], engines["current"]
    filters = provisioning_row_filters(current, db, "acme")
    assert filters["aggregates"] == "tenant = 'acme'" and filters["datacenter_capacity"] == "0", filters
    seen = rows_under_row_policy(db, "acme", filters)
    assert seen["policies"] >= len(filters), seen["policies"]
    # Tables without a tenant column give a tenant nothing, so do the fill
    # rates (capacity installed is the provider's); the capacity its own VMs
    # use (vm_capacity_sold_daily, with a tenant column) is its rows only.
    assert set(seen["tables_without_tenant"].values()) == {0}, seen["tables_without_tenant"]
    provider = seen["provider_views"]
    assert provider["provider_fill_rate_daily"] == 0 and provider["provider_fill_rate_monthly"] == 0, provider
    acme_sold = len(rows(current, db, "vm_capacity_sold_daily", where="WHERE tenant = 'acme'"))
    assert acme_sold > 0 and provider["vm_capacity_sold_daily"] == acme_sold, (provider, acme_sold)
    problems = []
    for view, got in seen["views"].items():
        want = [list(r) for r in rows(current, db, view, where="WHERE tenant = 'acme'")]
        if not want or got != want:
            problems.append(f"{view}: {len(got)} rows under the row policy, {len(want)} rows of acme in the shared view")
    assert set(seen["views"]) == set(tenant_view_names())
    assert not problems, "\n".join(problems)


def test_clickhouse_18_16_ignores_row_filters_so_tenants_get_databases(engines):
    """A user whose users.d entry filters the shared tables on one tenant
    still reads every tenant on 18.16: isolation there is the tenant
    database and its user (tenants.rs; tenant_isolation.rs)."""
    assert not engines["failures"], "migrations failed; see the first test"
    db, server = engines["db"], engines["server"]
    stack = Path(os.environ.get("METER_STACK_DIR", ROOT / ".stack"))
    users_d = stack / "clickhouse" / "users.d"
    if not users_d.parent.is_dir():
        pytest.fail(f"{users_d.parent} is not the running server's folder: set METER_STACK_DIR")
    users_d.mkdir(exist_ok=True)
    user = f"{db}_filtered"
    tables = "".join(f"<{t}><filter>tenant = 'acme'</filter></{t}>" for t in tenants_rs_list("TENANT_TABLES"))
    path = users_d / f"{user}.xml"
    path.write_text(f"""<?xml version="1.0"?>
<!-- Written by tests/python/test_clickhouse_versions.py, removed at its end. -->
<yandex><users><{user}>
  <password></password>
  <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
  <profile>readonly</profile>
  <quota>default</quota>
  <databases><{db}>{tables}</{db}></databases>
</{user}></users></yandex>
""")
    try:
        deadline = time.monotonic() + 60
        while True:
            r = server.http.post(SERVER_URL, params={"user": user}, data=f"SELECT DISTINCT tenant FROM {db}.daily_totals ORDER BY tenant", timeout=30)
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, f"{user} cannot log in within 60 s: {r.text}"
            time.sleep(0.5)
        assert r.text.split() == ["acme", "initech"], r.text
    finally:
        path.unlink()


# ---------------------------------------------------------- budget forecast --

def month_add(d, n):
    y, m = divmod(d.year * 12 + d.month - 1 + n, 12)
    return d.replace(year=y, month=m + 1, day=1)


def independent_forecast(tenant, contract_id, today):
    """The budget forecast of a days contract computed from the fixture's raw
    ticket tasks and contract days with decimals, as an analyst would in a
    spreadsheet (not from the views): (start, method, {month: forecast},
    remaining, run-out date)."""
    import datetime as dt
    from fixture_rows import CONTRACTS, contract_rows, ticket_tasks

    (_, _, unit, _, hours, start_date, end_date, _, _), = [c for c in CONTRACTS if c[0] == tenant and c[1] == contract_id]
    assert unit == "days"
    per_day = hours * 60
    used = {}
    for t in ticket_tasks():
        if t["tenant"] == tenant:
            month = t["local_date"].replace(day=1)
            used[month] = used.get(month, Decimal(0)) + Decimal(t["minutes_worked"]) / per_day
    start = min(today.replace(day=1), month_add(max(used), 1))
    history = {}
    m = min(used)
    while m < start:
        history[m] = used.get(m, Decimal(0))
        m = month_add(m, 1)
    seasonal = len(history) >= 12
    level = sum(x for m, x in history.items() if m >= month_add(start, -12))
    average = {k: (sum(x for m, x in history.items() if m.month == k) / len([m for m in history if m.month == k]))
               if any(m.month == k for m in history) else Decimal(0) for k in range(1, 13)}
    months = [month_add(start, i) for i in range(12)]
    if seasonal:
        forecast = {m: level * average[m.month] / sum(average.values()) for m in months}
    else:
        forecast = {m: sum(history.values()) / len(history) for m in months}
    _, days = contract_rows()
    budget = sum(d["expected"] for d in days if d["tenant"] == tenant and d["contract_id"] == contract_id)
    consumed = sum(x for m, x in used.items() if start_date.replace(day=1) <= m < start)
    remaining = budget - consumed
    run_out, cumulative = None, Decimal(0)
    day = start
    while remaining > 0 and day <= end_date and day < month_add(start, 12):
        if day >= start_date:
            month_days = (month_add(day, 1) - day.replace(day=1)).days
            cumulative += forecast[day.replace(day=1)] / month_days
            if cumulative >= remaining:
                run_out = day
                break
        day += dt.timedelta(days=1)
    return start, "seasonal" if seasonal else "flat", forecast, remaining, run_out


@pytest.mark.parametrize("tenant, contract_id", [("acme", "acme-mco-2026"), ("initech", "initech-mco-2025-27"), ("acme", "acme-small-2026")])
def test_budget_forecast_matches_an_independent_computation(engines, tenant, contract_id):
    """consumption_forecast and budget_forecast on both engines against the
    forecast computed in Python from the raw fixture rows: DOMAIN.md's high
    January (16 then 27 days) is forecast high, a budget that the forecast
    January uses up runs out on the day computed here, one already used up
    is 'exhausted'."""
    import datetime as dt
    assert not engines["failures"], "migrations failed; see the first test"
    db = engines["db"]
    today = dt.date.fromisoformat(engines["server"].execute("SELECT toString(today())").strip())
    start, method, forecast, remaining, run_out = independent_forecast(tenant, contract_id, today)
    tolerance = Decimal("0.00001")
    for backend in (engines["server"], engines["current"]):
        rows = backend.execute(f"SELECT toString(month), toString(forecast), toString(forecast_start), method FROM {db}.consumption_forecast "
                               f"WHERE tenant = '{tenant}' AND contract_id = '{contract_id}' ORDER BY month FORMAT TabSeparated").split("\n")
        got = {dt.date.fromisoformat(r.split("\t")[0]): Decimal(r.split("\t")[1]) for r in rows if r}
        assert sorted(got) == sorted(forecast), f"{backend.name}: months {sorted(got)}"
        for m, want in forecast.items():
            assert abs(got[m] - want) < tolerance, f"{backend.name}: {contract_id} {m}: {got[m]} vs {want}"
        assert {r.split("\t")[2] for r in rows if r} == {start.isoformat()}
        assert {r.split("\t")[3] for r in rows if r} == {method}
        high = max(forecast, key=forecast.get)
        assert high.month == 1 and forecast[high] > 0, f"the January forecast is the highest: {forecast}"
        line = backend.execute(f"SELECT toString(remaining), ifNull(toString(run_out_date), ''), status FROM {db}.budget_forecast "
                               f"WHERE tenant = '{tenant}' AND contract_id = '{contract_id}' FORMAT TabSeparated").strip().split("\t")
        assert abs(Decimal(line[0]) - remaining) < tolerance, f"{backend.name}: remaining {line[0]} vs {remaining}"
        assert line[1] == (run_out.isoformat() if run_out else ""), f"{backend.name}: run-out {line[1]} vs {run_out}"
        assert line[2] == ("exhausted" if remaining <= 0 else "runs out" if run_out else "lasts"), line
    if contract_id == "initech-mco-2025-27":
        assert run_out is not None, "the fixture's two-year contract runs out in the forecast January"
    if contract_id == "acme-small-2026":
        assert remaining < 0


# ------------------------------------------------------- provider fill rate --

def independent_vcpu_seconds(today):
    """vCPU-seconds sold per (datacenter, UTC day) from the fixture's VM
    events, walking each VM's events: a START/CREATE/RESIZE runs until the
    VM's next event or the start of today."""
    import datetime as dt
    from fixture_rows import vm_events

    per_vm = {}
    for e in vm_events():
        per_vm.setdefault((e["tenant"], e["source"], e["vm_id"]), []).append(e)
    sold = {}
    for events in per_vm.values():
        events.sort(key=lambda e: e["event_time"])
        for n, e in enumerate(events):
            assert e["transition"] in ("START", "RESIZE")
            begin = e["event_time"]
            end = events[n + 1]["event_time"] if n + 1 < len(events) else dt.datetime(today.year, today.month, today.day)
            t = begin
            while t < end:
                next_midnight = dt.datetime(t.year, t.month, t.day) + dt.timedelta(days=1)
                piece = min(end, next_midnight) - t
                key = (e["datacenter"], t.date())
                sold[key] = sold.get(key, 0) + e["vcpu"] * int(piece.total_seconds())
                t = next_midnight
    return sold


def test_provider_fill_rate_matches_an_independent_computation(engines):
    """provider_fill_rate_daily and _monthly on both engines against the
    fixture's VM events walked here: 2 VMs of 4 vCPU in par1 (10 vCPU
    installed) are 80 % of it on a full day."""
    import datetime as dt
    from fixture_rows import CAPACITY
    assert not engines["failures"], "migrations failed; see the first test"
    db = engines["db"]
    today = dt.date.fromisoformat(engines["server"].execute("SELECT toString(today())").strip())
    sold = independent_vcpu_seconds(today)
    installed = CAPACITY["par1"][0]
    assert sold[("par1", dt.date(2026, 1, 6))] == 2 * 4 * 86400
    for backend in (engines["server"], engines["current"]):
        daily = backend.execute(f"SELECT toString(day), toString(vcpu_fill_rate), toString(installed_vcpu) FROM {db}.provider_fill_rate_daily "
                                f"WHERE datacenter = 'par1' ORDER BY day FORMAT TabSeparated").split("\n")
        got = {dt.date.fromisoformat(r.split("\t")[0]): Decimal(r.split("\t")[1]) for r in daily if r}
        assert sorted(got) == sorted(d for dc, d in sold if dc == "par1"), f"{backend.name}: days"
        for day, rate in got.items():
            want = Decimal(sold[("par1", day)]) / 86400 / installed
            assert abs(rate - want) < Decimal("0.000001"), f"{backend.name}: {day}: {rate} vs {want}"
        assert got[dt.date(2026, 1, 6)] == Decimal("0.8")
        monthly = backend.execute(f"SELECT toString(vcpu_fill_rate), days FROM {db}.provider_fill_rate_monthly "
                                  f"WHERE datacenter = 'par1' AND month = '2026-01-01' FORMAT TabSeparated").strip().split("\t")
        want = Decimal(sum(s for (dc, d), s in sold.items() if dc == "par1" and d.month == 1 and d.year == 2026)) / (86400 * 31) / installed
        assert monthly[1] == "31" and abs(Decimal(monthly[0]) - want) < Decimal("0.000001"), f"{backend.name}: {monthly} vs {want}"
        lyo = backend.execute(f"SELECT count() FROM {db}.provider_fill_rate_daily WHERE datacenter = 'lyo1' FORMAT TabSeparated").strip()
        assert lyo == "0", "no VM in lyo1: no row"
