#!/usr/bin/env bash
# Coarse scan for a stationary chaotic regime of the seed network (784-50-10 sigmoid, softmax-CE,
# the first K MNIST samples): for each (alpha, lambda) a short full-batch run with the top
# Lyapunov exponent in-line (--lyapunov 1); prints alpha, lambda, the top exponent, the mean loss
# over the third and the last quarter of the run (stationarity: equal within the fluctuation)
# and the loss's standard deviation over the last half. docs/RESPONSE.md "Seed network".
#
#   scripts/seed_scan.sh [-o DIR] [--lrs "3 10"] [--wds "0 0.001 0.01"] [--steps N] [--samples K]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tdyn="${TDYN:-$root/build/tdyn}"
out="$root/runs/scan" lrs="3 10 20" wds="0 0.001 0.01" steps=600 samples=1000
while (($#)); do
  case "$1" in
    -o|--out) out="$2"; shift 2 ;;
    --lrs) lrs="$2"; shift 2 ;;
    --wds) wds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "seed_scan.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
echo "alpha,lambda,steps,top_exponent,loss_q3,loss_q4,loss_std_half,accuracy_last"
for a in $lrs; do
  for w in $wds; do
    run="$out/a${a}_wd${w}.h5"
    "$tdyn" train --samples "$samples" --lr "$a" --weight-decay "$w" --steps "$steps" --lyapunov 1 \
      --save-theta-every "$steps" --out "$run" --force --quiet >/dev/null || true
    /usr/bin/python3 - "$run" "$a" "$w" <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
loss = f["/trajectory/loss"][:]
n = len(loss)
ex = f["/lyapunov/exponents"][-1] if "/lyapunov/exponents" in f else [np.nan]
acc = f["/trajectory/accuracy"][-1] if "/trajectory/accuracy" in f else np.nan
q3, q4 = loss[n // 2:3 * n // 4].mean(), loss[3 * n // 4:].mean()
print(f"{sys.argv[2]},{sys.argv[3]},{n - 1},{ex[0]:.5g},{q3:.5g},{q4:.5g},{loss[n // 2:].std():.3g},{acc:.4g}")
PY
  done
done
