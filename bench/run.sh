#!/usr/bin/env bash
# Side-by-side benchmark (issue 11), one run on one machine, on its own Tansu
# broker (memory storage, BENCH_KAFKA_PORT) and a private ClickHouse database
# (meter_bench_<pid>, created with `meter migrate`, dropped at the end):
#   A. throughput: publishes N ticket-time events keyed by 50 tenants with
#      `meter collect file`; on that topic, a raw consume (librdkafka through
#      confluent-kafka, no processing), `meter aggregate --until-idle` end to
#      end, and quixstreams 3.28 (one tumbling 1-day sum per tenant);
#   B. sink: `meter sink clickhouse --until-idle` on phase A's aggregates and
#      events: rows/s (detail + aggregate rows) from its first INSERT to its last;
#   C. latency: aggregator and sink running, `meter collect file --rate`
#      publishes a steady background load while probe events of one tenant are
#      published at known instants; event to visible in `aggregates FINAL`;
#   D. memory: a fresh broker and aggregator, BENCH_MEMORY_EVENTS events
#      published in chunks; the aggregator's RSS as it passes each threshold;
# then prints each figure with its target, the ratios, the date and the load.
# A phase that fails prints n/a and its reason; the others still run.
# Never touches the stack's broker (9092) or its servers, only its ClickHouse,
# in the private database.
#
#   bench/run.sh [N]                         (default 200000)
#   BENCH_KAFKA_PORT=19092                   broker; PORT+1 aggregator /metrics, PORT+2 sink /metrics
#   BENCH_TENANTS=50 BENCH_SKIP_BUILD=1 BENCH_VENV=.stack/bench-venv
#   BENCH_PHASES="A B C D"                   B and C read what A published
#   BENCH_LATENCY_RATE=10000 BENCH_LATENCY_SECONDS=60 BENCH_PROBES_PER_S=10
#   BENCH_MEMORY_EVENTS="1000000"            thresholds, whole millions; "1000000 10000000" for
#                                            the 10 M figure (aggregator about 2.4 GiB at its peak,
#                                            Tansu 3.4 GiB; about 5 minutes); "" skips D
#   BENCH_MEMORY_TIMEOUT=1800                seconds phase D may take; then it reports what it reached
#   BENCH_KEEP=1                             keep the work folder (logs); kept anyway after a failure
#   METER_* variables reach every meter process (e.g. METER_SINK__BATCH_ROWS=50000).
set -euo pipefail

N=${1:-200000}
PORT=${BENCH_KAFKA_PORT:-19092}
TENANTS=${BENCH_TENANTS:-50}
PHASES=${BENCH_PHASES:-A B C D}
LAT_RATE=${BENCH_LATENCY_RATE:-10000}
LAT_SECONDS=${BENCH_LATENCY_SECONDS:-60}
PROBES_PER_S=${BENCH_PROBES_PER_S:-10}
MEMORY_EVENTS=${BENCH_MEMORY_EVENTS-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
METER=$TARGET/release/meter
VENV=${BENCH_VENV:-$ROOT/.stack/bench-venv}
TANSU=${METER_TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
CH_URL=${METER_CLICKHOUSE__URL:-http://127.0.0.1:8123}
DB=meter_bench_$$
WORK=$(mktemp -d /tmp/meter-bench.XXXXXX)
RES=$WORK/results
LOGS=$WORK/logs
PIDS=$WORK/pids
BROKERS=127.0.0.1:$PORT
AGG_METRICS=http://127.0.0.1:$((PORT + 1))/metrics
TOPIC=meter.events.ticket-time
TANSU_PID=
DB_CREATED=
CH_ERROR=
KEEP=${BENCH_KEEP:-}
DURATIONS=
SPAWNED_HERE=()
mkdir -p "$RES" "$LOGS"
: >"$PIDS"

log() { printf '%s\n' "$*" >&2; }

# Processes are recorded as "pid start-time": a pid is signalled only while it
# is still the process this script started.
proc_stat() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f"$2" || true; } # PID FIELD (3 = state)
started_at() { proc_stat "$1" 20; }
spawn() { # LOG CMD... : starts CMD in the background; its pid in $SPAWNED
  local out=$1
  shift
  "$@" >"$out" 2>&1 &
  SPAWNED=$!
  SPAWNED_HERE+=("$SPAWNED")
  echo "$SPAWNED $(started_at "$SPAWNED")" >>"$PIDS"
}
ours() { [[ -n $1 && $(started_at "$1") == "$(awk -v p="$1" '$1 == p {print $2}' "$PIDS" | tail -1)" ]]; }
stop_pid() { # PID: Ctrl-C, then SIGKILL after 10 s
  local pid=$1
  ours "$pid" || return 0
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    [[ $(proc_stat "$pid" 1) == [ZX]* || ! -e /proc/$pid ]] && break
    sleep 0.2
  done
  ours "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
stop_spawned() { local pid; for pid in "${SPAWNED_HERE[@]}"; do stop_pid "$pid"; done; SPAWNED_HERE=(); }

ch() { curl -sS --fail-with-body --max-time 30 --data-binary "$1" "$CH_URL/" ${METER_CLICKHOUSE__USER:+-u "$METER_CLICKHOUSE__USER:${METER_CLICKHOUSE__PASSWORD:-}"}; }
cleanup() {
  local pid _
  while read -r pid _; do stop_pid "$pid"; done <"$PIDS"
  [[ -n $DB_CREATED ]] && ch "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 && log "dropped ClickHouse database $DB"
  rm -f "$WORK"/*.jsonl "$WORK"/memory/*.jsonl
  if [[ -n $KEEP ]]; then log "work folder kept: $WORK (logs/)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

result() { printf '%s\n' "$2" >"$RES/$1.json"; } # PHASE JSON
fail() { # PHASE REASON: the phase's n/a, then out of the phase
  result "$1" "$(python3 -c 'import json, sys; print(json.dumps({"error": sys.argv[1]}))' "$2")"
  exit 1
}
last_lines() { tail -n "${2:-3}" "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-300; }
run_phase() { # NAME FUNCTION: runs a phase in a subshell (set -e active), records its duration
  local name=$1 fn=$2 rc start
  start=$(date +%s.%N)
  log "== phase $name ($fn)"
  set +e
  (
    trap stop_spawned EXIT
    set -e
    "$fn"
  )
  rc=$?
  set -e
  if [[ $rc -ne 0 ]]; then
    KEEP=1
    [[ -s $RES/$name.json ]] || result "$name" "{\"error\": \"failed (exit $rc), logs in $LOGS\"}"
  fi
  DURATIONS+="$name $(echo "$(date +%s.%N) - $start" | bc) "
}

start_tansu() {
  log "starting Tansu (memory storage) on $BROKERS..."
  rm -rf "$WORK/tansu" && mkdir -p "$WORK/tansu"
  (cd "$WORK/tansu" && RUST_LOG=warn exec "$TANSU" broker --listener-url "tcp://$BROKERS" \
    --advertised-listener-url "tcp://$BROKERS" --storage-engine memory://tansu/ >"$LOGS/tansu.log" 2>&1) &
  TANSU_PID=$!
  echo "$TANSU_PID $(started_at "$TANSU_PID")" >>"$PIDS"
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
}

wait_metrics() { # URL PID: until the service serves /metrics (or exits)
  for _ in $(seq 1 150); do
    curl -sf --max-time 1 "$1" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

phase_throughput() {
  log "generating $N events for $TENANTS tenants..."
  "$PY" bench/peers.py events "$N" "$TENANTS" >"$WORK/tickets.jsonl"
  log "publishing with meter collect file..."
  local start collect raw agg quix
  start=$(date +%s.%N)
  "$METER" collect file --kind ticket-time "$WORK/tickets.jsonl" >"$LOGS/collect.log" 2>&1 ||
    fail A "meter collect file failed: $(last_lines "$LOGS/collect.log")"
  collect=$(echo "$N / ($(date +%s.%N) - $start)" | bc -l)

  log "raw consume (librdkafka)..."
  raw=$("$PY" bench/peers.py raw "$BROKERS" "$TOPIC" "$N" 2>"$LOGS/raw.log") ||
    raw="{\"error\": \"raw consume failed: $(last_lines "$LOGS/raw.log" 1 | tr -d '"\\')\"}"

  log "meter aggregate..."
  spawn "$LOGS/aggregate.log" "$METER" aggregate --until-idle 3
  agg=$("$PY" bench/peers.py watch "$AGG_METRICS" "$N" "$SPAWNED")
  wait "$SPAWNED" || agg="{\"error\": \"meter aggregate failed: $(last_lines "$LOGS/aggregate.log" 2 | tr -d '"\\')\"}"

  log "quixstreams..."
  quix=$("$PY" bench/peers.py quix "$BROKERS" "$TOPIC" "$N" "$WORK/quix-state" 2>"$LOGS/quix.log") ||
    quix="{\"error\": \"quixstreams failed: $(last_lines "$LOGS/quix.log" 1 | tr -d '"\\')\"}"
  rm -f "$WORK/tickets.jsonl"
  result A "{\"collect_per_s\": $collect, \"raw\": $raw, \"aggregate\": $agg, \"quix\": $quix}"
}

sink_env() {
  export METER_CLICKHOUSE__DATABASE=$DB
  export METER_SINK__GROUP_ID=bench-sink
  export METER_SINK__METRICS_LISTEN=127.0.0.1:$((PORT + 2))
}

phase_sink() {
  [[ -z $CH_ERROR ]] || fail B "$CH_ERROR"
  [[ -s $RES/A.json ]] || fail B "needs phase A's events and aggregates"
  sink_env
  log "meter sink clickhouse --until-idle 3 into $DB..."
  # Its JSON log has one `batch inserted` line per INSERT (table, rows, duration).
  METER_LOG__FORMAT=json RUST_LOG=warn,sink_clickhouse=info \
    timeout 1800 "$METER" sink clickhouse --until-idle 3 >"$LOGS/sink.log" 2>&1 ||
    fail B "meter sink clickhouse failed: $(grep -v '"batch inserted"' "$LOGS/sink.log" | tail -2 | tr '\n' ' ' | tr -d '"\\' | cut -c1-300)"
  local out
  out=$("$PY" bench/peers.py sink "$LOGS/sink.log" "$CH_URL" "$DB" "$N" 2>"$LOGS/sink-figures.log") ||
    fail B "reading the sink's figures failed: $(last_lines "$LOGS/sink-figures.log" 1)"
  result B "$out"
}

phase_latency() {
  [[ -z $CH_ERROR ]] || fail C "$CH_ERROR"
  sink_env
  local events=$((LAT_RATE * ${LAT_SECONDS%.*}))
  log "generating $events background events..."
  "$PY" bench/peers.py events "$events" "$TENANTS" bench-lat >"$WORK/latency.jsonl"
  log "aggregator and sink running; $LAT_RATE events/s for ${LAT_SECONDS} s with $PROBES_PER_S probes/s..."
  spawn "$LOGS/latency-aggregate.log" "$METER" aggregate
  local agg=$SPAWNED
  METER_LOG__FORMAT=json RUST_LOG=warn,sink_clickhouse=info spawn "$LOGS/latency-sink.log" "$METER" sink clickhouse
  local sink=$SPAWNED
  wait_metrics "$AGG_METRICS" "$agg" || fail C "meter aggregate did not start: $(last_lines "$LOGS/latency-aggregate.log")"
  local out
  out=$(BENCH_LATENCY_SERIES=$LOGS/latency-probes.tsv "$PY" bench/peers.py latency "$BROKERS" "$TOPIC" "$CH_URL" "$DB" "$LAT_SECONDS" "$PROBES_PER_S" -- \
    "$METER" collect file --kind ticket-time --rate "$LAT_RATE" "$WORK/latency.jsonl" 2>"$LOGS/latency.log") ||
    fail C "the probe failed: $(last_lines "$LOGS/latency.log" 1)"
  kill -0 "$agg" 2>/dev/null || fail C "meter aggregate exited: $(last_lines "$LOGS/latency-aggregate.log")"
  kill -0 "$sink" 2>/dev/null || fail C "meter sink clickhouse exited: $(last_lines "$LOGS/latency-sink.log")"
  rm -f "$WORK/latency.jsonl"
  result C "$out"
}

phase_memory() {
  [[ -n $MEMORY_EVENTS ]] || fail D "skipped (BENCH_MEMORY_EVENTS is empty)"
  local t
  for t in $MEMORY_EVENTS; do
    ((t > 0 && t % 1000000 == 0)) || fail D "BENCH_MEMORY_EVENTS: $t is not a whole number of millions"
  done
  export METER_AGGREGATOR__STATE_DIR=$WORK/state-memory
  export METER_AGGREGATOR__GROUP_ID=bench-aggregator-memory
  log "fresh aggregator; publishing $(tr ' ' '\n' <<<"$MEMORY_EVENTS" | sort -n | tail -1) events in chunks of 1,000,000..."
  spawn "$LOGS/memory-aggregate.log" "$METER" aggregate
  local agg=$SPAWNED
  wait_metrics "$AGG_METRICS" "$agg" || fail D "meter aggregate did not start: $(last_lines "$LOGS/memory-aggregate.log")"
  mkdir -p "$WORK/memory"
  local out
  out=$("$PY" bench/peers.py memory "$AGG_METRICS" "$agg" "$TANSU_PID" "$WORK/memory" "$TENANTS" "$MEMORY_EVENTS" -- \
    "$METER" collect file --kind ticket-time 2>"$LOGS/memory.log") ||
    fail D "the memory watcher failed: $(last_lines "$LOGS/memory.log" 1)"
  result D "$out"
}

write_meta() {
  local flush
  flush=$("$METER" config check 2>/dev/null | python3 -c 'import sys, tomllib; c = tomllib.loads(sys.stdin.read())
print(c["aggregator"]["flush_interval_ms"], c["sink"]["flush_interval_ms"])' || echo "? ?")
  python3 - "$RES/meta.json" <<PY
import json, sys
durations = "$DURATIONS".split()
json.dump({"date": "$RUN_DATE", "n": $N, "tenants": $TENANTS, "load_start": "$LOAD_START",
           "clickhouse": "${CH_VERSION:-n/a}", "memory_events": "$MEMORY_EVENTS",
           "latency_rate": $LAT_RATE, "latency_events": $((LAT_RATE * ${LAT_SECONDS%.*})),
           "aggregator_flush_ms": "${flush% *}", "sink_flush_ms": "${flush#* }",
           "durations": {durations[i]: float(durations[i + 1]) for i in range(0, len(durations), 2)}},
          open(sys.argv[1], "w"))
PY
}

for p in $PORT $((PORT + 1)) $((PORT + 2)); do
  if ss -ltn "sport = :$p" | grep -q LISTEN; then
    log "port $p is in use; set BENCH_KAFKA_PORT (the bench uses it and the next two)"
    exit 1
  fi
done
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
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(uptime)

# Everything the bench's meter processes need, apart from the stack's.
export METER_KAFKA__BROKERS=$BROKERS
export METER_CLICKHOUSE__URL=$CH_URL
export METER_AGGREGATOR__STATE_DIR=$WORK/state
export METER_AGGREGATOR__METRICS_LISTEN=127.0.0.1:$((PORT + 1))
export METER_AGGREGATOR__GROUP_ID=bench-aggregator
export METER_COLLECTOR__METRICS_LISTEN=
export RUST_LOG=warn
cd "$ROOT"

if [[ $PHASES == *B* || $PHASES == *C* ]]; then
  if CH_VERSION=$("$PY" bench/peers.py clickhouse-ping "$CH_URL"); then
    if METER_CLICKHOUSE__DATABASE=$DB "$METER" migrate >"$LOGS/migrate.log" 2>&1; then
      DB_CREATED=1
      log "ClickHouse $CH_VERSION at $CH_URL: private database $DB migrated"
    else
      CH_ERROR="meter migrate into $DB failed: $(last_lines "$LOGS/migrate.log" 2)"
      DB_CREATED=1
    fi
  else
    CH_ERROR=$CH_VERSION
    CH_VERSION=
    log "error: $CH_ERROR (phases B and C print n/a)"
  fi
fi

for p in A B C D; do
  [[ $PHASES == *$p* ]] || result "$p" "{\"error\": \"not run (BENCH_PHASES=$PHASES)\"}"
done
start_tansu # phase D restarts it
if [[ $PHASES == *A* ]]; then run_phase A phase_throughput; fi
if [[ $PHASES == *B* ]]; then run_phase B phase_sink; fi
if [[ $PHASES == *C* ]]; then run_phase C phase_latency; fi
if [[ $PHASES == *D* ]]; then
  if [[ $PHASES == *[ABC]* ]]; then
    # A fresh broker: phase D's figures hold only its own events.
    stop_pid "$TANSU_PID"
    start_tansu
  fi
  run_phase D phase_memory
fi
write_meta
"$PY" bench/peers.py summary "$RES"
