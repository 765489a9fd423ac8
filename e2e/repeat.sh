#!/usr/bin/env bash
# Runs `scenarios.sh SCENARIO...` N times in a row, each on a new cluster, and prints one line
# per run and a total; exits non-zero if any run failed. Each run's output: $TMPDIR/repeat-I.log.
#   bash e2e/repeat.sh 20 damaged_copy
set -uo pipefail
E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
n="${1:?usage: repeat.sh N SCENARIO...}"
shift
passed=0 failed=0
for ((i = 1; i <= n; i++)); do
  log="${TMPDIR:-/tmp}/repeat-$i.log"
  if bash "$E2E/scenarios.sh" "$@" >"$log" 2>&1; then passed=$((passed + 1)); r=pass; else failed=$((failed + 1)); r=FAIL; fi
  echo "run $i: $r ($(grep -E '^scenarios: .* passed' "$log" | sed 's/^scenarios: //'))"
done
echo "repeat.sh: $* : $passed passed, $failed failed of $n"
((failed == 0))
