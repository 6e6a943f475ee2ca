#!/usr/bin/env bash
# Long run of the property ("fuzz") tests in workers/tests/fuzz/: the same properties
# `cargo test` runs with 256 cases each, here with PROPTEST_CASES cases per property,
# repeated with fresh random seeds until FUZZ_SECONDS have passed.
#
#   scripts/fuzz.sh                 # every target for 5 minutes
#   FUZZ_SECONDS=3600 scripts/fuzz.sh ipc_framing   # one target (a test-name filter)
#
# Environment:
#   FUZZ_SECONDS     how long to keep starting rounds (default 300)
#   PROPTEST_CASES   cases per property per round (default 20000)
# A failure stops the run and prints proptest's minimal failing input; exit status 1.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_WANTED=${FUZZ_SECONDS:-300}
export PROPTEST_CASES=${PROPTEST_CASES:-20000}
FILTER=${1:-}
TEST=(cargo test --release --locked -p wsfleet-worker --test fuzz --quiet)

"${TEST[@]}" --no-run
end=$(( $(date +%s) + SECONDS_WANTED ))
rounds=0
started=$(date +%s)
while (( $(date +%s) < end )); do
  out=$("${TEST[@]}" -- $FILTER 2>&1) || { echo "$out"; echo "fuzz: FAILED in round $((rounds + 1))"; exit 1; }
  rounds=$((rounds + 1))
  props=$(grep -o '[0-9]* passed' <<<"$out" | awk '{s += $1} END {print s}')
done
echo "fuzz: OK: $rounds rounds x $props properties x $PROPTEST_CASES cases in $(( $(date +%s) - started )) s, no failure"
