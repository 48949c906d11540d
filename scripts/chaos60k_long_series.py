#!/usr/bin/env python3
"""Inside the window, past step 200 (docs/FINDINGS.md 1.1): (a) the finite-time top exponent of each
run (per-step log growth of the first tangent vector, running mean), (b) lambda_max(H) / (2/alpha)
at the stored spectrum steps, (c) the training accuracy. Colour: alpha (seed, when all runs share one alpha); line style: seed.

    scripts/chaos60k_long_series.py OUT.png RUN.h5...   [--window 25] [--title TEXT] [--acc-min 0.5] [--two-trajectory]

Each RUN.h5 is a run of `tdyn train --lyapunov M --spectrum-every E`; an unfinished one is named on
stderr and left out.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
import tdyn_runs  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--window", type=int, default=25, help="steps of the running mean (default 25)")
    ap.add_argument("--title", default="784-64-10 tanh, all 60000 images, inside the window, 1000 steps")
    ap.add_argument("--two-trajectory", action="store_true",
                    help="also draw (a) for the renormalised perturbed copy (/lyapunov/perturbation), thin")
    ap.add_argument("--acc-min", type=float, default=0.5, help="lower end of the accuracy axis (default 0.5)")
    a = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for path in a.runs:
        with tdyn_runs.RunFile(path) as r:
            if r.status != "completed":
                print(f"chaos60k_long_series: {path}: status {r.status}, left out", file=sys.stderr)
                continue
            ly, sp, tr = r.lyapunov(), r.spectrum(), r.trajectory()
            alpha, seed = r.alpha, int(r.config["seed"])
            g = ly.log_growth[:, 0] / float(ly.attrs.get("qr_every", 1))
            pt = r.perturbation() if a.two_trajectory else None
            gp = (pt.step, pt.log_growth / float(ly.attrs.get("qr_every", 1))) if pt is not None else None
            runs.append((alpha, seed, ly.step, g, sp.step, sp.lambda_max * alpha / 2.0, tr.step, tr.accuracy, gp))
    if not runs:
        sys.exit("chaos60k_long_series: no finished run")
    alphas = sorted({r[0] for r in runs})
    colors = dict(zip(alphas, plt.cm.plasma(np.linspace(0.1, 0.75, len(alphas)))))
    styles = ["-", "--", ":", "-."]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.6))
    w = a.window
    for alpha, seed, st, g, sst, ratio, tst, acc, gp in sorted(runs, key=lambda r: r[:2]):
        c, ls = colors[alpha], styles[seed % len(styles)]
        if len(alphas) == 1:  # one learning rate: colour by seed too
            c = plt.cm.tab10(seed % 10)
        label = f"alpha = {alpha:g}, seed {seed}"
        ax1.plot(st[w - 1:], np.convolve(g, np.ones(w) / w, mode="valid"), color=c, ls=ls, lw=1.1, label=label)
        if gp is not None:
            ax1.plot(gp[0][w - 1:], np.convolve(gp[1], np.ones(w) / w, mode="valid"), color=c, ls=ls, lw=0.5,
                     alpha=0.6, label=label + ", two-trajectory")
        ax2.plot(sst, ratio, "o", color=c, ls=ls, ms=3, lw=1.1, label=label)
        ax3.plot(tst, acc, color=c, ls=ls, lw=1.1, label=label)
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_yscale("symlog", linthresh=1e-3, linscale=0.5)
    ax1.set_xlabel("step")
    ax1.set_ylabel(f"finite-time lambda_1 per step ({w}-step mean)")
    ax1.set_title("(a) finite-time top exponent; symlog, linear within ±1e-3")
    if a.two_trajectory:
        ax1.legend(fontsize=7, loc="upper right")
    ax2.axhline(1, color="k", lw=0.6)
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("lambda_max(H) / (2/alpha)")
    ax2.set_title("(b) sharpness against the stability limit")
    ax3.set_ylim(a.acc_min, 1)
    ax3.set_xlabel("step")
    ax3.set_ylabel("training accuracy")
    ax3.set_title("(c) training accuracy")
    ax3.legend(fontsize=7, loc="lower right")
    fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"chaos60k_long_series: {a.out}")


if __name__ == "__main__":
    main()
