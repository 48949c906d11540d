#!/usr/bin/python3
"""(Re)generates tests/reference/mnist_k1000_seed7.h5: tdyn's numbers from a second, independent
implementation (PyTorch float64 autograd + SciPy ARPACK), in the layout of the shared reference
file (tests/reference/README.md):

    /params/theta [P]   /vector [P]   /loss   /accuracy   /gradient [P]   /hvp [P]
    /hessian_top [3] (descending)   /hessian_bottom [3] (ascending)
    root attributes arch = [784, 50, 10], samples = 1000, seed = 7

Problem: the first k = 1000 MNIST training images, read here from the IDX files (x = pixel / 255,
one-hot targets); network 784-50-10, sigmoid hidden layer, softmax output, loss
L = -(1/k) sum_i sum_j t_ij log y_ij. Nothing of tdyn is used.

theta and v (unless --theta-from): numpy's PCG64 generator, rng = numpy.random.default_rng(seed),
    z = rng.standard_normal(P)          theta = z * s, with s = 1/sqrt(784) on W1, 0.1 on b1,
                                                           1/sqrt(50) on W2, 0.1 on b2
    v = rng.standard_normal(P)          (the next P draws of the same generator)
(layer by layer, W_l = N(0, 1/fan_in), b_l = N(0, 0.01)). With seed 7 this reproduces the shared
file's theta and v bit for bit.

Gradient: torch.autograd.grad; H v: double backward, grad of (grad L . v); eigenvalues: SciPy eigsh
(ARPACK, which='LA' and 'SA', tol=0 i.e. machine precision) on a LinearOperator whose matvec is
that H v.

    /usr/bin/python3 scripts/make_reference.py --out tests/reference/mnist_k1000_seed7.h5
    /usr/bin/python3 scripts/make_reference.py --theta-from /work/shared/reference/mnist_k1000_seed7.h5 \
        --out /tmp/ref.h5 --compare /work/shared/reference/mnist_k1000_seed7.h5
"""
import argparse
import os
import struct
import sys
import time

import h5py
import numpy as np
import scipy
import scipy.sparse.linalg as sla
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = (784, 50, 10)


def read_idx(path, magic):
    with open(path, "rb") as f:
        head = f.read(4)
        (m,) = struct.unpack(">i", head)
        if m != magic:
            sys.exit(f"{path}: IDX magic {m}, expected {magic}")
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "i" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        sys.exit(f"{path}: {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def load_mnist(data_dir, k):
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte"), 2051)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte"), 2049)
    X = images[:k].reshape(k, -1).astype(np.float64) / 255.0
    T = np.zeros((k, 10))
    T[np.arange(k), labels[:k]] = 1.0
    return X, T, labels[:k].astype(np.int64)


def sizes(arch):
    """(shape, scale) of each block of theta, in tdyn's flat order: W1 row-major, b1, W2, b2."""
    out = []
    for n_in, n_out in zip(arch[:-1], arch[1:]):
        out.append(((n_in, n_out), 1.0 / np.sqrt(n_in)))
        out.append(((n_out,), 0.1))
    return out


def seeded_theta_and_vector(arch, seed):
    blocks = sizes(arch)
    P = sum(int(np.prod(s)) for s, _ in blocks)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(P)
    scale = np.concatenate([np.full(int(np.prod(s)), c) for s, c in blocks])
    theta = z * scale
    v = rng.standard_normal(P)
    return theta, v


def unflatten(theta, arch):
    parts, at = [], 0
    for shape, _ in sizes(arch):
        n = int(np.prod(shape))
        parts.append(theta[at:at + n].view(*shape))
        at += n
    return parts


def loss_fn(theta, X, T, arch):
    W1, b1, W2, b2 = unflatten(theta, arch)
    Z1 = torch.sigmoid(X @ W1 + b1)
    A2 = Z1 @ W2 + b2
    return -(T * torch.log_softmax(A2, dim=1)).sum() / X.shape[0], A2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the HDF5 file to write (refuses to overwrite unless --force)")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    ap.add_argument("--seed", type=int, default=7, help="seed of numpy.random.default_rng for theta and v (default 7)")
    ap.add_argument("--samples", type=int, default=1000, help="first K training images (default 1000)")
    ap.add_argument("--data-dir", default=None,
                    help="folder with train-images-idx3-ubyte and train-labels-idx1-ubyte "
                         "(default $TDYN_DATA/mnist, else data/mnist of the project)")
    ap.add_argument("--theta-from", default=None, metavar="FILE",
                    help="take /params/theta and /vector from FILE instead of the generator "
                         "(its seed attribute is kept)")
    ap.add_argument("--compare", default=None, metavar="FILE",
                    help="after writing, print the relative differences to FILE's datasets")
    ap.add_argument("--tol", type=float, default=0.0, help="eigsh tol (default 0: machine precision)")
    args = ap.parse_args()

    data_dir = args.data_dir or os.path.join(os.environ.get("TDYN_DATA") or os.path.join(ROOT, "data"), "mnist")
    if os.path.exists(args.out) and not args.force:
        sys.exit(f"{args.out}: exists (use --force to overwrite)")
    torch.set_default_dtype(torch.float64)
    arch, seed = ARCH, args.seed
    t0 = time.time()

    if args.theta_from:
        with h5py.File(args.theta_from, "r") as f:
            theta_np = f["/params/theta"][()].astype(np.float64)
            v_np = f["/vector"][()].astype(np.float64)
            if "seed" in f.attrs:
                seed = int(f.attrs["seed"])
            if "arch" in f.attrs and tuple(int(a) for a in f.attrs["arch"]) != arch:
                sys.exit(f"{args.theta_from}: arch {list(f.attrs['arch'])}, this script does {list(arch)}")
    else:
        theta_np, v_np = seeded_theta_and_vector(arch, seed)
    P = sum(int(np.prod(s)) for s, _ in sizes(arch))
    if theta_np.shape != (P,) or v_np.shape != (P,):
        sys.exit(f"theta {theta_np.shape} and v {v_np.shape}, expected ({P},)")

    Xn, Tn, labels = load_mnist(data_dir, args.samples)
    X, T = torch.from_numpy(Xn), torch.from_numpy(Tn)
    theta = torch.from_numpy(theta_np.copy()).requires_grad_(True)

    loss, A2 = loss_fn(theta, X, T, arch)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    accuracy = float((A2.argmax(dim=1).numpy() == labels).mean())
    v = torch.from_numpy(v_np.copy())
    (hvp,) = torch.autograd.grad(grad @ v, theta, retain_graph=True)

    count = [0]

    def matvec(x):
        count[0] += 1
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
        (hx,) = torch.autograd.grad(grad @ x, theta, retain_graph=True)
        return hx.numpy().copy()

    H = sla.LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    # ARPACK's start vector: fixed, so that a rerun is deterministic.
    v0 = np.random.default_rng(seed + 1000).standard_normal(P)
    top = np.sort(sla.eigsh(H, k=3, which="LA", tol=args.tol, v0=v0, return_eigenvectors=False))[::-1]
    n_top = count[0]
    bottom = np.sort(sla.eigsh(H, k=3, which="SA", tol=args.tol, v0=v0, return_eigenvectors=False))
    n_bottom = count[0] - n_top

    tmp = args.out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["arch"] = np.array(arch, dtype=np.int64)
        f.attrs["samples"] = np.int64(args.samples)
        f.attrs["seed"] = np.int64(seed)
        f.create_dataset("/params/theta", data=theta_np)
        f.create_dataset("/vector", data=v_np)
        f.create_dataset("/loss", data=np.float64(loss.item()))
        f.create_dataset("/accuracy", data=np.float64(accuracy))
        f.create_dataset("/gradient", data=grad.detach().numpy())
        f.create_dataset("/hvp", data=hvp.numpy())
        f.create_dataset("/hessian_top", data=top)
        f.create_dataset("/hessian_bottom", data=bottom)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: loss {loss.item():.17g}, accuracy {accuracy}, "
          f"hessian_top {top.tolist()}, hessian_bottom {bottom.tolist()} "
          f"(eigsh: {n_top} + {n_bottom} H v products; {time.time() - t0:.1f} s; "
          f"torch {torch.__version__}, scipy {scipy.__version__}, numpy {np.__version__})")

    if args.compare:
        status = 0
        with h5py.File(args.out, "r") as a, h5py.File(args.compare, "r") as b:
            print(f"relative differences to {args.compare} "
                  f"(vectors: ||a - b|| / max(||a||, ||b||); eigenvalues: max_i |a_i - b_i| / |b_i|):")
            for name in ("params/theta", "vector", "loss", "accuracy", "gradient", "hvp",
                         "hessian_top", "hessian_bottom"):
                x, y = np.atleast_1d(a[name][()]), np.atleast_1d(b[name][()])
                if np.array_equal(x, y):
                    print(f"  /{name:15s} bit-identical")
                    continue
                if name.startswith("hessian"):
                    rel = float(np.max(np.abs(x - y) / np.abs(y)))
                else:
                    rel = float(np.linalg.norm(x - y) / max(np.linalg.norm(x), np.linalg.norm(y), 1e-300))
                print(f"  /{name:15s} {rel:.3e}")
            for attr in ("arch", "samples", "seed"):
                same = np.array_equal(np.asarray(a.attrs[attr]), np.asarray(b.attrs.get(attr)))
                print(f"  @{attr:15s} {'same' if same else 'DIFFERENT'}")
                status |= not same
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
