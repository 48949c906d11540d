#!/usr/bin/python3
"""The two-trajectory exponent of rerun files beside the one an earlier sweep recorded.

    benettin_recheck.py RUNS_CSV OUT.csv RUN.h5...

Each RUN.h5 is named a<alpha>_s<seed>.h5 and was made with `--lyapunov M --perturbation EPS`.
OUT.csv gets, per run: alpha, seed, the rerun's tangent lambda_1 and two-trajectory exponent
(both at the last step), their difference, and from RUNS_CSV (a runs.csv of
scripts/sweep_summary.py) the earlier lambda1 and benettin of the same (alpha, seed) and their
difference. docs/FINDINGS.md 1.1 uses it for the estimator mended in 62f94b5.
"""
import csv
import os
import re
import sys

import h5py


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    runs_csv, out, files = argv[0], argv[1], argv[2:]
    with open(runs_csv) as f:
        old = {(float(r["alpha"]), int(r["seed"])): r for r in csv.DictReader(f)}
    rows = []
    for path in files:
        m = re.fullmatch(r"a([0-9.e-]+)_s([0-9]+)\.h5", os.path.basename(path))
        if not m:
            sys.exit(f"{path}: name is not a<alpha>_s<seed>.h5")
        alpha, seed = float(m.group(1)), int(m.group(2))
        with h5py.File(path, "r") as h:
            lam = float(h["/lyapunov/exponents"][-1][0])
            now = float(h["/lyapunov/perturbation/exponent"][-1])
        o = old.get((alpha, seed))
        before = float(o["benettin"]) if o else float("nan")
        lam_old = float(o["lambda1"]) if o else float("nan")
        rows.append([alpha, seed, lam, now, now - lam, lam_old, before, before - lam_old])
    rows.sort()
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["alpha", "seed", "lambda1", "benettin_now", "now_minus_lambda1", "lambda1_before",
                    "benettin_before", "before_minus_lambda1"])
        for r in rows:
            w.writerow(r[:2] + [f"{x:.6g}" for x in r[2:]])


if __name__ == "__main__":
    main(sys.argv[1:])
