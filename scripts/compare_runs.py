#!/usr/bin/python3
"""Compares two tdyn HDF5 files (run, params or eval files) number by number: "the same numbers
before and after" a change that must not change them.

    scripts/compare_runs.py A.h5 B.h5 [--rtol 1e-13] [--normwise] [--quiet]

A is the old (reference) file, B the new one. Every dataset, in every group (recursively), and
every attribute of every group and dataset is compared:

  * numeric datasets and attributes: bit-identical, or the largest elementwise relative difference
    |a - b| / max(|a|, |b|, tiny) (tiny = the smallest normal double; NaN == NaN counts as equal,
    NaN against a number and +inf against -inf count as relative difference inf); FAIL above rtol,
    and FAIL when the shapes differ;
    Every non-identical numeric dataset also shows its normwise relative difference: per row for
    a 2-D dataset (one vector per step: |a_r - b_r| / max(|a_r|, |b_r|), the largest over rows),
    over the whole array otherwise. With --normwise, 2-D datasets and the vectors under /params/
    (theta of a params or run file) pass or fail on that figure instead: a vector computed with sums in another order (other row chunks) differs by ~1e-16
    of its norm, but an entry near zero that is a difference of O(1) terms differs by far more
    relative to itself; elementwise, such an entry measures its own cancellation, not the change.
  * string (and other non-numeric) datasets and attributes: FAIL unless equal;
  * a dataset or attribute only in A (missing in the new file): FAIL; only in B (extra in the new
    file): a note, not a failure.

Ignored, because they legitimately differ between two builds or two invocations (IGNORED_ATTRS
below): the root attributes command_line (the paths of the binary and the files) and
tool_version (the version string of the build), and any attribute named git_revision or
created/start_time/end_time/host/wall_time (none are written by tdyn today; listed so that a new
one fails loudly only if it is not one of these). Datasets are never ignored.

Prints one line per dataset (with --quiet: only the non-identical ones) and one per attribute that
is not bit-identical, then one summary line. Exit status: 0 if nothing failed, 1 if something did, 2 on a usage error or
an unreadable file.
"""
import argparse
import sys

import h5py
import numpy as np

# Attributes that differ between two builds / invocations of the same computation. Matched by
# name, at any group or dataset.
IGNORED_ATTRS = {
    "command_line": "the argv of the invocation: paths of the binary and of the files differ",
    "tool_version": "version string of the build that wrote the file",
    "git_revision": "the source revision of the build",
    "created": "wall-clock time",
    "start_time": "wall-clock time",
    "end_time": "wall-clock time",
    "wall_time": "wall-clock duration",
    "host": "machine name",
}

TINY = np.finfo(np.float64).tiny


def is_numeric(x):
    return x.dtype.kind in "biufc"


def max_rel_diff(a, b):
    """Largest elementwise |a - b| / max(|a|, |b|, tiny), NaN == NaN equal; inf where only one side
    is NaN or where two infinities differ."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype.kind == "c" or b.dtype.kind == "c":
        a, b = a.astype(np.complex128), b.astype(np.complex128)
    else:
        a, b = a.astype(np.float64), b.astype(np.float64)
    if a.size == 0:
        return 0.0
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    both_nan = nan_a & nan_b
    one_nan = nan_a ^ nan_b
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
        scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), TINY)
        rel = diff / scale
    same = (a == b) | both_nan          # equal values, incl. equal infinities
    rel = np.where(same, 0.0, rel)
    rel = np.where(one_nan | np.isnan(rel), np.inf, rel)  # NaN vs number; inf - inf of opposite sign
    return float(np.max(rel))


def normwise_rel_diff(a, b):
    """|a - b| / max(|a|, |b|) per row of a 2-D array (the largest over rows), or over the whole
    array; 0 where both are zero, inf where either is not finite and they differ."""
    a = np.asarray(a, dtype=np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64)
    b = np.asarray(b, dtype=a.dtype)
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return 0.0 if np.array_equal(a, b, equal_nan=True) else float("inf")
    rows = (a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)) if a.ndim == 2 else (a.reshape(1, -1), b.reshape(1, -1))
    diff = np.linalg.norm(rows[0] - rows[1], axis=1)
    scale = np.maximum(np.linalg.norm(rows[0], axis=1), np.linalg.norm(rows[1], axis=1))
    rel = np.where(diff == 0, 0.0, diff / np.maximum(scale, TINY))
    return float(np.max(rel))


def bit_identical(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


class Comparison:
    def __init__(self, rtol, quiet, normwise=False):
        self.rtol, self.quiet, self.normwise = rtol, quiet, normwise
        self.counts = {"identical": 0, "within": 0, "FAIL": 0, "notes": 0, "ignored": 0}
        self.ignored_names = set()

    def line(self, status, name, text=""):
        if status == "identical":
            self.counts["identical"] += 1
        elif status == "ok":
            self.counts["within"] += 1
        elif status == "FAIL":
            self.counts["FAIL"] += 1
        elif status == "note":
            self.counts["notes"] += 1
        elif status == "ignored":
            self.counts["ignored"] += 1
        if status in ("identical", "ignored") and (self.quiet or "@" in name):
            return  # identical and ignored attributes are only counted
        label = {"identical": "bit-identical", "ok": "ok", "FAIL": "FAIL", "note": "note",
                 "ignored": "ignored"}[status]
        print(f"  {label:13s} {name}{('  ' + text) if text else ''}")

    def values(self, name, a, b, kind):
        """Compares two values (dataset contents or attribute values)."""
        a, b = np.asarray(a), np.asarray(b)
        if bit_identical(a, b):
            self.line("identical", name, f"{kind} {a.dtype} {list(a.shape)}")
            return
        if a.shape != b.shape:
            self.line("FAIL", name, f"shape {list(a.shape)} vs {list(b.shape)}")
            return
        if is_numeric(a) and is_numeric(b):
            elementwise, normwise = max_rel_diff(a, b), normwise_rel_diff(a, b)
            by_rows = self.normwise and (a.ndim == 2 or (a.ndim == 1 and name.startswith("/params/")))
            rel = normwise if by_rows else elementwise
            note = "" if a.dtype == b.dtype else f" (dtype {a.dtype} vs {b.dtype})"
            note += (f" (normwise{' per row' if a.ndim == 2 else ''}; elementwise {elementwise:.3e})" if by_rows
                     else f" (normwise {normwise:.3e})")
            if rel == 0.0 and a.dtype == b.dtype:
                # equal values but not equal bytes: -0.0 vs 0.0, or NaN payloads
                self.line("ok", name, f"{kind}: equal values, different bits (signed zeros or NaN payloads)")
            elif rel <= self.rtol:
                self.line("ok", name, f"{kind}: max relative difference {rel:.3e} <= rtol {self.rtol:g}{note}")
            else:
                self.line("FAIL", name, f"{kind}: max relative difference {rel:.3e} > rtol {self.rtol:g}{note}")
            return
        # strings, compound or other types: equal or not
        try:
            equal = bool(np.all(a == b)) and a.dtype.kind == b.dtype.kind
        except Exception:  # noqa: BLE001 - incomparable types
            equal = False
        if equal:
            self.line("identical", name, f"{kind} (equal values)")
        else:
            self.line("FAIL", name, f"{kind}: {short(a)} vs {short(b)}")

    def attributes(self, path, oa, ob):
        for key in sorted(set(oa.attrs) | set(ob.attrs)):
            name = f"{path.rstrip('/')}/@{key}" if path != "/" else f"/@{key}"
            if key in IGNORED_ATTRS:
                self.ignored_names.add(key)
                self.line("ignored", name, IGNORED_ATTRS[key])
                continue
            if key not in ob.attrs:
                self.line("FAIL", name, "attribute missing in the new file")
            elif key not in oa.attrs:
                self.line("note", name, "attribute only in the new file")
            else:
                self.values(name, oa.attrs[key], ob.attrs[key], "attribute")


def short(x):
    s = repr(x.tolist() if hasattr(x, "tolist") else x)
    return s if len(s) <= 80 else s[:77] + "..."


def walk(f):
    """Every group and dataset path of an open file, root first, sorted."""
    out = {"/": f}
    f.visititems(lambda name, obj: out.__setitem__("/" + name, obj))
    return out


def main():
    ap = argparse.ArgumentParser(description="Compares every dataset and attribute of two tdyn HDF5 files.")
    ap.add_argument("old", help="the reference (old) file")
    ap.add_argument("new", help="the file to check (new)")
    ap.add_argument("--rtol", type=float, default=1e-13,
                    help="largest allowed elementwise relative difference (default 1e-13)")
    ap.add_argument("--normwise", action="store_true",
                    help="2-D datasets (a vector per row) and /params/ vectors pass or fail on the normwise difference")
    ap.add_argument("--quiet", action="store_true", help="print only what is not bit-identical")
    args = ap.parse_args()
    try:
        fa = h5py.File(args.old, "r", swmr=False)
        fb = h5py.File(args.new, "r", swmr=False)
    except OSError as e:
        print(f"compare_runs.py: cannot open: {e}", file=sys.stderr)
        return 2
    c = Comparison(args.rtol, args.quiet, args.normwise)
    print(f"compare {args.old} (old) with {args.new} (new), rtol {args.rtol:g}"
          + (" (2-D datasets: normwise per row)" if args.normwise else ""))
    with fa, fb:
        ta, tb = walk(fa), walk(fb)
        for path in sorted(set(ta) | set(tb)):
            a, b = ta.get(path), tb.get(path)
            if b is None:
                c.line("FAIL", path, ("dataset" if isinstance(a, h5py.Dataset) else "group") + " missing in the new file")
                continue
            if a is None:
                c.line("note", path, ("dataset" if isinstance(b, h5py.Dataset) else "group") + " only in the new file")
                continue
            if isinstance(a, h5py.Dataset) != isinstance(b, h5py.Dataset):
                c.line("FAIL", path, "a dataset in one file, a group in the other")
                continue
            if isinstance(a, h5py.Dataset):
                c.values(path, a[()], b[()], "dataset")
            c.attributes(path, a, b)
    n = c.counts
    verdict = "FAIL" if n["FAIL"] else "PASS"
    print(f"{verdict}: {n['identical']} bit-identical, {n['within']} within rtol {args.rtol:g}, "
          f"{n['FAIL']} failed, {n['notes']} notes (only in the new file), {n['ignored']} ignored attributes "
          f"({', '.join(sorted(c.ignored_names)) or 'none'}) -- {args.old} vs {args.new}")
    return 1 if n["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
