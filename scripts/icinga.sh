#!/usr/bin/env bash
# scripts/icinga.sh — local Icinga 2 (Debian package) as a plain daemon, no
# systemd. It produces the check results that meter-collector reads from the
# Icinga 2 event stream API.
#
# Usage: scripts/icinga.sh up|down|status
#
#   up      install icinga2, monitoring-plugins-basic and curl if missing
#           (apt-get), run `icinga2 api setup` once, write the API listener
#           and the `meter` API user, validate the config, start
#           `icinga2 daemon --daemonize` (restart it if our config files
#           changed), wait until the API answers.
#   down    SIGTERM the daemon (SIGKILL after METER_STOP_TIMEOUT, default 30s).
#   status  one line: running/stopped, pid, address; exit 0 if running, 3 if not.
#
# Where: REST API https://127.0.0.1:${METER_ICINGA_PORT:-5665}/v1 (bound to
# 127.0.0.1 via ApiListener.bind_host; self-signed certificate, use curl -k).
# API user: meter / ${METER_ICINGA_PASSWORD:-meter-local}, permissions:
# events/* (event streams), objects/query/*, status/query.
# Try:
#   curl -k -u meter:meter-local -X POST -H 'Accept: application/json' \
#     'https://127.0.0.1:5665/v1/events?types=CheckResult&queue=test'
#
# Icinga 2 is a system package with system paths, not under .stack/:
#   config   /etc/icinga2 (this script owns features-available/api.conf and
#            conf.d/meter-local.conf; everything else is the package default)
#   logs     /var/log/icinga2/icinga2.log, /var/log/icinga2/icinga2.err
#   pid      /run/icinga2/icinga2.pid; the daemon runs as user nagios.
# conf.d/meter-local.conf also adds two services checked every 10s on the local
# host (meter-heartbeat: dummy OK; meter-load: check_load) so that the event
# stream has traffic within seconds; the package's default services (ping,
# ssh, disk, ...) run every minute.

set -euo pipefail

ICINGA_PORT=${METER_ICINGA_PORT:-5665}
ICINGA_PASSWORD=${METER_ICINGA_PASSWORD:-meter-local}
START_TIMEOUT=${METER_START_TIMEOUT:-90}
STOP_TIMEOUT=${METER_STOP_TIMEOUT:-30}

ETC=/etc/icinga2
RUN=/run/icinga2
PIDFILE=$RUN/icinga2.pid
LOG=/var/log/icinga2/icinga2.log
ERRLOG=/var/log/icinga2/icinga2.err
USER_CONF=$ETC/conf.d/meter-local.conf
API_CONF=$ETC/features-available/api.conf

log() { printf '%s\n' "$*"; }
die() { printf 'icinga.sh: error: %s\n' "$*" >&2; exit 1; }

pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

install_pkgs() {
  local pkg missing=()
  for pkg in icinga2 monitoring-plugins-basic curl; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    local policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
    if [[ ! -e $policy ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      created_policy=1
    fi
    {
      DEBIAN_FRONTEND=noninteractive apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    } >&2 || rc=$?
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get failed (exit $rc) installing: ${missing[*]}"
    log "installed: ${missing[*]}"
  fi
}

live_pid() {
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q icinga2 || return 1
  printf '%s\n' "$pid"
}

api_answers() {
  local code
  code=$(curl -sk -m 5 -o /dev/null -w '%{http_code}' -u "meter:$ICINGA_PASSWORD" \
    -H 'Accept: application/json' "https://127.0.0.1:$ICINGA_PORT/v1/status/IcingaApplication" 2>/dev/null || true)
  [[ $code == 200 ]]
}

# Write FILE from stdin if its content differs; returns 0 if it changed.
write_if_changed() {
  local file=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  install -m 0640 -o nagios -g nagios "$tmp" "$file" || { rm -f "$tmp"; die "cannot write $file"; }
  rm -f "$tmp"
  return 0
}

icinga_string() {
  # Icinga 2 DSL string literal: escape backslash and double quote.
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

# Sets CONFIG_CHANGED=1 when any config file was (re)written.
CONFIG_CHANGED=0
configure() {
  if [[ ! -e $ETC/features-enabled/api.conf || ! -e /var/lib/icinga2/certs/ca.crt ]]; then
    log "running icinga2 api setup"
    icinga2 api setup >/dev/null
    CONFIG_CHANGED=1
  fi

  if write_if_changed "$API_CONF" <<EOF; then CONFIG_CHANGED=1; fi
/**
 * The API listener. Managed by scripts/icinga.sh of the metering pipeline:
 * loopback only.
 */

object ApiListener "api" {
  bind_host = "127.0.0.1"
  bind_port = $ICINGA_PORT

  ticket_salt = TicketSalt
}
EOF

  if write_if_changed "$USER_CONF" <<EOF; then CONFIG_CHANGED=1; fi
/*
 * Managed by scripts/icinga.sh of the metering pipeline.
 */

/* API user for meter-collector: reads the event stream. */
object ApiUser "meter" {
  password = $(icinga_string "$ICINGA_PASSWORD")
  permissions = [ "events/*", "objects/query/*", "status/query" ]
}

/* Fast checks on the local host so the event stream has traffic within seconds. */
apply Service "meter-heartbeat" {
  import "generic-service"
  check_command = "dummy"
  check_interval = 10s
  retry_interval = 10s
  vars.dummy_state = 0
  vars.dummy_text = "meter local heartbeat"
  assign where host.name == NodeName
}

apply Service "meter-load" {
  import "generic-service"
  check_command = "load"
  check_interval = 10s
  retry_interval = 10s
  assign where host.name == NodeName
}
EOF
}

prepare_run_dir() {
  if [[ -x /usr/lib/icinga2/prepare-dirs ]]; then
    /usr/lib/icinga2/prepare-dirs >/dev/null
  else
    mkdir -p "$RUN/cmd"
    chown nagios:nagios "$RUN"
    chmod 0755 "$RUN"
    chown nagios:www-data "$RUN/cmd" 2>/dev/null || chown nagios:nagios "$RUN/cmd"
    chmod 2710 "$RUN/cmd"
  fi
}

cmd_down() {
  local pid deadline
  if ! pid=$(live_pid); then
    log "icinga2: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "icinga2: still running ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  # The daemon may leave check-plugin children or its pid file behind.
  rm -f "$PIDFILE"
  log "icinga2: stopped (pid $pid)"
}

cmd_up() {
  install_pkgs
  configure
  prepare_run_dir
  local out
  if ! out=$(icinga2 daemon --validate 2>&1); then
    printf '%s\n' "$out" | grep -E 'critical|Error' >&2 || printf '%s\n' "$out" >&2
    die "icinga2 config does not validate (run: icinga2 daemon --validate)"
  fi
  if ((CONFIG_CHANGED)) && live_pid >/dev/null; then
    log "icinga2: config changed, restarting"
    cmd_down
  fi
  if ! live_pid >/dev/null; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$ICINGA_PORT") 2>/dev/null; then
      die "port 127.0.0.1:$ICINGA_PORT is in use by another process"
    fi
    icinga2 daemon --daemonize -e "$ERRLOG" >/dev/null ||
      die "icinga2 daemon failed to start; read $ERRLOG and $LOG"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until api_answers; do
    live_pid >/dev/null || die "icinga2 exited during startup; read $ERRLOG and $LOG"
    ((SECONDS < deadline)) || die "icinga2 API did not answer on 127.0.0.1:$ICINGA_PORT within ${START_TIMEOUT}s; read $LOG"
    sleep 0.5
  done
  log "icinga2: running, pid $(live_pid), API https://127.0.0.1:$ICINGA_PORT/v1 (user meter), log $LOG"
}

cmd_status() {
  local pid
  if pid=$(live_pid); then
    if api_answers; then
      log "icinga2     running      pid $pid  https://127.0.0.1:$ICINGA_PORT/v1"
      return 0
    fi
    log "icinga2     not-answering pid $pid  https://127.0.0.1:$ICINGA_PORT/v1"
    return 3
  fi
  log "icinga2     stopped      pid -  https://127.0.0.1:$ICINGA_PORT/v1"
  return 3
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) sed -n '/^# Usage:/,/^#   status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
