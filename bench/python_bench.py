#!/usr/bin/python3
"""The Python module's costs, in one process, as ratios (the machine is shared and noisy).

1. Binding overhead: ev.hvp(V) from Python against the C++ block product Evaluation::hessian_times
   on the same Evaluation and V, timed inside C++ (tdyn._tdyn._time_hessian_times: no Python in
   the loop). V is [P, M] in Fortran order (no copy), M = 1 and 8, at each --k.
2. Top --nev eigenvalues of H at theta = tdyn.Network("784-50-10").init(seed=1), three ways:
   tdyn.eigenvalues (Spectra Lanczos in C++),
   SciPy eigsh (ARPACK) over ev.as_linear_operator(), and SciPy eigsh over PyTorch's
   double-backward HVP (bench/peer_torch.py's loss). Same tol, same start vector for the two
   eigsh runs. Wall time (median of --eig-reps at k <= 10000), H V products, and the largest
   difference of the eigenvalues to tdyn's. OMP_WAIT_POLICY=passive: ARPACK's BLAS calls leave
   spinning OpenMP threads that otherwise slow tdyn's products 2-3x on a 2-core machine.

    OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 /usr/bin/python3 bench/python_bench.py --k 1000 60000
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build" / "python"))
sys.path.insert(0, str(ROOT / "bench"))

import tdyn  # noqa: E402
from tdyn import _tdyn  # noqa: E402


def overhead(ev, M, reps):
    """Each repeat times ev.hvp and, right after it, the C++ product: the ratio of each pair is
    robust to the load drifting during the run; the median of the ratios is reported."""
    P = ev.num_params
    V = np.asfortranarray(np.random.default_rng(M).standard_normal((P, M)))
    ev.hvp(V)  # warm-up: the Evaluation grows its scratch on the first product
    py, cpp = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ev.hvp(V)
        py.append(time.perf_counter() - t0)
        cpp.append(_tdyn._time_hessian_times(ev, V, 1)[0])
    return statistics.median(py), statistics.median(cpp), statistics.median(p / c for p, c in zip(py, cpp))


def torch_operator(data, theta, net):
    import torch
    from peer_torch import loss_fn
    from scipy.sparse.linalg import LinearOperator

    X = torch.from_numpy(np.array(data.X))
    labels = torch.from_numpy(np.argmax(data.T, axis=1))
    params = [torch.from_numpy(np.array(p)).requires_grad_() for layer in net.layers(theta) for p in layer]
    g = torch.autograd.grad(loss_fn(params, X, labels), params, create_graph=True)
    gflat = torch.cat([gi.reshape(-1) for gi in g])
    P = gflat.numel()
    count = [0]

    def matvec(v):
        count[0] += 1  # H v = d(g . v)/d theta: double backward
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        hv = torch.autograd.grad(gflat @ vt, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    return LinearOperator((P, P), matvec=matvec, dtype=np.float64), count


def eigen_side_by_side(ev, data, theta, net, nev, tol):
    from scipy.sparse.linalg import eigsh

    P = ev.num_params
    v0 = np.random.default_rng(0).standard_normal(P)
    rows = []
    t0 = time.perf_counter()
    r = tdyn.eigenvalues(ev, k=nev, which="top", tol=tol)
    rows.append(("tdyn.eigenvalues (Spectra Lanczos)", time.perf_counter() - t0, r.hvps, r.values))

    op = ev.as_linear_operator()
    count = [0]
    base = op.matvec


    def counted(x):
        count[0] += 1
        return base(x)

    from scipy.sparse.linalg import LinearOperator

    counted_op = LinearOperator((P, P), matvec=counted, dtype=np.float64)
    t0 = time.perf_counter()
    w = np.sort(eigsh(counted_op, k=nev, which="LA", tol=tol, v0=v0, return_eigenvectors=False))[::-1]
    rows.append(("SciPy eigsh on ev.as_linear_operator()", time.perf_counter() - t0, count[0], w))

    t0 = time.perf_counter()
    top, tcount = torch_operator(data, theta, net)
    graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    w = np.sort(eigsh(top, k=nev, which="LA", tol=tol, v0=v0, return_eigenvectors=False))[::-1]
    rows.append(("SciPy eigsh on PyTorch double backward", time.perf_counter() - t0 + graph, tcount[0], w))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[1000, 60000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--nev", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--data-dir", default=os.environ.get("TDYN_DATA", str(ROOT / "data")))
    ap.add_argument("--eig-reps", type=int, default=3, help="repeats of each solve at k <= 10000 (median); 1 above")
    ap.add_argument("--no-eigen", action="store_true", help="only the binding overhead")
    a = ap.parse_args()
    import torch

    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads {torch.get_num_threads()}, "
          f"tdyn {tdyn.__version__}, numpy {np.__version__}")
    net = tdyn.Network("784-50-10")
    theta = net.init(seed=1)
    print("\n## Binding overhead: ev.hvp (Python) / Evaluation::hessian_times (timed in C++), median of", a.reps,
          "pairs")
    print("| k | M | ev.hvp ms | C++ ms | median ratio of pairs |\n|---|---|---|---|---|")
    evs = {}
    for k in a.k:
        data = tdyn.load_data("mnist", samples=k, data_dir=a.data_dir)
        ev = tdyn.Evaluation(net, data, theta)
        evs[k] = (data, ev)
        for M in (1, 8):
            py, cpp, ratio = overhead(ev, M, a.reps)
            print(f"| {k} | {M} | {py * 1e3:.2f} | {cpp * 1e3:.2f} | {ratio:.3f} |", flush=True)
    if a.no_eigen:
        return
    print(f"\n## Top {a.nev} eigenvalues of H, tol {a.tol}: wall time relative to tdyn.eigenvalues")
    print("| k | method | s | H V products | ratio | max abs diff to tdyn |\n|---|---|---|---|---|---|")
    for k in a.k:
        data, ev = evs[k]
        runs = [eigen_side_by_side(ev, data, theta, net, a.nev, a.tol) for _ in range(a.eig_reps if k <= 10000 else 1)]
        rows = [(r[0], statistics.median(x[i][1] for x in runs), r[2], r[3]) for i, r in enumerate(runs[0])]
        ref_t, ref_v = rows[0][1], rows[0][3]
        for name, s, n, vals in rows:
            print(f"| {k} | {name} | {s:.2f} | {n} | {s / ref_t:.2f} | {np.max(np.abs(vals - ref_v)):.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
