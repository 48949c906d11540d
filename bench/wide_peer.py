#!/usr/bin/python3
"""Wide networks as a user runs them: full-batch GD, tdyn against PyTorch, whole processes.

The edge-of-stability setting of issue 18/19: the first k MNIST images (x = pixel / 255, 19 %
non-zero), a tanh MLP (default 784-200-200-10), identity output with squared error
L = (1/k) sum_i 1/2 |y_i - t_i|^2, one-hot targets, float64, lr 0.01.

Both programs run as processes with S_short and S_long steps; the time per step is
(t_long - t_short) / (S_long - S_short), so loading MNIST and start-up cancel. The runs are
interleaved (tdyn short, torch short, tdyn long, torch long, repeated --reps times; medians)
because this machine is shared and noisy; the ratio torch / tdyn is the figure of merit.

  plain   a GD step: loss, gradient, update (tdyn train; tdyn writes its run file as it goes)
  hvp8    a GD step that also carries M = 8 tangent vectors V <- V - lr H V with QR every step
          (tdyn train --lyapunov 8; torch: double backward, one H v per vector, then QR)
The column hvp_only = hvp8 - plain is the in-line Hessian work alone.

    /usr/bin/python3 bench/wide_peer.py                          # k = 5000, tdyn in build/
    /usr/bin/python3 bench/wide_peer.py --k 5000 60000 --reps 3 --json
    /usr/bin/python3 bench/wide_peer.py --tdyn-flags "--x-path dense"   # tdyn with dense X
    /usr/bin/python3 bench/wide_peer.py --torch-malloc glibc jemalloc   # two PyTorch peers

--torch-malloc jemalloc runs the peer with jemalloc preloaded and never purging: at k = 60000
PyTorch's glibc malloc maps and faults its activations in afresh every step (bench/peer_env.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from peer_env import add_torch_malloc_argument, peer_envs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_worker(args):
    """One PyTorch process: load, then args.steps GD steps (with args.tangents H v's each)."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from peer_env import check_peer_malloc
    from peer_torch import init_params, load_mnist

    check_peer_malloc()

    torch.set_num_threads(args.threads)
    X, T, _ = load_mnist(args.data_dir, args.k)
    params = init_params([int(w) for w in args.arch.split("-")], 1)
    g = torch.Generator().manual_seed(2)  # the tangent vectors' start

    def loss_fn():
        Z = X
        for l in range(0, len(params) - 2, 2):
            Z = torch.tanh(torch.addmm(params[l + 1], Z, params[l]))
        Y = torch.addmm(params[-1], Z, params[-2])
        return 0.5 * ((Y - T) ** 2).sum() / X.shape[0]

    P = sum(p.numel() for p in params)
    V = torch.linalg.qr(torch.randn(P, args.tangents, dtype=torch.float64, generator=g))[0] if args.tangents else None
    for _ in range(args.steps):
        loss = loss_fn()
        if args.tangents:
            grads = torch.autograd.grad(loss, params, create_graph=True)
            flat_g = torch.cat([q.reshape(-1) for q in grads])
            HV = torch.empty_like(V)
            for m in range(args.tangents):
                hv = torch.autograd.grad((flat_g * V[:, m]).sum(), params, retain_graph=True)
                HV[:, m] = torch.cat([q.reshape(-1) for q in hv])
            V = torch.linalg.qr(V - args.lr * HV)[0]
            grads = [q.detach() for q in grads]
        else:
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, q in zip(params, grads):
                p -= args.lr * q


def run_timed(cmd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"wide_peer.py: {' '.join(cmd)} failed: {r.stderr.strip()}")
    return dt


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[5000])
    p.add_argument("--arch", default="784-200-200-10")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--short", type=int, default=5, help="S_short steps")
    p.add_argument("--long", type=int, default=25, help="S_long steps")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["plain", "hvp8"], choices=["plain", "hvp8"])
    p.add_argument("--tdyn", default=os.path.join(ROOT, "build", "tdyn"))
    p.add_argument("--tdyn-flags", default="", help="extra flags for tdyn train (e.g. '--x-path dense')")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "mnist"))
    add_torch_malloc_argument(p)
    p.add_argument("--json", action="store_true")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--tangents", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.k = args.k[0]
        torch_worker(args)
        return
    if not os.access(args.tdyn, os.X_OK):
        raise SystemExit(f"wide_peer.py: --tdyn {args.tdyn}: not an executable (build first: scripts/build.sh)")
    if args.long <= args.short:
        raise SystemExit("wide_peer.py: --long must be larger than --short")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    peers = list(peer_envs(env, args.torch_malloc).items())
    programs = ["tdyn"] + [name for name, _ in peers]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.k:
            for mode in args.modes:
                tangents = 8 if mode == "hvp8" else 0
                times = {(who, s): [] for who in programs for s in (args.short, args.long)}
                for _ in range(args.reps):
                    for s in (args.short, args.long):
                        tdyn_cmd = [args.tdyn, "train", "--arch", args.arch, "--activation", "tanh", "--output",
                                    "identity-mse", "--samples", str(k), "--steps", str(s), "--lr", str(args.lr),
                                    "--save-theta-every", str(s), "--out", os.path.join(tmp, "run.h5"), "--force",
                                    "--quiet", "--data-dir", os.path.dirname(args.data_dir)]
                        if tangents:
                            tdyn_cmd += ["--lyapunov", str(tangents)]
                        tdyn_cmd += args.tdyn_flags.split()
                        torch_cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--k", str(k), "--arch",
                                     args.arch, "--lr", str(args.lr), "--steps", str(s), "--tangents", str(tangents),
                                     "--threads", str(args.threads), "--data-dir", args.data_dir]
                        times[("tdyn", s)].append(run_timed(tdyn_cmd, env))
                        for name, penv in peers:
                            times[(name, s)].append(run_timed(torch_cmd, penv))
                row = {"k": k, "mode": mode, "arch": args.arch}
                for who in programs:
                    per = [(l - s) / (args.long - args.short)
                           for s, l in zip(times[(who, args.short)], times[(who, args.long)])]
                    row[f"{who}_ms_per_step"] = 1e3 * statistics.median(per)
                    row[f"{who}_ms_spread"] = 1e3 * (max(per) - min(per))
                    row[f"{who}_startup_s"] = statistics.median(times[(who, args.short)]) - args.short * statistics.median(per)
                line = (f"k {k:6d} {mode:6s} tdyn {row['tdyn_ms_per_step']:8.1f} ms/step"
                        f" (spread {row['tdyn_ms_spread']:.1f})")
                for name, _ in peers:
                    row[f"{name}_over_tdyn"] = row[f"{name}_ms_per_step"] / row["tdyn_ms_per_step"]
                    line += (f"  {name} {row[f'{name}_ms_per_step']:8.1f} ms/step (spread {row[f'{name}_ms_spread']:.1f})"
                             f"  {name}/tdyn {row[f'{name}_over_tdyn']:.2f}")
                results.append(row)
                if not args.json:
                    print(line, flush=True)
        by = {(r["k"], r["mode"]): r for r in results}
        for k in args.k:
            if (k, "plain") in by and (k, "hvp8") in by:
                a, b = by[(k, "plain")], by[(k, "hvp8")]
                t = b["tdyn_ms_per_step"] - a["tdyn_ms_per_step"]
                row = {"k": k, "mode": "hvp_only", "arch": args.arch, "tdyn_ms_per_step": t}
                line = f"k {k:6d} hvp8-plain: tdyn {t:.1f} ms"
                for name, _ in peers:
                    q = b[f"{name}_ms_per_step"] - a[f"{name}_ms_per_step"]
                    row[f"{name}_ms_per_step"] = q
                    row[f"{name}_over_tdyn"] = q / t if t > 0 else float("nan")
                    line += f", {name} {q:.1f} ms ({name}/tdyn {row[f'{name}_over_tdyn']:.2f})"
                results.append(row)
                if not args.json:
                    print(line + " for 8 H v + QR")
    if args.json:
        print(json.dumps({"threads": args.threads, "short": args.short, "long": args.long, "reps": args.reps,
                          "tdyn_flags": args.tdyn_flags, "torch_malloc": args.torch_malloc, "results": results}, indent=1))


if __name__ == "__main__":
    main()
