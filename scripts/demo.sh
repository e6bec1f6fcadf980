#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, starts the
# local stack, runs the pipeline on the DOMAIN.md demo data, and prints
# where to look. Safe to run again: events carry ids and count once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export RUST_LOG="${RUST_LOG:-warn}"
METER="$ROOT/target/debug/meter"

step() { printf '\n==> %s\n' "$*"; }

step "local stack (Tansu, ClickHouse, Prometheus)"
bash scripts/stack.sh up

step "build meter"
cargo build --locked --bin meter

step "ClickHouse schema"
"$METER" migrate

step "demo data (DOMAIN.md figures)"
"$METER" demo generate --out .stack/demo

step "collectors -> Kafka (history import: closed months are re-rated and recorded)"
for kind in ticket-time check-result vm-usage; do
  "$METER" collect file --kind "$kind" --backfill --requested-by demo --reason "DOMAIN.md history" ".stack/demo/$kind.jsonl"
done

step "aggregator -> aggregate topic"
"$METER" aggregate --until-idle 3

step "sink -> ClickHouse"
"$METER" sink clickhouse --until-idle 3

step "contracts and datacenter capacity"
"$METER" contracts load config/contracts.example.toml
"$METER" capacity load config/capacity.toml

step "what landed in ClickHouse"
clickhouse-client --port "${METER_CLICKHOUSE_TCP_PORT:-9000}" --format PrettyCompact -q "
SELECT tenant, kind, toYYYYMM(window_date) AS month, metric, unit,
       sum(quantity) AS quantity, sum(cost) AS cost, sum(event_count) AS events
FROM meter.aggregates FINAL
WHERE period = 'MONTH'
GROUP BY tenant, kind, month, metric, unit
ORDER BY tenant, kind, month, metric"

cat <<TXT

Where to look
  ClickHouse   clickhouse-client --port 9000      (HTTP http://127.0.0.1:8123)
               e.g. the January comparison of DOMAIN.md, in 8-hour days:
                 clickhouse-client --port 9000 -q "SELECT toYear(window_date) AS year,
                   round(sum(quantity) / 480, 2) AS days, sum(incident_count) AS incident_tasks
                   FROM meter.aggregates FINAL WHERE tenant = 'acme' AND kind = 'TICKET_TIME'
                   AND period = 'MONTH' AND toMonth(window_date) = 1 GROUP BY year ORDER BY year"
               daily view: SELECT * FROM meter.daily_totals LIMIT 20
  Forecast     target/debug/meter forecast --tenant acme   (the high January, the budget left)
               fill rate: SELECT * FROM meter.provider_fill_rate_daily ORDER BY day
  Kafka        127.0.0.1:9092 (Tansu)   topics meter.events.*, meter.aggregates, meter.dead-letters
  Prometheus   http://127.0.0.1:9090
  Run the services continuously:  target/debug/meter aggregate   |   target/debug/meter sink clickhouse
  Stop the stack:                 scripts/stack.sh down
TXT
