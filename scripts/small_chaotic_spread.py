#!/usr/bin/env python3
"""Summaries of scripts/small_chaotic_spread.sh (docs/RESPONSE.md, "The small chaotic case").

    scripts/small_chaotic_spread.py WORKDIR

Prints: one row per 1000-step variant (lambda_1 of `tdyn lyapunov`, the unrolled least-squares growth rate,
the adjoint's end-to-end rate, FAR, shadowing, finite differences, whether the test's two checks hold), mean +-
sd over groups of variants, and for the 20000-step runs the finite-time exponent in blocks of B steps and the
running exponent, and their response over steps 200..5000. Reads HDF5 with h5dump (no h5py needed).
"""
import json
import math
import os
import re
import statistics as st
import subprocess
import sys


def ds(f, d):
    out = subprocess.run(["h5dump", "-d", d, "-y", "-w", "0", "-m", "%.17g", f], capture_output=True, text=True).stdout
    body = out[out.find("DATA {") + 6:]
    body = body[:body.find("}")]
    return [float(x) for x in re.split(r"[,\s]+", body) if x]


def variants(w):
    rows = []
    for line in open(os.path.join(w, "variants.out")):
        name, ly, r = line.rstrip("\n").split("|")
        l1 = json.loads(ly)["exponents"][0]
        j = json.loads(r)
        a = ds(os.path.join(w, "v_%s.h5" % name), "/response/lr/loss/unrolled/adjoint_norm")
        row = dict(name=name, l1=l1, g=j["unrolled"]["growth_rate"], far=j["far"]["derivative"], se=j["far"]["stderr"],
                   sh=j["shadowing"]["derivative"], shse=j["shadowing"]["stderr"], fd=j["fd_derivative"],
                   fdse=j["fd_stderr"], fl1=j["far"]["exponents"][0], fl2=j["far"]["exponents"][1],
                   avg=j["unrolled"]["average"], endp=(math.log(a[0]) - math.log(a[-1])) / (len(a) - 1))
        row["ok_g"] = abs(row["g"] - l1) < 0.1 * l1
        row["ok_far"] = abs(row["far"] - row["fd"]) < 3 * math.hypot(row["se"], row["fdse"])
        rows.append(row)
        print("%-11s lambda_1 %.4f (FAR's QR %.4f, %.4f)  growth %.4f  end-to-end %.4f  <L> %.4f  FAR %8.2f +- %6.2f"
              "  shadowing %6.3f +- %.3f  FD %6.3f +- %.3f  growth check %s  FAR check %s" %
              (name, l1, row["fl1"], row["fl2"], row["g"], row["endp"], row["avg"], row["far"], row["se"], row["sh"],
               row["shse"], row["fd"], row["fdse"], "ok" if row["ok_g"] else "FAILS", "ok" if row["ok_far"] else "FAILS"))
    groups = [("old build", lambda r: r["name"].startswith("old")), ("new build", lambda r: r["name"].startswith("new")),
              ("all", lambda r: True)]
    for lab, sel in groups:
        n = [r for r in rows if sel(r)]
        if len(n) < 2:
            continue
        print("%s (n = %d): mean +- sd [min, max]" % (lab, len(n)))
        for k in ["l1", "g", "endp", "far", "se", "sh", "fd", "fdse", "avg"]:
            v = [r[k] for r in n]
            print("   %-5s %.4g +- %.2g [%.4g, %.4g]" % (k, st.mean(v), st.stdev(v), min(v), max(v)))
        print("   growth within 10%% of lambda_1: %d/%d; |FAR - FD| < 3 combined se: %d/%d" %
              (sum(r["ok_g"] for r in n), len(n), sum(r["ok_far"] for r in n), len(n)))


def long_runs(w):
    pooled, per_build = {}, {}
    for f in sorted(x for x in os.listdir(w) if re.match(r"[LP]_.*\.h5$", x)):
        p = os.path.join(w, f)
        lg = ds(p, "/lyapunov/log_growth")
        m = len(lg) // len(ds(p, "/lyapunov/step"))
        lg = lg[0::m]
        per_build.setdefault("_".join(f.split("_")[:2]), []).append((st.mean(lg), st.mean(lg[:800]), st.mean(lg[800:])))
        print("%s: lambda_1 over %d steps %.4f (halves %.4f, %.4f)" %
              (f, len(lg), st.mean(lg), st.mean(lg[:len(lg) // 2]), st.mean(lg[len(lg) // 2:])))
        for B in [100, 200, 400, 800, 1600, 3200, 6400]:
            b = [st.mean(lg[i:i + B]) for i in range(0, len(lg) - B + 1, B)]
            pooled.setdefault(B, []).extend(b)
            print("  blocks of %5d steps: n %3d mean %.4f sd %.4f [%.4f, %.4f]" % (B, len(b), st.mean(b), st.stdev(b),
                                                                                min(b), max(b)))
        c, out = 0.0, []
        for i, x in enumerate(lg):
            c += x
            if i + 1 in (800, 1600, 3200, 5000, 10000, 15000, len(lg)):
                out.append("%d: %.4f" % (i + 1, c / (i + 1)))
        print("  running exponent after N counted steps:", ", ".join(out))
        rj = os.path.join(w, "R_" + f[:-3] + ".json")
        if os.path.exists(rj):
            j = json.load(open(rj))
            print("  response 200..5000: growth %.4f, FAR %.3f +- %.3f (shadowing %.3f, unstable %.3f, exponents %s),"
                  " shadowing %.3f +- %.3f, FD %.3f +- %.3f" %
                  (j["unrolled"]["growth_rate"], j["far"]["derivative"], j["far"]["stderr"], j["far"]["shadowing"],
                   j["far"]["unstable"], ", ".join("%.4f" % x for x in j["far"]["exponents"]),
                   j["shadowing"]["derivative"], j["shadowing"]["stderr"], j["fd_derivative"], j["fd_stderr"]))
    for b, v in per_build.items():
        if len(v) > 1:
            print("%s (L: seeds, P: perturbations of seed 0), %d long runs: lambda_1 %.4f +- %.4f (sd), standard error %.4f; first 800 counted steps"
                  " %.4f +- %.4f, the rest %.4f +- %.4f" %
                  (b, len(v), st.mean(x[0] for x in v), st.stdev(x[0] for x in v),
                   st.stdev(x[0] for x in v) / len(v) ** 0.5, st.mean(x[1] for x in v), st.stdev(x[1] for x in v),
                   st.mean(x[2] for x in v), st.stdev(x[2] for x in v)))
    print("pooled blocks:")
    for B, b in pooled.items():
        if len(b) > 1:
            print("  %5d steps: n %3d mean %.4f sd %.4f (sd/mean %.2f)" % (B, len(b), st.mean(b), st.stdev(b),
                                                                          st.stdev(b) / st.mean(b)))


if __name__ == "__main__":
    variants(sys.argv[1])
    long_runs(sys.argv[1])
