#!/usr/bin/python3
"""Tangent vectors started along the bottom eigenvector of H beside the random start of the same run.

    started_bottom_table.py OUT.csv STARTED.h5...

Each STARTED.h5 is a copy of a run file on which `tdyn lyapunov --vectors 1 --start-vectors U.h5
[--perturbation EPS]` ran, named <anything>a<alpha>_s<seed>.h5; the original run, whose own in-line
/lyapunov (q = 1) started at random, is a<alpha>_s<seed>.h5 in --runs DIR. OUT.csv gets, per run:
alpha, seed, from, to, lambda_min of H at the start as the first log growth gives it back (J u =
(1 - alpha lambda_min) u), that first log growth, the started v_1's exponent and its two-trajectory
exponent (NaN without --perturbation), the random start's exponent over the same steps (the sum of
the original's log_growth over them / steps) and the ratio of the two.
docs/FINDINGS.md 1.1 uses it for the runs below the window.
"""
import argparse
import csv
import math
import os
import re

import h5py


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("started", nargs="+")
    ap.add_argument("--runs", default="/work/runs-fix", help="folder of the original run files a<alpha>_s<seed>.h5")
    a = ap.parse_args()
    rows = []
    for path in a.started:
        m = re.search(r"a([0-9.e-]+)_s([0-9]+)\.h5$", os.path.basename(path))
        if not m:
            raise SystemExit(f"{path}: name does not end in a<alpha>_s<seed>.h5")
        alpha, seed = float(m.group(1)), int(m.group(2))
        with h5py.File(path, "r") as h:
            ly = h["/lyapunov"]
            if "start_vectors" not in ly.attrs:
                raise SystemExit(f"{path}: /lyapunov was not started along given vectors (no start_vectors)")
            t0, t1 = int(ly.attrs["from"]), int(ly.attrs["to"])
            growth = h["/lyapunov/log_growth"][:, 0]
            started = float(h["/lyapunov/exponents"][-1][0])
            two = float(h["/lyapunov/perturbation/exponent"][-1]) if "perturbation" in ly else math.nan
        original = os.path.join(a.runs, f"a{m.group(1)}_s{seed}.h5")
        with h5py.File(original, "r") as h:
            steps = h["/lyapunov/step"][:]
            g = h["/lyapunov/log_growth"][:, 0]
            sel = (steps >= t0) & (steps < t1)
            if sel.sum() != t1 - t0:
                raise SystemExit(f"{original}: its /lyapunov does not cover steps {t0}..{t1 - 1} at q = 1")
            random = float(g[sel].sum()) / (t1 - t0)
        first = float(growth[0])
        lam_min = (1 - math.exp(first)) / alpha  # J u = (1 - alpha lambda) u, and 1 - alpha lambda > 0 here
        rows.append([alpha, seed, t0, t1, lam_min, first, started, two, random, started / random])
    rows.sort()
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["alpha", "seed", "from", "to", "lambda_min_from_first_growth", "first_log_growth",
                    "started_exponent", "started_two_trajectory", "random_start_exponent", "ratio"])
        for r in rows:
            w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in r])
    print(f"{a.out}: {len(rows)} runs")


if __name__ == "__main__":
    main()
