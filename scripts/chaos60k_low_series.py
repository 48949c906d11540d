#!/usr/bin/env python3
"""Below the window, one seed per panel line (docs/FINDINGS.md 1.1): (a) the finite-time top exponent
of each learning rate's run file (per-step log growth of the first tangent vector, 10-step running
mean), (b) lambda_max(H) / (2/alpha) at the stored spectrum steps.

    scripts/chaos60k_low_series.py DIR OUT.png [--seed 0] [--alphas "0.5 0.1 0.05 0.01 0.005 0.001 0.0005"]

DIR holds lr_<alpha>_seed_<s>.h5 as scripts/sweep_seeds.sh writes them (a missing or unfinished run
is named on stderr and left out).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
import tdyn_runs  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alphas", default="0.5 0.1 0.05 0.01 0.005 0.001 0.0005")
    ap.add_argument("--window", type=int, default=10, help="steps of the running mean (default 10)")
    a = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = plt.cm.viridis(np.linspace(0, 0.92, len(a.alphas.split())))
    for c, alpha in zip(colors, a.alphas.split()):
        path = os.path.join(a.folder, f"lr_{alpha}_seed_{a.seed}.h5")
        if not os.path.exists(path):
            print(f"chaos60k_low_series: {path}: missing, left out", file=sys.stderr)
            continue
        with tdyn_runs.RunFile(path) as r:
            if r.status != "completed":
                print(f"chaos60k_low_series: {path}: status {r.status}, left out", file=sys.stderr)
                continue
            ly, sp = r.lyapunov(), r.spectrum()
            g = ly.log_growth[:, 0] / float(ly.attrs.get("qr_every", 1))
            w = a.window
            sm = np.convolve(g, np.ones(w) / w, mode="valid")
            st = ly.step[w - 1:]
            ax1.plot(st, sm, color=c, lw=1.2, label=f"alpha = {alpha}: lambda_1 = {ly.exponents[-1, 0]:.2g}")
            ratio = sp.lambda_max * float(alpha) / 2.0
            ax2.plot(sp.step, ratio, "o-", color=c, lw=1.2, label=f"alpha = {alpha}")
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_yscale("symlog", linthresh=1e-7, linscale=0.5)
    ticks = [-1e-4, -1e-5, -1e-6, -1e-7, 0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
    ax1.set_yticks(ticks, ["-1e-4", "-1e-5", "-1e-6", "-1e-7", "0", "1e-7", "1e-6", "1e-5", "1e-4", "1e-3"])
    ax1.set_ylim(-3e-4, 1e-3)  # room for the legend below the curves
    ax1.minorticks_off()
    ax1.set_xlabel("step")
    ax1.set_ylabel(f"finite-time lambda_1 per step ({a.window}-step mean)")
    ax1.set_title(f"(a) finite-time top exponent, seed {a.seed}; symlog, linear within ±1e-7")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.set_yscale("log")
    ax2.set_ylim(3e-4, 8)  # room for the legend above the curves
    ax2.set_xlabel("step")
    ax2.set_ylabel("lambda_max(H) / (2/alpha)")
    ax2.set_title(f"(b) sharpness against the stability limit, seed {a.seed}")
    ax2.legend(fontsize=7, loc="upper center", ncol=4)
    fig.suptitle("784-64-10 tanh, all 60000 images, below the window")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"chaos60k_low_series: {a.out}")


if __name__ == "__main__":
    main()
