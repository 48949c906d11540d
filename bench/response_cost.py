#!/usr/bin/env python3
"""tdyn response's cost per step: two builds timed back to back on copies of one run file.

    bench/response_cost.py OLD_TDYN NEW_TDYN RUN.h5 [--rounds 3] -- RESPONSE FLAGS

Each round runs OLD then NEW (`tdyn response COPY FLAGS --json --quiet`, a fresh copy of RUN.h5
each time) and records the wall time, the CPU time of the process (user + system: on a loaded
machine it is steadier than wall time) and the counts FAR reports per step. Prints one line per
run, then the median of NEW/OLD over the rounds (rounds pair runs made seconds apart, so the
ratio survives a loaded machine) and whether the two builds gave the same numbers.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("run")
    ap.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    flags = argv[cut + 1:]
    tmp = tempfile.mkdtemp()
    results = {"old": [], "new": []}
    try:
        for r in range(a.rounds):
            for which in ("old", "new"):
                copy = os.path.join(tmp, "run.h5")
                shutil.copyfile(a.run, copy)
                t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                p = subprocess.run([getattr(a, which), "response", copy, *flags, "--json", "--quiet"],
                                   capture_output=True, text=True)
                dt = time.perf_counter() - t0
                c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
                if p.returncode != 0:
                    sys.exit(f"{which}: exit {p.returncode}: {p.stderr.strip()}")
                j = json.loads(p.stdout)
                results[which].append((dt, j, cpu))
                far = j.get("far", {})
                print(f"round {r + 1} {which}: wall {dt:.2f} s, cpu {cpu:.2f} s, load {os.getloadavg()[0]:.1f}, "
                      f"FAR {far.get('derivative')}, "
                      f"per step: evaluations {far.get('evaluations_per_step')}, revisits {far.get('revisits_per_step', '-')}, "
                      f"HVPs {far.get('hvps_per_step')}, "
                      f"shifted {far.get('shifted_evaluations_per_step', '-')}", flush=True)
    finally:
        shutil.rmtree(tmp)
    for name, i in (("wall", 0), ("cpu", 2)):
        ratios = [n[i] / o[i] for o, n in zip(results["old"], results["new"])]
        print(f"{name} time new/old: median {statistics.median(ratios):.3f} (rounds: "
              + ", ".join(f"{x:.3f}" for x in ratios) + ")")
    o, n = results["old"][0][1], results["new"][0][1]
    for key in ("far", "unrolled", "shadowing"):
        if key in o:
            same = o[key]["derivative"] == n[key]["derivative"]
            print(f"{key}: old {o[key]['derivative']!r}, new {n[key]['derivative']!r}: "
                  + ("the same bits" if same else "DIFFERENT"))


if __name__ == "__main__":
    main()
