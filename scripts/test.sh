#!/usr/bin/env bash
# Runs every test of the project on a fresh or prepared machine:
#   1. installs what is missing and starts the local stack (scripts/stack.sh up),
#   2. checks the Prometheus rules (promtool check rules / test rules),
#   3. makes the Python venv of the tests ($METER_STACK_DIR/venv, default
#      .stack/venv) from tests/python/requirements.txt, once per change of it
#      (chDB, pytest; confluent-kafka and fastavro for the foreign consumer),
#   4. builds the `meter` binary the integration tests run as separate processes,
#   5. runs unit, property and integration tests (cargo test --workspace),
#   6. runs the Python tests (tests/python: the migrations and views on
#      ClickHouse 18.16 and on current ClickHouse, in process with chDB).
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

step "Python venv"
stack_dir="${METER_STACK_DIR:-$ROOT/.stack}"
venv="$stack_dir/venv"
requirements=tests/python/requirements.txt
venv_status=0
if ! cmp -s "$requirements" "$venv/requirements.installed"; then
  { python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" &&
      cp "$requirements" "$venv/requirements.installed"; } || venv_status=$?
fi
# The Rust tests that run Python (the foreign consumer) find it here.
export METER_PYTHON="$venv/bin/python"

step "build"
cargo build --locked --bin meter

step "tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?

step "Python tests"
pytest_status=$venv_status
if ((pytest_status != 0)); then
  echo "pytest: 0 passed, 1 failed (could not make the venv $venv from $requirements)" | tee -a "$log"
else
  "$venv/bin/python" -m pytest -p no:cacheprovider -q tests/python 2>&1 | tee -a "$log" || pytest_status=$?
  if ((pytest_status == 5)); then
    # pytest found no test: a failure, not a green run.
    echo "pytest: 0 passed, 1 failed (no test collected in tests/python)" | tee -a "$log"
  fi
fi
((pytest_status == 0)) || status=1

# One closing line for the whole run (cargo's last line is a doc-test summary;
# pytest's is "N failed, N passed, N error in S").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^(=+ )?[0-9]+ (passed|failed|errors?|skipped)/ || /^pytest: / {
       for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^(failed|errors?)/) f += $i } }
     END { printf "\ntotal: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
