"""Compares the datasets of two HDF5 files (tests/mpi_test.sh).

  mpi_compare.py A B RTOL [--skip REGEX] [NAME ...]
      every NAME (default: every numeric dataset of A whose name does not match REGEX) must exist in
      both with the same shape, NaN at the same places, and agree normwise elsewhere:
      |a - b| <= RTOL |b| (RTOL 0: bit-identical). Prints the largest relative difference seen
      and where; exit 1 on any failure.
"""
import re
import sys

import h5py
import numpy as np


def datasets(f):
    names = []
    f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) and o.dtype.kind in "fiu" else None)
    return names


def main():
    a_path, b_path, rtol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rest = sys.argv[4:]
    skip = None
    if rest[:1] == ["--skip"]:
        skip, rest = re.compile(rest[1]), rest[2:]
    worst, where, bad = 0.0, "", []
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        names = rest or [n for n in datasets(a) if not (skip and skip.search(n))]
        for n in names:
            if n not in a or n not in b:
                bad.append(f"{n}: missing in {'A' if n not in a else 'B'}")
                continue
            x, y = np.asarray(a[n][()], dtype=float), np.asarray(b[n][()], dtype=float)
            if x.shape != y.shape:
                bad.append(f"{n}: shapes {x.shape} vs {y.shape}")
                continue
            if rtol == 0:
                if x.tobytes() != y.tobytes():
                    bad.append(f"{n}: not bit-identical")
                continue
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                bad.append(f"{n}: NaN at different places")
                continue
            x, y = x[~np.isnan(x)], y[~np.isnan(y)]
            scale = np.linalg.norm(y.ravel())
            d = np.linalg.norm((x - y).ravel()) / (scale if scale > 0 else 1.0)
            if d > worst:
                worst, where = d, n
            if not d <= rtol:
                bad.append(f"{n}: relative difference {d:.3e} > {rtol:.0e}")
    print(f"{a_path} vs {b_path}: {len(names)} datasets, largest relative difference {worst:.3e} {where}")
    for m in bad:
        print("FAIL: " + m)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
