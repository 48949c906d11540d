#!/usr/bin/env bash
# ctest Mpi.* (the -DTDYN_MPI=ON build): mpirun -np N tdyn against one process (the truth).
#   tests/mpi_test.sh TDYN agree     np 1..4 on 13 samples (uneven blocks 3,3,3,4) and np 4 on 3
#                                    samples (rank 0 holds none): train (loss, gradient norm, theta,
#                                    in-line spectrum top and bottom, Lyapunov exponents and the
#                                    perturbation series), eval (loss, gradient, H V, J V), spectrum,
#                                    lyapunov agree with np 1 to 1e-13 normwise relative (growth's
#                                    values to 1e-11, see below); every
#                                    rank holds the same theta at every step (TDYN_MPI_CHECK);
#                                    --batch 5 at np 3
#   tests/mpi_test.sh TDYN repeat    np 3 twice: every dataset bit-identical
#   tests/mpi_test.sh TDYN badinput  bad input under mpirun: one line on stderr, one process's exit code,
#                                    no output file
#   tests/mpi_test.sh TDYN resume    SIGTERM to mpirun mid-run at np 3: status interrupted; --resume at
#                                    np 2 completes it with the numbers of an uninterrupted run (1e-13)
#   tests/mpi_test.sh TDYN reference the MNIST reference (tests/reference, k = 1000, PyTorch float64) at
#                                    np 2 and 3: loss, gradient, H v within 1e-13 of one process and
#                                    1e-10 of the reference (the one-process tests' bound); exit 77
#                                    without MNIST
#   tests/mpi_test.sh TDYN kill      SIGKILL to one rank: mpirun ends the job, the file is readable
#                                    (status running) and --resume completes it
# 1e-13: one process and N ranks add the samples' terms in different groupings (rounding ~1e-16
# per sum); a few steps of gradient descent and Lanczos to 1e-12 keep that far below 1e-13. The
# perturbed trajectory's series are differences of two trajectories EPS apart, accurate to about
# 1e-16 / EPS relative: EPS = 1e-1 here (1e-2 gives 1e-13, 1e-6 gives ~1e-10 between np 1 and np 3, as it would
# between any two summation orders).
set -euo pipefail
tdyn="$1"
mode="$2"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py=/usr/bin/python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# One thread per rank on a 2-core machine; root is allowed; more ranks than cores.
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_plm_rsh_agent= OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() {  # mpi N args...: tdyn on N ranks
  local n="$1"
  shift
  mpirun -q -np "$n" -x OMP_NUM_THREADS "$tdyn" "$@"
}
fail() {
  echo "FAIL: $*"
  exit 1
}

# A small data set: 13 samples of 6 features, labels 0..2 where only the last row has label 2 (the
# class count is the largest label of all ranks); the first rows dense, the last sparse, so that
# the blocks' densities lie on both sides of the sparse threshold 0.3 (global: one choice).
"$py" - <<'PY'
import h5py, numpy as np
rng = np.random.default_rng(5)
k, d = 13, 6
X = rng.uniform(0.1, 1.0, (k, d))
X[7:, :] *= rng.uniform(size=(k - 7, d)) < 0.2
labels = np.array([0, 1] * 6 + [2], dtype=np.int64)
with h5py.File("small.h5", "w") as f:
    f["X"] = X
    f["labels"] = labels
with h5py.File("V.h5", "w") as f:
    f["vectors"] = rng.standard_normal((3, 6 * 5 + 5 + 5 * 3 + 3))
PY
wait_for_theta() {  # wait_for_theta FILE N: until FILE stores N thetas (SWMR read while it is written)
  for _ in $(seq 300); do
    "$py" -c "
import h5py, sys
f = h5py.File('$1', 'r', swmr=True); sys.exit(0 if f['/trajectory/theta_step'].shape[0] >= $2 else 1)" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$1 stored no $2 thetas in time"
}
problem=(--data small.h5 --arch 6-5-3 --activation tanh --lr 0.5)
# three windows of 4 steps, the top 2 singular values to 1e-12 per step
growth=(growth --window 4 --vectors 2 --tol 1e-12 --passes 3000 --quiet)
train=(train "${problem[@]}" --steps 12 --save-theta-every 4 --spectrum-every 3 --eigs 2 --which both
  --lyapunov 2 --perturbation 1e-1 --quiet)

case "$mode" in
agree)
  worst=0
  # Not compared: residual norms and /growth/error (rounding-level numbers, only bounded by --tol),
  # matvec counts and /growth/passes (a Lanczos restart, or a pass whose error estimate is at the
  # target, may come one product earlier or later) and the stored warm-start eigenvectors (an
  # eigenvector is only as accurate as tol / gap; the eigenvalues are compared). /growth's values
  # to 1e-11: one pass more or fewer moves them by at most the target, 1e-12 x 4 steps.
  check() {  # check A B: normwise agreement to 1e-13
    "$py" "$root/tests/mpi_compare.py" "$1" "$2" 1e-13 --skip 'residual|matvecs|spectrum_start|growth' >out.txt || {
      cat compare.log out.txt 2>/dev/null
      fail "$1 differs from $2"
    }
    cat out.txt >>compare.log
  }
  "$tdyn" "${train[@]}" --out r1.h5
  "$tdyn" eval r1.h5 --step 12 --write e1.h5 --vector V.h5 --lr 0.5 >/dev/null
  cp r1.h5 s1.h5
  "$tdyn" spectrum s1.h5 --steps stored --eigs 2 --which both --tol 1e-12 --quiet >/dev/null
  "$tdyn" lyapunov s1.h5 --vectors 2 --force --quiet >/dev/null
  "$tdyn" "${growth[@]}" s1.h5 >/dev/null
  for n in 2 3 4; do
    TDYN_MPI_CHECK=1 mpi "$n" "${train[@]}" --out "r$n.h5"
    check "r$n.h5" r1.h5
    mpi "$n" eval "r$n.h5" --step 12 --write "e$n.h5" --vector V.h5 --lr 0.5 >/dev/null
    check "e$n.h5" e1.h5
    # the analyses of one stored run (r1.h5's thetas), so only the products differ
    cp r1.h5 "s$n.h5"
    mpi "$n" spectrum "s$n.h5" --steps stored --eigs 2 --which both --tol 1e-12 --quiet >/dev/null
    TDYN_MPI_CHECK=1 mpi "$n" lyapunov "s$n.h5" --vectors 2 --force --quiet >/dev/null
    mpi "$n" "${growth[@]}" "s$n.h5" >/dev/null
    check "s$n.h5" s1.h5
    "$py" "$root/tests/mpi_compare.py" "s$n.h5" s1.h5 1e-11 /growth/log_sigma /growth/exponents /growth/converged \
      >>compare.log || fail "np $n growth vs one process"
  done
  # 3 samples on 4 ranks: rank 0 holds none
  "$tdyn" "${train[@]}" --samples 3 --out k1.h5
  TDYN_MPI_CHECK=1 mpi 4 "${train[@]}" --samples 3 --out k4.h5
  check k4.h5 k1.h5
  "$tdyn" eval k1.h5 --write ek1.h5 --vector V.h5 --lr 0.5 >/dev/null
  mpi 4 eval k4.h5 --write ek4.h5 --vector V.h5 --lr 0.5 >/dev/null
  check ek4.h5 ek1.h5
  # mini-batches of 5 from a global shuffle: each rank takes its rows of the batch (some none)
  "$tdyn" train "${problem[@]}" --batch 5 --steps 8 --quiet --out b1.h5 >/dev/null
  TDYN_MPI_CHECK=1 mpi 3 train "${problem[@]}" --batch 5 --steps 8 --quiet --out b3.h5 >/dev/null
  check b3.h5 b1.h5
  # np 1 under mpirun is one process: bit-identical
  mpi 1 "${train[@]}" --out m1.h5
  "$py" "$root/tests/mpi_compare.py" m1.h5 r1.h5 0 | grep -q "^FAIL" && fail "mpirun -np 1 differs from one process"
  cat compare.log
  ;;
repeat)
  mpi 3 "${train[@]}" --out a.h5
  mpi 3 "${train[@]}" --out b.h5
  "$py" "$root/tests/mpi_compare.py" a.h5 b.h5 0 || fail "np 3 twice: not bit-identical"
  ;;
badinput)
  # a NaN in row 11, which only the last rank reads
  "$py" -c "
import h5py, numpy as np
with h5py.File('small.h5', 'a') as f: f['X'][11, 2] = np.nan"
  set +e
  mpi 3 "${train[@]}" --out bad.h5 2>err.txt
  rc=$?
  set -e
  cat err.txt
  [ "$rc" = 1 ] || fail "NaN in rank 2's rows: exit $rc, expected 1"
  [ "$(grep -c . err.txt)" = 1 ] || fail "NaN in rank 2's rows: $(grep -c . err.txt) lines on stderr, expected 1"
  grep -q "small.h5: /X: contains NaN" err.txt || fail "the message does not name the file"
  [ ! -e bad.h5 ] || fail "bad input left a run file"
  # an existing --out without --force: rank 0's check, the file untouched
  echo keep >exists.h5
  set +e
  mpi 3 "${train[@]}" --out exists.h5 2>err.txt
  rc=$?
  set -e
  cat err.txt
  [ "$rc" = 1 ] && [ "$(grep -c . err.txt)" = 1 ] || fail "existing --out: exit $rc, $(grep -c . err.txt) lines"
  [ "$(cat exists.h5)" = keep ] || fail "existing --out was touched"
  # a bad flag: CLI11's one line, exit 2
  set +e
  mpi 3 train --steps x 2>err.txt
  rc=$?
  set -e
  cat err.txt
  [ "$rc" = 2 ] && [ "$(grep -c . err.txt)" = 1 ] || fail "bad flag: exit $rc, $(grep -c . err.txt) lines"
  ;;
resume)
  # --steps far beyond what can run before the signal: a 3000-step run once finished (about 2 s on
  # CI) before the SWMR poll (a Python start-up per try) saw its third theta
  long=(train "${problem[@]}" --steps 10000000 --save-theta-every 7 --lyapunov 2 --quiet)
  # mpirun (OpenMPI 4.1) sends the ranks SIGCONT at once, SIGTERM after odls_base_sigkill_timeout
  # (default 1 s) and SIGKILL after as long again; a step here takes milliseconds, 2 s is plenty
  OMPI_MCA_odls_base_sigkill_timeout=2 mpirun -q -np 3 -x OMP_NUM_THREADS "$tdyn" "${long[@]}" --out cut.h5 2>err.txt &
  pid=$!
  wait_for_theta cut.h5 3
  kill -TERM "$pid"
  set +e
  wait "$pid"
  rc=$?
  set -e
  cat err.txt
  status=$("$py" -c "import h5py; print(h5py.File('cut.h5', 'r').attrs['status'])")
  [ "$status" = interrupted ] || fail "after SIGTERM: status $status, mpirun exit $rc"
  last=$("$py" -c "import h5py; print(int(h5py.File('cut.h5', 'r')['/trajectory/theta_step'][-1]))")
  echo "interrupted at stored step $last, mpirun exit $rc; resuming at np 2"
  mpi 2 train --out cut.h5 --resume --steps $((last + 30)) --quiet
  "$tdyn" "${long[@]}" --steps $((last + 30)) --out whole.h5
  # (the interrupted run stored one theta more, at the step where it stopped: /params/theta is the last)
  "$py" "$root/tests/mpi_compare.py" cut.h5 whole.h5 1e-13 /trajectory/loss /trajectory/grad_norm /params/theta \
    /trajectory/accuracy /lyapunov/exponents /lyapunov/log_growth || fail "resumed at np 2 differs from the uninterrupted run"
  ;;
kill)
  long=(train "${problem[@]}" --steps 100000 --save-theta-every 50 --quiet)
  mpirun -np 2 -x OMP_NUM_THREADS "$tdyn" "${long[@]}" --out killed.h5 2>err.txt &
  pid=$!
  wait_for_theta killed.h5 2
  # rank 1: the second tdyn child of mpirun
  victim=$(pgrep -P "$pid" tdyn | sort -n | tail -1 || true)
  [ -n "$victim" ] || fail "no rank to kill"
  kill -KILL "$victim"
  set +e
  wait "$pid"
  rc=$?
  set -e
  echo "mpirun exit $rc; its messages:"
  cat err.txt
  [ "$rc" != 0 ] || fail "a killed rank: mpirun exit 0"
  sleep 2
  pgrep -P "$pid" >/dev/null && fail "ranks survive"
  "$tdyn" info killed.h5 | grep -q "running" || fail "killed run: status is not running"
  last=$("$py" -c "import h5py; print(int(h5py.File('killed.h5', 'r', swmr=True)['/trajectory/theta_step'][-1]))")
  mpi 2 train --out killed.h5 --resume --steps $((last + 60)) --quiet
  [ "$("$py" -c "import h5py; print(h5py.File('killed.h5', 'r').attrs['status'])")" = completed ] || fail "resume"
  ;;
reference)
  data="${TDYN_DATA:-$root/data}"
  if [ ! -s "$data/mnist/train-images-idx3-ubyte" ]; then
    echo "SKIPPED: no MNIST in $data/mnist (run scripts/setup.sh, or set TDYN_DATA)"
    exit 77
  fi
  ref="$root/tests/reference/mnist_k1000_seed7.h5"
  "$py" -c "
import h5py
with h5py.File('$ref', 'r') as r, h5py.File('v.h5', 'w') as v: v['vector'] = r['vector'][()]"
  "$tdyn" eval "$ref" --samples 1000 --vector v.h5 --write e1.h5 >/dev/null
  for n in 2 3; do
    mpi "$n" eval "$ref" --samples 1000 --vector v.h5 --write "e$n.h5" >/dev/null
    "$py" "$root/tests/mpi_compare.py" "e$n.h5" e1.h5 1e-13 /loss /accuracy /gradient /hvp || fail "np $n vs one process"
    "$py" "$root/tests/mpi_compare.py" "e$n.h5" "$ref" 1e-10 /loss /accuracy /gradient /hvp || fail "np $n vs the reference"
  done
  ;;
*) fail "unknown mode $mode" ;;
esac
echo "OK mpi $mode"
