"""tdyn for Python: gradients, Hessian-vector products, eigenvalues and training runs of the
C++ library (every number comes from it; this file only arranges arguments). docs/PYTHON.md.

    import numpy as np, tdyn
    data = tdyn.load_data("mnist", samples=1000)
    net = tdyn.Network("784-50-10", activation="sigmoid", output="softmax-ce")
    ev = tdyn.Evaluation(net, data, net.init(seed=0))
    ev.loss, ev.accuracy, ev.gradient(), ev.hvp(v), ev.jvp(v, lr=0.1)
    tdyn.eigenvalues(ev, k=3, which="top")

Arrays: float64, contiguous, finite, of the right length; a block of vectors [P, M] is in
Fortran order (one vector per column, as tdyn stores it). Anything else raises tdyn.Error (a
ValueError) saying how to convert; tdyn never converts silently.
"""

from dataclasses import dataclass
import os as _os

from ._tdyn import (  # noqa: F401
    Data,
    Eigenpairs,
    Error,
    Evaluation,
    Network,
    Run,
    Step,
    TrainResult,
    __version__,
    eigenvalues,
)
from . import _tdyn

__all__ = [
    "Data", "Eigenpairs", "Error", "Evaluation", "Network", "Run", "Step", "TrainResult", "eigenvalues",
    "open_run", "load_data", "train", "Spectrum", "Lyapunov", "as_linear_operator",
]


def load_data(name="mnist", samples=0, split="train", data_dir=None, classes=10):
    """A named data set (mnist, fashion-mnist) or an HDF5 data file (/X, /T or /labels), as tdyn
    reads it: x = pixel / 255, one-hot targets. samples = 0 takes all, else the first `samples`.
    data_dir: where the named sets are (default $TDYN_DATA, else data/ of the project)."""
    return _tdyn._load_data(_os.fspath(name), int(samples), split, "" if data_dir is None else _os.fspath(data_dir),
                            int(classes))


def open_run(path, data_dir=None):
    """A run file (tdyn train's, or train()'s) open for reading, with SWMR so that it works while
    a run writes it. data_dir: where replayed steps and evaluation() find the run's data."""
    return _tdyn.open_run(_os.fspath(path), "" if data_dir is None else _os.fspath(data_dir))


def as_linear_operator(evaluation, lr=None):
    """H (or J = I - lr H with `lr`) at the Evaluation's theta as a scipy LinearOperator, for
    eigsh, lobpcg, cg, ... Blocks SciPy hands over in C order are copied to Fortran order once."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator

    P = evaluation.num_params

    def product(x):
        x = np.asfortranarray(x, dtype=np.float64)
        return evaluation.hvp(x) if lr is None else evaluation.jvp(x, lr)

    def matvec(x):
        return product(np.ravel(x))

    return LinearOperator((P, P), matvec=matvec, rmatvec=matvec, matmat=product, rmatmat=product, dtype=np.float64)


Evaluation.as_linear_operator = lambda self, lr=None: as_linear_operator(self, lr)
Evaluation.as_linear_operator.__doc__ = as_linear_operator.__doc__


@dataclass
class Spectrum:
    """In-line eigenvalues of H (and J) every `every` steps, K = eigs at `which` end(s), as
    tdyn train --spectrum-every E --eigs K --which W (written to /spectrum)."""
    every: int
    eigs: int = 1
    which: str = "both"


@dataclass
class Lyapunov:
    """M = vectors tangent vectors for the top Lyapunov exponents, as tdyn train --lyapunov M
    --qr-every q --warmup W [--perturbation EPS] (written to /lyapunov)."""
    vectors: int
    qr_every: int = 1
    warmup: int = 0
    perturbation: float = 0.0


_DEFAULTS = dict(data="mnist", samples=0, arch="784-50-10", activation="sigmoid", output="softmax-ce", lr=0.1,
                 weight_decay=0.0, steps=100, batch=0, seed=0, init="", save_theta_every=10, precision="f64",
                 x_path="auto")


def train(out, *, analyses=(), callback=None, resume=False, force=False, data_dir=None, **config):
    """Gradient descent through tdyn's step loop (the same run file as tdyn train).

    config: data, samples, arch, activation, output, lr, weight_decay, steps, batch, seed, init,
    save_theta_every, precision, x_path (tdyn train's flags; defaults as there).
    analyses: tdyn.Spectrum(...) and/or tdyn.Lyapunov(...).
    callback(step): called once per step with a tdyn.Step (t, loss, accuracy, grad_norm, theta,
    next_theta, evaluation: the step's own Evaluation, valid during the call). If it raises, the
    run stops cleanly before the next step (status interrupted, theta stored) and train raises
    the exception; Ctrl-C does the same with KeyboardInterrupt. Continue with
    train(out, resume=True) or `tdyn train --out OUT --resume`.
    resume: continue the run in `out`; config keys given must equal the run's (steps may change).
    """
    unknown = set(config) - set(_DEFAULTS)
    if unknown:
        raise Error(f"train: unknown argument(s) {', '.join(sorted(unknown))}; expected {', '.join(_DEFAULTS)}")
    if callback is not None and not callable(callback):
        raise Error(f"callback: expected a callable, found {type(callback).__name__}")
    settings = dict(spectrum_every=0, eigs=1, which="both", lyapunov=0, qr_every=1, warmup=0, perturbation=0.0)
    for a in analyses:
        if isinstance(a, Spectrum):
            settings.update(spectrum_every=int(a.every), eigs=int(a.eigs), which=str(a.which))
        elif isinstance(a, Lyapunov):
            settings.update(lyapunov=int(a.vectors), qr_every=int(a.qr_every), warmup=int(a.warmup),
                            perturbation=float(a.perturbation))
        else:
            raise Error(f"analyses: expected tdyn.Spectrum or tdyn.Lyapunov, found {type(a).__name__} "
                        "(a Python plug-in goes in callback=)")
    steps = -1
    if resume:
        if analyses:
            raise Error("analyses: a resumed run keeps its analyses; give none with resume=True")
        with open_run(out) as run:
            stored = run.config
        differ = [f"{k}={config[k]!r} differs from the run's {stored[k]!r}" for k in config
                  if k != "steps" and config[k] != stored[k] and not (k == "init" and not config[k] and not stored[k])]
        if differ:
            raise Error(f"resume: {out}: {'; '.join(differ)} (a resumed run keeps its configuration; only steps may change)")
        steps = int(config.get("steps", -1))
    full = dict(_DEFAULTS, **config)
    full["init"] = full["init"] or ""
    given = ", ".join(f"{k}={v!r}" for k, v in config.items())
    line = f"python3: tdyn.train({out!r}{', ' + given if given else ''}" + (", resume=True" if resume else "") + ")"
    return _tdyn._train(_os.fspath(out), full, settings, bool(resume), steps, bool(force),
                        "" if data_dir is None else _os.fspath(data_dir), line, callback)


del dataclass
