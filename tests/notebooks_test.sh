#!/usr/bin/env bash
# ctest Notebooks.*: the notebooks and scripts/plot_run.py on real run files made by tdyn.
#   tests/notebooks_test.sh TDYN full   a small run with spectrum, trace, density and Lyapunov data:
#                                       plot_run.py writes every expected PNG, explore_run.ipynb and
#                                       lr_sweep.ipynb execute headless (nbconvert) without a cell error
#   tests/notebooks_test.sh TDYN bare   a run without /spectrum and /lyapunov: both tools still work and
#                                       skip those sections; files that are not run files give one line
#                                       "FILE: not a tdyn run file (...)" and exit status 1
# Exit 77 (ctest SKIP_RETURN_CODE) with "SKIPPED: reason" when the MNIST files are absent.
# MNIST is looked up like tdyn does: $TDYN_DATA, else data/ of the project.
set -euo pipefail
tdyn="$1"
mode="${2:-full}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py=/usr/bin/python3
data="${TDYN_DATA:-$root/data}"
if [ ! -s "$data/mnist/train-images-idx3-ubyte" ] || [ ! -s "$data/mnist/train-labels-idx1-ubyte" ]; then
  echo "SKIPPED: no MNIST in $data/mnist (run scripts/setup.sh, or set TDYN_DATA)"
  exit 77
fi
for m in numpy h5py matplotlib nbconvert nbformat ipykernel; do
  "$py" -c "import $m" 2>/dev/null || { echo "FAIL: $py cannot import $m (scripts/setup.sh installs the Debian packages)"; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# One thread: these problems are tiny, and 2 OpenMP threads on a loaded 2-core machine run ~15x slower.
export OMP_NUM_THREADS=1
export PYDEVD_DISABLE_FILE_VALIDATION=1 JUPYTER_RUNTIME_DIR="$tmp/jupyter" IPYTHONDIR="$tmp/ipython" MPLCONFIGDIR="$tmp/mpl"
fail() { echo "FAIL: $*"; exit 1; }

# Executes notebook $1 (with the environment it is given) into $tmp/nb; fails on any cell error.
execute() {
  local nb="$1" out="$tmp/nb/$(basename "$1" .ipynb)-$2.ipynb"
  mkdir -p "$tmp/nb"
  "$py" -m nbconvert --to notebook --execute "$root/notebooks/$nb" --output "$(basename "$out")" \
    --output-dir "$tmp/nb" --ExecutePreprocessor.timeout=120 >"$tmp/nbconvert.log" 2>&1 ||
    { cat "$tmp/nbconvert.log"; fail "$nb did not execute ($2)"; }
  # count the figures drawn and make sure no cell holds an error output
  "$py" - "$out" "$3" <<'PY' || fail "$nb ($2): see above"
import sys, nbformat
nb = nbformat.read(sys.argv[1], 4)
errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {images} figure(s), {len(errors)} error(s)")
sys.exit(1 if errors or images < int(sys.argv[2]) else 0)
PY
}

# Runs plot_run.py on $1 into $2 and checks that the PNG files named in $3 exist and are PNG files.
plots() {
  "$py" "$root/scripts/plot_run.py" "$1" -o "$2" >"$tmp/plot.log" 2>&1 || { cat "$tmp/plot.log"; fail "plot_run.py $1"; }
  cat "$tmp/plot.log"
  for name in $3; do
    [ -s "$2/$name.png" ] || fail "plot_run.py did not write $2/$name.png"
    [ "$(head -c 4 "$2/$name.png" | tail -c 3)" = "PNG" ] || fail "$2/$name.png is not a PNG file"
  done
}

if [ "$mode" = full ]; then
  # 300 samples, 20 steps at alpha = 0.5; eigenvalues every 10 steps, 3 Lyapunov vectors; then trace and density.
  "$tdyn" train --data-dir "$data" --samples 300 --steps 20 --lr 0.5 --save-theta-every 10 \
    --spectrum-every 10 --eigs 2 --lyapunov 3 --out "$tmp/run.h5" --quiet >"$tmp/tdyn.log" 2>&1 ||
    { cat "$tmp/tdyn.log"; fail "tdyn train"; }
  "$tdyn" spectrum "$tmp/run.h5" --data-dir "$data" --steps 0,20 --eigs 2 --trace --density --probes 4 --quiet \
    >"$tmp/tdyn.log" 2>&1 || { cat "$tmp/tdyn.log"; fail "tdyn spectrum"; }
  plots "$tmp/run.h5" "$tmp/fig" "overview config loss_accuracy grad_norm sharpness jacobian lyapunov density trace"
  TDYN_RUN="$tmp/run.h5" execute explore_run.ipynb full 8

  # A two-point learning-rate sweep, alpha = 0.5 and 4 (2/alpha = 0.5, below lambda_max): with
  # scripts/sweep_lr.sh when the tree has it (the producer of sweep.csv), else a table built from run files.
  if [ -f "$root/scripts/sweep_lr.sh" ]; then
    TDYN="$tdyn" bash "$root/scripts/sweep_lr.sh" -o "$tmp/sweep" --lrs "0.5 4" --steps 20 --samples 300 \
      -- --data-dir "$data" >"$tmp/tdyn.log" 2>&1 || { cat "$tmp/tdyn.log"; fail "scripts/sweep_lr.sh"; }
  else
    mkdir -p "$tmp/sweep"
    cp "$tmp/run.h5" "$tmp/sweep/lr_0.5.h5"
    "$tdyn" train --data-dir "$data" --samples 300 --steps 20 --lr 4 --spectrum-every 20 --which top --eigs 1 \
      --lyapunov 3 --out "$tmp/sweep/lr_4.h5" --quiet >"$tmp/tdyn.log" 2>&1 || { cat "$tmp/tdyn.log"; fail "tdyn train --lr 4"; }
    "$py" - "$tmp/sweep" "$root" <<'PY' || fail "writing the sweep table"
import os, sys
sys.path.insert(0, os.path.join(sys.argv[2], "notebooks"))
import tdyn_runs
d = sys.argv[1]
tdyn_runs.write_sweep(f"{d}/sweep.csv", tdyn_runs.sweep_rows([f"{d}/lr_0.5.h5", f"{d}/lr_4.h5"]))
PY
  fi
  cat "$tmp/sweep/sweep.csv"
  TDYN_SWEEP="$tmp/sweep/sweep.csv" execute lr_sweep.ipynb sweep 3
elif [ "$mode" = bare ]; then
  "$tdyn" train --data-dir "$data" --samples 200 --steps 5 --out "$tmp/bare.h5" --quiet >"$tmp/tdyn.log" 2>&1 ||
    { cat "$tmp/tdyn.log"; fail "tdyn train"; }
  plots "$tmp/bare.h5" "$tmp/fig" "overview config loss_accuracy grad_norm"
  grep -q "^skipped sharpness: no /spectrum group" "$tmp/plot.log" || fail "plot_run.py did not say why sharpness is skipped"
  grep -q "^skipped lyapunov: no /lyapunov group" "$tmp/plot.log" || fail "plot_run.py did not say why lyapunov is skipped"
  for f in "$tmp/fig"/*.png; do
    case "$(basename "$f")" in overview.png|config.png|loss_accuracy.png|grad_norm.png) ;; *) fail "unexpected $f";; esac
  done
  TDYN_RUN="$tmp/bare.h5" execute explore_run.ipynb bare 2
  grep -q "no data in this file" "$tmp/nb/explore_run-bare.ipynb" || fail "explore_run.ipynb did not say a section has no data"

  # Not run files: text, HDF5 without format = "tdyn-run", a params file, a missing file.
  echo "not hdf5" >"$tmp/text.h5"
  "$py" -c "import h5py, sys; h5py.File(sys.argv[1], 'w')['x'] = [1.0]" "$tmp/other.h5"
  "$py" -c "import h5py, sys; f = h5py.File(sys.argv[1], 'w'); f['params/theta'] = [0.0]; f.attrs['format'] = 'tdyn-params'" "$tmp/params.h5"
  for f in text.h5 other.h5 params.h5 missing.h5; do
    set +e
    "$py" "$root/scripts/plot_run.py" "$tmp/$f" -o "$tmp/nofig" >"$tmp/out.log" 2>"$tmp/err.log"
    rc=$?
    set -e
    [ "$rc" = 1 ] || fail "plot_run.py $f: exit status $rc, expected 1"
    [ "$(wc -l <"$tmp/err.log")" = 1 ] || { cat "$tmp/err.log"; fail "plot_run.py $f: expected one line on stderr"; }
    grep -q "^$tmp/$f: not a tdyn run file (" "$tmp/err.log" || { cat "$tmp/err.log"; fail "plot_run.py $f: unexpected message"; }
    [ ! -s "$tmp/out.log" ] || fail "plot_run.py $f wrote to stdout"
    echo "plot_run.py $f -> $(cat "$tmp/err.log")"
  done
  [ ! -e "$tmp/nofig" ] || fail "plot_run.py made an output folder for a file that is not a run"
else
  fail "unknown mode $mode (full or bare)"
fi
echo "PASS: notebooks ($mode)"
