#!/usr/bin/env bash
# Side-by-side benchmark (issue 11), one run on one machine:
#   1. starts its own Tansu broker, memory storage, on BENCH_KAFKA_PORT (19092);
#   2. publishes N ticket-time events keyed by 50 tenants with `meter collect file`;
#   3. raw consume of the topic (librdkafka through confluent-kafka, no processing);
#   4. `meter aggregate` (release build) end to end;
#   5. quixstreams 3.28, one tumbling 1-day sum per tenant, on the same topic;
# then prints each figure, the issue's ratios and the machine's load.
# Never touches the stack's broker (9092) or its servers.
#
#   bench/run.sh [N]       (default 200000)
#   BENCH_KAFKA_PORT=19092 BENCH_TENANTS=50 BENCH_SKIP_BUILD=1
set -euo pipefail

N=${1:-200000}
PORT=${BENCH_KAFKA_PORT:-19092}
TENANTS=${BENCH_TENANTS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
METER=$TARGET/release/meter
VENV=$ROOT/.stack/bench-venv
TANSU=${METER_TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
WORK=$(mktemp -d /tmp/meter-bench.XXXXXX)
BROKERS=127.0.0.1:$PORT
TOPIC=meter.events.ticket-time
TANSU_PID=

log() { printf '%s\n' "$*" >&2; }
cleanup() {
  [[ -n $TANSU_PID ]] && kill "$TANSU_PID" 2>/dev/null && wait "$TANSU_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
  log "port $PORT is in use; set BENCH_KAFKA_PORT"; exit 1
fi
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  log "building meter (release)..."
  (cd "$ROOT" && cargo build --release --locked --bin meter >&2)
fi
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV (bench/requirements.txt)..."
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/bench/requirements.txt" >&2
fi
PY=$VENV/bin/python

log "starting Tansu (memory storage) on $BROKERS..."
mkdir -p "$WORK/tansu"
(cd "$WORK/tansu" && RUST_LOG=warn exec "$TANSU" broker --listener-url "tcp://$BROKERS" \
  --advertised-listener-url "tcp://$BROKERS" --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1) &
TANSU_PID=$!
for _ in $(seq 1 100); do
  timeout 5 "$TANSU" topic list --broker "tcp://$BROKERS" >/dev/null 2>&1 && break
  sleep 0.2
done
for t in meter.events.vm-usage meter.events.check-result $TOPIC meter.dead-letters meter.late-events \
  meter.aggregates meter.aggregator-state; do
  # quixstreams reads retention.* of its input topic (Tansu only returns configs given at creation).
  timeout 30 "$TANSU" topic create --broker "tcp://$BROKERS" --partitions 3 \
    --config retention.ms=604800000 --config retention.bytes=-1 "$t" >/dev/null
done

# Everything the bench's meter processes need, apart from the stack's.
export METER_KAFKA__BROKERS=$BROKERS
export METER_AGGREGATOR__STATE_DIR=$WORK/state
export METER_AGGREGATOR__METRICS_LISTEN=127.0.0.1:$((PORT + 1))
export METER_AGGREGATOR__GROUP_ID=bench-aggregator
export METER_COLLECTOR__METRICS_LISTEN=
export RUST_LOG=warn
cd "$ROOT"

log "generating $N events for $TENANTS tenants..."
"$PY" bench/peers.py events "$N" "$TENANTS" >"$WORK/tickets.jsonl"
log "publishing with meter collect file..."
start=$(date +%s.%N)
"$METER" collect file --kind ticket-time "$WORK/tickets.jsonl" >"$WORK/collect.log" 2>&1
collect_rate=$(echo "$N / ($(date +%s.%N) - $start)" | bc -l)

log "raw consume (librdkafka)..."
raw=$("$PY" bench/peers.py raw "$BROKERS" "$TOPIC" "$N")

log "meter aggregate..."
"$METER" aggregate --until-idle 3 >"$WORK/aggregate.log" 2>&1 &
AGG_PID=$!
agg=$("$PY" bench/peers.py watch "http://127.0.0.1:$((PORT + 1))/metrics" "$N" "$AGG_PID")
wait "$AGG_PID" || { log "meter aggregate failed:"; tail -20 "$WORK/aggregate.log" >&2; exit 1; }

log "quixstreams..."
quix=$("$PY" bench/peers.py quix "$BROKERS" "$TOPIC" "$N" "$WORK/quix-state" 2>"$WORK/quix.log") ||
  { log "quixstreams failed:"; tail -20 "$WORK/quix.log" >&2; quix='{"events": 0, "events_per_s": 0}'; }

"$PY" - "$N" "$collect_rate" "$raw" "$agg" "$quix" <<'PY'
import json, os, subprocess, sys
from datetime import datetime, timezone
n, collect = int(sys.argv[1]), float(sys.argv[2])
raw, agg, quix = (json.loads(a) for a in sys.argv[3:6])
rate = lambda r: f"{r['events_per_s']:>12,.0f}"
print(f"side-by-side benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {n:,} ticket-time events, 50 tenants, "
      f"Tansu memory storage, {os.cpu_count()} cores")
print(f"load before the summary: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
print(f"| | events/s |")
print(f"|---|---|")
print(f"| raw consume (librdkafka via confluent-kafka, no processing) | {rate(raw)} |")
print(f"| `meter aggregate` (release), end to end | {rate(agg)} |")
print(f"| quixstreams 3.28.1, tumbling 1-day sum per tenant (fastavro) | {rate(quix)} |")
print(f"| `meter collect file` (release, process start included) | {collect:>12,.0f} |")
ratio = lambda a, b: f"{a['events_per_s'] / b['events_per_s']:.2f}" if b["events_per_s"] else "n/a"
print(f"aggregate / raw = {ratio(agg, raw)} (target >= 0.8); aggregate / quixstreams = {ratio(agg, quix)} (target >= 5)")
print(f"aggregator RSS after {agg['events']:,.0f} records: {agg['rss_mib']:.0f} MiB")
PY
