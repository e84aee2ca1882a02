#!/usr/bin/env bash
# Training throughput, MoEPress vs HF transformers + PEFT on PyTorch CPU (tools/bench/bench_train_hf.py), same model,
# data, threads and settings: LoRA r 64 / α 16 on q,k,v,o, experts, shared/dense MLPs and router, no dropout (PEFT
# refuses it on expert parameters), AdamW, clipping, batches of 8 × 256 tokens, activations kept (PyTorch's default;
# MoEPress --no-recompute unless RECOMPUTE is set); tokens/s over the steps after the first. Under the benchmark
# protocol (tools/bench/protocol.py): ROUNDS alternating rounds (MoEPress, PyTorch, MoEPress, …), each a fresh
# process; median (min–max).
# Usage: tools/bench/compare_train.sh MODEL_NAME [THREADS] [STEPS]     Env: ROUNDS (5), RECOMPUTE (--no-recompute).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; threads=${2:-$(nproc)}; steps=${3:-6}; ROUNDS=${ROUNDS:-5}
command="ROUNDS=$ROUNDS${RECOMPUTE:+ RECOMPUTE=$RECOMPUTE} tools/bench/compare_train.sh $name $threads $steps"
model=../shared/models/$name
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ours="rm -rf $work/heal && $B heal --model $model --data ../shared/data/calib --steps $steps --batch 8 --seq-len 256 --lora-dropout 0 ${RECOMPUTE:---no-recompute} \
  --threads $threads --output $work/heal --quiet && python3 -c '
import json; s = json.load(open(\"$work/heal/training_log.json\"))[\"steps\"][1:]
print(json.dumps({\"tokens_per_second\": sum(x[\"tokens\"] for x in s) / sum(x[\"tokens\"] / x[\"tokensPerSecond\"] for x in s)}))'"
theirs="python3 tools/bench/bench_train_hf.py $model ../shared/data/calib --steps $steps --batch 8 --seq-len 256 --threads $threads"
python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads "$threads" --ratio \
  --note "$name, $threads threads, LoRA r 64 on attention, experts, shared MLPs and router; tokens/s over steps 2–$steps of 8 × 256 tokens." \
  --metric tokens_per_second:"training tok/s":0:ratio --engine MoEPress "$ours" --engine "PyTorch + PEFT" "$theirs"
