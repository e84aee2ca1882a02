#!/usr/bin/env bash
# Healing hyper-parameters chosen on the validation slice (issue 26 §2): MoE-I² prunes 50% of MODEL's routed experts
# (calibrated on the training part of ../shared/data/calib), then `moepress heal` runs once per line of RUNS
# ("lr steps rank alpha seed") and each healed model is scored by `eval perplexity --validation-of
# ../shared/data/calib` (the last ~10% of each file, which calibration and training never read). Prints one row per
# run: validation perplexity, the share of the original→pruned gap recovered, heal's own validation loss before →
# after (training time is not reported: it is a speed figure, for tools/bench/compare_train.sh). ../shared/data/dev and the tasks are not read: measure them once, for the chosen setting.
# Then, once, the final evaluation of the chosen setting (FINAL, default "2e-3 100 64 16", the default `heal`): dev
# perplexity over all 11 ../shared/data/dev files for each seed of it in RUNS, as mean (min–max).
# Usage: tools/bench/tune_healing.sh [MODEL_NAME]   (WORK=dir keeps the outputs; THREADS=n; RUNS overrides the grid)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-mixtral-ref}
model=../shared/models/$name
RUNS=${RUNS:-"2e-4 100 64 16 0
3e-4 100 64 16 0
1e-3 100 64 16 0
1e-3 100 64 16 1
1e-3 100 64 16 2
2e-3 100 64 16 0
2e-3 100 64 16 1
2e-3 100 64 16 2
3e-3 100 64 16 0
3e-3 100 64 16 1
3e-3 100 64 16 2
5e-3 100 64 16 0"}
THREADS=${THREADS:-2}
swift build -c release --product moepress >&2
bin=.build/release/moepress
work=${WORK:-$(mktemp -d)}; mkdir -p "$work"
val() { $bin eval perplexity --model "$1" --validation-of ../shared/data/calib --json --quiet --threads "$THREADS" \
  | python3 -c "import json,sys; print('%.3f' % json.load(sys.stdin)['perplexity'])"; }
[ -d "$work/pruned" ] || $bin prune --model "$model" --method moei2 --ratio 0.5 --calib-dir ../shared/data/calib --output "$work/pruned" \
  --threads "$THREADS" --quiet
p0=$(val "$model"); p1=$(val "$work/pruned")
echo "Command: tools/bench/tune_healing.sh $name; $(date -u +%F), commit $(git rev-parse --short HEAD)"
echo
echo "### $name: healing after MoE-I² 50%, scored on the validation slice (original $p0, pruned $p1)"
echo
echo "| lr | steps | rank | α | seed | validation ppl | gap recovered | heal validation loss |"
echo "|---:|---:|---:|---:|---:|---:|---:|---|"
while read -r lr steps rank alpha seed; do
  [ -n "$lr" ] || continue
  out="$work/heal-$lr-$steps-$rank-$alpha-$seed"
  [ -d "$out" ] || $bin heal --model "$work/pruned" --data ../shared/data/calib --lr "$lr" --steps "$steps" --lora-rank "$rank" \
    --lora-alpha "$alpha" --seed "$seed" --batch 8 --seq-len 256 --merge --output "$out" --threads "$THREADS" --quiet
  p=$(val "$out/merged")
  log=$(python3 -c "import json; d=json.load(open('$out/training_log.json')); print('%.4f → %.4f' % (d['validationLossBefore'], d['validationLossAfter']))")
  share=$(python3 -c "print('%.1f%%' % (100 * ($p1 - $p) / ($p1 - $p0)))")
  echo "| $lr | $steps | $rank | $alpha | $seed | $p | $share | $log |"
done <<< "$RUNS"
FINAL=${FINAL:-"2e-3 100 64 16"}
dev=(); for f in ../shared/data/dev/*.txt; do dev+=(--text-file "$f"); done
devppl() { $bin eval perplexity --model "$1" "${dev[@]}" --json --quiet --threads "$THREADS" | python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])"; }
d0=$(devppl "$model"); d1=$(devppl "$work/pruned"); ds=""
while read -r lr steps rank alpha seed; do
  [ "$lr $steps $rank $alpha" = "$FINAL" ] || continue
  ds="$ds $(devppl "$work/heal-$lr-$steps-$rank-$alpha-$seed/merged")"
done <<< "$RUNS"
echo
python3 - "$d0" "$d1" "$FINAL" $ds <<'PY'
import statistics, sys
d0, d1, final, healed = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], [float(x) for x in sys.argv[4:]]
def stat(v, fmt): return fmt % v[0] if len(v) == 1 else (fmt % statistics.mean(v)) + " (" + (fmt % min(v)) + "–" + (fmt % max(v)) + ")"
share = [100 * (d1 - h) / (d1 - d0) for h in healed]
print(f"Final evaluation of the chosen setting (lr steps rank α = {final}; {len(healed)} seeds), dev perplexity over all 11 dev files:")
print()
print("| model | dev ppl | gap recovered |")
print("|---|---:|---:|")
print(f"| original | {d0:.3f} | - |")
print(f"| MoE-I² pruned 50% | {d1:.3f} | - |")
print(f"| + heal (default) | {stat(healed, '%.3f')} | {stat(share, '%.1f%%')} |")
PY
