#!/usr/bin/env python3
"""Per window of steps, for long runs inside the chaotic window (docs/FINDINGS.md 1.1.1): the
finite-time top exponent (tangent) and the two-trajectory one beside it, lambda_max(H) / (2/alpha)
at the stored spectrum steps, and the training accuracy's collapses.

    scripts/chaos60k_windows.py RUN.h5... [--edges 0,200,500,1000,2000,3000,4000] [--csv OUT.csv]

Each RUN.h5 is a run of `tdyn train --lyapunov M --perturbation EPS --spectrum-every E`. Columns
(window [a, b) of steps; "growth" is the log growth per step of the first tangent vector):
  lambda1        mean growth over the window's steps (the finite-time top exponent)
  two_traj       the same for the renormalised perturbed copy; diff = two_traj - lambda1
  ratio_max      largest lambda_max / (2/alpha) at the spectrum steps in [a, b); above = how many
                 of those samples are above 1, of how many
  falls          steps t in [a, b) whose accuracy is below that of step t-1 by more than 0.005
  acc_min, acc_end   lowest accuracy in [a, b), accuracy at step b-1
Beside the table, per run: the last step at which the 25-step running mean of the growth is above
0.01 in size, and the first spectrum sample below 1.
"""

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
import tdyn_runs  # noqa: E402

FALL = 0.005  # a collapse: accuracy down by more than this in one step
LOUD = 0.01  # a burst: 25-step mean growth above this in size


def windows(path, edges):
    with tdyn_runs.RunFile(path) as r:
        ly, sp, tr, pt = r.lyapunov(), r.spectrum(), r.trajectory(), r.perturbation()
        alpha, seed = r.alpha, int(r.config["seed"])
        q = float(ly.attrs.get("qr_every", 1))
        g = ly.log_growth[:, 0] / q
        gp = pt.log_growth / q if pt is not None else None
        ratio = sp.lambda_max * alpha / 2.0
        acc = tr.accuracy
        drop = np.r_[0.0, acc[:-1] - acc[1:]]  # drop[i]: accuracy of step i-1 minus that of step i
        rows = []
        for a, b in zip(edges[:-1], edges[1:]):
            if ly.step[-1] < b - 1:
                break
            m = (ly.step >= a) & (ly.step < b)
            mp = (pt.step >= a) & (pt.step < b) if pt is not None else None
            ms = (sp.step >= a) & (sp.step < b)
            mt = (tr.step >= a) & (tr.step < b)
            l1 = float(g[m].mean())
            l2 = float(gp[mp].mean()) if gp is not None else float("nan")
            rows.append(dict(alpha=alpha, seed=seed, a=a, b=b, lambda1=l1, two_traj=l2, diff=l2 - l1,
                             ratio_max=float(ratio[ms].max()), above=int((ratio[ms] > 1).sum()), samples=int(ms.sum()),
                             falls=int((drop[mt] > FALL).sum()), acc_min=float(acc[mt].min()),
                             acc_end=float(acc[tr.step == b - 1][0]) if (tr.step == b - 1).any() else float("nan")))
        w = 25
        run_mean = np.convolve(g, np.ones(w) / w, mode="valid")
        loud = np.nonzero(np.abs(run_mean) > LOUD)[0]
        last_loud = int(ly.step[w - 1 + loud[-1]]) if loud.size else None
        below = np.nonzero(ratio < 1)[0]
        first_below = int(sp.step[below[0]]) if below.size else None
        return rows, dict(alpha=alpha, seed=seed, steps=int(ly.step[-1]) + 1, last_loud=last_loud,
                          first_below=first_below, status=r.status)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--edges", default="0,200,500,1000,2000,3000,4000", help="window edges (steps)")
    ap.add_argument("--csv", help="write the table here too")
    a = ap.parse_args(argv)
    edges = [int(e) for e in a.edges.split(",")]
    if len(edges) < 2 or any(x >= y for x, y in zip(edges[:-1], edges[1:])):
        sys.exit(f"chaos60k_windows: --edges {a.edges}: expected at least two increasing steps")
    table = []
    print("| alpha | seed | steps | lambda_1 (tangent) | two-trajectory - tangent | max lambda_max/(2/alpha) "
          "(samples > 1) | falls > 0.005 | lowest accuracy | accuracy at the end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in a.runs:
        rows, info = windows(path, edges)
        for r in rows:
            print(f"| {r['alpha']:g} | {r['seed']} | {r['a']}-{r['b']} | {r['lambda1']:.3g} | {r['diff']:.2g} | "
                  f"{r['ratio_max']:.3g} ({r['above']}/{r['samples']}) | {r['falls']} | {r['acc_min']:.3f} | "
                  f"{r['acc_end']:.4f} |")
        table += rows
        print(f"{path}: {info}", file=sys.stderr)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0].keys()))
            w.writeheader()
            w.writerows(table)


if __name__ == "__main__":
    main()
