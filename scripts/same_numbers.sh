#!/usr/bin/env bash
# "The same numbers before and after": runs one fixed set of tdyn runs with an old and a new
# tdyn binary and compares every pair of files dataset by dataset (scripts/compare_runs.py).
#
#   scripts/same_numbers.sh [OLD_REV] [NEW_BUILD_DIR] [--log FILE] [--rtol R] [--threads N] [--keep]
#                  [--normwise]
#
#   OLD_REV        git revision of the old code (default cabfe59); built here in a temporary
#                  git worktree (Release, only the tdyn target) that is removed at the end
#   NEW_BUILD_DIR  build folder holding the new tdyn binary (default: build/ of this checkout;
#                  build it first with scripts/build.sh)
#   --log FILE     also write the full output (every dataset of every pair) to FILE
#   --rtol R       largest relative difference allowed (default 1e-13; 0 = bit-identical only)
#   --threads N    OMP_NUM_THREADS for both binaries (default 2; results are bit-reproducible
#                  only for the same thread count, so both sides use the same)
#   --normwise     2-D datasets (theta, tangent bases: a vector per row) and /params/theta pass on the
#                  normwise relative difference (compare_runs.py --normwise); the elementwise one
#                  is still printed. For changes that reorder sums: see compare_runs.py's doc
#   --keep         keep the work folder (old worktree, its build, both sets of runs)
#
# The runs (MNIST from $TDYN_DATA, else data/ of this checkout), each with each binary:
#   a_inline      train --samples 500 --arch 784-16-10 --activation tanh --steps 20 --save-theta-every 5
#                 --lyapunov 3 --perturbation 1e-7 --spectrum-every 5 --eigs 2 --which both
#   b_batch       the same with --batch 100, without the spectrum flags (refused with --batch)
#   c_base        the same network, 20 steps, --save-theta-every 5, no analyses
#   c_lyapunov    a copy of c_base, then: lyapunov --vectors 3 --perturbation 1e-7
#   d_spectrum    a copy of c_base, then: spectrum --steps stored --eigs 2 --which both --trace --density
#   e_mnist       train --steps 20 (the default 784-50-10 on all 60000 images)
# Prints one line per pair and a final verdict; exit status 0 if every pair passed.
# Cost (2026-11-29, the shared 2-core machine under load, OLD_REV cabfe59 vs a build of the same
# code: all six pairs bit-identical): 14 min in all, 9 min of it building the old tdyn; the runs
# take 1.5-3 min per side, most of it d_spectrum's --density (30 probes x 80 Lanczos steps x 5 steps).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old_rev="" new_build="" log="" rtol="1e-13" threads=2 keep=0 normwise=""
while [ $# -gt 0 ]; do
  case "$1" in
    --log) log="$2"; shift 2 ;;
    --rtol) rtol="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --normwise) normwise="--normwise"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "same_numbers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [ -z "$old_rev" ]; then old_rev="$1"; elif [ -z "$new_build" ]; then new_build="$1";
       else echo "same_numbers.sh: too many arguments (see --help)" >&2; exit 2; fi; shift ;;
  esac
done
old_rev="${old_rev:-cabfe59}"
new_build="$(cd "${new_build:-$root/build}" 2>/dev/null && pwd)" || { echo "same_numbers.sh: no build folder ${new_build:-$root/build}" >&2; exit 2; }
new_tdyn="$new_build/tdyn"
[ -x "$new_tdyn" ] || { echo "same_numbers.sh: $new_tdyn not found (scripts/build.sh builds it)" >&2; exit 2; }
old_sha="$(git -C "$root" rev-parse --verify "$old_rev^{commit}" 2>/dev/null)" || { echo "same_numbers.sh: $old_rev is not a revision of $root" >&2; exit 2; }
export TDYN_DATA="${TDYN_DATA:-$root/data}"
[ -s "$TDYN_DATA/mnist/train-images-idx3-ubyte" ] || { echo "same_numbers.sh: no MNIST under $TDYN_DATA/mnist (scripts/setup.sh)" >&2; exit 2; }
export OMP_NUM_THREADS="$threads"
py=/usr/bin/python3

work="$(mktemp -d "${TMPDIR:-/tmp}/same_numbers.XXXXXX")"
cleanup() {
  if [ "$keep" = 1 ]; then echo "kept: $work"; return; fi
  git -C "$root" worktree remove --force "$work/old-src" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
full="$work/full.log"
: >"$full"
say() { echo "$@" | tee -a "$full"; }   # to the screen and the log
t_start=$SECONDS

say "same_numbers.sh: old = $old_rev ($old_sha), new = $new_tdyn, OMP_NUM_THREADS=$threads, rtol $rtol, data $TDYN_DATA"

# 1. The old binary: a detached worktree at OLD_REV, Release, only the tdyn target.
t0=$SECONDS
if ! { git -C "$root" worktree add --detach "$work/old-src" "$old_sha" &&
       cmake -S "$work/old-src" -B "$work/old-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
             -DTDYN_BUILD_TESTS=OFF -DTDYN_BUILD_BENCH=OFF &&
       cmake --build "$work/old-build" -j "${TDYN_JOBS:-2}" --target tdyn; } >>"$full" 2>&1; then
  tail -20 "$full"
  say "FAIL: could not build $old_rev (full output above)"
  [ -n "$log" ] && cp "$full" "$log"
  exit 1
fi
old_tdyn="$work/old-build/tdyn"
say "built old tdyn in $((SECONDS - t0)) s"

# 2. The runs, with each binary into its own folder.
small="--samples 500 --arch 784-16-10 --activation tanh"
run_set() {  # TDYN DIR: every run; a failing command is recorded in DIR/failed
  local tdyn="$1" dir="$2" t0
  mkdir -p "$dir"
  : >"$dir/failed"
  step() {  # NAME command...: runs it, logs it, times it
    local name="$1" t1=$SECONDS
    shift
    echo "+ $*" >>"$full"
    "$@" >>"$full" 2>&1
    local rc=$?
    [ $rc = 0 ] || echo "$name: exit status $rc of: $*" >>"$dir/failed"
    echo "$name $((SECONDS - t1))" >>"$dir/times"
  }
  step a_inline "$tdyn" train $small --steps 20 --save-theta-every 5 --lyapunov 3 --perturbation 1e-7 \
       --spectrum-every 5 --eigs 2 --which both --quiet --out "$dir/a_inline.h5"
  step b_batch "$tdyn" train $small --steps 20 --save-theta-every 5 --lyapunov 3 --perturbation 1e-7 \
       --batch 100 --quiet --out "$dir/b_batch.h5"
  step c_base "$tdyn" train $small --steps 20 --save-theta-every 5 --quiet --out "$dir/c_base.h5"
  cp "$dir/c_base.h5" "$dir/c_lyapunov.h5"
  step c_lyapunov "$tdyn" lyapunov "$dir/c_lyapunov.h5" --vectors 3 --perturbation 1e-7 --quiet
  cp "$dir/c_base.h5" "$dir/d_spectrum.h5"
  step d_spectrum "$tdyn" spectrum "$dir/d_spectrum.h5" --steps stored --eigs 2 --which both --trace --density --quiet
  step e_mnist "$tdyn" train --steps 20 --quiet --out "$dir/e_mnist.h5"
}
for side in old new; do
  t0=$SECONDS
  bin="$old_tdyn"; [ "$side" = new ] && bin="$new_tdyn"
  echo "== runs with the $side binary ($bin)" >>"$full"
  run_set "$bin" "$work/$side"
  say "ran the $side set in $((SECONDS - t0)) s"
done

# 3. Compare each pair.
status=0
say ""
say "pair          verdict  (old s / new s)  compare_runs.py summary"
for name in a_inline b_batch c_base c_lyapunov d_spectrum e_mnist; do
  to="$(awk -v n="$name" '$1 == n {print $2}' "$work/old/times")"
  tn="$(awk -v n="$name" '$1 == n {print $2}' "$work/new/times")"
  fo="$(grep "^$name:" "$work/old/failed")" fn="$(grep "^$name:" "$work/new/failed")"
  if [ -n "$fo$fn" ]; then
    say "$(printf '%-13s FAIL     (%s / %s s)  a command failed: %s %s' "$name" "${to:-?}" "${tn:-?}" "$fo" "$fn")"
    status=1
    continue
  fi
  echo "== $name" >>"$full"
  "$py" "$root/scripts/compare_runs.py" --rtol "$rtol" $normwise "$work/old/$name.h5" "$work/new/$name.h5" >"$work/cmp.txt" 2>&1
  rc=$?
  cat "$work/cmp.txt" >>"$full"
  verdict=PASS; [ $rc = 0 ] || { verdict=FAIL; status=1; }
  summary="$(tail -1 "$work/cmp.txt" | sed 's/ -- .*//')"
  say "$(printf '%-13s %-8s (%s / %s s)  %s' "$name" "$verdict" "$to" "$tn" "$summary")"
done
say ""
if [ $status = 0 ]; then
  say "SAME NUMBERS: every pair passed (old $old_rev vs $new_tdyn, OMP_NUM_THREADS=$threads, rtol $rtol${normwise:+, 2-D normwise}); $((SECONDS - t_start)) s in all"
else
  say "DIFFERENT NUMBERS: see the FAIL lines (full output: ${log:-rerun with --log FILE}); $((SECONDS - t_start)) s in all"
fi
[ -n "$log" ] && cp "$full" "$log" && echo "full output: $log"
exit $status
