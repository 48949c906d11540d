"""The numbers of the Python module against truths: the PyTorch reference file, central
differences, a dense Hessian, and the module's own single products."""

import numpy as np
import pytest
from conftest import random_problem
from scipy.sparse.linalg import eigsh

import tdyn


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


# PyTorch float64 (autograd, double backward) at the reference theta on the first 1000 MNIST
# images: 1e-10 relative, as tests/reference/README.md (two float64 implementations summing in
# different orders agree to ~1e-13 here).
def test_loss_gradient_and_hvp_match_pytorch_reference(mnist1000, reference):
    ev = tdyn.Evaluation(tdyn.Network("784-50-10"), mnist1000, reference["theta"])
    assert abs(ev.loss - reference["loss"]) <= 1e-10 * abs(reference["loss"])
    assert ev.accuracy == reference["accuracy"]  # a count over 1000 images: exact
    assert rel(ev.gradient(), reference["gradient"]) < 1e-10
    hv = ev.hvp(reference["vector"])
    assert hv.shape == reference["vector"].shape
    assert rel(hv, reference["hvp"]) < 1e-10
    # J v = v - alpha H v with the same H v
    assert rel(ev.jvp(reference["vector"], 0.1), reference["vector"] - 0.1 * reference["hvp"]) < 1e-10


# SciPy eigsh (ARPACK, to machine precision) in the reference file: 1e-8 relative, tdyn's solve
# stopping at tol = 1e-10 (the C++ Reference tests use the same).
def test_top_eigenvalues_match_reference(mnist1000, reference):
    ev = tdyn.Evaluation(tdyn.Network("784-50-10"), mnist1000, reference["theta"])
    values, vectors, residuals, hvps = tdyn.eigenvalues(ev, k=3, which="top", tol=1e-10)
    np.testing.assert_allclose(values, reference["hessian_top"], rtol=1e-8)
    assert vectors.shape == (ev.num_params, 3) and hvps > 0
    # the residuals are true ones: recompute ||H u - lambda u|| from the vectors returned
    np.testing.assert_allclose(np.linalg.norm(ev.hvp(vectors) - vectors * values, axis=0), residuals,
                               rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("activation,output", [("tanh", "softmax-ce"), ("sigmoid", "sigmoid-mse"),
                                               ("softplus", "identity-mse")])
def test_gradient_and_hvp_match_central_differences(activation, output):
    net, data, theta = random_problem("5-4-3", activation, output)
    ev = tdyn.Evaluation(net, data, theta)
    P, h = net.num_params, 1e-5
    # central differences: truncation O(h^2) ~ 1e-10, rounding O(eps/h) ~ 1e-11 relative to O(1)
    # values: 1e-7 leaves a margin of 100 and still catches any wrong term.
    fd_grad, fd_hv = np.empty(P), np.empty(P)
    e = tdyn.Evaluation(net, data, theta)
    for i in range(P):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += h
        tm[i] -= h
        e.reset(tp)
        lp = e.loss
        e.reset(tm)
        fd_grad[i] = (lp - e.loss) / (2 * h)
    v = np.random.default_rng(3).standard_normal(P)
    e.reset(theta + h * v)
    gp = e.gradient()
    e.reset(theta - h * v)
    fd_hv = (gp - e.gradient()) / (2 * h)
    assert rel(ev.gradient(), fd_grad) < 1e-7
    assert rel(ev.hvp(v), fd_hv) < 1e-7


def test_block_hvp_equals_single_products():
    net, data, theta = random_problem("6-5-4-3", "sigmoid", "softmax-ce", k=17)
    ev = tdyn.Evaluation(net, data, theta, weight_decay=0.01)
    P, M = net.num_params, 7
    V = np.asfortranarray(np.random.default_rng(5).standard_normal((P, M)))
    HV = ev.hvp(V)
    assert HV.shape == (P, M) and HV.flags.f_contiguous
    for m in range(M):
        # the block runs the same arithmetic per vector; 1e-13 allows a GEMM that blocks differently
        assert rel(HV[:, m], ev.hvp(V[:, m].copy())) < 1e-13
    JV = ev.jvp(V, 0.5)
    assert rel(JV, V - 0.5 * HV) < 1e-13


def dense_hessian(ev):
    P = ev.num_params
    H = np.empty((P, P))
    e = np.zeros(P)
    for i in range(P):  # column by column: H e_i
        e[i] = 1.0
        H[:, i] = ev.hvp(e)
        e[i] = 0.0
    return H


def test_eigenvalues_match_dense_eigvalsh_and_eigsh():
    net, data, theta = random_problem("6-5-3", "tanh", "softmax-ce", k=11, seed=4)
    ev = tdyn.Evaluation(net, data, theta)
    H = dense_hessian(ev)
    # the exact Hessian is symmetric; the R-operator's columns agree with its rows to rounding
    assert np.abs(H - H.T).max() < 1e-12 * np.abs(H).max()
    exact = np.linalg.eigvalsh(H)  # ascending
    scale = np.abs(exact).max()
    top = tdyn.eigenvalues(ev, k=3, which="top", tol=1e-10)
    bottom = tdyn.eigenvalues(ev, k=3, which="bottom", tol=1e-10)
    assert top.converged and bottom.converged and top.status == "Successful"
    # tol 1e-10 relative residual -> eigenvalue error ~1e-20 relative for separated values; 1e-8 of the
    # spectrum's scale leaves room for a cluster
    np.testing.assert_allclose(top.values, exact[::-1][:3], atol=1e-8 * scale)
    np.testing.assert_allclose(bottom.values, exact[:3], atol=1e-8 * scale)
    for solver in ("davidson",):
        d = tdyn.eigenvalues(ev, k=3, which="top", tol=1e-10, solver=solver)
        np.testing.assert_allclose(d.values, exact[::-1][:3], atol=1e-8 * scale)
    # SciPy's ARPACK over the LinearOperator: the same H
    w = eigsh(ev.as_linear_operator(), k=3, which="LA", tol=1e-12, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(w)[::-1], exact[::-1][:3], atol=1e-8 * scale)
    # J = I - lr H as an operator: eigenvalues 1 - lr lambda
    J = ev.as_linear_operator(lr=0.3)
    np.testing.assert_allclose(J.matmat(np.eye(net.num_params)), np.eye(net.num_params) - 0.3 * H, atol=1e-13)


def test_weight_decay_adds_lambda_theta_and_lambda_identity():
    net, data, theta = random_problem()
    plain = tdyn.Evaluation(net, data, theta)
    decayed = tdyn.Evaluation(net, data, theta, weight_decay=0.2)
    v = np.random.default_rng(2).standard_normal(net.num_params)
    assert rel(decayed.gradient(), plain.gradient() + 0.2 * theta) < 1e-14
    assert rel(decayed.hvp(v), plain.hvp(v) + 0.2 * v) < 1e-14
    assert abs(decayed.loss - (plain.loss + 0.1 * theta @ theta)) < 1e-14


def test_layers_are_views_into_theta():
    net = tdyn.Network("4-3-2")
    theta = np.arange(net.num_params, dtype=np.float64)
    (W1, b1), (W2, b2) = net.layers(theta)
    # DESIGN.md: theta = (W1 row-major [n0 x n1], b1, W2, b2)
    np.testing.assert_array_equal(W1, theta[:12].reshape(4, 3))
    np.testing.assert_array_equal(b1, theta[12:15])
    np.testing.assert_array_equal(W2, theta[15:21].reshape(3, 2))
    np.testing.assert_array_equal(b2, theta[21:])
    theta[0] = -1.0
    assert W1[0, 0] == -1.0  # a view, not a copy


def test_data_views_and_copy_semantics():
    X = np.random.default_rng(0).uniform(size=(4, 5))
    T = np.eye(4)[:, :3].copy()
    d = tdyn.Data(X, T)
    np.testing.assert_array_equal(d.X, X)
    X[0, 0] = 99.0  # Data owns its copy
    assert d.X[0, 0] != 99.0
    with pytest.raises(ValueError):
        d.X[0, 0] = 1.0  # read-only view of tdyn's memory


def test_load_data_reads_an_hdf5_data_file(tmp_path):
    import h5py

    X = np.arange(12, dtype=np.uint8).reshape(4, 3) * 20
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X"] = X
        f["labels"] = np.array([0, 2, 1, 2])
    d = tdyn.load_data(tmp_path / "d.h5", classes=0)
    # docs/FORMAT.md: uint8 pixels / 255, labels one-hot over max + 1 classes
    np.testing.assert_array_equal(d.X, X / 255.0)
    np.testing.assert_array_equal(d.T, np.eye(3)[[0, 2, 1, 2]])
    assert tdyn.load_data(tmp_path / "d.h5", samples=2, classes=0).samples == 2


@pytest.mark.skipif(not __import__("conftest").have_mnist(), reason="MNIST not found (scripts/setup.sh)")
def test_test_split_and_samples():
    from conftest import DATA

    d = tdyn.load_data("mnist", samples=10, split="test", data_dir=DATA)
    assert d.X.shape == (10, 784) and d.T.shape == (10, 10)
    assert not np.array_equal(d.X, tdyn.load_data("mnist", samples=10, data_dir=DATA).X)
