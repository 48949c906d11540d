#!/usr/bin/python3
"""Tables and figures of a learning-rate sweep over seeds (scripts/sweep_seeds.sh).

    sweep_summary.py summary DIR                  # DIR/runs.csv, DIR/summary.csv, DIR/figures/*.png
    sweep_summary.py summary DIR --with OLD.csv   # the same, with the rows of an earlier runs.csv
    sweep_summary.py table DIR                    # summary.csv as a Markdown table
    sweep_summary.py perturb RUN.h5 OUT.h5 --eps E --seed S   # theta_0 of RUN, weights + U(-E, E)
    sweep_summary.py distance REF.h5 PERT.h5 OUT.csv          # |theta'_t - theta_t| per step

Per run (runs.csv): status, t90 (first step with training accuracy >= 0.9), the top three running
Lyapunov exponents at the last step (tangent vectors with QR), the finite-time top exponent
averaged over the first and the last quarter of the run, the two-trajectory exponent of tdyn
(--perturbation: renormalised every q steps), the distance fits of arXiv 2506.08523 (least-squares
slope of ln d(t) while d < 1, and ln(d_T / d_0) / T), and the sharpness against 2/alpha.
summary.csv: mean, standard deviation and count over seeds per alpha.

--with OLD.csv (may be repeated): the rows of a runs.csv written earlier by `summary` (for runs
whose files were not kept) are put beside the rows computed from DIR's run files; a row computed
from a run file wins over an OLD row with the same (alpha, seed), and of two OLD files the later
wins. OLD's columns must be those of DIR's rows (else a one-line error). runs.csv, summary.csv and
sweep.png are then made from all rows exactly as without --with; series.png only from DIR's run
files (the lowest seed among them; none: not written). With no run files in DIR the rows are the
OLD ones alone, so `summary EMPTY_DIR --with runs.csv` recomputes a summary.csv from a runs.csv.
"""
import csv
import glob
import math
import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
import tdyn_runs  # noqa: E402

NAN = math.nan


def perturb(run, out, eps, seed):
    """Params file: theta_0 of RUN with every weight (not the biases) moved by U(-eps, eps)."""
    with h5py.File(run, "r") as f:
        arch = np.asarray(f.attrs["arch"], dtype=np.int64)
        steps = f["/trajectory/theta_step"][:]
        theta = np.array(f["/trajectory/theta"][int(np.flatnonzero(steps == 0)[0])])
    rng = np.random.default_rng(1_000_003 + seed)
    i = 0
    for n_in, n_out in zip(arch[:-1], arch[1:]):
        w = n_in * n_out
        theta[i:i + w] += rng.uniform(-eps, eps, w)
        i += w + n_out  # the biases stay
    assert i == theta.size
    with h5py.File(out, "w") as f:
        f["/params/theta"] = theta
        f.attrs["arch"] = arch


def distance(ref, pert, out):
    with h5py.File(ref, "r") as a, h5py.File(pert, "r") as b:
        ta, tb = a["/trajectory/theta"], b["/trajectory/theta"]
        sa, sb = a["/trajectory/theta_step"][:], b["/trajectory/theta_step"][:]
        n = min(len(sa), len(sb))
        with open(out, "w") as f:
            f.write("step,distance\n")
            for j in range(n):
                assert sa[j] == sb[j]
                f.write(f"{int(sa[j])},{np.linalg.norm(tb[j] - ta[j]):.17g}\n")


def read_distance(path):
    if not os.path.exists(path):
        return None
    d = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return d[:, 0], d[:, 1]


EARLY = 25  # steps of the early-time comparison of distance and tangent exponents


def distance_fits(step, d):
    """(slope of ln d over the steps before d first reaches 1, the same over steps 0..EARLY only,
    ln(d_T/d_0)/T)."""
    ok = np.isfinite(d) & (d > 0)
    step, d = step[ok], d[ok]
    if len(d) < 3:
        return NAN, NAN, NAN
    sat = np.flatnonzero(d >= 1.0)
    end = sat[0] if len(sat) else len(d)
    fit = np.polyfit(step[:end], np.log(d[:end]), 1)[0] if end >= 3 else NAN
    e = min(end, EARLY + 1)
    early = np.polyfit(step[:e], np.log(d[:e]), 1)[0] if e >= 3 else NAN
    return fit, early, math.log(d[-1] / d[0]) / (step[-1] - step[0])


def run_row(path, times):
    m = re.search(r"lr_([^_]+)_seed_(\d+)\.h5$", path)
    row = {"alpha": float(m.group(1)), "seed": int(m.group(2))}
    with tdyn_runs.RunFile(path) as run:
        c = run.config
        t, ly, pe, sp = run.trajectory(), run.lyapunov(), run.perturbation(), run.spectrum()
        row["status"] = c.get("status", "?")
        row["diverged_at"] = int(c.get("diverged_at", -1))
        row["last_step"] = int(t.step[-1])
        row["final_loss"] = float(t.loss[-1])
        row["final_accuracy"] = float(t.accuracy[-1])
        row["max_accuracy"] = float(np.nanmax(t.accuracy))
        hit = np.flatnonzero(t.accuracy >= 0.9)
        row["t90"] = float(t.step[hit[0]]) if len(hit) else NAN
        for k in range(3):
            row[f"lambda{k + 1}"] = float(ly.exponents[-1, k]) if ly is not None and ly.exponents.shape[1] > k else NAN
        if ly is not None and len(ly.step) >= 8:
            g = ly.log_growth[:, 0] / float(ly.attrs.get("qr_every", 1))
            q = max(1, len(g) // 4)
            row["lambda1_first_quarter"], row["lambda1_last_quarter"] = float(np.mean(g[:q])), float(np.mean(g[-q:]))
            row["lambda1_early"] = float(np.mean(g[ly.step < EARLY]))
        else:
            row["lambda1_first_quarter"] = row["lambda1_last_quarter"] = row["lambda1_early"] = NAN
        row["benettin"] = float(pe.exponent[-1]) if pe is not None and len(pe.step) else NAN
        if sp is not None and len(sp.step):
            ratio = sp.lambda_max * c["alpha"] / 2.0
            row["sharpness_first"] = float(sp.lambda_max[0])
            row["sharpness_last"] = float(sp.lambda_max[-1])
            row["sharpness_max_ratio"] = float(np.nanmax(ratio))
            row["sharpness_last_ratio"] = float(ratio[-1])
        else:
            row["sharpness_first"] = row["sharpness_last"] = row["sharpness_max_ratio"] = row["sharpness_last_ratio"] = NAN
    dd = read_distance(os.path.join(os.path.dirname(path), f"distance_{m.group(1)}_seed_{m.group(2)}.csv"))
    row["distance_fit"], row["distance_fit_early"], row["distance_end"] = distance_fits(*dd) if dd else (NAN, NAN, NAN)
    row["distance_final"] = float(dd[1][-1]) if dd else NAN
    row["seconds"], row["cpu_seconds"] = times.get(("main", m.group(1), m.group(2)), (NAN, NAN))
    extra = [times.get((k, m.group(1), m.group(2)), (0.0, 0.0))[1] for k in ("ref", "pert")]
    row["distance_cpu_seconds"] = sum(extra) if dd else NAN
    return row


NUMERIC = ["final_loss", "final_accuracy", "max_accuracy", "t90", "lambda1", "lambda2", "lambda3",
           "lambda1_first_quarter", "lambda1_last_quarter", "lambda1_early", "benettin", "distance_fit",
           "distance_fit_early", "distance_end",
           "distance_final", "sharpness_first", "sharpness_last", "sharpness_max_ratio", "sharpness_last_ratio", "seconds", "cpu_seconds",
           "distance_cpu_seconds"]


def fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else str(v)


INT_COLS = {"seed", "diverged_at", "last_step"}
STR_COLS = {"status"}


def read_runs(path):
    """(columns, rows) of a runs.csv written by summary(), with the types run_row() gives."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        cols = next(reader, None)
        if not cols or "alpha" not in cols or "seed" not in cols:
            sys.exit(f"sweep_summary: {path}: not a runs.csv of sweep_summary.py (no alpha and seed columns)")
        rows = []
        for n, vals in enumerate(reader, start=2):
            if not vals:
                continue
            if len(vals) != len(cols):
                sys.exit(f"sweep_summary: {path}: line {n} has {len(vals)} fields, the header {len(cols)}")
            try:
                rows.append({c: v if c in STR_COLS else int(v) if c in INT_COLS else float(v)
                             for c, v in zip(cols, vals)})
            except ValueError as e:
                sys.exit(f"sweep_summary: {path}: line {n}: {e}")
    return cols, rows


def merge_rows(cols, rows, olds):
    """rows (from run files, columns cols; cols None: no run files) with the rows of the runs.csv
    files olds: a computed row wins over an old one of the same (alpha, seed), a later old file
    over an earlier one. Returns (cols, rows sorted by (alpha, seed), old rows kept)."""
    byk = {}
    for path in olds:
        ocols, orows = read_runs(path)
        if cols is None:
            cols = ocols
        elif ocols != cols:
            missing = [c for c in cols if c not in ocols]
            extra = [c for c in ocols if c not in cols]
            what = (f"missing {', '.join(missing) or '-'}; extra {', '.join(extra) or '-'}" if missing or extra
                    else "same names in another order")
            sys.exit(f"sweep_summary: {path}: its columns differ from those of the rows being merged ({what})")
        for r in orows:
            byk[(r["alpha"], r["seed"])] = r
    computed = {(r["alpha"], r["seed"]) for r in rows}
    kept = [r for k, r in byk.items() if k not in computed]
    out = rows + kept
    out.sort(key=lambda r: (r["alpha"], r["seed"]))
    return cols, out, len(kept)


def summary(folder, olds=()):
    times = {}
    tpath = os.path.join(folder, "times.csv")
    if os.path.exists(tpath):
        with open(tpath) as f:
            for r in csv.DictReader(f):
                key = (r["kind"], r["alpha"], r["seed"])  # a resumed run adds its passes
                w, c = times.get(key, (0.0, 0.0))
                try:
                    times[key] = (w + float(r["seconds"]), c + float(r["cpu_seconds"]))
                except (KeyError, TypeError, ValueError):
                    pass  # a pass killed with its timer has no times
    if olds:
        os.makedirs(folder, exist_ok=True)
    paths = sorted(glob.glob(os.path.join(folder, "lr_*_seed_*.h5")))
    rows = [run_row(p, times) for p in paths]
    rows.sort(key=lambda r: (r["alpha"], r["seed"]))
    if not rows and not olds:
        sys.exit(f"sweep_summary: no lr_*_seed_*.h5 in {folder}")
    series_seed = min(r["seed"] for r in rows) if rows else None
    cols, rows, n_old = merge_rows(list(rows[0]) if rows else None, rows, olds)
    if not rows:
        sys.exit(f"sweep_summary: no lr_*_seed_*.h5 in {folder} and no rows in {', '.join(olds)}")
    with open(os.path.join(folder, "runs.csv"), "w") as f:
        f.write(",".join(cols) + "\n")
        for r in rows:
            f.write(",".join(fmt(r[c]) for c in cols) + "\n")
    alphas = sorted({r["alpha"] for r in rows})
    summ = []
    for a in alphas:
        rs = [r for r in rows if r["alpha"] == a]
        s = {"alpha": a, "seeds": len(rs), "completed": sum(r["status"] == "completed" for r in rs),
             "reached_90": sum(np.isfinite(r["t90"]) for r in rs)}
        for c in NUMERIC:
            v = np.array([r[c] for r in rs], dtype=float)
            v = v[np.isfinite(v)]
            s[c + "_mean"] = float(v.mean()) if len(v) else NAN
            s[c + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else NAN
        summ.append(s)
    with open(os.path.join(folder, "summary.csv"), "w") as f:
        f.write(",".join(summ[0]) + "\n")
        for s in summ:
            f.write(",".join(fmt(v) for v in s.values()) + "\n")
    figures(folder, rows, summ, series_seed)
    also = f" ({n_old} from {', '.join(olds)})" if olds else ""
    print(f"sweep_summary: {len(rows)} runs{also}, {len(alphas)} learning rates -> {folder}/runs.csv, summary.csv, figures/")


def figures(folder, rows, summ, seed0):
    """sweep.png from every row; series.png from the run files of seed seed0 (None: not written)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = os.path.join(folder, "figures")
    os.makedirs(out, exist_ok=True)
    a = np.array([s["alpha"] for s in summ])

    def band(ax, key, label, **kw):
        m, e = np.array([s[key + "_mean"] for s in summ]), np.array([s[key + "_std"] for s in summ])
        ax.errorbar(a, m, yerr=np.nan_to_num(e), capsize=3, marker="o", ms=4, label=label, **kw)

    fig, axs = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
    ax = axs[0]
    band(ax, "lambda1", r"$\lambda_1$ tangent (QR)")
    band(ax, "lambda2", r"$\lambda_2$", alpha=0.6)
    band(ax, "lambda3", r"$\lambda_3$", alpha=0.6)
    band(ax, "benettin", "two-trajectory, renormalised (tdyn)", ls="--")
    band(ax, "distance_fit", "distance fit, weights U(±1e-8) (paper)", ls=":")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("exponent per step")
    ax.set_yscale("symlog", linthresh=1e-5)
    ax.legend(fontsize=7)
    ax = axs[1]
    band(ax, "t90", "steps to 90 % training accuracy")
    n90 = [f"{s['reached_90']}/{s['seeds']}" for s in summ]
    for x, m, lab in zip(a, [s["t90_mean"] for s in summ], n90):
        ax.annotate(lab, (x, m if np.isfinite(m) else 0), fontsize=6, textcoords="offset points", xytext=(0, 5))
    ax.set_ylabel("t90 (steps)")
    ax.legend(fontsize=7)
    ax = axs[2]
    band(ax, "sharpness_max_ratio", r"max$_t$ $\lambda_{max}(H)$ / (2/$\alpha$)")
    band(ax, "sharpness_last_ratio", r"last $\lambda_{max}(H)$ / (2/$\alpha$)", ls="--")
    ax.axhline(1, color="k", lw=0.6)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel(r"learning rate $\alpha$")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sweep.png"), dpi=110)
    plt.close(fig)

    if seed0 is None:
        return
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate([r for r in rows if r["seed"] == seed0]):
        col = cmap(i / max(1, len(summ) - 1))
        path = os.path.join(folder, f"lr_{fmt_alpha(r['alpha'], folder)}_seed_{seed0}.h5")
        if not os.path.exists(path):
            continue  # a row of --with: no run file
        with tdyn_runs.RunFile(path) as run:
            ly = run.lyapunov()
        if ly is not None and len(ly.step) > 10:
            g = ly.log_growth[:, 0]
            w = 10
            sm = np.convolve(g, np.ones(w) / w, mode="valid")
            axs[0].plot(ly.step[w - 1:], sm, color=col, lw=1, label=f"{r['alpha']:g}")
        dd = read_distance(os.path.join(folder, f"distance_{fmt_alpha(r['alpha'], folder)}_seed_{seed0}.csv"))
        if dd:
            axs[1].semilogy(dd[0], dd[1], color=col, lw=1, label=f"{r['alpha']:g}")
    axs[0].axhline(0, color="k", lw=0.6)
    axs[0].set_xlabel("step")
    axs[0].set_ylabel("finite-time top exponent (10-step mean)")
    axs[0].set_yscale("symlog", linthresh=1e-2)
    axs[0].legend(fontsize=6, ncol=2, title=r"$\alpha$", title_fontsize=7)
    axs[1].set_xlabel("step")
    axs[1].set_ylabel(r"$|\theta'_t - \theta_t|$ (weights perturbed by U(±1e-8))")
    fig.suptitle(f"seed {seed0}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "series.png"), dpi=110)
    plt.close(fig)


def fmt_alpha(alpha, folder):
    """The spelling of alpha in the file names of the folder (the sweep keeps what --lrs said)."""
    for p in glob.glob(os.path.join(folder, "lr_*_seed_*.h5")):
        s = re.search(r"lr_([^_]+)_seed_", p).group(1)
        if float(s) == alpha:
            return s
    return f"{alpha:g}"


def table(folder):
    """summary.csv as a Markdown table: mean ± standard deviation over seeds (n = seeds)."""
    with open(os.path.join(folder, "summary.csv")) as f:
        rows = list(csv.DictReader(f))

    def ms(r, k, p=3):
        m, e = float(r[k + "_mean"]), float(r[k + "_std"])
        if not np.isfinite(m):
            return "-"
        return f"{m:.{p}g}" + (f" ± {e:.2g}" if np.isfinite(e) else "")

    print("| alpha | n | lambda_1 | lambda_2 | lambda_3 | finite-time lambda_1, steps 0-49 / 150-199 | two-traj. tdyn "
          "(renorm.) | distance fit, steps 0-25 (tangent, same steps) | ln(d_200/d_0)/200 | t90 (reached) | "
          "lambda_max(H) / (2/alpha): step 0 / 200 | final acc |")
    print("|" + "---|" * 12)
    for r in rows:
        a = float(r["alpha"])
        first = float(r["sharpness_first_mean"]) * a / 2
        print(f"| {a:g} | {r['seeds']} | {ms(r, 'lambda1')} | {ms(r, 'lambda2')} | {ms(r, 'lambda3')} | "
              f"{ms(r, 'lambda1_first_quarter')} / {ms(r, 'lambda1_last_quarter')} | {ms(r, 'benettin')} | "
              f"{ms(r, 'distance_fit_early')} ({ms(r, 'lambda1_early')}) | {ms(r, 'distance_end')} | "
              f"{ms(r, 't90')} ({r['reached_90']}/{r['seeds']}) | {first:.3g} / {ms(r, 'sharpness_last_ratio')} | "
              f"{ms(r, 'final_accuracy')} |")


def main(argv):
    if len(argv) >= 2 and argv[0] == "summary":
        rest, olds = argv[2:], []
        while rest:
            if rest[0] != "--with" or len(rest) < 2:
                sys.exit(f"sweep_summary: summary: unexpected '{rest[0]}' (expected --with OLD_runs.csv)")
            if not os.path.isfile(rest[1]):
                sys.exit(f"sweep_summary: --with {rest[1]}: no such file")
            olds.append(rest[1])
            rest = rest[2:]
        summary(argv[1], olds)
    elif len(argv) >= 2 and argv[0] == "table":
        table(argv[1])
    elif len(argv) >= 3 and argv[0] == "perturb":
        eps = float(argv[argv.index("--eps") + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        perturb(argv[1], argv[2], eps, seed)
    elif len(argv) == 4 and argv[0] == "distance":
        distance(argv[1], argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
