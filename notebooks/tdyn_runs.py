"""Read tdyn run files and draw the standard figures of a run.

This module is the one reader of run files (docs/FORMAT.md) on the Python side:
the notebooks in this folder and scripts/plot_run.py import it, and nothing else
parses the HDF5 layout.

Reading
-------
    run = RunFile("runs/default.h5")        # raises NotARunFile for anything else
    run.config                              # root attributes as a dict (alpha, arch, status, ...)
    run.trajectory()                        # Series: step, loss, accuracy, grad_norm
    run.spectrum()                          # Series or None: step, hessian_top [n x K], ... of /spectrum
    run.spectra()                           # {name: Series} of every spectrum group, "/spectrum" first
    run.trace(), run.density()              # Series or None (/spectrum's, else another group's)
    run.lyapunov(), run.perturbation(), run.overlap()   # Series or None
    run.close()                             # or use `with RunFile(path) as run:`

Every accessor reads the file afresh. The file is opened read-only with SWMR
(`libver="latest", swmr=True`) so that a run that is still being written can be
read; each dataset is refreshed before it is read, so calling an accessor again
(re-running a notebook cell) shows the newest rows. Files that are not SWMR-marked
are opened normally. Within a group all arrays are cut to the shortest length, so
a row that the writer has appended to one dataset but not yet to the next is not
shown half-written. Analysis groups whose steps repeat (`tdyn spectrum` run twice
over the same steps appends new rows) are sorted by step, keeping the newest row
of each step.

A Series is a small namespace of numpy arrays (attribute access, plus `.attrs`
for the group's HDF5 attributes and `.names` for the array names).

Spectrum groups: a run file may hold one spectrum group per configuration (K, which):
/spectrum (the first one made) and siblings /spectrum_k{K}_{which}, e.g. /spectrum_k3_top
(docs/FORMAT.md). `spectrum_names()` lists them, `spectra()` reads them all. A spectrum
Series' .attrs always holds `name`, `eigs` (K) and `which` ("top", "bottom", "both"); for
files written before the `which` attribute existed it is inferred from the data ("top"
when every hessian_bottom value is NaN, "bottom" likewise, else "both") and
`which_inferred` is True.

Figures
-------
FIGURES lists (name, function, caption). Each function takes a RunFile and
returns a matplotlib Figure, or raises NoData(reason) when the file has nothing to
draw for it. `save_figures(run, folder)` writes them all as PNG files (what
scripts/plot_run.py does); `show(run, name)` prints the caption and draws one
figure in a notebook.

The learning-rate sweep (scripts of the Lyapunov issue) writes sweep.csv with the
columns of SWEEP_COLUMNS; `read_sweep(path)` reads it and `plot_sweep(sweep)` draws
it. `sweep_rows(run_files)` builds the same table from a set of run files.
"""

from __future__ import annotations

import csv
import math
import os
import re
import types

import numpy as np

RUN_FORMAT = "tdyn-run"
FORMAT_VERSION = 1  # the newest run-file version this reader understands
DEFAULT_SPECTRUM = "/spectrum"
_SPECTRUM_SIBLING = re.compile(r"spectrum_k([0-9]+)_(top|bottom|both)")  # /spectrum_k{K}_{which}
_WHICH_ORDER = {"top": 0, "bottom": 1, "both": 2}
SPECTRUM_ARRAYS = ["step", "hessian_top", "hessian_bottom", "residual_top", "residual_bottom", "jacobian", "matvecs",
                   "converged", "lambda_max", "two_over_alpha", "unstable", "max_abs_mu", "cos_g_u1"]
SWEEP_COLUMNS = ["alpha", "steps", "status", "final_loss", "lambda_max", "two_over_alpha", "top_exponent", "run_file"]


class NotARunFile(Exception):
    """The file does not exist, is not HDF5, or lacks format = "tdyn-run"."""


class NoData(Exception):
    """A figure has nothing to draw in this file; the message says why."""


class Series(types.SimpleNamespace):
    """Arrays of one group (attribute access), its HDF5 attributes in .attrs."""

    def __init__(self, arrays, attrs=None):
        super().__init__(**arrays)
        self.names = list(arrays)
        self.attrs = dict(attrs or {})

    def __len__(self):
        return len(getattr(self, self.names[0])) if self.names else 0


def _plain(value):
    """HDF5 attribute value -> str / int / float / list."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind in "SO" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class RunFile:
    """A tdyn run file opened read-only (SWMR when the file allows it)."""

    def __init__(self, path):
        import h5py  # imported here so that `import tdyn_runs` works without h5py for the CSV helpers

        self.path = str(path)
        if not os.path.exists(self.path):
            raise NotARunFile(f"{self.path}: not a tdyn run file (no such file)")
        if os.path.isdir(self.path):
            raise NotARunFile(f"{self.path}: not a tdyn run file (it is a folder)")
        if not h5py.is_hdf5(self.path):
            raise NotARunFile(f"{self.path}: not a tdyn run file (not an HDF5 file)")
        try:
            self._file = h5py.File(self.path, "r", libver="latest", swmr=True)
        except (OSError, ValueError):
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise NotARunFile(f"{self.path}: cannot open the HDF5 file ({e})") from None
        fmt = _plain(self._file.attrs.get("format", ""))
        if fmt != RUN_FORMAT:
            found = f'format = "{fmt}"' if fmt else "no root attribute format"
            self._file.close()
            raise NotARunFile(f'{self.path}: not a tdyn run file ({found}; expected format = "{RUN_FORMAT}")')
        version = _plain(self._file.attrs.get("format_version", 1))
        if int(version) > FORMAT_VERSION:
            self._file.close()
            raise NotARunFile(f"{self.path}: run-file format_version {version} is newer than this reader ({FORMAT_VERSION})")

    # -- plumbing ---------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._file:
            self._file.close()
            self._file = None

    @property
    def swmr(self):
        """True when the file was opened in SWMR mode (a live view of a running writer)."""
        return bool(self._file.swmr_mode)

    def has(self, name):
        """True when the dataset or group `name` exists and, for a group, holds a non-empty `step`."""
        if name not in self._file:
            return False
        obj = self._file[name]
        if hasattr(obj, "shape"):
            return True
        return "step" in obj and len(self._read(f"{name}/step")) > 0

    def _read(self, name):
        ds = self._file[name]
        if self._file.swmr_mode:
            ds.refresh()
        return ds[()]

    def _group(self, group, names, required=("step",), dedupe=False):
        """Arrays `names` of `group` (those that exist), cut to a common length; None if absent."""
        if not all(f"{group}/{r}" in self._file for r in required):
            return None
        arrays = {n: np.asarray(self._read(f"{group}/{n}")) for n in names if f"{group}/{n}" in self._file}
        arrays = {n: a for n, a in arrays.items() if a.ndim >= 1}
        n = min(len(a) for a in arrays.values())
        if n == 0:
            return None
        arrays = {k: a[:n] for k, a in arrays.items()}
        if dedupe and "step" in arrays:
            step = arrays["step"]
            # newest row of each step, in step order
            last = {s: i for i, s in enumerate(step.tolist())}
            order = np.array([last[s] for s in sorted(last)], dtype=int)
            if len(order) != n or np.any(np.diff(order) < 0):
                arrays = {k: a[order] for k, a in arrays.items()}
        attrs = {k: _plain(v) for k, v in self._file[group].attrs.items()}
        return Series(arrays, attrs)

    # -- contents ---------------------------------------------------------------------------------
    @property
    def config(self):
        """Root attributes (configuration and state), read afresh."""
        return {k: _plain(v) for k, v in self._file.attrs.items()}

    @property
    def alpha(self):
        return float(self.config["alpha"])

    @property
    def status(self):
        return str(self.config.get("status", "unknown"))

    def trajectory(self):
        """step, loss, accuracy, grad_norm [n]; None when no step was written yet."""
        return self._group("/trajectory", ["step", "loss", "accuracy", "grad_norm"])

    def theta_steps(self):
        s = self._group("/trajectory", ["theta_step"], required=("theta_step",))
        return np.array([]) if s is None else s.theta_step

    def spectrum_names(self):
        """Names of the spectrum groups that hold at least one complete row: "/spectrum" first, then the
        /spectrum_k{K}_{which} siblings by K and which (top, bottom, both)."""
        keyed = []
        for child in self._file:
            m = _SPECTRUM_SIBLING.fullmatch(child)
            if child == DEFAULT_SPECTRUM[1:]:
                keyed.append(((-1, -1), "/" + child))
            elif m:
                keyed.append(((int(m.group(1)), _WHICH_ORDER[m.group(2)]), "/" + child))
        return [name for _, name in sorted(keyed) if self.has(name)]

    def spectrum(self, name=DEFAULT_SPECTRUM):
        """One spectrum group (default /spectrum): step [n]; hessian_top, hessian_bottom, residual_top,
        residual_bottom, jacobian [n x K] (NaN-padded); matvecs, converged, lambda_max, two_over_alpha, unstable,
        max_abs_mu, cos_g_u1 [n] (cos_g_u1 absent in files written before it). .attrs: the group's attributes, with name, eigs and which always set (see the module
        docstring). None when the group is absent or empty."""
        if not name.startswith("/"):
            name = "/" + name
        if name not in self._file or not hasattr(self._file[name], "keys"):
            return None
        s = self._group(name, SPECTRUM_ARRAYS, dedupe=True)
        if s is None:
            return None
        s.attrs["name"] = name
        if "eigs" not in s.attrs and "hessian_top" in s.names and s.hessian_top.ndim == 2:
            s.attrs["eigs"] = int(s.hessian_top.shape[1])
        if "which" not in s.attrs:
            top = "hessian_top" in s.names and np.isfinite(s.hessian_top).any()
            bottom = "hessian_bottom" in s.names and np.isfinite(s.hessian_bottom).any()
            s.attrs["which"] = "top" if top and not bottom else "bottom" if bottom and not top else "both"
            s.attrs["which_inferred"] = True
        return s

    def spectra(self):
        """Every spectrum group: {name: Series} in the order of spectrum_names() ("/spectrum" first)."""
        out = {}
        for name in self.spectrum_names():
            s = self.spectrum(name)
            if s is not None:
                out[name] = s
        return out

    def _spectrum_sub(self, sub, names, group):
        """Subgroup `sub` (trace, density) of spectrum group `group`; group None: /spectrum's, else the first
        other group's that has one. .attrs["spectrum"] names the group it came from."""
        candidates = [group if group.startswith("/") else "/" + group] if group else self.spectrum_names()
        for g in candidates:
            if f"{g}/{sub}/step" in self._file:
                s = self._group(f"{g}/{sub}", names, dedupe=True)
                if s is not None:
                    s.attrs["spectrum"] = g
                    return s
        return None

    def trace(self, group=None):
        """Hutchinson trace of H: step, trace, standard_error, probes [n]. From `group` (a spectrum group name),
        or by default /spectrum/trace, else the first other spectrum group that has one."""
        return self._spectrum_sub("trace", ["step", "trace", "standard_error", "probes"], group)

    def density(self, group=None):
        """SLQ spectral density of H: step, sigma [n]; grid, density [n x G]. Group chosen as for trace()."""
        return self._spectrum_sub("density", ["step", "sigma", "grid", "density"], group)

    def lyapunov(self):
        """step [n_l]; log_growth, exponents [n_l x M]; attrs vectors, qr_every, warmup, alpha."""
        return self._group("/lyapunov", ["step", "log_growth", "exponents"])

    def perturbation(self):
        """Finite-perturbation cross-check: step, log_growth, exponent [n_p]; attrs eps (from /lyapunov when
        the subgroup has none)."""
        p = self._group("/lyapunov/perturbation", ["step", "log_growth", "exponent"])
        if p is not None and "eps" not in p.attrs and "eps" in self._file["/lyapunov"].attrs:
            p.attrs["eps"] = _plain(self._file["/lyapunov"].attrs["eps"])
        return p

    def overlap(self):
        """|cos| of the leading tangent vector with the top eigenvectors of H: step [n_o], overlap [n_o x K]."""
        if "/lyapunov/overlap_step" not in self._file or "/lyapunov/overlap" not in self._file:
            return None
        step = np.asarray(self._read("/lyapunov/overlap_step"))
        ov = np.asarray(self._read("/lyapunov/overlap"))
        n = min(len(step), len(ov))
        return None if n == 0 else Series({"step": step[:n], "overlap": ov[:n]})

    def growth(self):
        """tdyn growth's windows [start, end): start, end, passes, converged [n_g]; log_sigma, exponents (per
        step), error [n_g x k]; attrs vectors, block, window, tol, alpha. None without /growth. (The file's
        datasets `from` and `to` are `start` and `end` here: `from` is a Python keyword.)"""
        g = self._group("/growth", ["from", "to", "log_sigma", "exponents", "error", "passes", "converged"],
                        required=("from",))
        if g is None:
            return None
        arrays = {("start" if n == "from" else "end" if n == "to" else n): getattr(g, n) for n in g.names}
        return Series(arrays, g.attrs)

    def summary(self):
        """Configuration and contents as lines of text."""
        c = self.config
        t = self.trajectory()
        arch = "-".join(str(w) for w in c.get("arch", []))
        samples = c.get("samples", 0)
        batch = c.get("batch", 0)
        lines = [
            f"file          {self.path}" + ("   (live: opened with SWMR)" if self.swmr and c.get("status") == "running" else ""),
            f"status        {c.get('status', '?')}" + (f" at step {c['diverged_at']}" if c.get("status") == "diverged" else ""),
            f"network       {arch}, {c.get('activation', '?')} hidden, {c.get('output', '?')} output",
            f"data          {c.get('data', '?')}, {'all' if not samples else samples} samples, "
            + ("full batch" if not batch else f"mini-batch B = {batch}"),
            f"alpha         {c.get('alpha', float('nan')):g}   (2/alpha = {2.0 / c['alpha']:g})" if c.get("alpha") else "alpha         ?",
            f"steps         {c.get('steps', '?')} requested, seed {c.get('seed', '?')}, precision {c.get('precision', '?')}",
        ]
        if t is not None:
            lines.append(f"trajectory    {len(t)} rows (t = {t.step[0]:g}..{t.step[-1]:g}); "
                         f"loss {t.loss[0]:.4g} -> {t.loss[-1]:.4g}, accuracy {t.accuracy[0]:.3f} -> {t.accuracy[-1]:.3f}")
        else:
            lines.append("trajectory    empty")
        for name, s in self.spectra().items():
            lines.append(f"spectrum      {name}: {len(s)} steps (t = {s.step[0]:g}..{s.step[-1]:g}), K = {s.attrs['eigs']}, "
                         f"which {s.attrs['which']}" + (" (inferred)" if s.attrs.get("which_inferred") else "")
                         + f"; last lambda_max = {s.lambda_max[-1]:.4g}")
        tr, d = self.trace(), self.density()
        if tr is not None:
            lines.append(f"trace         {len(tr)} steps" + _from_group(tr))
        if d is not None:
            lines.append(f"density       {len(d)} steps, {d.grid.shape[1]} grid points" + _from_group(d))
        ly = self.lyapunov()
        if ly is not None:
            lines.append(f"lyapunov      {len(ly)} QR steps, M = {ly.exponents.shape[1]}; "
                         f"last running exponents {np.array2string(ly.exponents[-1], precision=4)}")
        p = self.perturbation()
        if p is not None:
            lines.append(f"perturbation  {len(p)} steps, last exponent {p.exponent[-1]:.4g}")
        lines.append(f"tool          tdyn {c.get('tool_version', '?')}, format_version {c.get('format_version', '?')}")
        lines.append(f"command       {c.get('command_line', '?')}")
        return lines


def _from_group(sub):
    """" (from /spectrum_k3_top)" for a trace or density that does not come from /spectrum."""
    g = sub.attrs.get("spectrum", DEFAULT_SPECTRUM)
    return "" if g == DEFAULT_SPECTRUM else f" (from {g})"


def spectrum_label(s):
    """"K = 3, top (/spectrum_k3_top)": how the figures name a spectrum group in legends."""
    return f"K = {s.attrs.get('eigs', '?')}, {s.attrs.get('which', '?')} ({s.attrs.get('name', '?')})"


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None and "ipykernel" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(run, what):
    c = run.config
    live = " (running)" if c.get("status") == "running" else ""
    return f"{what} - {os.path.basename(run.path)}, alpha = {c.get('alpha', float('nan')):g}{live}"


def _mark_divergence(run, ax):
    c = run.config
    if c.get("status") == "diverged" and int(c.get("diverged_at", -1)) >= 0:
        ax.axvline(c["diverged_at"], color="red", lw=1, ls=":", label=f"diverged at t = {c['diverged_at']}")


def _loss_scale(ax, loss):
    """Log y when the loss spans more than three decades (a diverging run)."""
    fin = loss[np.isfinite(loss) & (loss > 0)]
    if len(fin) and fin.max() / fin.min() > 1e3:
        ax.set_yscale("log")


def fig_config(run):
    import textwrap

    plt = _plt()
    lines = []
    for line in run.summary():
        lines += textwrap.wrap(line, 118, subsequent_indent=" " * 14) or [""]
    h = 0.19 * len(lines) + 0.75
    fig = plt.figure(figsize=(11, h))
    fig.text(0.01, 1 - 0.22 / h, f"Run configuration - {os.path.basename(run.path)}", fontsize=11, va="top", ha="left")
    fig.text(0.01, 1 - 0.55 / h, "\n".join(lines), family="monospace", fontsize=9, va="top", ha="left")
    return fig


def fig_loss_accuracy(run):
    t = run.trajectory()
    if t is None:
        raise NoData("/trajectory holds no rows yet")
    plt = _plt()
    unit = " (nats)" if run.config.get("output") == "softmax-ce" else ""
    batch = " on the mini-batch" if run.config.get("batch", 0) else ""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(t.step, t.loss, color="C0")
    a1.set_xlabel("step t")
    a1.set_ylabel(f"training loss L(theta_t){unit}")
    _loss_scale(a1, t.loss)
    a1.set_title(f"loss{batch}")
    a2.plot(t.step, t.accuracy, color="C1")
    a2.set_xlabel("step t")
    a2.set_ylabel("training accuracy (fraction correct)")
    a2.set_title(f"accuracy{batch}")
    for a in (a1, a2):
        _mark_divergence(run, a)
        a.grid(alpha=0.3)
    if run.config.get("status") == "diverged":
        a1.legend()
    fig.suptitle(_title(run, "Loss and accuracy"))
    fig.tight_layout()
    return fig


def fig_grad_norm(run):
    t = run.trajectory()
    if t is None:
        raise NoData("/trajectory holds no rows yet")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    g = np.where(t.grad_norm > 0, t.grad_norm, np.nan)
    ax.semilogy(t.step, g, color="C2")
    ax.set_xlabel("step t")
    ax.set_ylabel("||grad L(theta_t)|| (log scale)")
    _mark_divergence(run, ax)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(_title(run, "Gradient norm"))
    fig.tight_layout()
    return fig


def _spectra_split(run):
    """(default spectrum Series, [other spectrum Series]): /spectrum and its siblings; when a file has no
    /spectrum but has siblings, the first sibling is the default. (None, []) without any."""
    spectra = list(run.spectra().values())
    return (spectra[0], spectra[1:]) if spectra else (None, [])


_OTHER_STYLES = [("C1", "s"), ("C2", "^"), ("C3", "D"), ("C5", "v"), ("C6", "P"), ("C8", "X"), ("C9", "*")]


def _other_style(i):
    """Colour and marker of the i-th non-default spectrum group in the figures."""
    return _OTHER_STYLES[i % len(_OTHER_STYLES)]


def _has_end(s, end):
    name = f"hessian_{end}"
    return name in s.names and np.isfinite(getattr(s, name)).any()


def fig_sharpness(run):
    s, others = _spectra_split(run)
    if s is None:
        raise NoData("no /spectrum group (train with --spectrum-every E, or run `tdyn spectrum RUN.h5 --steps stored`)")
    plt = _plt()
    alpha = run.alpha
    has_bottom = _has_end(s, "bottom") or any(_has_end(o, "bottom") for o in others)
    fig, axes = plt.subplots(2 if has_bottom else 1, 1, figsize=(9, 7 if has_bottom else 4.2), sharex=True, squeeze=False)
    ax = axes[0, 0]
    top = s.hessian_top
    K = top.shape[1]
    marker = "o" if len(s) <= 40 else None
    suffix = f", {spectrum_label(s)}" if others else ""
    if np.isfinite(top[:, 0]).any():
        ax.plot(s.step, top[:, 0], color="C0", lw=2, marker=marker, ms=3, label=f"lambda_max(H){suffix}")
        for i in range(1, K):
            ax.plot(s.step, top[:, i], color="C0", lw=0.8, alpha=max(0.25, 0.8 - 0.1 * i),
                    label=(f"lambda_2..lambda_{K}" if K > 2 else "lambda_2") if i == 1 else None)
    # the other spectrum groups: their top eigenvalues, open markers and dashed lines over the default's
    for j, o in enumerate(others):
        if not _has_end(o, "top"):
            continue
        color, mk = _other_style(j)
        ot = o.hessian_top
        ax.plot(o.step, ot[:, 0], color=color, lw=1.3, ls="--", marker=mk, ms=6, mfc="none",
                label=f"lambda_max(H), {spectrum_label(o)}")
        for i in range(1, ot.shape[1]):
            if np.isfinite(ot[:, i]).any():
                ax.plot(o.step, ot[:, i], color=color, lw=0.7, ls=":", marker=mk, ms=4, mfc="none", alpha=0.7)
    ax.axhline(2.0 / alpha, color="red", ls="--", lw=1.5, label=f"2/alpha = {2.0 / alpha:g}")
    ax.set_ylabel("eigenvalue of H")
    ax.set_title(_title(run, "Sharpness against the stability limit 2/alpha"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if has_bottom:
        ax2 = axes[1, 0]
        if _has_end(s, "bottom"):
            bottom = s.hessian_bottom
            for i in range(bottom.shape[1]):
                ax2.plot(s.step, bottom[:, i], color="C4", lw=2 if i == 0 else 0.8, marker=marker if i == 0 else None, ms=3,
                         alpha=1.0 if i == 0 else 0.5,
                         label=f"lambda_min(H){suffix}" if i == 0 else (f"next {bottom.shape[1] - 1} smallest" if i == 1 else None))
        for j, o in enumerate(others):
            if not _has_end(o, "bottom"):
                continue
            color, mk = _other_style(j)
            ob = o.hessian_bottom
            ax2.plot(o.step, ob[:, 0], color=color, lw=1.3, ls="--", marker=mk, ms=6, mfc="none",
                     label=f"lambda_min(H), {spectrum_label(o)}")
            for i in range(1, ob.shape[1]):
                if np.isfinite(ob[:, i]).any():
                    ax2.plot(o.step, ob[:, i], color=color, lw=0.7, ls=":", marker=mk, ms=4, mfc="none", alpha=0.7)
        ax2.axhline(0.0, color="black", lw=0.8)
        ax2.set_ylabel("eigenvalue of H")
        ax2.set_title("bottom of the spectrum of H (negative = non-convex directions)")
        ax2.grid(alpha=0.3)
        ax2.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("step t")
    fig.tight_layout()
    return fig


def fig_jacobian(run):
    s, others = _spectra_split(run)
    groups = [g for g in ([s] if s is not None else []) + others if "jacobian" in g.names and np.isfinite(g.jacobian).any()]
    if not groups:
        raise NoData("no eigenvalues of J in /spectrum/jacobian" + (" or the other spectrum groups" if others else ""))
    plt = _plt()
    alpha = run.alpha
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.axhspan(-1, 1, color="green", alpha=0.07, label="stable band |mu| <= 1")
    ax.axhline(1.0, color="black", lw=1, ls="--", label="+1 and -1")
    ax.axhline(-1.0, color="black", lw=1, ls="--")
    for g in groups:
        mu = g.jacobian
        steps = np.repeat(g.step[:, None], mu.shape[1], axis=1)
        outside = np.abs(mu) > 1
        inside = np.isfinite(mu) & ~outside
        which = f", {spectrum_label(g)}" if len(groups) > 1 else ""
        if g is s:  # the default group, drawn as before: dots, red crosses outside the band
            if inside.any():
                ax.scatter(steps[inside], mu[inside], s=14, color="C0", label=f"mu, |mu| <= 1{which}")
            if outside.any():
                ax.scatter(steps[outside], mu[outside], s=18, color="red", marker="x",
                           label=f"mu, |mu| > 1 (stretched by a step){which}")
        else:  # the others: open markers of their own shape, red outside the band
            color, mk = _other_style(others.index(g))
            if inside.any():
                ax.scatter(steps[inside], mu[inside], s=40, facecolors="none", edgecolors=color, marker=mk,
                           label=f"mu, |mu| <= 1{which}")
            if outside.any():
                ax.scatter(steps[outside], mu[outside], s=40, facecolors="none", edgecolors="red", marker=mk,
                           label=f"mu, |mu| > 1{which}")
    lo = min(np.nanmin(g.jacobian) for g in groups)
    hi = max(np.nanmax(g.jacobian) for g in groups)
    ax.set_ylim(min(lo, -1.0) - 0.1, max(hi, 1.0) + 0.1)
    ax.set_xlabel("step t")
    ax.set_ylabel(f"eigenvalue mu of J = I - alpha H (alpha = {alpha:g})")
    if len(groups) == 1:
        title = _title(run, f"The {groups[0].jacobian.shape[1]} eigenvalues of J of largest |mu|")
    else:
        title = _title(run, f"Eigenvalues of J of largest |mu| from {len(groups)} spectrum groups")
    if not any(_has_end(g, "bottom") for g in groups):
        # mu = 1 - alpha lambda: without the bottom of H's spectrum, mu > 1 (negative curvature) is unknown
        title += "\nfrom the top of H only (--which top): mu = 1 - alpha lambda_min, possibly > 1, is not included"
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def fig_lyapunov(run):
    ly = run.lyapunov()
    if ly is None:
        raise NoData("no /lyapunov group (train with --lyapunov M, or run `tdyn lyapunov RUN.h5 --vectors M`)")
    plt = _plt()
    q = max(1, int(ly.attrs.get("qr_every", 1)))
    warmup = int(ly.attrs.get("warmup", 0))
    t0 = int(ly.attrs.get("from", 0))
    p = run.perturbation()
    M = ly.exponents.shape[1]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True)
    for i in range(M):
        a1.plot(ly.step, ly.exponents[:, i], color=f"C{i % 10}", lw=1.8 if i == 0 else 1.1, label=f"lambda_{i + 1}")
    if p is not None:
        eps = p.attrs.get("eps", ly.attrs.get("eps", float("nan")))
        a1.plot(p.step, p.exponent, color="black", ls="--", lw=1.2, label=f"finite perturbation (eps = {eps:g})")
    a1.axhline(0.0, color="gray", lw=0.8)
    a1.set_ylabel("exponent per GD step (nats)")
    a1.set_title(_title(run, f"Lyapunov exponents (running), M = {M}, QR every {q}"))
    # finite-time exponents: log |R_ii| of each QR step, per GD step
    ft = ly.log_growth / q
    counted = ly.step - t0 + 1 > warmup  # docs/FORMAT.md: a QR row counts once t - t0 + 1 > W
    for i in range(M):
        vals = ft[counted, i]
        vals = vals[np.isfinite(vals)]
        spread = f" (mean {vals.mean():.3g}, sd {vals.std():.2g})" if len(vals) else ""
        a2.plot(ly.step, ft[:, i], color=f"C{i % 10}", lw=0.6, alpha=0.7, marker="." if len(ly) <= 200 else None,
                ms=3, label=f"lambda_{i + 1}{spread}")
    if p is not None and "log_growth" in p.names:
        a2.plot(p.step, p.log_growth / q, color="black", lw=0.6, alpha=0.6, ls="--", label="finite perturbation")
    a2.axhline(0.0, color="gray", lw=0.8)
    a2.set_ylabel("finite-time exponent per GD step (nats)")
    a2.set_xlabel("step t")
    a2.set_title("finite-time exponents: log |R_ii| / q of each QR step (spread in the legend)")
    for a in (a1, a2):
        if warmup > 0:
            a.axvspan(t0, t0 + warmup - 1, color="gray", alpha=0.12, label="warm-up" if a is a1 else None)
        a.grid(alpha=0.3)
        a.legend(loc="best", fontsize=8)
    # the running values are what matters: do not let early transients set the scale
    run_vals = ly.exponents[np.isfinite(ly.exponents)]
    if len(run_vals):
        tail = ly.exponents[len(ly) // 4:]
        tail = tail[np.isfinite(tail)]
        if len(tail):
            lo, hi = min(tail.min(), 0.0), max(tail.max(), 0.0)
            pad = 0.15 * (hi - lo) + 1e-12
            a1.set_ylim(lo - pad, hi + pad)
    fig.tight_layout()
    return fig


def fig_overlap(run):
    o = run.overlap()
    if o is None:
        raise NoData("no /lyapunov/overlap (needs Lyapunov vectors and eigenvectors of H at the same steps)")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    for i in range(o.overlap.shape[1]):
        ax.plot(o.step, o.overlap[:, i], marker="o" if len(o) <= 40 else None, ms=3, label=f"eigenvector {i + 1} of H")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step t")
    ax.set_ylabel("|cos| (leading tangent vector, eigenvector of H)")
    ax.set_title(_title(run, "Overlap of the leading Lyapunov vector with the top eigenvectors of H"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_density(run):
    d = run.density()
    if d is None:
        raise NoData("no /spectrum/density in any spectrum group (run `tdyn spectrum RUN.h5 --steps stored --density`)")
    plt = _plt()
    n = len(d)
    rows = sorted(set(np.linspace(0, n - 1, min(n, 5)).round().astype(int).tolist()))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    cmap = plt.get_cmap("viridis")
    peak = np.nanmax(d.density[rows])
    for j, r in enumerate(rows):
        ax.semilogy(d.grid[r], np.maximum(d.density[r], peak * 1e-12), color=cmap(j / max(1, len(rows) - 1)),
                    label=f"t = {d.step[r]:g} (sigma = {d.sigma[r]:.2g})")
    ax.set_ylim(peak * 1e-7, peak * 3)
    ax.axvline(2.0 / run.alpha, color="red", ls="--", lw=1, label=f"2/alpha = {2.0 / run.alpha:g}")
    ax.set_xlim(np.nanmin(d.grid[rows]), max(np.nanmax(d.grid[rows]), 0.0) * 1.05 + 1e-12)
    ax.set_xlabel("eigenvalue of H")
    ax.set_ylabel("spectral density (per unit eigenvalue, log scale)")
    ax.set_title(_title(run, "Spectral density of H (stochastic Lanczos quadrature)" + _from_group(d)))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_trace(run):
    tr = run.trace()
    if tr is None:
        raise NoData("no /spectrum/trace in any spectrum group (run `tdyn spectrum RUN.h5 --steps stored --trace`)")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.errorbar(tr.step, tr.trace, yerr=tr.standard_error, fmt="o-", ms=4, capsize=3, label="tr H +- standard error")
    s = run.spectrum(tr.attrs.get("spectrum", DEFAULT_SPECTRUM))
    if s is not None and np.isfinite(s.lambda_max).any():
        ax.plot(s.step, s.lambda_max, color="C3", alpha=0.7, lw=1, label="lambda_max(H), for scale")
    ax.set_xlabel("step t")
    ax.set_ylabel("trace of H (sum of eigenvalues)")
    ax.set_title(_title(run, "Trace of H (Hutchinson)" + _from_group(tr)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_overview(run):
    """Four panels in one figure (the README figure): loss and accuracy, gradient norm, sharpness
    against 2/alpha, and the Lyapunov exponents (or, without them, the eigenvalues of J)."""
    t = run.trajectory()
    if t is None:
        raise NoData("/trajectory holds no rows yet")
    plt = _plt()
    alpha = run.alpha
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    a = axes[0, 0]
    unit = " (nats)" if run.config.get("output") == "softmax-ce" else ""
    a.plot(t.step, t.loss, color="C0", label="loss")
    a.set_ylabel(f"training loss{unit}", color="C0")
    _loss_scale(a, t.loss)
    b = a.twinx()
    b.plot(t.step, t.accuracy, color="C1", label="accuracy")
    b.set_ylabel("training accuracy (fraction)", color="C1")
    b.set_ylim(0, 1)
    a.set_title("loss and accuracy")
    a = axes[0, 1]
    a.semilogy(t.step, np.where(t.grad_norm > 0, t.grad_norm, np.nan), color="C2")
    a.set_ylabel("||grad L(theta_t)|| (log scale)")
    a.set_title("gradient norm")
    a = axes[1, 0]
    s = run.spectrum()
    if s is not None and np.isfinite(s.hessian_top[:, 0]).any():
        a.plot(s.step, s.lambda_max, "o-", ms=3, color="C0", label="lambda_max(H)")
        if "hessian_bottom" in s.names and np.isfinite(s.hessian_bottom[:, 0]).any():
            a.plot(s.step, s.hessian_bottom[:, 0], "o-", ms=3, color="C4", label="lambda_min(H)")
        a.axhline(2.0 / alpha, color="red", ls="--", lw=1.5, label=f"2/alpha = {2.0 / alpha:g}")
        a.axhline(0.0, color="black", lw=0.6)
        a.legend(fontsize=8, loc="best")
    else:
        a.text(0.5, 0.5, "no /spectrum in this file", ha="center", va="center", transform=a.transAxes, color="gray")
    a.set_ylabel("eigenvalue of H")
    a.set_title("sharpness against the stability limit 2/alpha")
    a = axes[1, 1]
    ly = run.lyapunov()
    if ly is not None:
        for i in range(ly.exponents.shape[1]):
            a.plot(ly.step, ly.exponents[:, i], lw=1.5 if i == 0 else 1, label=f"lambda_{i + 1}")
        a.axhline(0.0, color="gray", lw=0.8)
        a.set_ylabel("exponent per GD step (nats)")
        a.set_title("Lyapunov exponents (running)")
        a.legend(fontsize=8, loc="best")
    elif s is not None and "jacobian" in s.names and np.isfinite(s.jacobian).any():
        a.axhspan(-1, 1, color="green", alpha=0.07)
        for v in (1.0, -1.0):
            a.axhline(v, color="black", lw=1, ls="--")
        steps = np.repeat(s.step[:, None], s.jacobian.shape[1], axis=1)
        a.scatter(steps, s.jacobian, s=12, color="C0")
        lo, hi = np.nanmin(s.jacobian), np.nanmax(s.jacobian)
        a.set_ylim(min(lo, -1.0) - 0.1, max(hi, 1.0) + 0.1)
        a.set_ylabel("eigenvalue mu of J = I - alpha H")
        top_only = "hessian_bottom" not in s.names or not np.isfinite(s.hessian_bottom).any()
        a.set_title("eigenvalues of J of largest |mu| against +1 and -1" + ("\n(from the top of H only)" if top_only else ""))
    else:
        a.text(0.5, 0.5, "no /lyapunov or /spectrum in this file", ha="center", va="center", transform=a.transAxes,
               color="gray")
        a.set_title("Lyapunov exponents")
    for a in axes.flat:
        _mark_divergence(run, a)
        a.set_xlabel("step t")
        a.grid(alpha=0.3)
    c = run.config
    arch = "-".join(str(w) for w in c.get("arch", []))
    samples = c.get("samples", 0)
    fig.suptitle(f"{os.path.basename(run.path)}: {arch} {c.get('activation', '')}, {c.get('output', '')}, "
                 f"alpha = {alpha:g}, {'all' if not samples else samples} samples of {c.get('data', '?')}, "
                 f"{'full batch' if not c.get('batch') else 'batch ' + str(c['batch'])}"
                 + (" (running)" if c.get("status") == "running" else ""))
    fig.tight_layout()
    return fig


FIGURES = [
    ("overview", fig_overview,
     "Four views of one run: the loss falls, the gradient norm shrinks, lambda_max(H) stays below 2/alpha while training is stable, and the top Lyapunov exponent says whether nearby trajectories separate."),
    ("config", fig_config,
     "The configuration and state of the run; status 'running' means the file is still being written, so re-run to see new rows."),
    ("loss_accuracy", fig_loss_accuracy,
     "Loss should fall and accuracy rise; a loss that spikes and recovers at a fixed alpha is the catapult of edge-of-stability training."),
    ("grad_norm", fig_grad_norm,
     "On a log scale a steady decline means convergence; a gradient norm that stalls or grows while the loss oscillates signals a step size at the edge of stability."),
    ("sharpness", fig_sharpness,
     "Gradient descent is stable along the top direction of H only while lambda_max < 2/alpha (red dashed line): look for lambda_max rising towards the line (progressive sharpening) and hovering at it (edge of stability); negative bottom eigenvalues are non-convex directions."),
    ("jacobian", fig_jacobian,
     "One step stretches the directions whose eigenvalue mu of J lies outside the band between -1 and +1: mu < -1 is an oscillating instability (lambda > 2/alpha), mu > 1 a direction of negative curvature (lambda < 0)."),
    ("lyapunov", fig_lyapunov,
     "The running exponents should settle to constants (the finite-time values below show how noisy each QR step is); a positive top exponent means nearby weight trajectories separate exponentially, and the finite-perturbation line should agree with lambda_1 where the map is smooth."),
    ("overlap", fig_overlap,
     "An overlap near 1 means the direction that grows fastest along the trajectory is the sharpest direction of H at that step."),
    ("density", fig_density,
     "Most of the spectral mass of H sits near zero (the bulk), with a few outliers at the top that set the sharpness; compare the outliers with 2/alpha."),
    ("trace", fig_trace,
     "The trace sums all eigenvalues of H: if it grows with lambda_max the whole spectrum sharpens, if it stays flat only the outliers do."),
]
CAPTIONS = {name: caption for name, _, caption in FIGURES}


def figure(run, name):
    """The Figure `name` (see FIGURES) of a run; raises NoData when the file has nothing for it."""
    for n, fn, _ in FIGURES:
        if n == name:
            return fn(run)
    raise KeyError(f"no figure {name!r}; known: {', '.join(n for n, _, _ in FIGURES)}")


def save_figures(run, folder, names=None, dpi=110, log=print):
    """Writes FOLDER/NAME.png for each figure with data; returns (written paths, {name: reason skipped})."""
    plt = _plt()
    os.makedirs(folder, exist_ok=True)
    written, skipped = [], {}
    for name, fn, _ in FIGURES:
        if names and name not in names:
            continue
        try:
            fig = fn(run)
        except NoData as e:
            skipped[name] = str(e)
            if log:
                log(f"skipped {name}: {e}")
            continue
        path = os.path.join(folder, f"{name}.png")
        with np.errstate(over="ignore"):  # tick computation on log axes of a diverged run
            fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)
        if log:
            log(f"wrote {path}")
    return written, skipped


def show(run, name):
    """Notebook helper: prints the caption of figure `name` and draws it, or says why there is no data."""
    plt = _plt()
    try:
        fig = figure(run, name)
    except NoData as e:
        print(f"[{name}] no data in this file: {e}")
        return None
    print(CAPTIONS[name])
    plt.show()
    return fig


def watch(path, names=("loss_accuracy", "sharpness"), every=10.0, rounds=30):
    """Notebook live view: redraws figures of a run that is being written, every `every` seconds."""
    import time

    from IPython.display import clear_output

    plt = _plt()
    for _ in range(rounds):
        with RunFile(path) as run:
            clear_output(wait=True)
            print("\n".join(run.summary()[:2]))
            for name in names:
                show(run, name)
            status = run.status
        if status != "running":
            break
        time.sleep(every)
    plt.close("all")


# ---------------------------------------------------------------------------------------------------
# Learning-rate sweep
# ---------------------------------------------------------------------------------------------------
def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_sweep(path):
    """sweep.csv -> Series of arrays sorted by alpha (numbers as float, NaN where missing); run_file
    paths are made absolute relative to the CSV's folder. A folder means FOLDER/sweep.csv."""
    if os.path.isdir(path):
        path = os.path.join(path, "sweep.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("alpha", "status") if rows and c not in rows[0]]
    if not rows:
        raise ValueError(f"{path}: no rows")
    if missing:
        raise ValueError(f"{path}: not a sweep table (no column {', '.join(missing)}; expected {','.join(SWEEP_COLUMNS)})")
    rows.sort(key=lambda r: _num(r["alpha"]))
    folder = os.path.dirname(os.path.abspath(path))
    out = {}
    for col in SWEEP_COLUMNS:
        vals = [r.get(col, "") for r in rows]
        if col in ("status", "run_file"):
            if col == "run_file":
                vals = [os.path.join(folder, v) if v and not os.path.isabs(v) else v for v in vals]
            out[col] = np.array(vals, dtype=object)
        else:
            out[col] = np.array([_num(v) for v in vals])
    return Series(out, {"path": path})


def sweep_rows(run_files):
    """One sweep.csv row (a dict of SWEEP_COLUMNS) per run file: the same table the sweep script writes."""
    rows = []
    for path in run_files:
        with RunFile(path) as run:
            c = run.config
            t, s, ly = run.trajectory(), run.spectrum(), run.lyapunov()
            last_exp = ly.exponents[-1] if ly is not None else np.array([math.nan])
            rows.append({
                "alpha": c["alpha"], "steps": int(t.step[-1]) if t is not None else 0, "status": c.get("status", "?"),
                "final_loss": t.loss[-1] if t is not None else math.nan,
                "lambda_max": s.lambda_max[-1] if s is not None else math.nan,
                "two_over_alpha": 2.0 / c["alpha"],
                "top_exponent": last_exp[0] if len(last_exp) else math.nan,
                "run_file": path})
    return rows


def write_sweep(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SWEEP_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.17g}" if isinstance(v, float) else v) for k, v in r.items()})


def first_unstable_alpha(sweep):
    """Smallest alpha whose run diverged or ended with lambda_max(H) > 2/alpha (a step overshoots along the
    sharpest direction); NaN when none did. The top exponent is not used: small positive exponents also come
    from negative curvature (J's eigenvalue 1 - alpha lambda_min > 1) in perfectly stable training."""
    bad = (sweep.status == "diverged") | (sweep.lambda_max > sweep.two_over_alpha)
    return float(sweep.alpha[bad].min()) if bad.any() else math.nan


def plot_sweep(sweep):
    """Top exponent, final sharpness (with 2/alpha) and final loss against alpha; diverged runs as red crosses."""
    plt = _plt()
    a = sweep.alpha
    div = sweep.status == "diverged"
    ok = ~div
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    a1.plot(a[ok], sweep.top_exponent[ok], "o-", color="C0", label="completed")
    if div.any():
        a1.plot(a[div], sweep.top_exponent[div], "x", color="red", ms=9, mew=2, label="diverged")
    a1.axhline(0.0, color="gray", lw=0.8)
    a1.set_ylabel("top Lyapunov exponent\nper GD step (nats)")
    a1.set_title("Learning-rate sweep")
    a2.plot(a[ok], sweep.lambda_max[ok], "o-", color="C0", label="final lambda_max(H)")
    if div.any():
        a2.plot(a[div], sweep.lambda_max[div], "x", color="red", ms=9, mew=2, label="diverged")
    grid = np.geomspace(np.nanmin(a), np.nanmax(a), 200) if np.nanmin(a) > 0 else np.linspace(np.nanmin(a), np.nanmax(a), 200)
    a2.plot(grid, 2.0 / grid, "--", color="red", lw=1.2, label="2/alpha")
    a2.set_ylabel("eigenvalue of H")
    finite_lm = sweep.lambda_max[np.isfinite(sweep.lambda_max)]
    if len(finite_lm):
        a2.set_ylim(0, 1.5 * max(finite_lm.max(), 1e-12) + 1e-12)
    a3.plot(a[ok], sweep.final_loss[ok], "o-", color="C2", label="completed")
    if div.any():
        a3.plot(a[div], np.where(np.isfinite(sweep.final_loss[div]), sweep.final_loss[div], np.nan), "x", color="red", ms=9, mew=2)
    a3.set_ylabel("final training loss")
    fin = sweep.final_loss[np.isfinite(sweep.final_loss) & (sweep.final_loss > 0)]
    if len(fin) and fin.max() / fin.min() > 30:
        a3.set_yscale("log")
    a3.set_xlabel("learning rate alpha")
    unstable = first_unstable_alpha(sweep)
    for ax in (a1, a2, a3):
        if np.isfinite(unstable):
            ax.axvline(unstable, color="orange", lw=1.5, ls=":", label=f"first unstable alpha = {unstable:g}" if ax is a1 else None)
        if np.nanmin(a) > 0 and np.nanmax(a) / np.nanmin(a) > 5:
            ax.set_xscale("log")
            ax.set_xticks(a[np.isfinite(a)])
            ax.set_xticklabels([f"{v:g}" for v in a[np.isfinite(a)]])
            ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_sweep_curves(sweep, series="loss"):
    """Loss (or 'sharpness') curves of the sweep's run files, one line per alpha."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    cmap = plt.get_cmap("plasma")
    n = len(sweep.alpha)
    drawn = 0
    for j, (alpha, path) in enumerate(zip(sweep.alpha, sweep.run_file)):
        if not path or not os.path.exists(path):
            continue
        try:
            with RunFile(path) as run:
                if series == "sharpness":
                    s = run.spectrum()
                    if s is None:
                        continue
                    x, y = s.step, s.lambda_max
                else:
                    t = run.trajectory()
                    if t is None:
                        continue
                    x, y = t.step, t.loss
        except NotARunFile:
            continue
        ax.plot(x, y, color=cmap(j / max(1, n - 1) * 0.9), label=f"alpha = {alpha:g}")
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise NoData("none of the sweep's run files could be read")
    ax.set_xlabel("step t")
    ax.set_ylabel("training loss (nats)" if series == "loss" else "lambda_max(H)")
    if series == "loss":
        ax.set_yscale("log")
    ax.set_title(f"{'Loss' if series == 'loss' else 'Sharpness'} curves of the sweep")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
