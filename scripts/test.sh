#!/usr/bin/env bash
# Runs every test of the project on a fresh or prepared machine:
#   1. installs what is missing and starts the local stack (scripts/stack.sh up),
#   2. checks the Prometheus rules (promtool check rules / test rules),
#   3. creates the Python venv of the tests (.stack/venv, if missing) and
#      installs tests/python/requirements.txt into it,
#   4. builds the `meter` binary the integration tests run as separate processes,
#   5. runs unit, property and integration tests (cargo test --workspace).
# The stack is left running; `scripts/stack.sh down` stops it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "local stack"
bash scripts/stack.sh up

step "Prometheus rules"
shopt -s nullglob
rules=(deploy/prometheus/rules/*.yml)
rule_tests=(deploy/prometheus/tests/*.yml)
if ((${#rules[@]})); then promtool check rules "${rules[@]}"; fi
if ((${#rule_tests[@]})); then promtool test rules "${rule_tests[@]}"; fi

step "Python test venv"
venv="$ROOT/.stack/venv"
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

step "build"
cargo build --locked --bin meter

step "tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace -- --test-threads=2 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo's last line is a doc-test summary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntotal: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
