#!/usr/bin/env bash
# MoE-I²'s genetic search where it does not enumerate: on a model whose layers have too many subsets for the
# initial population (qwen-moe-ref: 32 experts, removing ~8 or ~16 per layer, C(32, 8) ≈ 1.05e7), the GA at its
# defaults (population 100, 50 generations: ≤ 5,100 subsets scored) against a much longer GA (LONG_POP × LONG_GEN,
# default 400 × 250: ≤ 100,400 subsets) on the same calibration cache and fitness tokens, for SEEDS (default 0 1 2).
# Per ratio and seed it reports the summed best search error (layer-output error of the best subset each layer's GA
# found, on the search tokens) of both, and per layer how far the default GA's best is above the long run's.
# Usage: tools/bench/ga_search.sh [MODEL_NAME]        (default qwen-moe-ref)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-qwen-moe-ref}; model=../shared/models/$name
SEEDS=${SEEDS:-"0 1 2"}; RATIOS=${RATIOS:-"0.25 0.5"}; LONG_POP=${LONG_POP:-400}; LONG_GEN=${LONG_GEN:-250}
# Both searches score subsets on the same FITNESS_TOKENS calibration tokens per layer (default 2048, fewer than a real
# run's, so the long search takes minutes, not hours): the question is how close the search comes on a fixed fitness.
FITNESS_TOKENS=${FITNESS_TOKENS:-2048}
bin=${MOEPRESS_BIN:-.build/release/moepress}   # MOEPRESS_BIN: a binary built beforehand (then nothing is built)
[ -n "${MOEPRESS_BIN:-}" ] || swift build -c release --product moepress >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "Command: tools/bench/ga_search.sh $name (SEEDS=\"$SEEDS\" LONG_POP=$LONG_POP LONG_GEN=$LONG_GEN FITNESS_TOKENS=$FITNESS_TOKENS); $(date -u +%F), commit $(git rev-parse --short HEAD)"
$bin calibrate --model "$model" --calib-dir ../shared/data/calib --samples 128 --seq-len 256 --seed 0 --output "$work/cal" --quiet
for ratio in $RATIOS; do
  for seed in $SEEDS; do
    for run in default long; do
      extra=""; [ $run = long ] && extra="--population $LONG_POP --generations $LONG_GEN"
      /usr/bin/time -f "%e" -o "$work/t-$run" $bin prune --model "$model" --method moei2 --ratio "$ratio" --calib "$work/cal" --seed "$seed" \
        --fitness-tokens "$FITNESS_TOKENS" $extra --output "$work/$run-$ratio-$seed" --quiet
    done
    echo "$ratio $seed $(cat "$work/t-default") $(cat "$work/t-long")" >> "$work/runs"
  done
done
python3 - "$work" <<'EOF'
import json, statistics, sys
work = sys.argv[1]
def best(path):   # per MoE layer: the GA's best search error (first candidate) and the layer's removal count
    plan = json.load(open(path + "/plan.json"))
    return [(l["scores"]["candidate_errors"][0], l["experts"] - len(l["kept"])) for l in plan["layers"] if "candidate_errors" in l.get("scores", {})]
rows = [l.split() for l in open(work + "/runs")]
print("| ratio | seed | removed per layer | Σ best error, default GA | Σ best error, long GA | default above long | worst layer | layers where long is lower |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
gaps = {}
for ratio, seed, td, tl in rows:
    d, l = best(f"{work}/default-{ratio}-{seed}"), best(f"{work}/long-{ratio}-{seed}")
    sd, sl = sum(e for e, _ in d), sum(e for e, _ in l)
    per = [(a[0] - b[0]) / b[0] for a, b in zip(d, l)]
    gaps.setdefault(ratio, []).append((sd - sl) / sl)
    print(f"| {ratio} | {seed} | {' '.join(str(n) for _, n in d)} | {sd:.2f} | {sl:.2f} | {100 * (sd - sl) / sl:+.2f}% | {100 * max(per):+.2f}% | "
          f"{sum(1 for p in per if p > 1e-12)}/{len(per)} |")
for ratio, g in gaps.items():
    print(f"\nratio {ratio}: default GA above the long GA by {100 * statistics.mean(g):+.2f}% on average "
          f"(min {100 * min(g):+.2f}%, max {100 * max(g):+.2f}%, {len(g)} seeds)")
EOF
