#!/usr/bin/env bash
# The main job on the bundled default model: install what is needed, build, describe the model, check a
# forward pass against HF's logits, then compress it (calibrate → MoE-I² expert pruning at 25%) and print
# what that cost in quality and gained in size. MODEL=path overrides the model folder; OUT=path keeps the
# pruned checkpoint (default: a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-../shared/models/mixtral-ref}
DATA=${DATA:-../shared/data}
scripts/setup.sh
swift build -c release --product moepress 2>&1 | tail -1 >&2
bin=.build/release/moepress
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
OUT=${OUT:-$work/pruned}

echo "== moepress inspect $MODEL"
$bin inspect "$MODEL"
if [ -f "$MODEL/reference/ids.json" ]; then
  echo "== forward pass on reference/ids.json, checked against HF transformers' logits"
  $bin logits --model "$MODEL" --ids-file "$MODEL/reference/ids.json" --output "$work/logits.safetensors" \
    --reference "$MODEL/reference/logits.safetensors" 2>/dev/null
fi

echo "== compress: calibrate (64 × 256 tokens), MoE-I² expert pruning, 25% of routed experts"
$bin calibrate --model "$MODEL" --calib-dir "$DATA/calib" --samples 64 --seq-len 256 --no-grams --output "$work/calib" --quiet
$bin prune --model "$MODEL" --method moei2 --calib "$work/calib" --ratio 0.25 --output "$OUT" --overwrite --quiet

echo "== before / after (dev perplexity on austen + pydoc + kjv, all 1,650 dev-task items)"
ppl=(--text-file "$DATA/dev/austen.txt" --text-file "$DATA/dev/pydoc.txt" --text-file "$DATA/dev/kjv.txt")
for m in "$MODEL" "$OUT"; do
  $bin eval perplexity --model "$m" "${ppl[@]}" --json --quiet > "$work/ppl.json"
  $bin eval tasks --model "$m" --tasks "$DATA/tasks/dev.jsonl" --json --quiet > "$work/tasks.json"
  $bin inspect "$m" --json > "$work/inspect.json"
  python3 - "$m" "$work" <<'PY'
import json, sys
m, w = sys.argv[1], sys.argv[2]
p, t, i = (json.load(open(f"{w}/{n}.json")) for n in ("ppl", "tasks", "inspect"))
label = "pruned (MoE-I², 25%)" if "prune" in m else "original"
experts = "/".join(str(e) for e in i["expertsPerLayer"] if e is not None)
print(f"{label:22} ppl {p['perplexity']:7.2f}   acc {t['acc']:.4f}  acc_norm {t['acc_norm']:.4f}   "
      f"params {i['totalParameters']/1e6:6.2f}M   {i['bytesOnDisk']/2**20:5.1f} MiB   experts {experts}")
PY
done
echo "== speed of the pruned model"
$bin bench --model "$OUT" --tokens 128 --decode 32 --repeats 2 2>/dev/null
