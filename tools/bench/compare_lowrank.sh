#!/usr/bin/env bash
# MoE-I² stage 2 on a reference model: expert-parameter reduction 20/40/60% × {svd, svdllm} × {uniform,
# importance ranks} → dev perplexity (pooled over PPL_FILES) and dev-task accuracy; then the full MoE-I²
# recipe (25% pruning + decomposition) against MoE-I² pruning alone at about the same parameter count.
# Calibration: 128 × 256 tokens of ../shared/data/calib (seed 0) with Gram matrices; importance = stage-1
# single-expert-removal error on those tokens. Usage: tools/bench/compare_lowrank.sh MODEL_NAME
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1
model=../shared/models/$name
PPL_FILES=${PPL_FILES:-"austen handbook jargon kjv pydoc"}
swift build -c release --product moepress >&2
bin=.build/release/moepress
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
$bin calibrate --model "$model" --calib-dir ../shared/data/calib --samples 128 --seq-len 256 --seed 0 --output "$work/cal" --quiet
ppl_args=""; for f in $PPL_FILES; do ppl_args="$ppl_args --text-file ../shared/data/dev/$f.txt"; done
row() { # label dir seconds
  p=$($bin eval perplexity --model "$2" $ppl_args --json --quiet | python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['perplexity'])")
  t=$($bin eval tasks --model "$2" --tasks ../shared/data/tasks/dev.jsonl --json --quiet | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f / %.4f' % (d['acc'], d['acc_norm']))")
  params=$($bin inspect "$2" --json | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.2fM' % (d['totalParameters']/1e6))")
  err=$(python3 -c "
import json
try:
    r = json.load(open('$2/decompose.json'))['relativeError']; print('%.3f / %.3f / %.3f' % (r['gate'], r['up'], r['down']))
except Exception: print('-')")
  echo "| $1 | $params | $err | $p | $t | $3 |"
}
echo "### $name: decomposition alone"
echo
echo "| expert params removed · method · ranks | parameters | rel. error gate / up / down | dev ppl | dev tasks acc / acc_norm | decompose s |"
echo "|---|---:|---:|---:|---:|---:|"
row "none (original)" "$model" "-"
for keep in 0.8 0.6 0.4; do
  for method in svd svdllm; do
    for alloc in uniform importance; do
      out="$work/$method-$alloc-$keep"
      # Plain SVD with uniform ranks uses no calibration (and refuses --calib).
      calib="--calib $work/cal"; [ "$method-$alloc" = svd-uniform ] && calib=""
      /usr/bin/time -f "%e" -o "$work/time" $bin decompose --model "$model" --method $method $calib --ratio $keep \
        --rank-alloc $alloc --output "$out" --quiet
      row "$(python3 -c "print(round(100*(1-$keep)))")% · $method · $alloc" "$out" "$(cat "$work/time")"
      rm -rf "$out"
    done
  done
done
echo
echo "### $name: MoE-I² recipe (prune 25%, then SVD-LLM with importance ranks) vs MoE-I² pruning alone"
echo
echo "| pipeline | parameters | rel. error gate / up / down | dev ppl | dev tasks acc / acc_norm | seconds |"
echo "|---|---:|---:|---:|---:|---:|"
for pair in "0.8 0.40" "0.6 0.55"; do
  set -- $pair; keep=$1; alone=$2
  out="$work/recipe-$keep"
  /usr/bin/time -f "%e" -o "$work/time" $bin compress --model "$model" --prune-ratio 0.25 --keep-params $keep --calib-dir ../shared/data/calib \
    --samples 128 --seq-len 256 --output "$out" --quiet
  row "prune 25% + SVD-LLM keep $keep" "$out" "$(cat "$work/time")"
  out2="$work/alone-$alone"
  /usr/bin/time -f "%e" -o "$work/time" $bin prune --model "$model" --method moei2 --ratio $alone --calib "$work/cal" --output "$out2" --quiet
  row "prune $alone alone" "$out2" "$(cat "$work/time")"
  rm -rf "$out" "$out2"
done
