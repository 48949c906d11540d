#!/usr/bin/env python3
"""The most a perturbation can grow over windows of several lengths (tdyn growth), per run.

    scripts/growth_windows.py RUN.h5 [RUN.h5 ...] --from T0 --to T1 --windows "25 50 100 200" \\
        [--vectors 1] [--csv OUT.csv] [--keep DIR]

For each run and each W, tdyn growth runs on a copy of the run file (in --keep DIR, default a
temporary folder, so the run itself is not touched and one /growth group per W is kept) over
windows of W steps from T0 to T1. One CSV row per window: run, alpha, W, from, to, ln sigma_i / W,
error / W, sweeps, converged; then a table per run: mean, min and max of ln sigma_1 / W over the
windows of each length. As W grows, ln sigma_1 / W falls toward the top Lyapunov exponent from
above (docs/MATH.md): a value that stays well above 0 over long windows is growth that persists.
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--from", dest="t0", type=int, required=True)
    p.add_argument("--to", dest="t1", type=int, required=True)
    p.add_argument("--windows", required=True, help='window lengths W, each dividing T1 - T0: "25 50 100"')
    p.add_argument("--vectors", type=int, default=1)
    p.add_argument("--csv")
    p.add_argument("--keep", help="folder for the copies with their /growth groups (default: a temporary one)")
    p.add_argument("--tdyn", default=os.path.join(ROOT, "build", "tdyn"))
    a = p.parse_args()
    windows = [int(w) for w in a.windows.split()]
    for w in windows:
        if w < 1 or (a.t1 - a.t0) % w:
            sys.exit(f"growth_windows.py: --windows: {w} does not divide --to - --from = {a.t1 - a.t0}")
    keep = a.keep or tempfile.mkdtemp(prefix="growth_windows_")
    os.makedirs(keep, exist_ok=True)
    rows = []
    for run in a.runs:
        if not os.path.isfile(run):
            sys.exit(f"growth_windows.py: {run}: no such file")
        base = os.path.splitext(os.path.basename(run))[0]
        with h5py.File(run, "r") as h:
            alpha = float(h.attrs["lr"])
        for w in windows:
            copy = os.path.join(keep, f"{base}_g{a.t0}-{a.t1}_w{w}.h5")
            shutil.copyfile(run, copy)
            cmd = [a.tdyn, "growth", copy, "--force", "--from", str(a.t0), "--to", str(a.t1), "--window", str(w),
                   "--vectors", str(a.vectors), "--quiet"]
            subprocess.run(cmd, check=True)
            with h5py.File(copy, "r") as g:
                gr = g["growth"]
                for i in range(len(gr["from"])):
                    rows.append(dict(run=run, alpha=alpha, window=w, start=int(gr["from"][i]), end=int(gr["to"][i]),
                                     exponents=list(gr["exponents"][i]), error=list(gr["error"][i] / w),
                                     sweeps=int(gr["passes"][i]), converged=int(gr["converged"][i])))
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["run", "alpha", "W", "from", "to"] + [f"ln_sigma{i + 1}_per_step" for i in range(a.vectors)]
                         + [f"error{i + 1}_per_step" for i in range(a.vectors)] + ["sweeps", "converged"])
            for r in rows:
                out.writerow([r["run"], r["alpha"], r["window"], r["start"], r["end"]]
                             + [f"{x:.6g}" for x in r["exponents"]] + [f"{x:.3g}" for x in r["error"]]
                             + [r["sweeps"], r["converged"]])
    print(f"ln sigma_1 / W over windows of {a.t0}..{a.t1}: mean (min .. max, windows), all converged unless said")
    for run in a.runs:
        line = [os.path.basename(run)]
        for w in windows:
            x = np.array([r["exponents"][0] for r in rows if r["run"] == run and r["window"] == w])
            bad = sum(1 for r in rows if r["run"] == run and r["window"] == w and not r["converged"])
            line.append(f"W {w}: {x.mean():.4f} ({x.min():.4f} .. {x.max():.4f}, {len(x)})"
                        + (f" {bad} NOT converged" if bad else ""))
        print("  ".join(line))


if __name__ == "__main__":
    main()
