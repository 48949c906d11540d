#!/usr/bin/env bash
# The whole test suite on a fresh machine (what CI runs, .ci/run): set-up (packages, data),
# build, then three labelled stages:
#   1. ctest            the GoogleTest suite on the Release build (build/), with the notebooks and
#                       pytest over the Python module (ctest Python.Pytest: tests/python/)
#   2. sanitize.sh      the unit tests again under ASan + UBSan (build-asan/)
#   3. fuzz.sh          each libFuzzer target for FUZZ_SECONDS (default 60) seconds (build-fuzz/)
#   4. mpi              scripts/build.sh --mpi, then ctest's Mpi.* tests: mpirun -np 1..4 against
#                       one process (tests/mpi_test.sh, build-mpi/)
# Every stage runs even if an earlier one failed; the script fails if any did, and ends with
# ctest's summary line, every skipped test with its reason, and one line per stage. Extra
# arguments go to the first ctest.
# Skipped tests: stages 1 and 2 also fail when a test was skipped (GTEST_SKIP, or exit 77 of a
# script test) unless tests/allowed_skips.txt allows that test, in that stage, for that reason
# (scripts/check_skips.py reads ctest's --output-junit file).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" || exit 1
"$root/scripts/build.sh" || exit 1
log="$(mktemp)"
tmp="$(mktemp -d)"
trap 'rm -rf "$log" "$tmp"' EXIT
stage() { printf '\n==================== %s ====================\n' "$1"; }
declare -A result
run_stage() {  # name command...
  local name="$1" t0=$SECONDS
  shift
  stage "$name"
  if "$@"; then result[$name]="passed"; else result[$name]="FAILED"; fi
  result[$name]+=" ($((SECONDS - t0)) s)"
}
# check_skips STAGE JUNIT: the skip check, its report kept for the summary.
check_skips() { /usr/bin/python3 "$root/scripts/check_skips.py" --stage "$1" "$2" | tee "$tmp/skips-$1"; return "${PIPESTATUS[0]}"; }
run_ctest() {
  local rc=0
  (cd "$root/build" && ctest --output-on-failure -j 1 --output-junit "$tmp/ctest.xml" "$@") 2>&1 | tee "$log" || rc=1
  check_skips ctest "$tmp/ctest.xml" || rc=1
  return $rc
}
run_sanitize() {
  local rc=0
  "$root/scripts/sanitize.sh" --output-junit "$tmp/sanitize.xml" || rc=1
  check_skips sanitize "$tmp/sanitize.xml" || rc=1
  return $rc
}
run_mpi() {
  "$root/scripts/build.sh" --mpi >/dev/null || return 1
  (cd "$root/build-mpi" && ctest --output-on-failure -j 1 -R '^Mpi\.')
}
run_stage "1. ctest (build/)" run_ctest "$@"
run_stage "2. sanitizers: scripts/sanitize.sh (build-asan/)" run_sanitize
run_stage "3. fuzzing: scripts/fuzz.sh, ${FUZZ_SECONDS:-60} s per target (build-fuzz/)" "$root/scripts/fuzz.sh"
run_stage "4. mpi: tests/mpi_test.sh (build-mpi/)" run_mpi
stage "summary"
grep -E '^[0-9]+% tests passed' "$log" || echo "ctest printed no summary line"
for s in ctest sanitize; do cat "$tmp/skips-$s" 2>/dev/null || echo "skip check ($s): did not run"; done
status=0
for name in "1. ctest (build/)" "2. sanitizers: scripts/sanitize.sh (build-asan/)" \
            "3. fuzzing: scripts/fuzz.sh, ${FUZZ_SECONDS:-60} s per target (build-fuzz/)" \
            "4. mpi: tests/mpi_test.sh (build-mpi/)"; do
  echo "${name%%:*}: ${result[$name]}"
  [[ "${result[$name]}" == passed* ]] || status=1
done
exit $status
