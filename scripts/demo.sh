#!/usr/bin/env bash
# The main job on the bundled default model (`make demo` runs this): install what is needed, build, describe
# the model, check a forward pass against HF's logits, then run the MoE-I² recipe end to end (calibrate →
# prune 25% of the routed experts → SVD-LLM low-rank experts with importance ranks → LoRA healing →
# evaluation and speed of every stage's model), print the run table (Δ% against the original) and write the HTML report.
# RECIPE=path picks another recipe; RUN=path the run folder (default runs/demo, replaced each time).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-recipes/moei2.yaml}
RUN=${RUN:-runs/demo}
MODEL=${MODEL:-../shared/models/mixtral-ref}   # the model the default recipe compresses
scripts/setup.sh
swift build -c release --product moepress 2>&1 | tail -1 >&2
bin=.build/release/moepress

echo "== moepress inspect $MODEL"
$bin inspect "$MODEL"
if [ -f "$MODEL/reference/ids.json" ]; then
  echo "== forward pass on reference/ids.json, checked against HF transformers' logits"
  logits=$(mktemp -d)
  $bin logits --model "$MODEL" --ids-file "$MODEL/reference/ids.json" --output "$logits/logits.safetensors" \
    --reference "$MODEL/reference/logits.safetensors" 2>/dev/null
  rm -rf "$logits"
fi
echo "== moepress run $RECIPE --output $RUN"
rm -rf "$RUN"
$bin run "$RECIPE" --output "$RUN"
$bin report "$RUN"
echo "== report: $RUN/report.html (run.json beside it)"
