#!/usr/bin/env bash
# The whole test suite on a fresh machine (what CI runs, .ci/run): set-up (packages, data),
# build, then three labelled stages:
#   1. ctest            the GoogleTest suite on the Release build (build/)
#   2. sanitize.sh      the unit tests again under ASan + UBSan (build-asan/)
#   3. fuzz.sh          each libFuzzer target for FUZZ_SECONDS (default 60) seconds (build-fuzz/)
# Every stage runs even if an earlier one failed; the script fails if any did, and ends with
# ctest's summary line and one line per stage. Extra arguments go to the first ctest.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" || exit 1
"$root/scripts/build.sh" || exit 1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
stage() { printf '\n==================== %s ====================\n' "$1"; }
declare -A result
run_stage() {  # name command...
  local name="$1" t0=$SECONDS
  shift
  stage "$name"
  if "$@"; then result[$name]="passed"; else result[$name]="FAILED"; fi
  result[$name]+=" ($((SECONDS - t0)) s)"
}
run_ctest() { (cd "$root/build" && ctest --output-on-failure -j 1 "$@") 2>&1 | tee "$log"; }
run_stage "1. ctest (build/)" run_ctest "$@"
run_stage "2. sanitizers: scripts/sanitize.sh (build-asan/)" "$root/scripts/sanitize.sh"
run_stage "3. fuzzing: scripts/fuzz.sh, ${FUZZ_SECONDS:-60} s per target (build-fuzz/)" "$root/scripts/fuzz.sh"
stage "summary"
grep -E '^[0-9]+% tests passed' "$log" || echo "ctest printed no summary line"
status=0
for name in "1. ctest (build/)" "2. sanitizers: scripts/sanitize.sh (build-asan/)" \
            "3. fuzzing: scripts/fuzz.sh, ${FUZZ_SECONDS:-60} s per target (build-fuzz/)"; do
  echo "${name%%:*}: ${result[$name]}"
  [[ "${result[$name]}" == passed* ]] || status=1
done
exit $status
