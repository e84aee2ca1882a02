#!/usr/bin/env bash
# The main job on the bundled default model: install what is needed, build, describe the model,
# run a forward pass and check it against HF's logits. MODEL=path overrides the model folder.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-../shared/models/mixtral-ref}
scripts/setup.sh
swift build -c release --product moepress 2>&1 | tail -1 >&2
bin=.build/release/moepress
echo "== moepress inspect $MODEL"
$bin inspect "$MODEL"
if [ -f "$MODEL/reference/ids.json" ]; then
  echo "== forward pass on $MODEL/reference/ids.json, checked against HF transformers' logits"
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  $bin logits --model "$MODEL" --ids-file "$MODEL/reference/ids.json" --output "$out/logits.safetensors" \
    --reference "$MODEL/reference/logits.safetensors"
fi
echo "== speed"
$bin bench --model "$MODEL" --tokens 128 --decode 32 --repeats 2 2>/dev/null
