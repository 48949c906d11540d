#!/usr/bin/python3
"""A random and a started tangent vector over a long run: growth by window and their alignment.

    long_tangent_table.py RUN.h5 STARTED.h5 -o OUT.csv [--window N] [--figure OUT.png] [--spectrum SP.h5]

RUN.h5 is a run whose in-line /lyapunov (one vector, q = 1) started at random; STARTED.h5 is a
copy of it on which `tdyn lyapunov --vectors 1 --start-vectors U.h5 [--perturbation EPS]` ran
over the same steps. Per window of N steps, OUT.csv gets the mean log growth per step of the random
vector, of the started one and of its two-trajectory copy (NaN without --perturbation), and
|cos| between the two vectors at the window's end, read from the checkpointed bases (both are
stored every S steps; the window's end must be one of them). --spectrum adds lambda_min and
lambda_max of H at the steps a `tdyn spectrum --which both` on SP.h5 analysed, and
log(1 - alpha lambda_min), the growth the bottom eigenvector would give at that step.
docs/FINDINGS.md 1.1 ("Over 10^4 steps") and 3.3 use it.
"""
import argparse
import csv
import math

import h5py
import numpy as np


def open_run(path):
    """Read-only; also while tdyn is still writing it (SWMR), so a running analysis can be read."""
    try:
        return h5py.File(path, "r", swmr=True)
    except (OSError, ValueError):
        return h5py.File(path, "r")


def tangent(path, started):
    """Steps, log growth of v_1, two-trajectory log growth (or None), checkpoint steps and v_1 there."""
    with open_run(path) as h:
        ly = h["/lyapunov"]
        if started != ("start_vectors" in ly.attrs):
            raise SystemExit(f"{path}: /lyapunov is {'not ' if started else ''}started along given vectors")
        if int(ly.attrs["qr_every"]) != 1:
            raise SystemExit(f"{path}: /lyapunov has q = {int(ly.attrs['qr_every'])}; this table needs q = 1")
        steps = h["/lyapunov/step"][:].astype(np.int64)
        growth = h["/lyapunov/log_growth"][:, 0]
        two = None
        if "perturbation" in ly:
            ps = h["/lyapunov/perturbation/step"][:].astype(np.int64)
            pg = h["/lyapunov/perturbation/log_growth"][:]
            two = dict(zip(ps.tolist(), pg.tolist()))
        cs = h["/checkpoint/lyapunov_step"][:].astype(np.int64)
        basis = h["/checkpoint/lyapunov_basis"]
        m = int(ly.attrs["vectors"])
        p = basis.shape[1] // m
        v1 = {int(s): basis[j, :p] for j, s in enumerate(cs)}  # column-major: v_1 is the first P values
        alpha = float(ly.attrs["alpha"])
    return steps, growth, two, v1, alpha


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("started")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--figure")
    ap.add_argument("--spectrum")
    a = ap.parse_args()
    rs, rg, _, rv, alpha = tangent(a.run, False)
    ss, sg, two, sv, _ = tangent(a.started, True)
    n = min(len(ss), len(sg))
    ss, sg = ss[:n], sg[:n]  # a running analysis: the rows both series hold
    t0, t1 = int(ss[0]), int(ss[-1]) + 1
    rsel = (rs >= t0) & (rs < t1)
    if rsel.sum() != t1 - t0 or not np.array_equal(rs[rsel], ss):
        raise SystemExit(f"{a.run}: its /lyapunov does not cover steps {t0}..{t1 - 1} at every step")
    rg = rg[rsel]
    tg = np.array([two.get(int(t), math.nan) for t in ss]) if two else np.full(len(ss), math.nan)
    spec = {}
    if a.spectrum:
        with open_run(a.spectrum) as h:
            for t, lo, hi in zip(h["/spectrum/step"][:], h["/spectrum/hessian_bottom"][:, 0],
                                 h["/spectrum/hessian_top"][:, 0]):
                spec[int(t)] = (float(lo), float(hi))
    rows = []
    for b0 in range(t0, t1, a.window):
        b1 = min(b0 + a.window, t1)
        sel = (ss >= b0) & (ss < b1)
        cos = math.nan
        if b1 in rv and b1 in sv:
            x, y = rv[b1], sv[b1]
            cos = abs(float(x @ y)) / (np.linalg.norm(x) * np.linalg.norm(y))
        lo, hi = spec.get(b0, (math.nan, math.nan))
        bottom = math.log(1 - alpha * lo) if lo == lo else math.nan
        rows.append([b0, b1, rg[sel].mean(), sg[sel].mean(), np.nanmean(tg[sel]), cos, lo, hi, bottom])
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["from", "to", "random_rate", "started_rate", "started_two_trajectory_rate", "abs_cos_at_to",
                    "lambda_min_at_from", "lambda_max_at_from", "log_1_minus_alpha_lambda_min_at_from"])
        for r in rows:
            w.writerow([x if isinstance(x, int) else f"{x:.6g}" for x in r])
    print(f"{a.out}: {len(rows)} windows of {a.window} steps, steps {t0}..{t1}; "
          f"totals: random {rg.sum():.4g}, started {sg.sum():.4g}, two-trajectory {np.nansum(tg):.4g} ({int(np.isnan(tg).sum())} steps without its row)")
    if a.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        ax[0].plot(ss + 1, np.cumsum(rg), label="random start (in-line)")
        ax[0].plot(ss + 1, np.cumsum(sg), label="started along the bottom of H")
        if two:
            ax[0].plot(ss + 1, np.cumsum(tg), "--", label="two trajectories along it")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("log |v_1| (summed log growth)")
        ax[0].legend()
        cs = sorted(set(rv) & set(sv))
        cos = [abs(float(rv[t] @ sv[t])) / (np.linalg.norm(rv[t]) * np.linalg.norm(sv[t])) for t in cs]
        ax[1].semilogy(cs, cos)
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("|cos(v_random, v_started)|")
        fig.suptitle(f"{a.started}: alpha = {alpha:g}")
        fig.tight_layout()
        fig.savefig(a.figure, dpi=110)
        print(f"{a.figure}: written")


if __name__ == "__main__":
    main()
