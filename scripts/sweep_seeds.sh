#!/usr/bin/env bash
# Learning-rate sweep over several initial seeds, resumable: one `tdyn train` per (alpha, seed)
# with the analyses given after --, then the tables and figures of scripts/sweep_summary.py.
#
#   scripts/sweep_seeds.sh -o DIR --lrs "0.1 1 10" --seeds "0 1 2" [--steps N] [--distance EPS] [--jobs N] [--] TRAIN FLAGS...
#
# DIR/lr_<alpha>_seed_<s>.h5: one run file each. A run whose file says completed or diverged is
# skipped; one that says running or interrupted (killed, stopped) is continued with --resume from
# its last stored theta (every steps/4 steps unless --save-theta-every is given after --).
# --distance EPS: also the two-trajectory estimate of arXiv 2506.08523: theta_0 of the run with
# every weight (not the biases) moved by U(-EPS, EPS) is trained without analyses, next to a plain
# copy of the unperturbed run, both storing theta every step; |theta'_t - theta_t| for t = 0..N
# goes to DIR/distance_<alpha>_seed_<s>.csv and the two run files are deleted.
# --jobs N: run up to N (alpha, seed) pairs at once (background jobs), each with OMP_NUM_THREADS=1
# unless it is set; the files are the same as those of the serial sweep (default: one pair after the
# other in this shell; --jobs 1 goes through the same pool, one at a time). Resumable as before;
# Ctrl-C stops every running tdyn cleanly (status interrupted, continued by the next sweep).
# Then DIR/runs.csv (one row per run), DIR/summary.csv (mean and spread over seeds per alpha)
# and DIR/figures/*.png (scripts/sweep_summary.py). Times of each run go to DIR/times.csv.
# Example (issue 18, part 1):
#   OMP_NUM_THREADS=1 scripts/sweep_seeds.sh -o runs/chaos --lrs "0.5 5 10" --seeds "0 1" --distance 1e-8 -- \
#     --arch 784-64-10 --activation tanh --init-scheme normal --lyapunov 3 --perturbation 1e-8 \
#     --spectrum-every 50 --eigs 1 --which top
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tdyn="${TDYN:-$root/build/tdyn}"
out="$root/runs/seeds" lrs="0.1 1 10" seeds="0" steps=200 distance="" jobs="" extra=()
while (($#)); do
  case "$1" in
    -o|--out) out="$2"; shift 2 ;;
    --lrs) lrs="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --distance) distance="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sweep_seeds.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$tdyn" ]] || { echo "sweep_seeds.sh: $tdyn not found; build first (scripts/build.sh)" >&2; exit 1; }
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "sweep_seeds.sh: --steps: expected a positive integer, found '$steps'" >&2; exit 2; }
[[ -z "$jobs" || "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "sweep_seeds.sh: --jobs: expected a positive integer, found '$jobs'" >&2; exit 2; }
mkdir -p "$out"
# theta (and the analyses' checkpoint) every steps/4 steps, so a killed run resumes from there;
# a --save-theta-every after -- overrides it
save=$(( steps / 4 > 0 ? steps / 4 : 1 ))
times="$out/times.csv"
[[ -f "$times" ]] || echo "kind,alpha,seed,seconds,cpu_seconds,exit" > "$times"

status_of() {  # the run file's status attribute, or "none"
  [[ -f "$1" ]] || { echo none; return; }
  /usr/bin/python3 -c 'import h5py, sys
try:
    with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as f: s = f.attrs.get("status", b"none")
except Exception:
    s = b"broken"
print(s.decode() if isinstance(s, bytes) else s)' "$1"
}

train() {  # kind alpha seed ARGS...: one tdyn train, timed; exit 0 or 3 (diverged) are results
  local kind="$1" a="$2" s="$3"; shift 3
  local code=0 tf
  tf="$(mktemp)"
  # wall and CPU (user + system) seconds: on a shared machine the CPU time is the cost
  /usr/bin/time -f "%e,%U,%S" -o "$tf" "$tdyn" train "$@" --quiet >/dev/null || code=$?
  IFS=, read -r wall user sys < <(tail -1 "$tf")
  rm -f "$tf"
  echo "$kind,$a,$s,$wall,$(echo "$user + $sys" | bc),$code" >> "$times"
  # 0 completed, 3 diverged: results. Anything else is reported and the sweep goes on.
  if ((code != 0 && code != 3)); then echo "sweep_seeds.sh: tdyn train $* failed (exit $code)" >&2; return 1; fi
}

pair() {  # alpha seed: the run of one (alpha, seed) and, with --distance, its two plain copies
  local a="$1" s="$2" run common st dist plain noinit skip f ref pert p0
  run="$out/lr_${a}_seed_${s}.h5"
  common=(--lr "$a" --seed "$s" --steps "$steps" "${extra[@]}")
  st=$(status_of "$run")
  case "$st" in
    completed|diverged) echo "skip  alpha $a seed $s ($st)" ;;
    running|interrupted) echo "resume alpha $a seed $s"; train main "$a" "$s" "${common[@]}" --out "$run" --resume || return 0 ;;
    *) echo "run   alpha $a seed $s"
       train main "$a" "$s" --save-theta-every "$save" "${common[@]}" --out "$run" --force || return 0 ;;
  esac
  [[ -n "$distance" ]] || return 0
  dist="$out/distance_${a}_seed_${s}.csv"
  [[ -f "$dist" ]] && return 0
  # Plain copies (no analyses: every flag of the run but the analysis ones), theta every step.
  # The perturbed copy starts from a params file, so it drops --init-scheme/--init-scale too.
  plain=(--lr "$a" --seed "$s" --steps "$steps") noinit=(--lr "$a" --seed "$s" --steps "$steps")
  skip=0
  for f in "${extra[@]}"; do
    if ((skip == 1)); then skip=0; continue; fi
    if ((skip == 2)); then skip=0; plain+=("$f"); continue; fi
    case "$f" in
      --lyapunov|--perturbation|--spectrum-every|--eigs|--which|--qr-every|--warmup) skip=1 ;;
      --init-scheme|--init-scale) skip=2; plain+=("$f") ;;
      *) plain+=("$f"); noinit+=("$f") ;;
    esac
  done
  ref="$out/ref_${a}_seed_${s}.h5" pert="$out/pert_${a}_seed_${s}.h5" p0="$out/pert0_${a}_seed_${s}.h5"
  train ref "$a" "$s" "${plain[@]}" --save-theta-every 1 --out "$ref" --force || return 0
  /usr/bin/python3 "$root/scripts/sweep_summary.py" perturb "$ref" "$p0" --eps "$distance" --seed "$s"
  train pert "$a" "$s" "${noinit[@]}" --init "$p0" --save-theta-every 1 --out "$pert" --force || return 0
  /usr/bin/python3 "$root/scripts/sweep_summary.py" distance "$ref" "$pert" "$dist"
  rm -f "$ref" "$pert" "$p0"
}

if [[ -z "$jobs" ]]; then
  for s in $seeds; do for a in $lrs; do pair "$a" "$s"; done; done
else
  # --jobs N: at most N pairs at once, each in a subshell of its own (the same function as above);
  # one thread each unless OMP_NUM_THREADS says otherwise, so N jobs use N cores
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  running=0
  for s in $seeds; do
    for a in $lrs; do
      if ((running >= jobs)); then wait -n || true; running=$((running - 1)); fi
      pair "$a" "$s" &
      running=$((running + 1))
    done
  done
  wait
fi
/usr/bin/python3 "$root/scripts/sweep_summary.py" summary "$out"
