#!/usr/bin/env bash
# tdyn response on the seed network (docs/RESPONSE.md, "Seed network"): the measurements behind the
# tables and figures, one phase at a time (each phase appends rows to docs/data/seed_response/results.csv
# via scripts/seed_response.py record; the main runs also dump their arrays with `collect`).
#
#   scripts/seed_response.sh RUN.h5 PHASE [U]
#   PHASE: unrolled (the unrolled derivative for T = 50..800), unrolled-a3 (the same, tagged a3_), main-lr, main-wd (all methods + FD
#   ensemble over steps FROM..FROM+800), sweep-lr (FAR for U in $USWEEP, default U-1 and U+2, at W = 10, and
#   W in $WSWEEP, default 5 20, at U), sweep-wd (the same for the weight decay; W sweep only if WSWEEP is set),
#   seeds (FAR at U, W = 10 from the random initial tangent bases --seed in $SEEDS, default 1 2, for $PARAM, default lr),
#   aligned (FAR with --align $ALIGN, default 400: for each of $PARAMS x $USWEEP x $WSWEEP x $SEEDS, defaults
#   "lr weight-decay", U, 10, 0).
# Environment: FROM (default 400), T (800), USWEEP, WSWEEP, SEEDS, PARAM, PARAMS, ALIGN, OMP_NUM_THREADS (1 recommended on a shared machine).
# Each row records wall and CPU seconds (/usr/bin/time) and the 1-minute load average at the start.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tdyn="${TDYN:-$root/build/tdyn}"
py=/usr/bin/python3
run="$1" phase="$2" U="${3:-4}"
from="${FROM:-400}" T="${T:-800}"
to=$((from + T))
rec() { "$py" "$root/scripts/seed_response.py" record "$@"; }
timed() {  # timed TAG KEY=VALUE... -- tdyn response args
  local tag="$1"; shift
  local kv=()
  while [[ "$1" != "--" ]]; do kv+=("$1"); shift; done
  shift
  local load wall cpu
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f "%e %U %S" -o "$run.time" "$tdyn" response "$run" --json --quiet --force "$@" > "$run.json"
  read -r wall cpu < <(awk '{print $1, $2 + $3}' "$run.time")
  rec "$tag" "${kv[@]}" "seconds=$wall" "cpu_seconds=$cpu" "load=$load" < "$run.json"
}
case "$phase" in
  unrolled)
    for t in 50 100 200 400 800; do
      timed "unrolled_T$t" "W=" -- --param lr --method unrolled --from "$from" --to $((from + t))
    done ;;
  unrolled-a3)  # the same on a more chaotic run (alpha = 3): tags a3_unrolled_T*
    for t in 50 100 200 400 800; do
      timed "a3_unrolled_T$t" "W=" -- --param lr --method unrolled --from "$from" --to $((from + t))
    done
    "$py" "$root/scripts/seed_response.py" ftle "$run" a3 "$from" 50 100 200 400 800 > /dev/null ;;
  main-lr)
    timed main_lr "U=$U" W=10 S=20 -- --param lr --method all --unstable "$U" --from "$from" --to "$to"
    "$py" "$root/scripts/seed_response.py" collect "$run" lr main_lr
    timed fd_lr -- --param lr --method none --check-fd "${H_LR:-0.1}" --ensemble "${N_FD:-16}" --from "$from" --to "$to" ;;
  main-wd)
    timed main_wd "U=$U" W=10 S=20 -- --param weight-decay --method all --unstable "$U" --from "$from" --to "$to"
    "$py" "$root/scripts/seed_response.py" collect "$run" weight-decay main_weight-decay
    timed fd_weight-decay -- --param weight-decay --method none --check-fd "${H_WD:-0.002}" --ensemble "${N_FD:-16}" \
      --from "$from" --to "$to" ;;
  sweep-lr)
    for u in ${USWEEP:-$((U - 1)) $((U + 2))}; do
      timed "sweep_U$u" "U=$u" W=10 S=20 -- --param lr --method far --unstable "$u" --from "$from" --to "$to"
    done
    for w in ${WSWEEP:-5 20}; do
      timed "sweep_W$w" "U=$U" "W=$w" S=20 -- --param lr --method far --unstable "$U" --window "$w" --from "$from" --to "$to"
    done ;;
  sweep-wd)  # the same for the weight decay: tags sweep_wd_U*, sweep_wd_W*
    for u in ${USWEEP:-$((U - 1)) $((U + 2))}; do
      timed "sweep_wd_U$u" "U=$u" W=10 S=20 -- --param weight-decay --method far --unstable "$u" --from "$from" --to "$to"
    done
    for w in ${WSWEEP:-}; do
      timed "sweep_wd_W$w" "U=$U" "W=$w" S=20 -- --param weight-decay --method far --unstable "$U" --window "$w" \
        --from "$from" --to "$to"
    done ;;
  seeds)  # FAR at U, W = 10 with other random initial tangent bases (--seed s): tags basis_PARAM_U*_s*
    for sd in ${SEEDS:-1 2}; do
      timed "basis_${PARAM:-lr}_U${U}_s$sd" "U=$U" W=10 S=20 -- --param "${PARAM:-lr}" --method far --unstable "$U" \
        --seed "$sd" --from "$from" --to "$to"
    done ;;
  aligned)  # FAR from a tangent basis aligned over ALIGN (default 400) steps before FROM (--align):
            # every PARAM in $PARAMS x U in $USWEEP x W in $WSWEEP x seed in $SEEDS; tags alA_PARAM_U*_W*_s*
    A="${ALIGN:-400}"
    for p in ${PARAMS:-lr weight-decay}; do for u in ${USWEEP:-$U}; do for w in ${WSWEEP:-10}; do for sd in ${SEEDS:-0}; do
      timed "al${A}_${p}_U${u}_W${w}_s${sd}" "U=$u" "W=$w" S=20 "seed=$sd" -- --param "$p" --method far \
        --unstable "$u" --window "$w" --seed "$sd" --align "$A" --from "$from" --to "$to"
    done; done; done; done ;;
  *) echo "seed_response.sh: unknown phase '$phase'" >&2; exit 2 ;;
esac
