#!/usr/bin/python3
"""Figures of a tdyn run file as PNG files, without Jupyter.

    scripts/plot_run.py RUN.h5 [-o DIR] [--only NAME,NAME] [--dpi 110]

Writes DIR/NAME.png for every figure the file has data for (config, loss_accuracy,
grad_norm, sharpness, jacobian, lyapunov, overlap, density, trace), prints one line
per file written and per figure skipped (with the reason), then the folder.
DIR defaults to RUN_figures/ next to the run file. The run may still be being
written (the file is read with SWMR). Exit status: 0, or 1 when RUN.h5 is not a
tdyn run file (one line on stderr), 2 for bad arguments.
Reading and drawing live in notebooks/tdyn_runs.py, shared with the notebooks.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks"))
os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import h5py  # noqa: F401,E402
    import matplotlib  # noqa: F401,E402
    import tdyn_runs  # noqa: E402
except ImportError as e:
    sys.exit(f"plot_run: {e} (install the Debian packages with scripts/setup.sh; use /usr/bin/python3)")


def main(argv=None):
    names = [n for n, _, _ in tdyn_runs.FIGURES]
    ap = argparse.ArgumentParser(description="Write the figures of a tdyn run file as PNG files.")
    ap.add_argument("run", metavar="RUN.h5", help="tdyn run file (may still be running)")
    ap.add_argument("-o", "--out", metavar="DIR", help="output folder (default: RUN_figures next to the run file)")
    ap.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {','.join(names)}")
    ap.add_argument("--dpi", type=int, default=110, help="resolution of the PNG files (default 110)")
    ap.add_argument("--captions", action="store_true", help="also print what to look for in each figure")
    args = ap.parse_args(argv)
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if only and (bad := [n for n in only if n not in names]):
        ap.error(f"unknown figure(s) {', '.join(bad)}; known: {', '.join(names)}")
    out = args.out or os.path.splitext(args.run)[0] + "_figures"
    try:
        run = tdyn_runs.RunFile(args.run)
    except tdyn_runs.NotARunFile as e:
        print(e, file=sys.stderr)
        return 1
    with run:
        written, skipped = tdyn_runs.save_figures(run, out, names=only, dpi=args.dpi)
        if args.captions:
            for path in written:
                name = os.path.splitext(os.path.basename(path))[0]
                print(f"  {name}: {tdyn_runs.CAPTIONS[name]}")
    print(f"plot_run: {len(written)} figure(s) in {os.path.abspath(out)}" + (f", {len(skipped)} skipped" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
