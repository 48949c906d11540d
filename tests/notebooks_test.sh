#!/usr/bin/env bash
# ctest Notebooks.*: the notebooks and scripts/plot_run.py on real run files made by tdyn.
#   tests/notebooks_test.sh TDYN full   a small run with spectrum, trace, density and Lyapunov data and a
#                                       second spectrum group /spectrum_k3_top: tdyn info (text and --json),
#                                       tdyn_runs.py and its figures list/draw both groups; plot_run.py
#                                       writes every expected PNG, explore_run.ipynb and lr_sweep.ipynb
#                                       execute headless (nbconvert) without a cell error
#   tests/notebooks_test.sh TDYN api    python_api.ipynb (the Python module in build/python) at the last
#                                       stored theta of a small run
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
  # A second spectrum configuration, (K, which) = (3, top) at steps 0 and 20: its own group /spectrum_k3_top.
  "$tdyn" spectrum "$tmp/run.h5" --data-dir "$data" --steps 0,20 --eigs 3 --which top --quiet >"$tmp/tdyn.log" 2>&1 ||
    { cat "$tmp/tdyn.log"; fail "tdyn spectrum --eigs 3 --which top"; }
  "$tdyn" info "$tmp/run.h5" >"$tmp/info.txt" 2>&1 || { cat "$tmp/info.txt"; fail "tdyn info"; }
  "$tdyn" info "$tmp/run.h5" --json >"$tmp/info.json" 2>"$tmp/info.err" || { cat "$tmp/info.err"; fail "tdyn info --json"; }
  cat "$tmp/info.txt"
  # Both groups, as tdyn info, tdyn_runs.py and its figures show them, against the file read directly.
  "$py" - "$tmp/run.h5" "$tmp/info.txt" "$tmp/info.json" "$root" <<'PY' || fail "the readers do not show both spectrum groups"
import json, os, sys
os.environ["MPLBACKEND"] = "Agg"
import h5py, numpy as np
run_path, info_txt, info_json, root = sys.argv[1:]
sys.path.insert(0, os.path.join(root, "notebooks"))
import tdyn_runs
bad = []
def check(ok, what):
    if not ok:
        bad.append(what)
        print("FAIL:", what)
names = ["/spectrum", "/spectrum_k3_top"]
expect = {}
with h5py.File(run_path, "r") as f:
    for g in names:
        step, lmax = f[g]["step"][()], f[g]["lambda_max"][()]
        last = max(range(len(step)), key=lambda i: (step[i], i))  # the newest row of the largest step
        expect[g] = {"eigs": f[g]["hessian_top"].shape[1], "rows": len(step), "steps": len(set(step.tolist())),
                     "first_step": int(step.min()), "last_step": int(step.max()), "lambda_max": float(lmax[last]),
                     "trace_rows": len(f[g]["trace/step"]) if "trace" in f[g] else 0,
                     "density_rows": len(f[g]["density/step"]) if "density" in f[g] else 0}
check(expect["/spectrum"]["eigs"] == 2 and expect["/spectrum_k3_top"]["eigs"] == 3, f"group widths {expect}")
check(expect["/spectrum"]["trace_rows"] == 2 and expect["/spectrum_k3_top"]["steps"] == 2, f"group rows {expect}")

# tdyn info --json: the keys it always had, and one "spectra" entry per group
info = json.load(open(info_json))
for key in ("status", "rows", "last_step", "has_spectrum", "has_lyapunov", "spectrum", "lyapunov", "theta_stored"):
    check(key in info, f"tdyn info --json lost key {key}")
check(info.get("has_spectrum") is True and info.get("spectrum", {}).get("rows") == expect["/spectrum"]["rows"],
      "tdyn info --json: has_spectrum / spectrum.rows")
spectra = info.get("spectra", [])
check([s.get("name") for s in spectra] == names, f"tdyn info --json spectra names {[s.get('name') for s in spectra]}")
for s in spectra:
    e = expect.get(s.get("name"), {})
    for k, v in e.items():
        check(s.get(k) == v, f"tdyn info --json {s.get('name')}: {k} = {s.get(k)}, file says {v}")
    check(s.get("alpha") == 0.5, f"tdyn info --json {s.get('name')}: alpha {s.get('alpha')}")
    check(s.get("which") == {"/spectrum": "both", "/spectrum_k3_top": "top"}.get(s.get("name")),
          f"tdyn info --json {s.get('name')}: which {s.get('which')}")
text = open(info_txt).read().splitlines()
for g, K, which in (("/spectrum", 2, "both"), ("/spectrum_k3_top", 3, "top")):
    check(any(l.startswith(f"  spectrum    {g}: K = {K}, which {which}") for l in text), f"tdyn info: no line for {g}")

# tdyn_runs.py
with tdyn_runs.RunFile(run_path) as run:
    check(run.spectrum_names() == names, f"spectrum_names() = {run.spectrum_names()}")
    sp = run.spectra()
    check(list(sp) == names, f"spectra() keys {list(sp)}")
    for g in names:
        s = sp.get(g)
        if s is None:
            continue
        check(s.attrs.get("name") == g and s.attrs.get("eigs") == expect[g]["eigs"], f"{g}: attrs {s.attrs}")
        check(s.hessian_top.shape == (expect[g]["steps"], expect[g]["eigs"]), f"{g}: hessian_top {s.hessian_top.shape}")
        check(s.lambda_max[-1] == expect[g]["lambda_max"], f"{g}: last lambda_max {s.lambda_max[-1]}")
    check(sp["/spectrum_k3_top"].attrs.get("which") == "top", "which of /spectrum_k3_top")
    check(run.spectrum().attrs.get("name") == "/spectrum", "spectrum() is not /spectrum")
    check(run.trace() is not None and run.trace().attrs.get("spectrum") == "/spectrum", "trace() of /spectrum")
    summary = run.summary()
    for g in names:
        check(any(l.startswith(f"spectrum      {g}: ") for l in summary), f"summary() has no line for {g}")
    for name in ("sharpness", "jacobian"):
        fig = tdyn_runs.figure(run, name)
        labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        check(any("K = 3, top (/spectrum_k3_top)" in l for l in labels), f"{name} figure legend {labels}")
        check(any("K = 2, both (/spectrum)" in l for l in labels), f"{name} figure legend {labels}")
print("spectrum groups:", ", ".join(f"{s['name']} (K = {s['eigs']}, {s['which']}, {s['steps']} steps)" for s in spectra))
sys.exit(1 if bad else 0)
PY
  plots "$tmp/run.h5" "$tmp/fig" "overview config loss_accuracy grad_norm sharpness jacobian lyapunov density trace"
  TDYN_RUN="$tmp/run.h5" execute explore_run.ipynb full 8
  grep -q '/spectrum_k3_top (K = 3, top' "$tmp/nb/explore_run-full.ipynb" ||
    fail "explore_run.ipynb does not list the spectrum group /spectrum_k3_top in its summary"

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
elif [ "$mode" = api ]; then
  # The Python module (build/python, next to the tdyn binary) at the last stored theta of a small run.
  "$tdyn" train --data-dir "$data" --samples 300 --steps 20 --lr 0.5 --save-theta-every 10 --out "$tmp/run.h5" \
    --quiet >"$tmp/tdyn.log" 2>&1 || { cat "$tmp/tdyn.log"; fail "tdyn train"; }
  TDYN_RUN="$tmp/run.h5" TDYN_DATA="$data" TDYN_PYTHON="$(dirname "$tdyn")/python" execute python_api.ipynb api 1
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
  fail "unknown mode $mode (full, api or bare)"
fi
echo "PASS: notebooks ($mode)"
