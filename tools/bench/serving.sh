#!/usr/bin/env bash
# Serving throughput: vLLM's CPU build (scripts/setup.sh --vllm, moepress_vllm plugin) on a reference model, a uniform
# frequency prune (25%), MoE-I²'s unequal counts at the same ratio and compressed experts (half the top-k run, the
# others as vectors; 20 training steps: speed only) (32 prompts × 64 tokens, 64 greedy new tokens
# each, one batch; tools/bench/vllm_throughput.py), beside `moepress bench` (one sequence: 64-token prefill, 64 decoded)
# on the same models and threads.
# Usage: tools/bench/serving.sh [MODEL_NAME]   (default mixtral-ref)   Env: SCRATCH (/work/scratch), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-mixtral-ref}; M=../shared/models/$name
W=${SCRATCH:-/work/scratch}/serving-$name; mkdir -p "$W"
T=${THREADS:-2}
scripts/setup.sh --vllm >&2
venv=${MOEPRESS_VLLM_VENV:-$HOME/.cache/moepress/vllm-venv}
swift build -c release --product moepress >&2
B=.build/release/moepress
for m in frequency moei2; do
  [ -d "$W/$m" ] || "$B" prune --model "$M" --method $m --ratio 0.25 --calib-dir ../shared/data/calib --output "$W/$m" --quiet
done
k=$(python3 -c "import json; print(json.load(open('$M/config.json')).get('num_experts_per_tok', 2))")
[ -d "$W/ce" ] || "$B" compress-experts --model "$M" --main-experts $((k / 2)) --data ../shared/data/calib --steps 20 \
  --batch 2 --seq-len 64 --output "$W/ce" --quiet
THREADS=$T "$venv/bin/python" tools/bench/vllm_throughput.py "$M" "$W/frequency" "$W/moei2" "$W/ce" 2>/dev/null | grep '^{'
"$B" bench --model "$M" --model "$W/frequency" --model "$W/moei2" --model "$W/ce" --tokens 64 --decode 64 --threads "$T" --json
