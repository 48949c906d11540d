"""Bad input: a tdyn.Error (a ValueError) with a one-line message naming what is wrong, no crash,
and never an array read as garbage: tdyn refuses what it would have to convert."""

import numpy as np
import pytest
from conftest import random_problem

import tdyn


@pytest.fixture(scope="module")
def problem():
    net, data, theta = random_problem()
    return net, data, theta, tdyn.Evaluation(net, data, theta)


def one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_error_is_a_value_error():
    assert issubclass(tdyn.Error, ValueError)


@pytest.mark.parametrize("dtype,found", [(np.float32, "float32"), (np.int64, "int64"), (np.complex128, "complex128")])
def test_wrong_dtype_is_refused(problem, dtype, found):
    net, data, theta, ev = problem
    with pytest.raises(tdyn.Error, match=f"theta: expected a float64 array, found {found}") as e:
        tdyn.Evaluation(net, data, theta.astype(dtype))
    one_line(e)
    with pytest.raises(tdyn.Error, match=f"V: expected a float64 array, found {found}"):
        ev.hvp(np.ones(net.num_params, dtype=dtype))
    X = data.X.astype(dtype)
    with pytest.raises(tdyn.Error, match=f"X: expected a float64 array, found {found}"):
        tdyn.Data(X, data.T)


def test_big_endian_float64_is_refused(problem):
    net, data, theta, ev = problem
    with pytest.raises(tdyn.Error, match="expected a float64 array, found >f8"):
        ev.hvp(theta.astype(">f8"))


def test_strided_and_fortran_arrays_are_refused(problem):
    net, data, theta, ev = problem
    P = net.num_params
    with pytest.raises(tdyn.Error, match=r"theta: \[%d\] is not contiguous" % P):
        tdyn.Evaluation(net, data, np.repeat(theta, 2)[::2])
    with pytest.raises(tdyn.Error, match="X: .* is Fortran-ordered"):
        tdyn.Data(np.asfortranarray(data.X), data.T)
    with pytest.raises(tdyn.Error, match=r"V: \[%d, 3\] is C-ordered; a block holds one vector per column" % P):
        ev.hvp(np.ones((P, 3)))
    with pytest.raises(tdyn.Error, match="not contiguous"):
        ev.hvp(np.asfortranarray(np.ones((P, 6)))[:, ::2])
    # [P, 1] is both C and Fortran ordered: accepted
    assert ev.hvp(np.ones((P, 1))).shape == (P, 1)


def test_wrong_length_and_shape_are_refused(problem):
    net, data, theta, ev = problem
    P = net.num_params
    with pytest.raises(tdyn.Error, match=r"theta: expected shape \[%d\] \(the parameters of 5-4-3\), found \[%d\]"
                       % (P, P - 1)):
        ev.reset(theta[:-1])
    with pytest.raises(tdyn.Error, match=r"V: expected shape \[%d\] or \[%d, M\]" % (P, P)):
        ev.hvp(np.ones(P + 1))
    with pytest.raises(tdyn.Error, match=r"V: expected shape"):
        ev.hvp(np.ones((2, P, 1)))
    with pytest.raises(tdyn.Error, match=r"T: expected shape \[13, c\]"):
        tdyn.Data(data.X, data.T[:5].copy())
    with pytest.raises(tdyn.Error, match="data: 7-4-3 takes 7 inputs"):
        tdyn.Evaluation(tdyn.Network("7-4-3"), data, tdyn.Network("7-4-3").init())


def test_nan_is_refused(problem):
    net, data, theta, ev = problem
    bad = theta.copy()
    bad[3] = np.nan
    with pytest.raises(tdyn.Error, match="theta: holds NaN or infinite values"):
        tdyn.Evaluation(net, data, bad)
    with pytest.raises(tdyn.Error, match="V: holds NaN"):
        ev.hvp(np.asfortranarray(np.full((net.num_params, 2), np.inf)))
    X = data.X.copy()
    X[0, 0] = np.nan
    with pytest.raises(tdyn.Error, match="X: holds NaN"):
        tdyn.Data(X, data.T)


def test_missing_files_and_bad_names(tmp_path):
    with pytest.raises(tdyn.Error) as e:
        tdyn.load_data(str(tmp_path / "nothing.h5"))
    assert "nothing.h5" in one_line(e)
    with pytest.raises(tdyn.Error) as e:
        tdyn.load_data("mnist", data_dir=tmp_path)
    assert str(tmp_path) in one_line(e)
    with pytest.raises(tdyn.Error) as e:
        tdyn.open_run(str(tmp_path / "run.h5"))
    assert "run.h5" in one_line(e)
    not_a_run = tmp_path / "x.h5"
    not_a_run.write_bytes(b"not hdf5 at all")
    with pytest.raises(tdyn.Error):
        tdyn.open_run(str(not_a_run))
    with pytest.raises(tdyn.Error, match="split: expected train or test"):
        tdyn.load_data("mnist", split="validation")
    with pytest.raises(tdyn.Error):
        tdyn.Network("784-x-10")
    with pytest.raises(tdyn.Error):
        tdyn.Network("4-3", activation="swish")


def test_bad_solver_arguments(problem):
    net, data, theta, ev = problem
    with pytest.raises(tdyn.Error, match="eigs"):
        tdyn.eigenvalues(ev, k=net.num_params)
    with pytest.raises(tdyn.Error, match="which"):
        tdyn.eigenvalues(ev, k=2, which="middle")
    with pytest.raises(tdyn.Error, match="solver"):
        tdyn.eigenvalues(ev, k=2, solver="arpack")
    with pytest.raises(tdyn.Error, match="lr"):
        ev.jvp(theta, -1.0)


def test_evaluation_still_right_after_refusals(problem):
    # the refusals above must not have touched the Evaluation's state
    net, data, theta, ev = problem
    fresh = tdyn.Evaluation(net, data, theta)
    assert ev.loss == fresh.loss
    np.testing.assert_array_equal(ev.gradient(), fresh.gradient())


def test_bad_krylov_is_refused(problem):
    net, data, theta, ev = problem
    with pytest.raises(tdyn.Error, match="krylov"):
        tdyn.eigenvalues(ev, k=3, krylov=3)
