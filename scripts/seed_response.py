#!/usr/bin/python3
"""Tables and figures of `tdyn response` on the seed network (docs/RESPONSE.md, "Seed network").

    scripts/seed_response.py collect RUN.h5 PARAM TAG [-o DIR]   # /response/PARAM/loss arrays -> DIR/TAG_*.csv
    scripts/seed_response.py record  TAG KEY=VALUE... [-o DIR] < response.json   # one row of DIR/results.csv
    scripts/seed_response.py ftle RUN.h5 TAG FROM T... [-o DIR]       # finite-time exponents -> DIR/TAG_ftle.csv
    scripts/seed_response.py plot [-o DIR] [--figures docs/figures]

collect: the unrolled adjoint's norm (TAG_adjoint.csv: steps back, |lambda|) and FAR's per-segment
shares (TAG_segments.csv: k, shadowing, unstable, both of segment k, each already divided by m, so
their running mean over k = 0..K-1 is FAR's estimate from the first K segments).
record: appends the scalars of one `tdyn response --json` object (read on stdin) with TAG and the
given KEY=VALUE pairs (e.g. T=800 U=4 W=10) to DIR/results.csv (seconds = wall, cpu_seconds = user + system,
load = the 1-minute load average when the run started; older rows have them empty; A, seed and
align_exponents: the --align rows, A empty = the random start at FROM).
plot: the figures from DIR (default docs/data/seed_response) as PNG files.
"""
import argparse
import csv
import json
import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT = os.path.join(ROOT, "docs", "data", "seed_response")
FIELDS = ["tag", "param", "from", "to", "T", "U", "W", "S", "unrolled", "growth_rate", "far", "far_stderr",
          "far_shadowing", "far_unstable", "shadowing", "shadowing_stderr", "fd", "fd_stderr", "fd_h", "ensemble",
          "exponents", "hvps_per_step", "seconds", "cpu_seconds", "load", "A", "seed", "align_exponents"]


def collect(args):
    import h5py
    import numpy as np
    os.makedirs(args.out, exist_ok=True)
    with h5py.File(args.run, "r") as f:
        g = f[f"/response/{args.param}/loss"]
        if "unrolled" in g:
            a = g["unrolled/adjoint_norm"][:]
            T = len(a) - 1
            with open(os.path.join(args.out, f"{args.tag}_adjoint.csv"), "w") as o:
                o.write("steps_back,adjoint_norm\n")
                for n in range(T + 1):
                    o.write(f"{T - n},{a[n]:.6e}\n")
        if "far" in g:
            s, u = g["far/segment_shadowing"][:], g["far/segment_unstable"][:]
            with open(os.path.join(args.out, f"{args.tag}_segments.csv"), "w") as o:
                o.write("k,shadowing,unstable,derivative\n")
                for k in range(len(s)):
                    o.write(f"{k},{s[k]:.8e},{u[k]:.8e},{s[k] + u[k]:.8e}\n")
            print(f"collect: {len(s)} segments, FAR {np.mean(s + u):.5g}")
    return 0


def ftle(args):
    import h5py
    import numpy as np
    os.makedirs(args.out, exist_ok=True)
    with h5py.File(args.run, "r") as f:
        g, s = f["/lyapunov/log_growth"][:], f["/lyapunov/step"][:]
    path = os.path.join(args.out, f"{args.tag}_ftle.csv")
    with open(path, "w") as o:
        o.write("from,to,T," + ",".join(f"ftle_{i + 1}" for i in range(g.shape[1])) + "\n")
        for t in args.T:
            m = (s >= args.start) & (s < args.start + t)
            o.write(f"{args.start},{args.start + t},{t}," + ",".join(f"{x:.6g}" for x in g[m].sum(0) / m.sum()) + "\n")
    print(open(path).read(), end="")
    return 0


def record(args):
    j = json.load(sys.stdin)
    row = {"tag": args.tag, "param": j["param"], "from": j["from"], "to": j["to"], "T": j["to"] - j["from"]}
    if "unrolled" in j:
        row.update(unrolled=j["unrolled"]["derivative"], growth_rate=j["unrolled"]["growth_rate"])
    if "far" in j:
        f = j["far"]
        row.update(far=f["derivative"], far_stderr=f["stderr"], far_shadowing=f["shadowing"],
                   far_unstable=f["unstable"], U=f["unstable_dim"], hvps_per_step=f.get("hvps_per_step", ""),
                   exponents=" ".join(f"{x:.4g}" for x in f["exponents"]))
    if "align_exponents" in j:  # --align A: the exponents over the A alignment steps
        row.update(A=j["align"], align_exponents=" ".join(f"{x:.4g}" for x in j["align_exponents"]))
    if "shadowing" in j:
        row.update(shadowing=j["shadowing"]["derivative"], shadowing_stderr=j["shadowing"]["stderr"])
    if "fd_derivative" in j:
        row.update(fd=j["fd_derivative"], fd_stderr=j["fd_stderr"], fd_h=j["fd_h"], ensemble=j["ensemble"])
    for kv in args.kv:
        k, v = kv.split("=", 1)
        row[k] = v
    path = os.path.join(args.out, "results.csv")
    os.makedirs(args.out, exist_ok=True)
    new = not os.path.exists(path)
    if not new:  # an older file without the newer columns (cpu_seconds, load): rewrite its header
        with open(path, newline="") as f:
            r = csv.DictReader(f)
            if r.fieldnames != FIELDS:
                old = list(r)
                with open(path, "w", newline="") as o:
                    w = csv.DictWriter(o, fieldnames=FIELDS, extrasaction="ignore")
                    w.writeheader()
                    w.writerows(old)
    with open(path, "a", newline="") as o:
        w = csv.DictWriter(o, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
    print(json.dumps({k: row[k] for k in row if k in FIELDS}))
    return 0


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def plot(args):
    import matplotlib.pyplot as plt
    import numpy as np
    os.makedirs(args.figures, exist_ok=True)
    rows = read_csv(os.path.join(args.out, "results.csv")) if os.path.exists(os.path.join(args.out, "results.csv")) else []
    written = []

    # 1. The unrolled derivative against T, the adjoint's norm against steps back, and the adjoint's
    # fitted growth rate against the finite-time exponent of the same window.
    un = [r for r in rows if r["tag"].startswith("unrolled") and r["unrolled"]]
    adj = os.path.join(args.out, "main_lr_adjoint.csv")
    ft = os.path.join(args.out, "seed_ftle.csv")
    lam1 = num(args.lambda1)
    if un:
        fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
        T = np.array([num(r["T"]) for r in un])
        o = np.argsort(T)
        T = T[o]
        d = np.abs([num(r["unrolled"]) for r in un])[o]
        ax[0].loglog(T, d, "o-", label="|unrolled d<L>_T/d alpha|")
        fd = [r for r in rows if r["tag"] == "fd_lr" and r["fd"]]
        if fd:
            v, e = num(fd[-1]["fd"]), num(fd[-1]["fd_stderr"])
            ax[0].axhline(abs(v), color="C2", label=f"|finite differences| (T = {fd[-1]['T']})")
        ax[0].set_xlabel("T (steps)")
        ax[0].set_title("unrolled derivative against T")
        ax[0].legend(fontsize=8)
        if os.path.exists(adj):
            a = read_csv(adj)
            x = np.array([num(r["steps_back"]) for r in a])
            y = np.array([num(r["adjoint_norm"]) for r in a])
            ax[1].semilogy(x, y, lw=1, label="|adjoint lambda_n|, T = 800, alpha = 2.5")
            if np.isfinite(lam1):
                ax[1].semilogy(x, y[np.argmin(x)] * np.exp(lam1 * x), "k--", label=f"exp(lambda_1 (T - n)), {lam1:.3g}")
            ax[1].set_xlabel("T - n (steps back)")
            ax[1].set_title("norm of the unrolled adjoint")
            ax[1].legend(fontsize=8)
        g = np.array([num(r["growth_rate"]) for r in un])[o]
        ax[2].semilogx(T, g, "o-", label="adjoint growth rate (fit)")
        if os.path.exists(ft):
            f = read_csv(ft)
            ax[2].semilogx([num(r["T"]) for r in f], [num(r["ftle_1"]) for r in f], "s--",
                           label="finite-time exponent, same window")
        a3 = sorted([r for r in rows if r["tag"].startswith("a3_unrolled") and r["unrolled"]], key=lambda r: num(r["T"]))
        if a3:
            ax[0].loglog([num(r["T"]) for r in a3], [abs(num(r["unrolled"])) for r in a3], "^-", color="C3",
                         label="the same at alpha = 3")
            ax[0].legend(fontsize=8)
            ax[2].semilogx([num(r["T"]) for r in a3], [num(r["growth_rate"]) for r in a3], "^-", color="C3",
                           label="alpha = 3: growth rate")
            ft3 = os.path.join(args.out, "a3_ftle.csv")
            if os.path.exists(ft3):
                f = read_csv(ft3)
                ax[2].semilogx([num(r["T"]) for r in f], [num(r["ftle_1"]) for r in f], "v--", color="C4",
                               label="alpha = 3: finite-time exponent")
        if np.isfinite(lam1):
            ax[2].axhline(lam1, color="k", ls=":", label="alpha = 2.5: lambda_1 over steps 200-1400")
        ax[2].set_xlabel("T (steps)")
        ax[2].set_ylabel("per step")
        ax[2].set_title("growth rate against the exponent")
        ax[2].legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(args.figures, "seed_unrolled.png")
        fig.savefig(p, dpi=args.dpi)
        written.append(p)
        plt.close(fig)

    # 2. FAR's running estimate over the first K segments, with batch-means error bars, against FD.
    for param in ("lr", "weight-decay"):
        seg = os.path.join(args.out, f"main_{param}_segments.csv")
        if not os.path.exists(seg):
            continue
        s = read_csv(seg)
        sh = np.array([num(r["shadowing"]) for r in s])
        us = np.array([num(r["unstable"]) for r in s])
        m = int(args.segment)
        K = len(sh)
        ks = np.arange(10, K + 1, max(1, K // 20))

        def se(v):
            B = 10
            n = len(v) // B
            b = v[len(v) - B * n:].reshape(B, n).mean(axis=1)
            return b.std(ddof=1) / np.sqrt(B)

        fig, ax = plt.subplots(figsize=(6.5, 4))
        tot = sh + us
        ax.errorbar(ks * m, [tot[:k].mean() for k in ks], yerr=[se(tot[:k]) for k in ks], fmt="o-", ms=3,
                    capsize=2, label="FAR (shadowing + unstable)")
        ax.errorbar(ks * m, [sh[:k].mean() for k in ks], yerr=[se(sh[:k]) for k in ks], fmt="s-", ms=3,
                    capsize=2, label="shadowing part")
        fd = [r for r in rows if r["tag"] == f"fd_{param}" and r["fd"]]
        if fd:
            v, e = num(fd[-1]["fd"]), num(fd[-1]["fd_stderr"])
            ax.axhspan(v - e, v + e, color="C2", alpha=0.3, label=f"finite differences {v:.3g} +- {e:.2g}")
        ax.set_xlabel("N = K m steps used")
        name = "alpha" if param == "lr" else "lambda"
        ax.set_ylabel(f"d<L>/d {name}")
        ax.set_title(f"d<L>/d {name}: running mean over the first N steps of one FAR run", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(args.figures, f"seed_far_{param}.png")
        fig.savefig(p, dpi=args.dpi)
        written.append(p)
        plt.close(fig)

    # 3. FAR against U (and W), per parameter.
    sw = [r for r in rows if (r["tag"].startswith("sweep") or r["tag"].startswith("main")) and r["far"]]
    if sw:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, param in zip(axes, ("lr", "weight-decay")):
            rs = [r for r in sw if r["param"] == param]
            Ws = sorted({int(num(r["W"])) for r in rs})
            for i, W in enumerate(Ws):
                q = sorted([r for r in rs if int(num(r["W"])) == W], key=lambda r: num(r["U"]))
                ax.errorbar([num(r["U"]) + 0.06 * (i - Ws.index(10)) for r in q], [num(r["far"]) for r in q],
                            yerr=[num(r["far_stderr"]) for r in q], fmt="o-", capsize=2, label=f"FAR, W = {W}")
                ax.plot([num(r["U"]) for r in q], [num(r["far_shadowing"]) for r in q], "s:", label=f"shadowing, W = {W}")
            fd = [r for r in rows if r["tag"] == f"fd_{param}" and r["fd"]]
            if fd:
                v, e = num(fd[-1]["fd"]), num(fd[-1]["fd_stderr"])
                ax.axhspan(v - e, v + e, color="C2", alpha=0.3, label="finite differences")
            ax.set_xlabel("U (tangent vectors; W != 10 drawn slightly beside U = 2)")
            ax.set_title(f"d<L>/d {'alpha' if param == 'lr' else 'lambda'} against U")
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = os.path.join(args.figures, "seed_far_sweep.png")
        fig.savefig(p, dpi=args.dpi)
        written.append(p)
        plt.close(fig)
    for p in written:
        print("wrote", os.path.relpath(p, os.getcwd()))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("run")
    c.add_argument("param")
    c.add_argument("tag")
    c.add_argument("-o", "--out", default=DEFAULT)
    t = sub.add_parser("ftle", help="finite-time exponents of the run's /lyapunov group over FROM..FROM+T")
    t.add_argument("run")
    t.add_argument("tag")
    t.add_argument("start", type=int)
    t.add_argument("T", type=int, nargs="+")
    t.add_argument("-o", "--out", default=DEFAULT)
    r = sub.add_parser("record")
    r.add_argument("tag")
    r.add_argument("kv", nargs="*")
    r.add_argument("-o", "--out", default=DEFAULT)
    p = sub.add_parser("plot")
    p.add_argument("-o", "--out", default=DEFAULT)
    p.add_argument("--figures", default=os.path.join(ROOT, "docs", "figures"))
    p.add_argument("--lambda1", default="nan", help="top exponent drawn as exp(lambda_1 T)")
    p.add_argument("--segment", default="20", help="m, steps per segment of the FAR run")
    p.add_argument("--dpi", type=int, default=110)
    args = ap.parse_args(argv)
    return {"collect": collect, "ftle": ftle, "record": record, "plot": plot}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
