#!/usr/bin/env bash
# Records lm-eval's own accuracy on the first 500 MMLU items for both reference models, with and without
# the tokenizer's BOS, as Tests/MoEEvalTests/Fixtures/lm_eval_mmlu.json (the test compares MoEPress to it).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT=${LIMIT:-500}
out=Tests/MoEEvalTests/Fixtures/lm_eval_mmlu.json
{
  echo "{\"limit\": $LIMIT, \"lm_eval\": \"$(python3 -c 'import lm_eval; print(lm_eval.__version__)')\", \"results\": {"
  first=1
  for m in mixtral-ref qwen-moe-ref; do
    for bos in false default; do
      r=$(tools/lm_eval/run.sh ../shared/models/$m ../shared/data/tasks/mmlu.jsonl "$LIMIT" "$bos" 2>/dev/null)
      [ $first = 1 ] || echo ","
      first=0
      printf '  "%s/bos=%s": %s' "$m" "$bos" "$r"
    done
  done
  echo ""
  echo "}}"
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
