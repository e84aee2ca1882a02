#!/usr/bin/env bash
# Serving throughput: vLLM's CPU build (scripts/setup.sh --vllm, moepress_vllm plugin) on a reference model, a uniform
# frequency prune (25%) and MoE-I²'s unequal counts at the same ratio (32 prompts × 64 tokens, 64 greedy new tokens
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
THREADS=$T "$venv/bin/python" tools/bench/vllm_throughput.py "$M" "$W/frequency" "$W/moei2" 2>/dev/null | grep '^{'
"$B" bench --model "$M" --model "$W/frequency" --model "$W/moei2" --tokens 64 --decode 64 --threads "$T" --json
