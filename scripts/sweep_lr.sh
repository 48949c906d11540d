#!/usr/bin/env bash
# Learning-rate sweep: where does gradient descent on the seed network turn unstable?
# For each alpha, a short full-batch training with the top Lyapunov exponent carried in-line
# (--lyapunov 1) and the sharpness lambda_max(H) every steps/10 steps; then one table row:
#   alpha, steps, status, final loss, lambda_max at the last analysed step, 2/alpha, top exponent.
# Writes DIR/lr_<alpha>.h5 (one run file each) and DIR/sweep.csv; prints the table.
#
#   scripts/sweep_lr.sh [-o DIR] [--lrs "0.1 0.3 1 3 10"] [--steps N] [--samples K] [-- TRAIN FLAGS...]
#
# Defaults: DIR = runs/sweep, lrs "0.03 0.1 0.3 1 3 10 30", 200 steps, 2000 MNIST samples
# (about 2 minutes on 2 cores). Flags after -- go to every `tdyn train` (e.g. --data fashion-mnist).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tdyn="${TDYN:-$root/build/tdyn}"
out="$root/runs/sweep" lrs="0.03 0.1 0.3 1 3 10 30" steps=200 samples=2000 extra=()
while (($#)); do
  case "$1" in
    -o|--out) out="$2"; shift 2 ;;
    --lrs) lrs="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sweep_lr.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$tdyn" ]] || { echo "sweep_lr.sh: $tdyn not found; build first (scripts/build.sh)" >&2; exit 1; }
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "sweep_lr.sh: --steps: expected a positive integer, found '$steps'" >&2; exit 2; }
mkdir -p "$out"
every=$(( steps / 10 > 0 ? steps / 10 : 1 ))
csv="$out/sweep.csv"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
echo "alpha,steps,status,final_loss,lambda_max,two_over_alpha,top_exponent,run_file" > "$tmp"
printf '%-8s %-10s %-12s %-12s %-10s %-14s\n' alpha status final_loss lambda_max 2/alpha top_exponent
for a in $lrs; do
  run="$out/lr_$a.h5"
  code=0
  "$tdyn" train --lr "$a" --steps "$steps" --samples "$samples" --lyapunov 1 --spectrum-every "$every" --eigs 1 \
    --which top --save-theta-every "$steps" --out "$run" --force --quiet "${extra[@]}" >/dev/null || code=$?
  # 0 completed, 3 diverged (the file keeps everything up to the step); anything else is an error.
  if ((code != 0 && code != 3)); then echo "sweep_lr.sh: tdyn train --lr $a failed (exit $code)" >&2; exit 1; fi
  "$tdyn" info "$run" --json | python3 -c '
import json, sys
i = json.load(sys.stdin)
s, l = i.get("spectrum", {}), i.get("lyapunov", {})
f = lambda x: "nan" if x is None else repr(float(x))
row = [sys.argv[1], str(i["last_step"]), i["status"], f(i["last_loss"]), f(s.get("lambda_max")),
       f(s.get("two_over_alpha", 2 / float(sys.argv[1]))), f((l.get("exponents") or [None])[0]), sys.argv[2]]
print(",".join(row))
print("%-8s %-10s %-12.6g %-12.6g %-10.4g %-14.6g" % (row[0], row[2], float(row[3]), float(row[4]), float(row[5]), float(row[6])), file=sys.stderr)
' "$a" "$(basename "$run")" >> "$tmp"  # the CSV row to the file, the table row to the terminal
done
mv "$tmp" "$csv"
trap - EXIT
echo "sweep_lr.sh: wrote $csv and one run file per alpha in $out"
