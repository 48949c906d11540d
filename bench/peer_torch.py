#!/usr/bin/python3
"""The PyTorch peer of tdyn's benchmarks, in the same X-product units.

Same problem as bench/evaluation_bench.cpp and bench/hvp_bench.cpp: the first k MNIST
training images (x = pixel / 255, float64, one-hot targets), the 784-50-10 network with
sigmoid hidden units and softmax cross-entropy (mean over samples), float64, 2 threads.

Timed (median of --reps after warm-up, wall clock):
  xprod     torch.mm(X, W, out=...), X k x 784, W 784 x 50: the yardstick ("X-product unit")
  gradient  one loss + gradient by autograd (forward pass included)
  hvp       one Hessian-vector product at a cached point by double backward: the
            create_graph=True gradient g is computed once, then per HVP
            torch.autograd.grad(g . v, params, retain_graph=True)

    /usr/bin/python3 bench/peer_torch.py --k 60000
    /usr/bin/python3 bench/peer_torch.py --k 60000 --json
    /usr/bin/python3 bench/peer_torch.py --k 60000 --tdyn build-bench   # side by side with tdyn

Eigenvalue mode (--eigsh): the top 5 eigenvalues of H at a given theta by
scipy.sparse.linalg.eigsh(k=5, which='LA', tol=1e-6) on a LinearOperator whose matvec is
the double-backward HVP above (one HVP per matvec, counted). theta comes from a tdyn params
file (/params/theta, flat layout W1 row-major 784 x 50, b1, W2 row-major 50 x 10, b2; read with
h5py). With --tdyn BUILD_DIR, BUILD_DIR/spectrum_bench first writes that file (theta_20 of its
benchmarks, with its tol-1e-9 reference eigenvalues) and times tdyn's top-5 solves, then the
peer runs on the same theta; the ratio is plain wall time, the two programs one after the other.

    /usr/bin/python3 bench/peer_torch.py --k 60000 --eigsh --tdyn build
    /usr/bin/python3 bench/peer_torch.py --k 60000 --eigsh --theta theta.h5
    /usr/bin/python3 bench/peer_torch.py --k 60000 --eigsh --theta theta.h5 --tdyn-json spectrum_bench.json

With --tdyn BUILD_DIR the script also runs BUILD_DIR/evaluation_bench and BUILD_DIR/hvp_bench
(--benchmark_format=json, only this k, float64) and prints tdyn's numbers next to PyTorch's:
the X-unit columns are each program's own yardstick, the time ratio tdyn/torch is plain
wall time of the two programs run one after the other on the same machine.
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file (header {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise SystemExit(f"{path}: header says {dims}, file holds {data.size} bytes of data")
    return data.reshape(dims)


def load_mnist(data_dir, k):
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte"))[:k]
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte"))[:k]
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    t = np.zeros((len(labels), 10), dtype=np.float64)
    t[np.arange(len(labels)), labels] = 1.0
    return torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(labels.astype(np.int64))


def init_params(widths, seed):
    """PyTorch's Linear default: U(-1/sqrt(n_in), 1/sqrt(n_in)) for W and b."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / n_in ** 0.5
        W = (torch.rand(n_in, n_out, generator=g, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(n_out, generator=g, dtype=torch.float64) * 2 - 1) * bound
        params += [W.requires_grad_(), b.requires_grad_()]
    return params


def loss_fn(params, X, labels):
    W1, b1, W2, b2 = params
    A1 = torch.addmm(b1, X, W1)     # A_1 = X W_1 + b_1
    Z1 = torch.sigmoid(A1)          # Z_1 = f(A_1)
    A2 = torch.addmm(b2, Z1, W2)    # A_2 = Z_1 W_2 + b_2
    return F.cross_entropy(A2, labels)  # L = -(1/k) sum t log softmax(A_2)


def timed(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def blas_library():
    """The BLAS this process loaded (Debian's torch uses the libblas.so.3 alternative:
    netlib's reference BLAS is about 10x slower than OpenBLAS on the X-product)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "blas" in os.path.basename(path):
                libs.add(os.path.realpath(path))
    return ", ".join(sorted(libs)) or "unknown"


def measure_torch(k, reps, data_dir, seed=1):
    X, T, labels = load_mnist(data_dir, k)
    params = init_params([784, 50, 10], seed)

    W = torch.rand(784, 50, dtype=torch.float64) * 0.05
    out = torch.empty(k, 50, dtype=torch.float64)
    xprod = timed(lambda: torch.mm(X, W, out=out), max(reps, 7))

    def gradient():
        loss = loss_fn(params, X, labels)
        return torch.autograd.grad(loss, params)

    grad = timed(gradient, reps)

    # HVP at a cached point: the differentiable gradient is built once.
    loss = loss_fn(params, X, labels)
    g = torch.autograd.grad(loss, params, create_graph=True)
    gflat = torch.cat([gi.reshape(-1) for gi in g])
    v = torch.randn(gflat.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(7))

    def hvp():
        return torch.autograd.grad(gflat @ v, params, retain_graph=True)

    hv = timed(hvp, reps)
    return {
        "k": k,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "blas": blas_library(),
        "loss": float(loss),
        "ms": {"xprod": xprod * 1e3, "gradient": grad * 1e3, "hvp": hv * 1e3},
        "x_units": {"xprod": 1.0, "gradient": grad / xprod, "hvp": hv / xprod},
    }


def load_theta(path, widths):
    """Flat tdyn theta from a params file, split into PyTorch's W_l (n_in x n_out) and b_l."""
    import h5py
    with h5py.File(path, "r") as f:
        theta = np.asarray(f["/params/theta"], dtype=np.float64)
        ref = np.asarray(f["/bench/reference_top5"]) if "/bench/reference_top5" in f else None
    params, o = [], 0
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        W = theta[o:o + n_in * n_out].reshape(n_in, n_out)  # row-major, as tdyn stores it
        o += n_in * n_out
        b = theta[o:o + n_out]
        o += n_out
        params += [torch.tensor(W).requires_grad_(), torch.tensor(b).requires_grad_()]
    if o != theta.size:
        raise SystemExit(f"{path}: /params/theta has {theta.size} values, 784-50-10 needs {o}")
    return params, ref


def measure_eigsh(k, data_dir, theta_path, nev=5, tol=1e-6, seed=0):
    """Top nev eigenvalues of H by ARPACK (scipy eigsh) on the double-backward HVP."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    import scipy

    X, T, labels = load_mnist(data_dir, k)
    params, ref = load_theta(theta_path, [784, 50, 10])
    t0 = time.perf_counter()
    loss = loss_fn(params, X, labels)
    g = torch.autograd.grad(loss, params, create_graph=True)
    gflat = torch.cat([gi.reshape(-1) for gi in g])
    graph_s = time.perf_counter() - t0
    P = gflat.numel()
    count = [0]

    def matvec(v):
        # H v = d(g . v)/d theta, one HVP
        count[0] += 1
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        hv = torch.autograd.grad(gflat @ vt, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    op = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(P)
    t0 = time.perf_counter()
    vals, vecs = eigsh(op, k=nev, which="LA", tol=tol, v0=v0)
    eig_s = time.perf_counter() - t0
    hvps = count[0]
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    res = [float(np.linalg.norm(matvec(vecs[:, i]) - vals[i] * vecs[:, i]) / abs(vals[i])) for i in range(nev)]
    out = {
        "k": k, "threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "scipy_version": scipy.__version__, "blas": blas_library(),
        "eigsh": {"nev": nev, "which": "LA", "tol": tol, "ncv": min(P, max(2 * nev + 1, 20))},
        "values": [float(v) for v in vals], "rel_res": res, "hvps": hvps,
        "seconds": eig_s, "graph_seconds": graph_s,
    }
    if ref is not None:
        out["reference"] = [float(r) for r in ref]
        out["rel_err_vs_reference"] = float(np.max(np.abs(vals - ref[:nev]) / np.abs(ref[:nev])))
    return out


def run_tdyn_spectrum(build_dir, k, theta_path, json_path=None):
    """tdyn's top-5 solves at theta_20 from spectrum_bench (JSON); it also writes theta_path.
    With json_path, the results of an earlier `spectrum_bench --theta-out=theta_path
    --benchmark_out=json_path --benchmark_out_format=json` run are read instead."""
    if json_path:
        with open(json_path) as f:
            out = json.load(f)
    else:
        exe = os.path.join(build_dir, "spectrum_bench")
        cmd = [exe, f"--k={k}", f"--theta-out={theta_path}", "--benchmark_filter=^BM_Top5/",
               "--benchmark_format=json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        sys.stderr.write(proc.stderr)
        out = json.loads(proc.stdout)
    res = {}
    for b in out["benchmarks"]:
        if not b["name"].startswith("BM_Top5/"):
            continue
        name = b["name"].split("/iterations")[0]
        res[name] = {key: b[key] for key in b if key in ("hvps", "ms", "x_units", "rel_res", "rel_err", "converged")
                     or key.startswith("lambda")}
    return res


def run_tdyn(build_dir, k):
    """tdyn's float64 numbers at this k from its benchmark programs (JSON output)."""
    res = {}
    # Registered names end in /iterations:N/real_time, so the filters end in "/", not "$".
    runs = [
        ("evaluation_bench", f"^BM_(XProduct/k:{k}/|Gradient/k:{k}/(dense|sparse)/f64/)"),
        ("hvp_bench", f"^BM_HVP/k:{k}/(dense|sparse)/f64/M:(1|8)/"),
    ]
    for prog, filt in runs:
        exe = os.path.join(build_dir, prog)
        cmd = [exe, f"--k={k}", f"--benchmark_filter={filt}", "--benchmark_format=json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        if not proc.stdout.strip():
            raise SystemExit(f"{exe}: no benchmark output for filter {filt}: {proc.stderr.strip()}")
        for b in json.loads(proc.stdout)["benchmarks"]:
            name = b["name"].split("/iterations")[0]
            res[name] = b
    out = {}
    for path in ("dense", "sparse"):
        g = res[f"BM_Gradient/k:{k}/{path}/f64"]
        h1 = res[f"BM_HVP/k:{k}/{path}/f64/M:1"]
        h8 = res[f"BM_HVP/k:{k}/{path}/f64/M:8"]
        out[path] = {
            "ms": {"gradient": g["ms"], "hvp": h1["ms_per_vec"], "hvp_block8_per_vec": h8["ms_per_vec"]},
            "x_units": {"gradient": g["x_units"], "hvp": h1["x_units_per_vec"],
                        "hvp_block8_per_vec": h8["x_units_per_vec"]},
        }
    x = res[f"BM_XProduct/k:{k}"]
    out["xprod_ms"] = x["ms"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=60000, help="first k MNIST training images")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per op (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--data-dir", default=os.environ.get("TDYN_DATA", os.path.join(ROOT, "data")),
                    help="folder holding mnist/ (default $TDYN_DATA or data/ of the project)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--tdyn", metavar="BUILD_DIR", help="also run tdyn's bench programs from here")
    ap.add_argument("--eigsh", action="store_true", help="top 5 eigenvalues of H by scipy eigsh instead")
    ap.add_argument("--theta", metavar="PARAMS.h5", help="--eigsh: theta (default: written by spectrum_bench)")
    ap.add_argument("--tdyn-json", metavar="FILE", help="--eigsh: tdyn's results from an earlier spectrum_bench "
                    "--benchmark_out (with --theta: the file it wrote) instead of running it")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    if a.eigsh:
        return main_eigsh(a)
    r = measure_torch(a.k, a.reps, os.path.join(a.data_dir, "mnist"))
    if a.tdyn:
        r["tdyn"] = run_tdyn(a.tdyn, a.k)

    if a.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return

    print(f"PyTorch {r['torch_version']}, {r['threads']} threads, float64, 784-50-10 sigmoid/softmax-ce, "
          f"k = {a.k}, median of {a.reps}")
    print(f"BLAS: {r['blas']}")
    print(f"{'op':<12}{'ms':>10}{'X-units':>10}")
    for op in ("xprod", "gradient", "hvp"):
        print(f"{op:<12}{r['ms'][op]:>10.2f}{r['x_units'][op]:>10.2f}")
    if a.tdyn:
        t = r["tdyn"]
        print(f"\nside by side (tdyn X-product {t['xprod_ms']:.2f} ms, PyTorch {r['ms']['xprod']:.2f} ms)")
        print(f"{'op':<28}{'torch units':>12}{'tdyn units':>12}{'tdyn ms':>10}{'torch ms':>10}{'tdyn/torch':>12}")
        for path in ("dense", "sparse"):
            for op, top in (("gradient", "gradient"), ("hvp", "hvp"), ("hvp_block8_per_vec", "hvp")):
                tu, tm = t[path]["x_units"][op], t[path]["ms"][op]
                label = f"{op} ({path})"
                print(f"{label:<28}{r['x_units'][top]:>12.2f}{tu:>12.2f}{tm:>10.2f}"
                      f"{r['ms'][top]:>10.2f}{tm / r['ms'][top]:>12.2f}")


def main_eigsh(a):
    theta = a.theta
    tdyn = None
    if a.tdyn_json:
        tdyn = run_tdyn_spectrum(None, a.k, theta, a.tdyn_json)
    elif a.tdyn:
        theta = theta or os.path.join(a.tdyn, f"spectrum_bench_theta_k{a.k}.h5")
        tdyn = run_tdyn_spectrum(a.tdyn, a.k, theta)
    if not theta:
        raise SystemExit("--eigsh needs --theta PARAMS.h5 or --tdyn BUILD_DIR")
    r = measure_eigsh(a.k, os.path.join(a.data_dir, "mnist"), theta)
    if tdyn:
        r["tdyn"] = tdyn
    if a.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return
    print(f"PyTorch {r['torch_version']} + SciPy {r['scipy_version']} eigsh(k=5, which='LA', tol=1e-6, "
          f"ncv={r['eigsh']['ncv']}), {r['threads']} threads, float64, k = {a.k}, theta from {theta}")
    print(f"BLAS: {r['blas']}")
    print(f"eigsh: {r['hvps']} HVPs, {r['seconds']:.2f} s (+ {r['graph_seconds']:.2f} s for the create_graph "
          f"gradient), {r['seconds'] / r['hvps'] * 1e3:.1f} ms per HVP")
    print("values:  " + " ".join(f"{v:.12g}" for v in r["values"]))
    print("rel_res: " + " ".join(f"{v:.1e}" for v in r["rel_res"]))
    if "reference" in r:
        print("tdyn ref (tol 1e-9): " + " ".join(f"{v:.12g}" for v in r["reference"][:5]))
        print(f"max rel. difference eigsh vs reference: {r['rel_err_vs_reference']:.2e}")
    if tdyn:
        print(f"\n{'tdyn solver':<28}{'HVPs':>6}{'ms':>10}{'rel_err':>10}{'torch/tdyn':>12}")
        for name, b in tdyn.items():
            print(f"{name:<28}{b['hvps']:>6.0f}{b['ms']:>10.0f}{b['rel_err']:>10.1e}"
                  f"{r['seconds'] * 1e3 / b['ms']:>12.2f}")
        print(f"{'scipy eigsh (PyTorch HVP)':<28}{r['hvps']:>6d}{r['seconds'] * 1e3:>10.0f}"
              f"{r.get('rel_err_vs_reference', float('nan')):>10.1e}{1.0:>12.2f}")


if __name__ == "__main__":
    main()
