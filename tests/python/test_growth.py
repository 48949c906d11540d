"""Run.window_growth (tdyn growth for one window, from Python) against the truth: the dense
product M = J(a+W-1) .. J(a) of a small run, J(t) = I - lr H(theta_t) with H from exact
Hessian-vector products of the identity, and its singular values by numpy's SVD."""

import subprocess

import h5py
import numpy as np
import pytest
from conftest import TDYN_BINARY

import tdyn


@pytest.fixture
def small_run(tmp_path):
    """30 steps of 6-5-3 tanh softmax on 40 random points (P = 53), theta stored every 10."""
    rng = np.random.default_rng(4)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X"] = rng.uniform(-1, 1, (40, 6))
        f["labels"] = rng.integers(0, 3, 40)
    out = tmp_path / "run.h5"
    tdyn.train(out, data=str(tmp_path / "d.h5"), arch="6-5-3", activation="tanh", lr=0.5, steps=30,
               save_theta_every=10, seed=2)
    return out


def dense_window(run, a, W):
    lr = run.config["lr"]
    P = run.theta(a).size
    M = np.eye(P)
    for t in range(a, a + W):
        H = run.evaluation(t).hvp(np.asfortranarray(np.eye(P)))
        H = 0.5 * (H + H.T)  # exact products: symmetric to rounding
        M = (np.eye(P) - lr * H) @ M
    return np.linalg.svd(M, compute_uv=True)


def test_window_growth_matches_the_dense_product(small_run):
    with tdyn.open_run(small_run) as run:
        U, S, Vt = dense_window(run, 12, 5)  # starts between stored thetas: 12 is replayed from 10
        g = run.window_growth(12, 5, vectors=3, tol=1e-12, passes=3000)
    assert g["converged"]
    # the passes stop at an estimated 1e-12 per step; the dense SVD is good to ~1e-16 sigma_1, and
    # sigma_3 / sigma_1 is not small here: 1e-10 in ln sigma
    np.testing.assert_allclose(g["log_sigma"], np.log(S[:3]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g["exponents"], np.log(S[:3]) / 5, rtol=0, atol=1e-10)
    assert g["right"].shape == (S.size, 3)
    assert abs(g["right"][:, 0] @ Vt[0]) == pytest.approx(1, abs=1e-8)  # v_1, up to sign
    assert g["products"] > 0 and g["passes"] >= 2


def test_window_growth_agrees_with_the_command(small_run):
    # The same window and options (the start block from the run's seed on both sides) through tdyn
    # growth: the same function on the same replayed thetas, but the module and the tdyn binary are
    # separately link-time optimised programs, whose floating-point contractions may differ
    # (measured: 1e-15 apart). Both stop at an estimated 1e-6 per step, so one more or fewer pass
    # could move a value by up to ~4e-6: 1e-12 holds because they take the same passes (asserted).
    r = subprocess.run([str(TDYN_BINARY), "growth", str(small_run), "--from", "10", "--to", "14", "--vectors", "2",
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with tdyn.open_run(small_run) as run:
        stored = run.growth
        g = run.window_growth(10, 4, vectors=2)
    np.testing.assert_allclose(stored["log_sigma"][0], g["log_sigma"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(stored["exponents"][0], g["exponents"], rtol=0, atol=1e-12)
    assert stored["passes"][0] == g["passes"]


def test_window_growth_refuses_bad_arguments(small_run):
    with tdyn.open_run(small_run) as run:
        assert run.growth is None
        for kwargs, words in [(dict(start=28, window=5), "must lie in the run's 0..30"),
                              (dict(start=-1, window=2), "must lie in"),
                              (dict(start=0, window=0), "must lie in"),
                              (dict(start=0, window=2, vectors=54), "vectors 54"),
                              (dict(start=0, window=2, passes=1), "passes 1"),
                              (dict(start=0, window=2, tol=0), "tolerance"),
                              (dict(start=0, window=2, block=-1), "block"),
                              (dict(start=0, window=2, block=54), "block"),
                              (dict(start=0, window=2, tol=float("inf")), "tolerance")]:
            with pytest.raises(tdyn.Error, match=words):
                run.window_growth(**kwargs)
