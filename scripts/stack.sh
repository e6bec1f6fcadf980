#!/usr/bin/env bash
# scripts/stack.sh — local stack for the metering pipeline, as plain processes
# on loopback (no Docker, no systemd).
#
# Usage: scripts/stack.sh install|up|down|status|restart-broker|stop NAME|start NAME|reset
#
#   install         install what is missing (Debian packages, Tansu via cargo);
#                   prints one line per component: present | installed
#   up              install, start every server that is not running, wait until
#                   each answers, create the Kafka topics (idempotent)
#   down            stop every server (SIGTERM, then SIGKILL after a timeout)
#   status          one line per server; exit 0 if all run, 3 otherwise
#   restart-broker  stop and start Tansu only (data survives: sqlite storage)
#   stop NAME       stop one server (tansu, clickhouse, prometheus)
#   start NAME      start one server and wait until it answers
#   reset           down, then delete the runtime dir
#
# What runs where (all bound to 127.0.0.1 only):
#   tansu       Kafka API   127.0.0.1:${METER_KAFKA_PORT:-9092} (advertised the same)
#               Tansu 0.6.0 opens no other port (no metrics/prometheus listener;
#               its telemetry is OTLP push only, and we configure none).
#   clickhouse  HTTP        127.0.0.1:${METER_CLICKHOUSE_HTTP_PORT:-8123}
#               native TCP  127.0.0.1:${METER_CLICKHOUSE_TCP_PORT:-9000}
#               (no interserver port, no TLS ports). User `default`, no password.
#   prometheus  HTTP        127.0.0.1:${METER_PROMETHEUS_PORT:-9090}
#               scrapes 127.0.0.1:9601..9604 (see deploy/local/prometheus/),
#               rules from deploy/prometheus/rules/*.yml
#
# Environment (all optional):
#   METER_STACK_DIR             runtime dir (default: <repo>/.stack)
#   METER_KAFKA_PORT            9092
#   METER_TANSU_STORAGE         sqlite://tansu.db — resolved by Tansu relative to
#                               its working dir, which is $METER_STACK_DIR/tansu,
#                               so the file is $METER_STACK_DIR/tansu/tansu.db.
#                               (Tansu's sqlite URLs are always relative to the
#                               cwd; memory://tansu/ works but forgets on restart.)
#   METER_TANSU_BIN             path to the tansu binary (default: PATH, then
#                               ~/.cargo/bin/tansu)
#   METER_TANSU_RUST_LOG        RUST_LOG for the broker (default: warn)
#   METER_TOPIC_PARTITIONS      3
#   METER_CLICKHOUSE_HTTP_PORT  8123
#   METER_CLICKHOUSE_TCP_PORT   9000
#   METER_PROMETHEUS_PORT       9090
#   METER_START_TIMEOUT         seconds to wait for a server to answer (90)
#   METER_STOP_TIMEOUT          seconds between SIGTERM and SIGKILL (20)
#
# Layout under $METER_STACK_DIR:
#   logs/<name>.log   stdout+stderr of each server (ClickHouse also writes its
#                     own logs under clickhouse/logs/)
#   run/<name>.pid    pid of each server
#   tansu/            broker cwd and sqlite database
#   clickhouse/       rendered config.xml + users.xml, data/, tmp/, user_files/,
#                     format_schemas/, logs/
#   prometheus/       rendered prometheus.yml, data/ (TSDB)
#
# Notes:
#   * Tansu loads a .env file from its cwd or any parent dir (dotenv), which does
#     not override variables already set; every broker setting is passed as a
#     flag here, and RUST_LOG is always set, so a repo .env cannot change them.
#   * Tansu binds the listener URL's host literally only for IP addresses: a
#     host name such as localhost makes it bind [::] (all interfaces), so the
#     listener URL must say 127.0.0.1.
#   * Tansu does not auto-create topics; `up` creates them with
#     `tansu topic create` (which exits 1 with "Topic with this name already
#     exists." for an existing one, and the broker logs an ERROR for it, so
#     existing topics are listed first and skipped).
#   * ClickHouse 18.16 (Debian) runs fine as root from a root-owned data dir.
#     Its config names an empty $METER_STACK_DIR/clickhouse/metrika.xml as
#     include_from so /etc/metrika.xml is never read (the file must exist).

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

STACK_DIR=${METER_STACK_DIR:-$ROOT/.stack}
case "$STACK_DIR" in /*) ;; *) STACK_DIR=$PWD/$STACK_DIR ;; esac
STACK_DIR=${STACK_DIR%/}

KAFKA_PORT=${METER_KAFKA_PORT:-9092}
CH_HTTP_PORT=${METER_CLICKHOUSE_HTTP_PORT:-8123}
CH_TCP_PORT=${METER_CLICKHOUSE_TCP_PORT:-9000}
PROM_PORT=${METER_PROMETHEUS_PORT:-9090}
PARTITIONS=${METER_TOPIC_PARTITIONS:-3}
TANSU_STORAGE=${METER_TANSU_STORAGE:-sqlite://tansu.db}
START_TIMEOUT=${METER_START_TIMEOUT:-90}
STOP_TIMEOUT=${METER_STOP_TIMEOUT:-20}

TANSU_VERSION=0.6.0
TANSU_FEATURES=libsql,dynostore
# python3-venv: scripts/test.sh creates the Python venv of the tests (.stack/venv).
APT_PACKAGES=(clickhouse-server clickhouse-client prometheus icinga2 monitoring-plugins-basic curl python3 python3-venv)

TOPICS=(
  meter.events.vm-usage
  meter.events.check-result
  meter.events.ticket-time
  meter.dead-letters
  meter.late-events
  meter.aggregates
  meter.aggregator-state
)

SERVERS=(tansu clickhouse prometheus)

LOG_DIR=$STACK_DIR/logs
RUN_DIR=$STACK_DIR/run
TANSU_DIR=$STACK_DIR/tansu
CH_DIR=$STACK_DIR/clickhouse
PROM_DIR=$STACK_DIR/prometheus

BROKER_URL=tcp://127.0.0.1:$KAFKA_PORT

# Plain (uncoloured) output from the tansu CLI and broker in logs.
export NO_COLOR=1

log() { printf '%s\n' "$*"; }
die() { printf 'stack.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers ---

tansu_bin() {
  if [[ -n ${METER_TANSU_BIN:-} ]]; then
    [[ -x $METER_TANSU_BIN ]] && { printf '%s\n' "$METER_TANSU_BIN"; return 0; }
    return 1
  fi
  local p
  if p=$(command -v tansu 2>/dev/null); then printf '%s\n' "$p"; return 0; fi
  if [[ -x $HOME/.cargo/bin/tansu ]]; then printf '%s\n' "$HOME/.cargo/bin/tansu"; return 0; fi
  return 1
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

# Escape a string for use as a sed replacement with '|' as delimiter.
sed_escape() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_of() {
  case $1 in
    tansu) echo "$KAFKA_PORT" ;;
    clickhouse) echo "$CH_HTTP_PORT" ;;
    prometheus) echo "$PROM_PORT" ;;
  esac
}

address_of() {
  case $1 in
    tansu) echo "kafka 127.0.0.1:$KAFKA_PORT (storage $TANSU_STORAGE in $TANSU_DIR)" ;;
    clickhouse) echo "http://127.0.0.1:$CH_HTTP_PORT native 127.0.0.1:$CH_TCP_PORT" ;;
    prometheus) echo "http://127.0.0.1:$PROM_PORT" ;;
  esac
}

# Word that must appear in /proc/<pid>/cmdline, guarding against pid reuse.
cmd_word() {
  case $1 in
    tansu) echo tansu ;;
    clickhouse) echo clickhouse ;;
    prometheus) echo prometheus ;;
  esac
}

pidfile() { echo "$RUN_DIR/$1.pid"; }
logfile() { echo "$LOG_DIR/$1.log"; }

# Prints the pid if the pid file names a live process of that server.
live_pid() {
  local f pid
  f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(cmd_word "$1")" || return 1
  printf '%s\n' "$pid"
}

# Does the server answer on its port (protocol-level check)?
answers() {
  case $1 in
    tansu)
      port_open "$KAFKA_PORT" || return 1
      local bin
      bin=$(tansu_bin) || return 1
      timeout 10 "$bin" topic list --broker "$BROKER_URL" >/dev/null 2>&1
      ;;
    clickhouse)
      [[ $(curl -s -m 3 "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null) == "Ok." ]]
      ;;
    prometheus)
      curl -sf -m 3 -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready" 2>/dev/null
      ;;
  esac
}

# ---------------------------------------------------------------- install ---

install_apt() {
  local pkg missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    # Keep package maintainer scripts from starting system copies of these
    # servers on our ports (harmless where a policy-rc.d already exists).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      created_policy=1
    fi
    local rc=0
    {
      DEBIAN_FRONTEND=noninteractive apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
    } >&2 || rc=$?
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get failed (exit $rc) installing: ${missing[*]}"
  fi
  for pkg in "${APT_PACKAGES[@]}"; do
    if [[ " ${missing[*]} " == *" $pkg "* ]]; then
      pkg_installed "$pkg" || die "$pkg is still not installed after apt-get"
      log "$pkg: installed"
    else
      log "$pkg: present"
    fi
  done
}

install_tansu() {
  if tansu_bin >/dev/null; then
    log "tansu: present ($(tansu_bin))"
    return 0
  fi
  [[ -n ${METER_TANSU_BIN:-} ]] && die "METER_TANSU_BIN=$METER_TANSU_BIN is not an executable"
  local cargo
  cargo=$(command -v cargo 2>/dev/null || true)
  [[ -z $cargo && -x $HOME/.cargo/bin/cargo ]] && cargo=$HOME/.cargo/bin/cargo
  [[ -n $cargo ]] || die "tansu is missing and cargo is not installed (install Rust first)"
  # Do not start a second build next to one already running.
  local running
  running=$(pgrep -f "cargo install tansu" || true)
  if [[ -n $running ]]; then
    log "tansu: a 'cargo install tansu' is already running (pid ${running//$'\n'/ }); waiting for it" >&2
    while pgrep -f "cargo install tansu" >/dev/null; do sleep 10; done
    if tansu_bin >/dev/null; then
      log "tansu: installed ($(tansu_bin))"
      return 0
    fi
  fi
  mkdir -p "$LOG_DIR"
  log "tansu: building with cargo (about 15 minutes on 2 cores); log: $LOG_DIR/tansu-install.log" >&2
  if ! "$cargo" install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
    >"$LOG_DIR/tansu-install.log" 2>&1; then
    tail -n 20 "$LOG_DIR/tansu-install.log" >&2 || true
    die "cargo install tansu failed; read $LOG_DIR/tansu-install.log"
  fi
  tansu_bin >/dev/null || die "cargo install tansu succeeded but no tansu binary found"
  log "tansu: installed ($(tansu_bin))"
}

cmd_install() {
  install_apt
  install_tansu
}

# ----------------------------------------------------------------- render ---

render_clickhouse() {
  local tpl=$ROOT/deploy/local/clickhouse
  [[ -f $tpl/config.xml && -f $tpl/users.xml ]] || die "missing templates in $tpl"
  mkdir -p "$CH_DIR"/{data,tmp,user_files,format_schemas,logs}
  sed -e "s|@CH_DIR@|$(sed_escape "$CH_DIR")|g" \
    -e "s|@HTTP_PORT@|$CH_HTTP_PORT|g" \
    -e "s|@TCP_PORT@|$CH_TCP_PORT|g" \
    "$tpl/config.xml" >"$CH_DIR/config.xml.tmp"
  mv "$CH_DIR/config.xml.tmp" "$CH_DIR/config.xml"
  cp "$tpl/users.xml" "$CH_DIR/users.xml.tmp"
  mv "$CH_DIR/users.xml.tmp" "$CH_DIR/users.xml"
  # config.xml names this file as include_from so that a system-wide
  # /etc/metrika.xml is never picked up; ClickHouse requires it to exist.
  [[ -f $CH_DIR/metrika.xml ]] || printf '<?xml version="1.0"?>\n<yandex></yandex>\n' >"$CH_DIR/metrika.xml"
}

render_prometheus() {
  local tpl=$ROOT/deploy/local/prometheus/prometheus.yml
  [[ -f $tpl ]] || die "missing template $tpl"
  mkdir -p "$PROM_DIR/data"
  sed -e "s|@ROOT@|$(sed_escape "$ROOT")|g" "$tpl" >"$PROM_DIR/prometheus.yml.tmp"
  mv "$PROM_DIR/prometheus.yml.tmp" "$PROM_DIR/prometheus.yml"
  local out
  if ! out=$(promtool check config "$PROM_DIR/prometheus.yml" 2>&1); then
    printf '%s\n' "$out" >&2
    die "invalid Prometheus config or rules (see promtool output above)"
  fi
}

# ------------------------------------------------------------ start/stop ---

# launch NAME CWD CMD...: start detached (own session), record the pid.
launch() {
  local name=$1 cwd=$2
  shift 2
  local lf
  lf=$(logfile "$name")
  printf '\n==== %s starting %s: %s\n' "$(date -Is)" "$name" "$*" >>"$lf"
  # In a non-interactive shell the background subshell is not a process-group
  # leader, so setsid(1) execs in place and $! is the server's own pid.
  (cd "$cwd" && exec setsid "$@" >>"$lf" 2>&1 </dev/null) &
  echo $! >"$(pidfile "$name")"
}

start_one() {
  local name=$1 pid port
  port=$(port_of "$name")
  if pid=$(live_pid "$name"); then
    return 0 # running (maybe still starting); wait_ready checks it answers
  fi
  rm -f "$(pidfile "$name")"
  if port_open "$port"; then
    ss -ltnp "sport = :$port" >&2 2>/dev/null || true
    die "$name: port 127.0.0.1:$port is already in use by a process that this stack dir did not start (see above)"
  fi
  case $name in
    tansu)
      local bin
      bin=$(tansu_bin) || die "tansu binary not found (run: $0 install)"
      mkdir -p "$TANSU_DIR"
      RUST_LOG=${METER_TANSU_RUST_LOG:-warn} launch tansu "$TANSU_DIR" "$bin" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "$TANSU_STORAGE"
      ;;
    clickhouse)
      render_clickhouse
      launch clickhouse "$CH_DIR" clickhouse-server --config-file="$CH_DIR/config.xml"
      ;;
    prometheus)
      render_prometheus
      launch prometheus "$PROM_DIR" prometheus \
        --config.file="$PROM_DIR/prometheus.yml" \
        --web.listen-address="127.0.0.1:$PROM_PORT" \
        --storage.tsdb.path="$PROM_DIR/data" \
        --web.enable-lifecycle
      ;;
  esac
  STARTED+=("$name")
}

wait_ready() {
  local name=$1 deadline pid lf
  lf=$(logfile "$name")
  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! pid=$(live_pid "$name"); then
      tail -n 20 "$lf" >&2 2>/dev/null || true
      if [[ $name == clickhouse ]]; then
        tail -n 20 "$CH_DIR/logs/clickhouse-server.err.log" >&2 2>/dev/null || true
      fi
      die "$name exited during startup; read $lf$([[ $name == clickhouse ]] && echo " and $CH_DIR/logs/clickhouse-server.err.log")"
    fi
    answers "$name" && return 0
    if ((SECONDS >= deadline)); then
      tail -n 20 "$lf" >&2 2>/dev/null || true
      die "$name (pid $pid) did not answer on 127.0.0.1:$(port_of "$name") within ${START_TIMEOUT}s; read $lf$([[ $name == clickhouse ]] && echo " and $CH_DIR/logs/")"
    fi
    sleep 0.5
  done
}

stop_one() {
  local name=$1 pid deadline
  if ! pid=$(live_pid "$name"); then
    rm -f "$(pidfile "$name")"
    log "$name: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$name: still running ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$(pidfile "$name")"
  log "$name: stopped (pid $pid)"
}

create_topics() {
  local bin topic out rc existing
  bin=$(tansu_bin) || die "tansu binary not found"
  # Only ask to create the missing ones: Tansu logs an ERROR line for every
  # CreateTopics of an existing topic. An "already exists" answer (a race with
  # another creator) still counts as success.
  existing=$(timeout 30 "$bin" topic list --broker "$BROKER_URL" 2>/dev/null |
    grep -o '"name":"[^"]*"' | sed -e 's/^"name":"//' -e 's/"$//' || true)
  for topic in "${TOPICS[@]}"; do
    if grep -qxF -- "$topic" <<<"$existing"; then
      log "  topic $topic: exists"
      continue
    fi
    rc=0
    out=$(timeout 30 "$bin" topic create --broker "$BROKER_URL" --partitions "$PARTITIONS" "$topic" 2>&1) || rc=$?
    if ((rc == 0)); then
      log "  topic $topic: created ($PARTITIONS partitions)"
    elif grep -qi 'already.*exist' <<<"$out"; then
      log "  topic $topic: exists"
    else
      printf '%s\n' "$out" >&2
      die "could not create topic $topic (exit $rc); broker log: $(logfile tansu)"
    fi
  done
}

# --------------------------------------------------------------- commands ---

ensure_dirs() { mkdir -p "$LOG_DIR" "$RUN_DIR" "$TANSU_DIR" "$CH_DIR" "$PROM_DIR"; }

STARTED=()

cmd_up() {
  cmd_install
  ensure_dirs
  local name
  for name in "${SERVERS[@]}"; do start_one "$name"; done
  for name in "${SERVERS[@]}"; do wait_ready "$name"; done
  log "topics on $BROKER_URL:"
  create_topics
  log ""
  log "stack is up (runtime dir $STACK_DIR):"
  for name in "${SERVERS[@]}"; do
    local how=running
    [[ " ${STARTED[*]} " == *" $name "* ]] && how=started
    printf '  %-11s %-8s pid %-8s %s\n' "$name" "$how" "$(live_pid "$name")" "$(address_of "$name")"
  done
  log "  logs: $LOG_DIR/<name>.log"
}

cmd_down() {
  local name
  for name in prometheus tansu clickhouse; do stop_one "$name"; done
}

cmd_status() {
  local name pid all=0
  for name in "${SERVERS[@]}"; do
    if pid=$(live_pid "$name"); then
      if answers "$name"; then
        printf '%-11s running      pid %-8s %s\n' "$name" "$pid" "$(address_of "$name")"
      else
        printf '%-11s not-answering pid %-8s %s\n' "$name" "$pid" "$(address_of "$name")"
        all=3
      fi
    else
      printf '%-11s stopped      pid %-8s %s\n' "$name" "-" "$(address_of "$name")"
      all=3
    fi
  done
  return "$all"
}

cmd_restart_broker() {
  ensure_dirs
  stop_one tansu
  start_one tansu
  wait_ready tansu
  log "tansu: running, pid $(live_pid tansu), $(address_of tansu)"
  create_topics
}

# stop/start one server (fault tests: a ClickHouse outage, a broker restart).
cmd_stop_one() {
  [[ " ${SERVERS[*]} " == *" ${1:-} "* ]] || die "stop needs one of: ${SERVERS[*]}"
  stop_one "$1"
}

cmd_start_one() {
  [[ " ${SERVERS[*]} " == *" ${1:-} "* ]] || die "start needs one of: ${SERVERS[*]}"
  ensure_dirs
  start_one "$1"
  wait_ready "$1"
  log "$1: running, pid $(live_pid "$1"), $(address_of "$1")"
}

cmd_reset() {
  cmd_down
  case "$STACK_DIR" in
    "" | / | "$ROOT" | "$HOME") die "refusing to delete $STACK_DIR" ;;
  esac
  rm -rf -- "$STACK_DIR"
  log "deleted $STACK_DIR"
}

usage() {
  sed -n '/^# Usage:/,/^#   reset/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  case $cmd in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart-broker) cmd_restart_broker ;;
    stop) cmd_stop_one "${2:-}" ;;
    start) cmd_start_one "${2:-}" ;;
    reset) cmd_reset ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
