#!/usr/bin/env bash
# Every pruning method on a reference model at 25% and 50% expert removal: summed layer reconstruction
# error (on the held-out calibration windows, the last 1/8, which no search saw), dev perplexity (pooled over
# PPL_FILES, default all 11 domains), dev-task accuracy, parameters, time to prune, peak RSS.
# Usage: tools/bench/compare_pruning.sh MODEL_NAME [METHODS]
# METHODS may include moei2-uniform: MoE-I² with --uniform-counts (the non-uniform vs uniform ablation).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; methods=${2:-"frequency reap naee moei2 moeits"}
model=../shared/models/$name
PPL_FILES=${PPL_FILES:-"austen fortunes gcide handbook jargon kjv linuxdoc perldoc pydoc web wordnet"}
swift build -c release --product moepress >&2
bin=.build/release/moepress
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
$bin calibrate --model "$model" --calib-dir ../shared/data/calib --samples 128 --seq-len 256 --seed 0 --output "$work/cal" --quiet
ppl_args=""; for f in $PPL_FILES; do ppl_args="$ppl_args --text-file ../shared/data/dev/$f.txt"; done
row() { # label dir prune_seconds rss_kib
  p=$($bin eval perplexity --model "$2" $ppl_args --json --quiet | python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['perplexity'])")
  t=$($bin eval tasks --model "$2" --tasks ../shared/data/tasks/dev.jsonl --json --quiet | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f / %.4f' % (d['acc'], d['acc_norm']))")
  params=$($bin inspect "$2" --json | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.2fM (%.2fM active)' % (d['totalParameters']/1e6, d['activeParameters']/1e6))")
  err=$(python3 -c "import json,sys; print(json.load(open('$2/plan.json'))['parameters'].get('reconstruction_error_sum','-'))" 2>/dev/null || echo "0")
  counts=$(python3 -c "import json; print(' '.join(str(len(l['kept'])) for l in json.load(open('$2/plan.json'))['layers']))" 2>/dev/null || echo "all")
  echo "| $1 | $counts | $err | $p | $t | $params | $3 | $4 |"
}
echo "| method | experts kept per layer | Σ layer reconstruction error | dev ppl ($PPL_FILES) | dev tasks acc / acc_norm | parameters | prune s | peak RSS MiB |"
echo "|---|---|---:|---:|---:|---|---:|---:|"
mkdir -p "$work/base"; cp "$model"/*.json "$model"/*.safetensors "$work/base/" 2>/dev/null
echo '{"parameters": {}, "layers": []}' > "$work/base/plan.json"
row "none (original)" "$model" "-" "-"
for ratio in 0.25 0.5; do
  for m in $methods; do
    out="$work/$m-$ratio"
    extra="--calib $work/cal"; method=$m
    [ "$m" = moei2-uniform ] && { method=moei2; extra="$extra --uniform-counts"; }
    /usr/bin/time -f "%e %M" -o "$work/time" $bin prune --model "$model" --method "$method" --ratio "$ratio" --output "$out" $extra --quiet 2>"$work/err" || { echo "| $m @ $ratio | failed: $(tail -1 "$work/err") | | | | | | |"; continue; }
    read secs kib < "$work/time"
    row "$m @ $ratio" "$out" "$secs" "$((kib / 1024))"
  done
done
