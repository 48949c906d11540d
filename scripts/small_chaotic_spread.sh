#!/usr/bin/env bash
# The small chaotic case of docs/RESPONSE.md (the CLI test ResponseCli.UnrolledExplodesAndFarAgreesWithFiniteDifferences):
# how much lambda_1, the unrolled growth rate, FAR and the finite differences vary between equally valid
# trajectories of the same map, and how long a window a stable lambda_1 needs.
#
#   scripts/small_chaotic_spread.sh WORKDIR [OLD_TDYN]
#
# WORKDIR/data.h5 must be the test's data file (write_data_file(..., 200, 10, 3, 4)); get it with
#   TEST_TMPDIR=WORKDIR/ build/tdyn_tests --gtest_filter=ResponseCli.BadInputNamesTheFlagAndLeavesTheFileAlone
#   cp WORKDIR/tdyn_tests_*/resp-data.h5 WORKDIR/data.h5
# OLD_TDYN (optional): a tdyn of another build (e.g. before the vectorised tanh, 7a89834); it trains and runs
# `lyapunov`; `response` always comes from build/tdyn (old builds may not have it), so on an old
# trajectory it replays theta_200 with this build's rounding.
# Variants: seed 0 as in the test; theta_0 - k 1e-12 grad L(theta_0), k = 1..6 (one step at lr k e-12, then
# --init); --seed 1..6. Each: train 1000 steps, `lyapunov --vectors 1 --from 200`, and the test's response
# command. Then 20000-step runs (seeds 0..5) with `lyapunov --vectors 3 --from 200`, and for seeds 0, 1 `response`
# over steps 200..5000. Output in WORKDIR: variants.out (one line per variant: name|lyapunov json|response json),
# L_*.h5, P_*.h5 and R_*.json; summaries: scripts/small_chaotic_spread.py WORKDIR.
# About 8 min on 1 thread (2 shared cores at load 3-5). Set OMP_NUM_THREADS=1 on a shared machine.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
W="$1"
NEW="${TDYN:-$root/build/tdyn}"
OLD="${2:-}"
cd "$W"
ARGS="--data data.h5 --arch 10-8-3 --activation tanh --lr 1.5 --weight-decay 0.01 --quiet"
builds=(NEW)
[[ -n "$OLD" ]] && builds=(OLD NEW)
one() {  # one NAME BINARY [train args...]
    local name=$1 B=$2
    shift 2
    rm -f "v_$name.h5"
    "$B" train $ARGS --steps 1000 --out "v_$name.h5" "$@" >/dev/null || { echo "$name: train failed" >&2; return; }
    local ly r
    ly=$("$B" lyapunov "v_$name.h5" --vectors 1 --from 200 --json --quiet 2>/dev/null)
    r=$("$NEW" response "v_$name.h5" --param lr --from 200 --to 1000 --unstable 2 --check-fd 1e-3 --ensemble 16 --json --quiet 2>/dev/null)
    echo "$name|$ly|$r" >>variants.out
}
: >variants.out
for b in "${builds[@]}"; do one "${b,,}_s0" "${!b}"; done
for k in 1 2 3 4 5 6; do
    for b in "${builds[@]}"; do
        rm -f "p_${b}_$k.h5"
        "${!b}" train $ARGS --steps 1 --lr "${k}e-12" --out "p_${b}_$k.h5" >/dev/null
        one "${b,,}_p$k" "${!b}" --init "p_${b}_$k.h5"
    done
done
for s in 1 2 3 4 5 6; do for b in "${builds[@]}"; do one "${b,,}_seed$s" "${!b}" --seed "$s"; done; done
for s in 0 1 2 3 4 5; do
    for b in "${builds[@]}"; do
        rm -f "L_${b}_$s.h5" "R_L_${b}_$s.h5"
        "${!b}" train $ARGS --steps 20000 --seed "$s" --out "L_${b}_$s.h5" >/dev/null
        "${!b}" lyapunov "L_${b}_$s.h5" --vectors 3 --from 200 --json --quiet
        echo
        [[ $s -le 1 ]] || continue  # response over 200..5000 for seeds 0 and 1 only
        cp "L_${b}_$s.h5" "R_L_${b}_$s.h5"
        "$NEW" response "R_L_${b}_$s.h5" --param lr --from 200 --to 5000 --unstable 2 --check-fd 1e-3 --ensemble 16 \
            --json --quiet >"R_L_${b}_$s.json"
    done
done
# 20000 steps from four of the 1e-12 perturbations of seed 0 (this build): one attractor per seed, or not?
for k in 1 2 3 4; do
    rm -f "P_NEW_$k.h5"
    "$NEW" train $ARGS --steps 20000 --init "p_NEW_$k.h5" --out "P_NEW_$k.h5" >/dev/null
    "$NEW" lyapunov "P_NEW_$k.h5" --vectors 3 --from 200 --json --quiet
    echo
done
