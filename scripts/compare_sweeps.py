#!/usr/bin/python3
"""Two learning-rate sweeps side by side, per run (runs.csv of scripts/sweep_summary.py).

    compare_sweeps.py OUT.png LABEL_A RUNS_A.csv LABEL_B RUNS_B.csv [--seed S] [--min-alpha A]

Against alpha, one marker per run of the given seed (default 0) in each sweep: the top tangent
exponent over the whole run, the finite-time top exponent over the first and the last quarter,
the steps to 90 % training accuracy (an x at the top: not reached in the run), and lambda_max(H) / (2/alpha) at the first and the last
spectrum step. Written for docs/FINDINGS.md section 1.1 (2000 against 60000 MNIST images).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load(path, seed, min_alpha):
    rows = [r for r in csv.DictReader(open(path)) if int(r["seed"]) == seed and float(r["alpha"]) >= min_alpha]
    rows.sort(key=lambda r: float(r["alpha"]))
    col = {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k != "status"}
    col["first_ratio"] = col["sharpness_first"] * col["alpha"] / 2
    return col


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    lo = float(argv[argv.index("--min-alpha") + 1]) if "--min-alpha" in argv else 0.0
    out, sweeps = argv[0], [(argv[1], load(argv[2], seed, lo)), (argv[3], load(argv[4], seed, lo))]
    fig, axs = plt.subplots(1, 3, figsize=(14, 4.2))
    for (label, c), mk, col in zip(sweeps, ["o", "s"], ["C0", "C3"]):
        a = c["alpha"]
        axs[0].plot(a, c["lambda1"], mk + "-", color=col, label=f"{label}: $\\lambda_1$ (200 steps)")
        axs[0].plot(a, c["lambda1_first_quarter"], mk + "--", color=col, mfc="none", alpha=0.7,
                    label=f"{label}: finite-time, steps 0-49")
        axs[0].plot(a, c["lambda1_last_quarter"], mk + ":", color=col, mfc="none", alpha=0.7,
                    label=f"{label}: finite-time, steps 150-199")
        t = np.where(np.isfinite(c["t90"]), c["t90"], np.nan)
        axs[1].plot(a, t, mk + "-", color=col, label=label)
        miss = ~np.isfinite(c["t90"])
        axs[1].plot(a[miss], np.full(miss.sum(), 205.0), "x", color=col, ms=8)
        axs[2].plot(a, c["first_ratio"], mk + "--", color=col, mfc="none", label=f"{label}: step 0")
        axs[2].plot(a, c["sharpness_last_ratio"], mk + "-", color=col, label=f"{label}: step 200")
    axs[0].axhline(0, color="k", lw=0.6)
    axs[0].set_yscale("symlog", linthresh=1e-3)
    axs[0].set_ylabel("exponent per step")
    axs[0].legend(fontsize=6)
    axs[1].set_ylabel("steps to 90 % training accuracy")
    axs[1].set_ylim(0, 210)
    axs[1].legend(fontsize=7)
    axs[2].axhline(1, color="k", lw=0.6)
    axs[2].set_yscale("log")
    axs[2].set_ylabel(r"$\lambda_{max}(H)$ / (2/$\alpha$)")
    axs[2].legend(fontsize=7)
    for ax in axs:
        ax.set_xscale("log")
        ax.set_xlabel(r"learning rate $\alpha$")
    fig.suptitle(f"784-64-10 tanh, weights N(0, 1), seed {seed}: {sweeps[0][0]} against {sweeps[1][0]}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"compare_sweeps: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
