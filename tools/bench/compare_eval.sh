#!/usr/bin/env bash
# Evaluation throughput, MoEPress vs the HF transformers oracle (tools/oracle/eval_oracle.py: eager, f32), under the
# benchmark protocol (tools/bench/protocol.py): for each reference model, ROUNDS alternating rounds (MoEPress, HF,
# MoEPress, …), each engine a fresh process; median (min–max). Multiple choice: items/s on the first ITEMS items of
# tasks/dev.jsonl; perplexity: tokens/s on handbook.txt + jargon.txt. Both engines are timed from the model loaded to
# the scores (load excluded: MoEPress's --report stages "tasks" and "perplexity", HF's own timers), THREADS threads.
# HF scores each choice with its own forward (as lm-eval does); MoEPress runs the context once and reuses its KV
# cache. Needs scripts/setup.sh --oracle.
# Usage: tools/bench/compare_eval.sh     Env: ITEMS (330), THREADS (2), ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/../.."
ITEMS=${ITEMS:-330}; THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-5}
command="ITEMS=$ITEMS THREADS=$THREADS ROUNDS=$ROUNDS tools/bench/compare_eval.sh${*:+ $*}"
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
head -n "$ITEMS" ../shared/data/tasks/dev.jsonl > "$tmp/tasks.jsonl"
dev=../shared/data/dev
for m in mixtral-ref qwen-moe-ref; do
  M=../shared/models/$m
  ours="$B eval tasks --model $M --tasks $tmp/tasks.jsonl --threads $THREADS --quiet --json --report $tmp/tasks.report.json > /dev/null &&
    $B eval perplexity --model $M --text-file $dev/handbook.txt --text-file $dev/jargon.txt --threads $THREADS --quiet --json --report $tmp/ppl.report.json > $tmp/ppl.json &&
    python3 -c 'import json
wall = lambda f, s: next(x[\"wall_seconds\"] for x in json.load(open(f))[\"stages\"] if x[\"name\"] == s)
print(json.dumps({\"task_items_per_second\": $ITEMS / wall(\"$tmp/tasks.report.json\", \"tasks\"),
                  \"ppl_tokens_per_second\": json.load(open(\"$tmp/ppl.json\"))[\"tokens\"] / wall(\"$tmp/ppl.report.json\", \"perplexity\")}))'"
  theirs="python3 tools/oracle/eval_oracle.py --time --time-items $ITEMS --per-task 0 --no-fixture --threads $THREADS --model $m"
  echo "### $m"
  echo
  python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads "$THREADS" --ratio \
    --note "$m, $THREADS threads; the first $ITEMS items of tasks/dev.jsonl, perplexity of handbook.txt + jargon.txt; model load excluded for both." \
    --metric task_items_per_second:"task items/s":1:ratio --metric ppl_tokens_per_second:"perplexity tokens/s":0:ratio \
    --engine MoEPress "$ours" --engine HF "$theirs"
  echo
done
