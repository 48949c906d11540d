#!/usr/bin/python3
"""`tdyn eval` against a PyTorch script doing the same job, timed as whole processes (issue 19).

The job, as a user runs it on all k = 60000 MNIST training images, 784-50-10 sigmoid / softmax
cross-entropy, float64, 2 threads:
  eval       load MNIST, loss, accuracy, gradient at theta, write them      (`tdyn eval THETA --write`)
  eval+hvp   the same and H v for M vectors (default 8), write /hvp          (`... --vector VM.h5`)
The peer is this script itself in --peer mode (a fresh python3 process: import torch, read the
IDX files, loss and gradient by autograd, H v by double backward as in bench/peer_torch.py, one
vector at a time, h5py writes the same datasets).

Each repetition runs every process once, interleaved (tdyn eval, peer eval, tdyn eval+hvp, peer
eval+hvp, ...), so load changes hit all of them alike; the table gives per process the median
wall time over the repetitions, the median user + system CPU and the median peak RSS (the
child's own ru_maxrss from wait4), then the ratios peer / tdyn. The outputs are compared (loss,
gradient and H v of the peer against tdyn's, relative max-norm error), so both did the same job.

    /usr/bin/python3 bench/eval_process.py --tdyn build/tdyn
    /usr/bin/python3 bench/eval_process.py --tdyn before=/tmp/tdyn-main --tdyn after=build/tdyn --reps 7
    /usr/bin/python3 bench/eval_process.py --tdyn build/tdyn --no-peer --json
    /usr/bin/python3 bench/eval_process.py --tdyn build/tdyn --torch-malloc glibc jemalloc

Several --tdyn NAME=PATH binaries (e.g. main's build and this one) are timed side by side in the
same run; their files must give identical numbers (checked: bit for bit). theta (seeded uniform
U(+-1/sqrt(n_in)), PyTorch's default) and the M vectors (seeded normal) are written once into
--workdir (default: a temporary folder).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from peer_env import add_torch_malloc_argument, peer_envs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WIDTHS = [784, 50, 10]


def peer(args):
    """The PyTorch process: load MNIST, loss + gradient (+ M HVPs), write an HDF5 file."""
    import h5py
    import torch
    sys.path.insert(0, HERE)
    from peer_env import check_peer_malloc
    from peer_torch import load_mnist, load_theta, loss_fn

    check_peer_malloc()

    torch.set_num_threads(args.threads)
    X, _, labels = load_mnist(os.path.join(args.data_dir, "mnist"), args.k)
    params, _ = load_theta(args.theta, WIDTHS)
    loss = loss_fn(params, X, labels)
    with torch.no_grad():
        W1, b1, W2, b2 = params
        logits = torch.addmm(b2, torch.sigmoid(torch.addmm(b1, X, W1)), W2)
        accuracy = float((logits.argmax(1) == labels).double().mean())
    hvps = []
    if args.vectors:
        g = torch.autograd.grad(loss, params, create_graph=True)
        gflat = torch.cat([gi.reshape(-1) for gi in g])
        with h5py.File(args.vectors, "r") as f:
            V = torch.from_numpy(np.asarray(f["/vectors"], dtype=np.float64))
        for v in V:  # H v = d(g . v)/d theta, one double backward per vector
            hv = torch.autograd.grad(gflat @ v, params, retain_graph=True)
            hvps.append(torch.cat([h.reshape(-1) for h in hv]).detach().numpy())
        gflat = gflat.detach()
    else:
        g = torch.autograd.grad(loss, params)
        gflat = torch.cat([gi.reshape(-1) for gi in g])
    with h5py.File(args.write, "w") as f:
        f["/loss"] = float(loss)
        f["/accuracy"] = accuracy
        f["/gradient"] = gflat.numpy()
        if hvps:
            f["/hvp"] = np.stack(hvps)


def write_inputs(workdir, k, M, seed=1):
    import h5py
    rng = np.random.default_rng(seed)
    parts = []
    for n_in, n_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        s = 1.0 / np.sqrt(n_in)
        parts += [rng.uniform(-s, s, n_in * n_out), rng.uniform(-s, s, n_out)]
    theta = np.concatenate(parts)
    theta_path = os.path.join(workdir, "theta.h5")
    with h5py.File(theta_path, "w") as f:
        f["/params/theta"] = theta
        f.attrs["arch"] = np.array(WIDTHS, dtype=np.int64)
    vec_path = os.path.join(workdir, f"v{M}.h5")
    with h5py.File(vec_path, "w") as f:
        f["/vectors"] = np.random.default_rng(seed + 1).standard_normal((M, theta.size))
    return theta_path, vec_path


def run_once(cmd, env):
    """Wall seconds, user + system seconds and peak RSS (MB) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    err = p.stderr.read().decode()
    p.stderr.close()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status}): {err.strip()}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0


def read_out(path):
    import h5py
    with h5py.File(path, "r") as f:
        return {key: np.asarray(f[key]) for key in ("loss", "accuracy", "gradient", "hvp") if key in f}


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tdyn", action="append", default=[], metavar="[NAME=]PATH",
                    help="tdyn binary to time (repeatable; default build/tdyn)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of every process (median)")
    ap.add_argument("--k", type=int, default=60000, help="samples (the first k)")
    ap.add_argument("--vectors-count", "-M", type=int, default=8, dest="M", help="vectors of the eval+hvp job")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / torch threads")
    ap.add_argument("--data-dir", default=os.environ.get("TDYN_DATA") or os.path.join(ROOT, "data"))
    ap.add_argument("--workdir", help="folder for theta, vectors and outputs (default: a temporary one)")
    ap.add_argument("--no-peer", action="store_true", help="time only the tdyn binaries")
    add_torch_malloc_argument(ap)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    # --peer mode: the PyTorch process itself
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--theta", help=argparse.SUPPRESS)
    ap.add_argument("--vectors", help=argparse.SUPPRESS)
    ap.add_argument("--write", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        return peer(args)

    binaries = []
    for spec in args.tdyn or [os.path.join(ROOT, "build", "tdyn")]:
        name, _, path = spec.rpartition("=")
        binaries.append((name or ("tdyn" if len(args.tdyn) <= 1 else path), os.path.abspath(path)))
    work = args.workdir or tempfile.mkdtemp(prefix="tdyn-eval-process-")
    os.makedirs(work, exist_ok=True)
    theta, vecs = write_inputs(work, args.k, args.M)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               TDYN_DATA=args.data_dir)

    envs = {} if args.no_peer else peer_envs(env, args.torch_malloc)  # the PyTorch peers

    jobs = []  # (program, job, command, output file)
    for job, with_v in (("eval", False), (f"eval+{args.M}hvp", True)):
        for name, path in binaries:
            out = os.path.join(work, f"{name.replace('/', '_')}-{job}.h5")
            cmd = [path, "eval", theta, "--data", "mnist", "--samples", str(args.k), "--write", out, "--force"]
            if with_v:
                cmd += ["--vector", vecs]
            jobs.append((name, job, cmd, out))
        for name in envs:
            out = os.path.join(work, f"{name}-{job}.h5")
            cmd = [sys.executable, os.path.abspath(__file__), "--peer", "--theta", theta, "--write", out,
                   "--k", str(args.k), "--threads", str(args.threads), "--data-dir", args.data_dir]
            if with_v:
                cmd += ["--vectors", vecs]
            jobs.append((name, job, cmd, out))

    samples = {(p, j): [] for p, j, _, _ in jobs}
    for _ in range(args.reps):
        for p, j, cmd, _ in jobs:
            samples[(p, j)].append(run_once(cmd, envs.get(p, env)))

    result = {"k": args.k, "M": args.M, "threads": args.threads, "reps": args.reps,
              "load_average": os.getloadavg(), "processes": [], "ratios": [], "checks": []}
    for (p, j), s in samples.items():
        wall, cpu, rss = zip(*s)
        result["processes"].append({"program": p, "job": j, "wall_s": statistics.median(wall), "wall_min_s": min(wall),
                                    "cpu_s": statistics.median(cpu), "peak_rss_mb": statistics.median(rss)})
    med = {(r["program"], r["job"]): r for r in result["processes"]}
    for _, j, _, _ in jobs:
        for name, _ in binaries:
            for peer_p in envs:
                if (peer_p, j) in med and (name, j) in med:
                    entry = {"job": j, "a": peer_p, "b": name,
                             "wall": med[(peer_p, j)]["wall_s"] / med[(name, j)]["wall_s"],
                             "rss": med[(peer_p, j)]["peak_rss_mb"] / med[(name, j)]["peak_rss_mb"]}
                    if entry not in result["ratios"]:
                        result["ratios"].append(entry)
        for (a, _), (b, _) in zip(binaries, binaries[1:]):
            entry = {"job": j, "a": a, "b": b, "wall": med[(a, j)]["wall_s"] / med[(b, j)]["wall_s"],
                     "rss": med[(a, j)]["peak_rss_mb"] / med[(b, j)]["peak_rss_mb"]}
            if entry not in result["ratios"]:
                result["ratios"].append(entry)

    # The same job: tdyn binaries bit for bit against the first, the peer to rounding.
    outs = {(p, j): read_out(o) for p, j, _, o in jobs}
    first = binaries[0][0]
    for (p, j), o in outs.items():
        if p == first:
            continue
        ref = outs[(first, j)]
        for key in ref:
            if p in envs:
                result["checks"].append({"job": j, "program": p, "what": key, "rel_err": rel_err(o[key], ref[key])})
            else:
                same = o[key].shape == ref[key].shape and o[key].tobytes() == ref[key].tobytes()
                result["checks"].append({"job": j, "program": p, "what": key, "bit_identical": bool(same)})

    if args.json:
        print(json.dumps(result))
        return
    print(f"k = {args.k}, M = {args.M}, {args.threads} threads, median of {args.reps} (load average "
          f"{result['load_average'][0]:.1f})")
    print(f"{'program':<15} {'job':<12} {'wall s':>8} {'min s':>8} {'cpu s':>8} {'peak RSS MB':>12}")
    for r in result["processes"]:
        print(f"{r['program']:<15} {r['job']:<12} {r['wall_s']:8.3f} {r['wall_min_s']:8.3f} {r['cpu_s']:8.3f} "
              f"{r['peak_rss_mb']:12.0f}")
    for r in result["ratios"]:
        print(f"{r['job']:<12} {r['a']} / {r['b']}: wall {r['wall']:.2f}x, peak RSS {r['rss']:.2f}x")
    for c in result["checks"]:
        if "rel_err" in c:
            print(f"check {c['job']:<12} {c['program']} vs {first} {c['what']}: relative error {c['rel_err']:.1e}")
        else:
            print(f"check {c['job']:<12} {c['program']} vs {first} {c['what']}: "
                  f"{'bit-identical' if c['bit_identical'] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
