#!/usr/bin/env bash
# The main job on a fresh machine: set-up, build, and the default analysis run on MNIST
# (the seed network: 784-50-10, sigmoid, softmax + cross-entropy, alpha = 0.1, full batch
# over all 60000 training images) with the sharpness every 50 steps and 3 tangent vectors
# for the top Lyapunov exponents, stored in runs/default.h5.
# Extra arguments go to `tdyn train` (e.g. --steps 200, --force).
# Ends by writing the run's figures (scripts/plot_run.py) into runs/default_figures/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh" >/dev/null
mkdir -p "$root/runs"
out="$root/runs/default.h5"
if [ -e "$out" ] && [[ " $* " != *" --force "* ]]; then
  echo "run.sh: $out exists; showing it (pass --force to train it again)"
else
  "$root/build/tdyn" train --steps 1000 --save-theta-every 50 --spectrum-every 50 --eigs 1 --which top \
    --lyapunov 3 --out "$out" "$@"
fi
"$root/build/tdyn" info "$out"
figures="$root/runs/default_figures"
/usr/bin/python3 "$root/scripts/plot_run.py" "$out" -o "$figures"
echo "run.sh: figures of $out are in $figures (interactive: notebooks/explore_run.ipynb)"
