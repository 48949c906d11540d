#!/usr/bin/python3
"""Sharpness against 2/alpha in the runs of one folder (edge of stability, issue 18 parts 2 and 3).

    stability_summary.py DIR [-o FIGURE.png] [--csv OUT.csv]

For each DIR/lr_<alpha>_seed_<s>.h5 (scripts/sweep_seeds.sh): the first analysed step at which
lambda_max(H) >= 2/alpha, the ratio lambda_max / (2/alpha) at and after it (mean, standard deviation,
min, max over the analysed steps from there on), how often the loss rose from one step to the next
after it, the bottom eigenvalue of H where a spectrum group holds it, the running top Lyapunov exponent
at the end and the finite-time top exponent (mean log growth per step) before and after the crossing.
The CSV also has the late phase: the ratio at the last analysed step, its mean, sd and the fraction of
analysed steps at or above 2/alpha over the last half of the run (steps >= steps/2), the finite-time
top exponent there, and the top three running exponents at the end, and the ratio after the crossing
split by the parity of the analysed step (GD at the edge of stability oscillates with period ~2; a
second table is printed when odd steps were analysed, e.g. with --spectrum-every 5).
--settle prints a second table for runs that start above 2/alpha (does lambda_max settle below it?):
the ratio at steps 0, 10, 30, 50, 100, 200 (those analysed), the first analysed step below 2/alpha
and the last one at or above it, the late-phase figures above and the loss and accuracy at the end.
Prints a Markdown table; the figure has sharpness / (2/alpha), the loss and the finite-time exponent.
"""
import argparse
import glob
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
import tdyn_runs  # noqa: E402


def analyse(path):
    m = re.search(r"lr_([^_]+)_seed_(\d+)\.h5$", path)
    r = {"alpha": float(m.group(1)), "seed": int(m.group(2)), "path": path}
    with tdyn_runs.RunFile(path) as run:
        t, s, ly = run.trajectory(), run.spectrum(), run.lyapunov()
        r["status"], r["steps"] = run.status, int(t.step[-1])
        r["loss0"], r["loss"], r["accuracy"] = float(t.loss[0]), float(t.loss[-1]), float(t.accuracy[-1])
        bottoms = {}
        for name in run.spectrum_names():
            g = run.spectrum(name)
            if g.attrs.get("which") in ("bottom", "both"):
                for st, b in zip(g.step, g.hessian_bottom[:, 0]):
                    bottoms[int(st)] = float(b)
        r["bottom"] = bottoms
        r["t"], r["loss_series"] = t.step, t.loss
        r["s_step"], r["ratio"] = s.step, s.lambda_max * r["alpha"] / 2.0
        r["lambda_max"] = s.lambda_max
        # Starting below 2/alpha: the first analysed step at or above it. Starting above (a catapult):
        # the first analysed step back below 1.05 x 2/alpha; the statistics "after" start there.
        r["above_at_start"] = bool(r["ratio"][0] >= 1.0)
        hit = np.flatnonzero(r["ratio"] < 1.05 if r["above_at_start"] else r["ratio"] >= 1.0)
        r["first"] = int(s.step[hit[0]]) if len(hit) else math.nan
        if len(hit):
            after = r["ratio"][hit[0]:]
            r["after_mean"], r["after_std"] = float(after.mean()), float(after.std(ddof=1)) if len(after) > 1 else math.nan
            r["after_min"], r["after_max"], r["after_n"] = float(after.min()), float(after.max()), len(after)
            # GD at the edge of stability oscillates with period ~2: the ratio at even and at odd
            # analysed steps after the crossing (both occur with --spectrum-every 5, say)
            st_after = s.step[hit[0]:]
            for name, par in (("even", 0), ("odd", 1)):
                x = after[st_after % 2 == par]
                r[f"after_{name}_mean"] = float(x.mean()) if len(x) else math.nan
                r[f"after_{name}_std"] = float(x.std(ddof=1)) if len(x) > 1 else math.nan
                r[f"after_{name}_n"] = len(x)
            dl = np.diff(t.loss[int(r["first"]):])
            r["loss_rises"] = float(np.mean(dl > 0)) if len(dl) else math.nan
        else:
            r.update(after_mean=math.nan, after_std=math.nan, after_min=math.nan, after_max=math.nan, after_n=0,
                     loss_rises=math.nan, after_even_mean=math.nan, after_even_std=math.nan, after_even_n=0,
                     after_odd_mean=math.nan, after_odd_std=math.nan, after_odd_n=0)
        r["ratio_max"] = float(np.nanmax(r["ratio"]))
        r["ratio_last"] = float(r["ratio"][-1])
        late = r["ratio"][s.step >= r["steps"] / 2]
        r["late_mean"] = float(late.mean()) if len(late) else math.nan
        r["late_std"] = float(late.std(ddof=1)) if len(late) > 1 else math.nan
        r["late_above"] = float(np.mean(late >= 1.0)) if len(late) else math.nan
        r["late_n"] = len(late)
        if ly is not None and len(ly.step):
            r["ly_step"], r["ly_growth"] = ly.step, ly.log_growth[:, 0] / float(ly.attrs.get("qr_every", 1))
            r["lambda1"] = float(ly.exponents[-1, 0])
            f = r["first"]
            pre = r["ly_growth"][ly.step < f] if np.isfinite(f) else r["ly_growth"]
            post = r["ly_growth"][ly.step >= f] if np.isfinite(f) else np.array([])
            r["ft_before"] = float(pre.mean()) if len(pre) else math.nan
            r["ft_after"] = float(post.mean()) if len(post) else math.nan
            lt = r["ly_growth"][ly.step >= r["steps"] / 2]
            r["ft_late"] = float(lt.mean()) if len(lt) else math.nan
            r["lambda2"], r["lambda3"] = (float(ly.exponents[-1, k]) if ly.exponents.shape[1] > k else math.nan
                                          for k in (1, 2))
        else:
            r["ly_step"] = None
            r["lambda1"] = r["ft_before"] = r["ft_after"] = math.nan
            r["ft_late"] = r["lambda2"] = r["lambda3"] = math.nan
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("-o", "--figure")
    ap.add_argument("--csv")
    ap.add_argument("--settle", action="store_true", help="also the table of settling below 2/alpha")
    a = ap.parse_args(argv)
    rows = sorted((analyse(p) for p in glob.glob(os.path.join(a.folder, "lr_*_seed_*.h5"))),
                  key=lambda r: (r["alpha"], r["seed"]))
    if not rows:
        sys.exit(f"stability_summary: no lr_*_seed_*.h5 in {a.folder}")
    cols = ["alpha", "seed", "status", "steps", "loss0", "loss", "accuracy", "first", "after_mean", "after_std",
            "after_min", "after_max", "after_n", "ratio_max", "loss_rises", "lambda1", "ft_before", "ft_after",
            "ratio_last", "late_mean", "late_std", "late_above", "late_n", "ft_late", "lambda2", "lambda3",
            "after_even_mean", "after_even_std", "after_even_n", "after_odd_mean", "after_odd_std", "after_odd_n"]
    print("| alpha | 2/alpha | seed | status | steps | loss (start -> end) | acc | lambda_max / (2/alpha): first, after 1st reach (mean ± sd, min-max, n) | max ratio | loss rises after | bottom eig (step: value) | lambda_1 | finite-time before / after |")
    print("|" + "---|" * 13)
    for r in rows:
        b = ", ".join(f"{k}: {v:.3g}" for k, v in sorted(r["bottom"].items())) or "-"
        first = "never" if not np.isfinite(r["first"]) else f"step {r['first']}"
        if r["above_at_start"]:
            first = f"starts at {r['ratio'][0]:.2f}, below 1.05 from {first}"
        print(f"| {r['alpha']:g} | {2 / r['alpha']:.4g} | {r['seed']} | {r['status']} | {r['steps']} | "
              f"{r['loss0']:.4g} -> {r['loss']:.4g} | {r['accuracy']:.3f} | {first}; {r['after_mean']:.3f} ± "
              f"{r['after_std']:.3f}, {r['after_min']:.3f}-{r['after_max']:.3f}, n = {r['after_n']} | "
              f"{r['ratio_max']:.3f} | {r['loss_rises']:.2f} | {b} | {r['lambda1']:.4f} | "
              f"{r['ft_before']:.4f} / {r['ft_after']:.4f} |")
    if any(r["after_odd_n"] for r in rows):
        print("\n| alpha | seed | ratio after the first reach at even analysed steps: mean ± sd (n) | at odd steps |")
        print("|" + "---|" * 4)
        for r in rows:
            print(f"| {r['alpha']:g} | {r['seed']} | {r['after_even_mean']:.3f} ± {r['after_even_std']:.3f} "
                  f"({r['after_even_n']}) | {r['after_odd_mean']:.3f} ± {r['after_odd_std']:.3f} ({r['after_odd_n']}) |")
    if a.settle:
        print("\n| alpha | 2/alpha | steps | lambda_max / (2/alpha) at steps 0, 10, 30, 50, 100, 200 | first step below | "
              "last step at or above | second half: mean ± sd (fraction >= 1) | lambda_1, lambda_2, lambda_3 | "
              "finite-time top exponent, steps 0-19 / second half | loss, accuracy at the end |")
        print("|" + "---|" * 10)
        for r in rows:
            at = []
            for st in (0, 10, 30, 50, 100, 200):
                k = np.flatnonzero(r["s_step"] == st)
                if len(k):
                    at.append(f"{r['ratio'][k[0]]:.3f}")
            below = np.flatnonzero(r["ratio"] < 1.0)
            above = np.flatnonzero(r["ratio"] >= 1.0)
            fb = f"{int(r['s_step'][below[0]])}" if len(below) else "never"
            la = f"{int(r['s_step'][above[-1]])}" if len(above) else "none"
            early = (f"{np.mean(r['ly_growth'][r['ly_step'] < 20]):.4f}" if r["ly_step"] is not None else "-")
            print(f"| {r['alpha']:g} | {2 / r['alpha']:.4g} | {r['steps']} | {', '.join(at)} | {fb} | {la} | "
                  f"{r['late_mean']:.3f} ± {r['late_std']:.3f} ({r['late_above']:.2f}) | {r['lambda1']:.4f}, "
                  f"{r['lambda2']:.4f}, {r['lambda3']:.4f} | {early} / {r['ft_late']:.4f} | "
                  f"{r['loss']:.4f}, {r['accuracy']:.4f} |")
    if a.csv:
        with open(a.csv, "w") as f:
            f.write(",".join(cols) + "\n")
            for r in rows:
                f.write(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n")
    if a.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axs = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True)
        for i, r in enumerate(rows):
            col = f"C{i}"
            lab = rf"$\alpha$ = {r['alpha']:g} (2/$\alpha$ = {2 / r['alpha']:.3g})"
            if len({q["seed"] for q in rows}) > 1:
                lab += f", seed {r['seed']}"
            axs[0].plot(r["s_step"], r["lambda_max"], ".-", color=col, ms=3, lw=1, label=lab)
            axs[0].axhline(2 / r["alpha"], color=col, ls="--", lw=0.8)
            axs[1].semilogy(r["t"], r["loss_series"], color=col, lw=1)
            if r["ly_step"] is not None and len(r["ly_step"]) > 10:
                w = 10
                axs[2].plot(r["ly_step"][w - 1:], np.convolve(r["ly_growth"], np.ones(w) / w, mode="valid"), color=col,
                            lw=1)
            if np.isfinite(r["first"]):
                for ax in axs:
                    ax.axvline(r["first"], color=col, lw=0.5, alpha=0.5)
        axs[0].set_ylabel(r"$\lambda_{max}(H)$ (dashed: 2/$\alpha$)")
        axs[0].legend(fontsize=7)
        axs[1].set_ylabel("training loss")
        axs[2].axhline(0, color="k", lw=0.6)
        axs[2].set_ylabel("finite-time top exponent\n(10-step mean)")
        axs[2].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(a.figure, dpi=110)
        print(f"\nstability_summary: wrote {a.figure}")


if __name__ == "__main__":
    main()
