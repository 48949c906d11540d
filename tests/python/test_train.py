"""tdyn.train through the C++ step loop with a Python callback plug-in, run files read back with
tdyn.open_run, resume by the Python API and by the tdyn CLI, and Ctrl-C."""

import os
import signal
import subprocess
import threading

import numpy as np
import pytest
from conftest import DATA, TDYN_BINARY, needs_mnist

import tdyn

pytestmark = needs_mnist

# 200 MNIST images, 784-16-10: each step takes about a millisecond.
CONFIG = dict(samples=200, arch="784-16-10", lr=0.5, steps=8, save_theta_every=2, seed=3)


class Recorder:
    def __init__(self, raise_at=None):
        self.steps, self.losses, self.raise_at, self.lent = [], [], raise_at, None

    def __call__(self, s):
        self.steps.append(s.t)
        self.losses.append(s.loss)
        # the step's own Evaluation holds theta_t: its loss is the row's, its gradient gives the update
        assert s.evaluation.loss == s.loss
        if s.t < s.to:
            np.testing.assert_array_equal(s.next_theta, s.theta - CONFIG["lr"] * s.evaluation.gradient())
        self.lent = s.evaluation
        if s.t == self.raise_at:
            raise RuntimeError(f"stop at {s.t}")


def test_callback_sees_every_step_once_and_matches_the_file(tmp_path):
    out = tmp_path / "run.h5"
    rec = Recorder()
    r = tdyn.train(out, data_dir=DATA, callback=rec, analyses=[tdyn.Spectrum(every=4, eigs=2, which="top")],
                   **CONFIG)
    assert r.status == "completed" and r.step == 8
    assert rec.steps == list(range(9))
    with tdyn.open_run(out) as run:
        assert run.status == "completed"
        np.testing.assert_array_equal(run.trajectory["loss"], rec.losses)
        np.testing.assert_array_equal(run.theta(8), r.theta)
        assert list(run.spectrum["step"]) == [0, 4, 8]
        assert run.config["arch"] == "784-16-10" and run.config["lr"] == 0.5
        # a step that was not stored is replayed bit for bit: theta_3 from theta_2 by one update
        ev2 = run.evaluation(2)
        np.testing.assert_array_equal(run.theta(3), run.theta(2) - 0.5 * ev2.gradient())
    # the lent Evaluation is gone after its callback: an Error, not a dangling reference
    with pytest.raises(tdyn.Error, match="valid only inside its callback"):
        rec.lent.loss


def test_exception_in_callback_stops_cleanly_and_resumes_bit_identically(tmp_path):
    straight = tdyn.train(tmp_path / "straight.h5", data_dir=DATA, **CONFIG)
    for how in ("python", "cli"):
        out = tmp_path / f"{how}.h5"
        rec = Recorder(raise_at=3)
        with pytest.raises(RuntimeError, match="stop at 3"):
            tdyn.train(out, data_dir=DATA, callback=rec, analyses=[tdyn.Lyapunov(vectors=2)], **CONFIG)
        assert rec.steps == [0, 1, 2, 3]
        with tdyn.open_run(out) as run:
            # stopped before step 4: theta_4 stored with the analyses' checkpoints, status interrupted
            assert run.status == "interrupted"
            assert run.theta_steps[-1] == 4
        if how == "python":
            again = Recorder()
            r = tdyn.train(out, resume=True, data_dir=DATA, callback=again)
            assert again.steps == [4, 5, 6, 7, 8]  # with the first pass: every step exactly once
            assert r.status == "completed"
        else:
            p = subprocess.run([str(TDYN_BINARY), "train", "--out", str(out), "--resume", "--data-dir", str(DATA),
                                "--quiet"], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
        with tdyn.open_run(out) as run:
            assert run.status == "completed"
            np.testing.assert_array_equal(run.theta(8), straight.theta)  # resume is bit-identical
            assert run.lyapunov["exponents"].shape == (8, 2)


def test_resume_refuses_a_different_configuration(tmp_path):
    out = tmp_path / "run.h5"
    tdyn.train(out, data_dir=DATA, **CONFIG)
    with pytest.raises(tdyn.Error, match="lr=0.1 differs from the run's 0.5"):
        tdyn.train(out, resume=True, data_dir=DATA, lr=0.1)
    with pytest.raises(tdyn.Error, match="exists"):
        tdyn.train(out, data_dir=DATA, **CONFIG)
    r = tdyn.train(out, resume=True, data_dir=DATA, steps=10)
    assert r.step == 10


def test_ctrl_c_during_training_stops_cleanly(tmp_path):
    out = tmp_path / "run.h5"
    # long enough that the signal, sent from another thread once training is under way, arrives
    # during the loop; the loop checks for it after every step
    config = dict(CONFIG, steps=200000, save_theta_every=1000)
    started = threading.Event()
    timer = threading.Thread(target=lambda: (started.wait(), os.kill(os.getpid(), signal.SIGINT)))
    timer.start()

    def first(s):
        if s.t == 5:
            started.set()

    with pytest.raises(KeyboardInterrupt):
        tdyn.train(out, data_dir=DATA, callback=first, **config)
    timer.join()
    with tdyn.open_run(out) as run:
        assert run.status == "interrupted"
        stop = run.last_step
        assert 5 <= stop < 200000
    r = tdyn.train(out, resume=True, data_dir=DATA, steps=stop + 3)
    assert r.status == "completed"


def test_ctrl_c_during_an_eigen_solve_raises_keyboard_interrupt(mnist1000, reference):
    ev = tdyn.Evaluation(tdyn.Network("784-50-10"), mnist1000, reference["theta"])
    # tol = 1e-300 cannot be met: without the interrupt this solve would run to max_iter (minutes)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        tdyn.eigenvalues(ev, k=3, which="bottom", tol=1e-300, max_iter=100000)
    timer.join()
    # the Evaluation is intact: same loss and products as before
    assert ev.loss == pytest.approx(reference["loss"], rel=1e-12)
    v = reference["vector"]
    assert np.linalg.norm(ev.hvp(v) - reference["hvp"]) < 1e-10 * np.linalg.norm(reference["hvp"])
