"""scripts/sweep_summary.py summary --with: the rows of an earlier runs.csv beside those of a folder's
run files (docs/FINDINGS.md 1.1 keeps only the tables of seed 0's runs)."""

import csv
import shutil
import subprocess
import sys

import numpy as np
from conftest import DATA, ROOT, TDYN_BINARY, needs_mnist

SCRIPT = ROOT / "scripts" / "sweep_summary.py"
RUNS = ROOT / "docs" / "findings" / "chaos60k_runs.csv"
SUMMARY = ROOT / "docs" / "findings" / "chaos60k_summary.csv"


def summary(folder, *olds):
    args = [sys.executable, str(SCRIPT), "summary", str(folder)]
    for o in olds:
        args += ["--with", str(o)]
    return subprocess.run(args, capture_output=True, text=True)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_committed_runs_alone_give_the_committed_summary(tmp_path):
    p = summary(tmp_path / "sweep", RUNS)
    assert p.returncode == 0, p.stderr
    # the rows go through unchanged
    assert (tmp_path / "sweep" / "runs.csv").read_text() == RUNS.read_text()
    # summary.csv is the committed one: counts exactly, means and spreads to the rounding of runs.csv
    # (6 digits; the committed summary was made from the rows of run files at full precision, where
    # there were run files)
    got, want = rows(tmp_path / "sweep" / "summary.csv"), rows(SUMMARY)
    assert [list(r) for r in got] == [list(r) for r in want] and len(got) == len(want)
    for g, w in zip(got, want):
        for c in ("alpha", "seeds", "completed", "reached_90"):
            assert g[c] == w[c], (w["alpha"], c)
        for c in [c for c in w if c.endswith("_mean")]:
            base = c[:-len("_mean")]
            for k in (c, base + "_std"):
                a, b = float(g[k]), float(w[k])
                scale = abs(float(w[c])) + abs(float(w[base + "_std"])) if np.isfinite(float(w[base + "_std"])) else abs(float(w[c]))
                assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-5 * scale, (w["alpha"], k, a, b)
    assert (tmp_path / "sweep" / "figures" / "sweep.png").is_file()
    assert not (tmp_path / "sweep" / "figures" / "series.png").exists()  # no run files


def test_columns_that_differ_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    text = RUNS.read_text().splitlines()
    bad.write_text("\n".join([text[0].replace(",t90,", ",t80,")] + text[1:]) + "\n")
    p = summary(tmp_path / "sweep", RUNS, bad)
    assert p.returncode != 0
    assert p.stderr.count("\n") == 1 and "missing t90; extra t80" in p.stderr, p.stderr
    assert not (tmp_path / "sweep" / "summary.csv").exists()


def test_a_later_file_wins_for_the_same_alpha_and_seed(tmp_path):
    later = tmp_path / "later.csv"
    old = rows(RUNS)
    changed = [dict(r, final_loss="123") if (r["alpha"], r["seed"]) == ("5", "1") else r for r in old]
    with open(later, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(old[0]), lineterminator="\n")
        w.writeheader()
        w.writerows([r for r in changed if r["alpha"] == "5"])
    p = summary(tmp_path / "sweep", RUNS, later)
    assert p.returncode == 0, p.stderr
    got = rows(tmp_path / "sweep" / "runs.csv")
    assert len(got) == len(old)
    assert [r["final_loss"] for r in got if r["alpha"] == "5"] == ["0.29169", "123", "0.298906"]


@needs_mnist
def test_a_row_from_a_run_file_replaces_the_old_row(tmp_path):
    d = tmp_path / "sweep"
    d.mkdir()
    p = subprocess.run([str(TDYN_BINARY), "train", "--data-dir", str(DATA), "--samples", "200", "--arch",
                        "784-16-10", "--activation", "tanh", "--lr", "1", "--seed", "0", "--steps", "6",
                        "--lyapunov", "2", "--out", str(d / "lr_1_seed_0.h5"), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = summary(d, RUNS)
    assert p.returncode == 0, p.stderr
    n = len(rows(RUNS))
    assert f"{n} runs ({n - 1} from" in p.stdout, p.stdout
    got = rows(d / "runs.csv")
    new = [r for r in got if (r["alpha"], r["seed"]) == ("1", "0")]
    assert len(new) == 1 and new[0]["last_step"] == "6" and new[0]["lambda3"] == "nan"
    # the other rows are the committed ones; the summary of alpha = 1 is over the new row
    assert [r for r in got if r["alpha"] != "1"] == [r for r in rows(RUNS) if r["alpha"] != "1"]
    s = {r["alpha"]: r for r in rows(d / "summary.csv")}
    ones = [float(r["final_loss"]) for r in got if r["alpha"] == "1"]
    assert s["1"]["seeds"] == "3"
    assert np.isclose(float(s["1"]["final_loss_mean"]), np.mean(ones), rtol=1e-5)
    assert (d / "figures" / "series.png").is_file()
