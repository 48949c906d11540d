#!/usr/bin/env python3
"""The most a perturbation can grow over windows of several lengths (tdyn growth), per run.

    scripts/growth_windows.py RUN.h5 [RUN.h5 ...] --from T0 --to T1 --windows "25 50 100 200" \\
        [--vectors 1] [--csv OUT.csv] [--keep DIR [--reuse]]

For each run and each W, tdyn growth runs on a copy of the run file (in --keep DIR, default a
temporary folder, so the run itself is not touched and one /growth group per W is kept) over
windows of W steps from T0 to T1. One CSV row per window: run, alpha, W, from, to, ln sigma_i / W,
error / W, sweeps, converged, and the run's own tangent vector v_1 over the window (its in-line
/lyapunov rows, per step; never above ln sigma_1 / W); then a table per run: mean, min and max of
ln sigma_1 / W over the windows of each length. As W grows, ln sigma_1 / W falls toward the top Lyapunov exponent from
above (docs/MATH.md): a value that stays well above 0 over long windows is growth that persists.
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "notebooks"))
import tdyn_runs  # noqa: E402  (the one reader of run files)


def done(copy, t1, w, k):
    """The copy already holds /growth up to t1 with windows of w and k values (--reuse)."""
    if not os.path.isfile(copy):
        return False
    with tdyn_runs.RunFile(copy) as r:
        g = r.growth()
        return g is not None and g.attrs.get("window") == w and g.attrs.get("vectors") == k and len(g) and \
            int(g.end[-1]) == t1


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
    p.add_argument("--reuse", action="store_true", help="keep the copies in --keep DIR that already hold the windows")
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
        with tdyn_runs.RunFile(run) as r:
            alpha = r.alpha
            ly = r.lyapunov()  # the run's own v_1, to set beside the bound
            q = int(ly.attrs.get("qr_every", 1)) if ly is not None else 0

        def inline(start, end):
            """The run's v_1 over J(start) .. J(end - 1), per step (NaN without rows covering it)."""
            if ly is None:
                return float("nan")
            # a row at step t holds the growth through J(t - q + 1) .. J(t)
            rows = (ly.step - q + 1 >= start) & (ly.step <= end - 1)
            n = int(rows.sum()) * q
            return float(ly.log_growth[rows, 0].sum() / n) if n == end - start else float("nan")

        for w in windows:
            copy = os.path.join(keep, f"{base}_g{a.t0}-{a.t1}_w{w}.h5")
            if not (a.reuse and done(copy, a.t1, w, a.vectors)):
                shutil.copyfile(run, copy)
                cmd = [a.tdyn, "growth", copy, "--force", "--from", str(a.t0), "--to", str(a.t1), "--window",
                       str(w), "--vectors", str(a.vectors), "--quiet"]
                subprocess.run(cmd, check=True)
            with tdyn_runs.RunFile(copy) as r:
                g = r.growth()
                for i in range(len(g)):
                    a0, a1 = int(g.start[i]), int(g.end[i])
                    rows.append(dict(run=run, alpha=alpha, window=w, start=a0, end=a1,
                                     exponents=list(g.exponents[i]), error=list(g.error[i] / w),
                                     sweeps=int(g.passes[i]), converged=int(g.converged[i]), inline=inline(a0, a1)))
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["run", "alpha", "W", "from", "to"] + [f"ln_sigma{i + 1}_per_step" for i in range(a.vectors)]
                         + [f"error{i + 1}_per_step" for i in range(a.vectors)] + ["sweeps", "converged", "inline_v1_per_step"])
            for r in rows:
                out.writerow([r["run"], r["alpha"], r["window"], r["start"], r["end"]]
                             + [f"{x:.6g}" for x in r["exponents"]] + [f"{x:.3g}" for x in r["error"]]
                             + [r["sweeps"], r["converged"], f"{r['inline']:.6g}"])
    print(f"ln sigma_1 / W over windows of {a.t0}..{a.t1}: mean (min .. max, windows), all converged unless said;"
          " [the run's own v_1 over the same windows: mean]")
    for run in a.runs:
        line = [os.path.basename(run)]
        for w in windows:
            x = np.array([r["exponents"][0] for r in rows if r["run"] == run and r["window"] == w])
            bad = sum(1 for r in rows if r["run"] == run and r["window"] == w and not r["converged"])
            v = np.array([r["inline"] for r in rows if r["run"] == run and r["window"] == w])
            line.append(f"W {w}: {x.mean():.4f} ({x.min():.4f} .. {x.max():.4f}, {len(x)})"
                        + (f" {bad} NOT converged" if bad else "") + f" [{v.mean():.2g}]")
        print("  ".join(line))


if __name__ == "__main__":
    main()
