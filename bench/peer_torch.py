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
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
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


if __name__ == "__main__":
    main()
