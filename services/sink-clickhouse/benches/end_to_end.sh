#!/usr/bin/env bash
# End-to-end throughput of `meter sink clickhouse` (issue 11): its own Tansu
# broker (memory storage) on SINK_BENCH_KAFKA_PORT (19192), a private database
# of the stack's ClickHouse, N aggregates and N events published first
# (examples/publish_sink_input.rs), then `meter sink clickhouse --until-idle 3`.
# Prints rows/s from the sink's first INSERT to its last (the log's "batch
# inserted" lines), the whole run's wall time, and the machine's load. Never
# touches the stack's broker; drops its database at the end.
#
#   services/sink-clickhouse/benches/end_to_end.sh [N]      (default 200000)
#   METER_BIN=path/to/meter  SINK_BENCH_KEEP=1 (keep the database and logs)  SINK_BENCH_SKIP_BUILD=1
#   SINK_BENCH_WRAP="perf record -g -o /tmp/sink.perf --" (a profiler before the sink command)
set -euo pipefail

N=${1:-200000}
PORT=${SINK_BENCH_KAFKA_PORT:-19192}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
METER=${METER_BIN:-$TARGET/release/meter}
TANSU=${METER_TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
RUN=sinkbench_$(date +%s)_$$
WORK=$(mktemp -d /tmp/meter-sink-bench.XXXXXX)
BROKERS=127.0.0.1:$PORT
TANSU_PID=

log() { printf '%s\n' "$*" >&2; }
cleanup() {
  if [[ -z ${SINK_BENCH_KEEP:-} ]]; then
    clickhouse-client --port "${SINK_BENCH_CLICKHOUSE_PORT:-9000}" -q "DROP DATABASE IF EXISTS $RUN" || true
  fi
  [[ -n $TANSU_PID ]] && kill "$TANSU_PID" 2>/dev/null && wait "$TANSU_PID" 2>/dev/null
  if [[ -n ${SINK_BENCH_KEEP:-} ]]; then log "kept: database $RUN, logs in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [[ -z ${SINK_BENCH_SKIP_BUILD:-} ]]; then
  log "building meter and the publisher (release)..."
  (cd "$ROOT" && cargo build --release --bin meter -p meter-cli >&2 &&
    cargo build --release -p sink-clickhouse --example publish_sink_input >&2)
fi
if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
  log "using the broker already listening on $PORT (topics are new for this run)"
else
  log "starting Tansu (memory storage) on $BROKERS..."
  mkdir -p "$WORK/tansu"
  (cd "$WORK/tansu" && RUST_LOG=warn exec "$TANSU" broker --listener-url "tcp://$BROKERS" \
    --advertised-listener-url "tcp://$BROKERS" --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1) &
  TANSU_PID=$!
  for _ in $(seq 1 100); do
    timeout 5 "$TANSU" topic list --broker "tcp://$BROKERS" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi

export METER_KAFKA__BROKERS=$BROKERS
export METER_TOPICS__AGGREGATES=$RUN.aggregates
export METER_TOPICS__VM_USAGE=$RUN.events.vm-usage
export METER_TOPICS__CHECK_RESULT=$RUN.events.check-result
export METER_TOPICS__TICKET_TIME=$RUN.events.ticket-time
export METER_TOPICS__DEAD_LETTERS=$RUN.dead-letters
export METER_TOPICS__LATE_EVENTS=$RUN.late-events
export METER_CLICKHOUSE__DATABASE=$RUN
export METER_SINK__GROUP_ID=$RUN.sink
export METER_SINK__METRICS_LISTEN=
export METER_LOG__FORMAT=json
for t in aggregates events.vm-usage events.check-result events.ticket-time dead-letters late-events; do
  timeout 30 "$TANSU" topic create --broker "tcp://$BROKERS" --partitions 3 "$RUN.$t" >/dev/null
done
cd "$ROOT"
RUST_LOG=warn "$METER" migrate >/dev/null
log "publishing $N aggregates and $N events..."
RUST_LOG=warn "$TARGET/release/examples/publish_sink_input" "$N" "$N"

log "meter sink clickhouse --until-idle 3..."
start=$(date +%s.%N)
RUST_LOG=info /usr/bin/time -f "sink max RSS: %M KiB" ${SINK_BENCH_WRAP:-} "$METER" sink clickhouse --until-idle 3 >"$WORK/sink.log" 2>&1 || { log "the sink failed:"; tail -20 "$WORK/sink.log" >&2; exit 1; }
wall=$(echo "$(date +%s.%N) - $start" | bc -l)
counts=$(clickhouse-client --port "${SINK_BENCH_CLICKHOUSE_PORT:-9000}" -q \
  "SELECT (SELECT count() FROM $RUN.aggregates), (SELECT count() FROM $RUN.ticket_tasks), (SELECT count() FROM $RUN.check_runs), (SELECT count() FROM $RUN.vm_usage_events)" | tr '\t' ' ')

python3 - "$N" "$wall" "$counts" "$WORK/sink.log" "$(uptime)" <<'PY'
import json, sys
from datetime import datetime
n, wall, counts, path, load = int(sys.argv[1]), float(sys.argv[2]), [int(c) for c in sys.argv[3].split()], sys.argv[4], sys.argv[5]
inserts, rss = [], "?"
for line in open(path):
    if line.startswith("sink max RSS:"):
        rss = f"{int(line.split()[3]) / 1024:.0f} MiB"
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    fields = rec.get("fields", rec)  # flattened JSON log lines
    if fields.get("message") == "batch inserted":
        at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        inserts.append((at, int(fields["rows"]), int(fields.get("duration_ms", 0))))
inserts.sort()
rows = sum(r for _, r, _ in inserts)
# From the first INSERT's start (its end minus its duration) to the last one's end.
first = inserts[0][0] - inserts[0][2] / 1000 if inserts else 0
span = inserts[-1][0] - first if inserts else 0
print(f"sink end-to-end: {n:,} aggregates + {n:,} events, Tansu memory storage, ClickHouse 18.16, {len(inserts)} INSERTs")
print(f"rows in ClickHouse: aggregates {counts[0]:,}, ticket_tasks {counts[1]:,}, check_runs {counts[2]:,}, vm_usage_events {counts[3]:,}")
print(f"first INSERT to last: {rows:,} rows in {span:.2f} s = {rows / span if span else 0:,.0f} rows/s")
print(f"whole process (start-up, group join, 3 s idle included): {wall:.2f} s = {rows / wall:,.0f} rows/s")
print(f"sink max RSS: {rss}; load: {load.strip()}")
ok = counts[0] == n and sum(counts[1:]) == n and rows == 2 * n
print("all rows written" if ok else "ROWS MISSING OR EXTRA")
sys.exit(0 if ok else 1)
PY
