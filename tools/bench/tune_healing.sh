#!/usr/bin/env bash
# Healing hyper-parameters chosen on the validation slice (issue 26 §2): MoE-I² prunes 50% of MODEL's routed experts
# (calibrated on the training part of ../shared/data/calib), then `moepress heal` runs once per line of RUNS
# ("lr steps rank alpha seed") and each healed model is scored by `eval perplexity --validation-of
# ../shared/data/calib` (the last ~10% of each file, which calibration and training never read). Prints one row per
# run: validation perplexity, the share of the original→pruned gap recovered, heal's own validation loss before →
# after (training time is not reported: it is a speed figure, for tools/bench/compare_train.sh). ../shared/data/dev and the tasks are not read: measure them once, for the chosen setting.
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
