#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*_fuzz.cpp, clang, ASan + UBSan) into build-fuzz/ and runs
# each for FUZZ_SECONDS seconds (default 60), starting from the seed corpus in fuzz/corpus/<target>/.
# A crash, a sanitizer report, a leak, a timeout (>10 s on one input) or an input that needs
# more than 2 GB fails the script; the input that did it is left in build-fuzz/artifacts/.
# FUZZ_SEED (default 1) and FUZZ_RUNS (default 50000 inputs, within the time cap) make a run
# repeatable: CI explores the same inputs every time, so it fails only on a change of code or
# corpus. FUZZ_SEED=0 FUZZ_RUNS=-1 explores at random for the whole FUZZ_SECONDS.
#   scripts/fuzz.sh [TARGET...]          (default: every target)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
seconds="${FUZZ_SECONDS:-60}" fuzz_seed="${FUZZ_SEED:-1}" fuzz_runs="${FUZZ_RUNS:-50000}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, found '$seconds'" >&2; exit 2; }
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (scripts/setup.sh installs clang)" >&2; exit 1; }
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in "$root"/fuzz/*_fuzz.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DTDYN_FUZZ=ON -DTDYN_NATIVE=OFF -DTDYN_BUILD_TESTS=OFF -DTDYN_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "${TDYN_JOBS:-2}" --target "${targets[@]}"
mkdir -p "$build/artifacts"
failed=()
for t in "${targets[@]}"; do
  work="$build/corpus/$t"  # grows; the committed seeds in fuzz/corpus/ are only read
  mkdir -p "$work"
  echo "fuzz.sh: $t for ${seconds} s"
  if ! "$build/$t" -seed="$fuzz_seed" -runs="$fuzz_runs" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t-" "$work" "$root/fuzz/corpus/$t" >"$build/$t.log" 2>&1; then
    failed+=("$t")
    echo "fuzz.sh: $t FAILED; the end of its log ($build/$t.log):" >&2
    tail -n 40 "$build/$t.log" >&2
  else
    echo "fuzz.sh: $t clean: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/$t.log" | grep -o '[0-9]*$') inputs, corpus $(ls "$work" | wc -l) files"
  fi
done
if ((${#failed[@]})); then echo "fuzz.sh: FAILED: ${failed[*]}" >&2; exit 1; fi
echo "fuzz.sh: all ${#targets[@]} targets clean"
