#!/usr/bin/env bash
# Evaluation throughput, MoEPress vs the HF transformers oracle (same protocol, same 2 threads), in one
# run: multiple-choice items/s on the first ITEMS items of tasks/dev.jsonl, perplexity tokens/s on
# handbook.txt + jargon.txt. HF scores each choice with its own forward (as lm-eval does); MoEPress runs
# the context once and reuses its KV cache. Needs scripts/setup.sh --oracle.
set -euo pipefail
cd "$(dirname "$0")/../.."
ITEMS=${ITEMS:-330}
swift build -c release --product moepress >&2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
head -n "$ITEMS" ../shared/data/tasks/dev.jsonl > "$tmp/tasks.jsonl"
echo "| model | engine | task items/s | perplexity tokens/s |"
echo "|---|---|---:|---:|"
python3 tools/oracle/eval_oracle.py --time --time-items "$ITEMS" --per-task 0 --no-fixture 2>/dev/null | grep '^{' > "$tmp/hf.jsonl"
for m in mixtral-ref qwen-moe-ref; do
  s=$(date +%s.%N)
  .build/release/moepress eval tasks --model ../shared/models/$m --tasks "$tmp/tasks.jsonl" --quiet --json > /dev/null
  t_tasks=$(echo "$(date +%s.%N) - $s" | bc)
  s=$(date +%s.%N)
  .build/release/moepress eval perplexity --model ../shared/models/$m --text-file ../shared/data/dev/handbook.txt --text-file ../shared/data/dev/jargon.txt --quiet --json > "$tmp/ppl.json"
  t_ppl=$(echo "$(date +%s.%N) - $s" | bc)
  python3 - "$m" "$ITEMS" "$t_tasks" "$t_ppl" "$tmp/ppl.json" "$tmp/hf.jsonl" <<'PY'
import json, sys
m, items, tt, tp, ppl, hf = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
h = [json.loads(l) for l in open(hf) if json.loads(l)["model"] == m][0]
ours_items, ours_tok = items / tt, json.load(open(ppl))["tokens"] / tp
print(f"| {m} | moepress (incl. load) | {ours_items:.1f} | {ours_tok:.0f} |")
print(f"| {m} | {h['engine']} | {h['task_items_per_second']:.1f} | {h['ppl_tokens_per_second']:.0f} |")
print(f"| {m} | **ratio** | **{ours_items / h['task_items_per_second']:.1f}×** | **{ours_tok / h['ppl_tokens_per_second']:.2f}×** |")
PY
done
