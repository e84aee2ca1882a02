#!/usr/bin/env bash
# Serving throughput: vLLM's CPU build (scripts/setup.sh --vllm, moepress_vllm plugin) on a reference model, a uniform
# frequency prune (25%), MoE-I²'s unequal counts at the same ratio and compressed experts (half the top-k run, the
# others as vectors; 20 training steps: speed only): one batch of 32 prompts × 64 tokens, 64 greedy new tokens each
# (tools/bench/vllm_throughput.py). Under the benchmark protocol (tools/bench/protocol.py): ROUNDS rounds alternating
# over the four models, each a fresh vLLM process with its own warm-up; median (min–max). Then `moepress bench` on
# the same four models and threads (one sequence: 64-token prompt, 64 tokens decoded from it; ROUNDS rounds
# alternating over the models in one process), a different workload: the two tables are not compared with each other.
# Usage: tools/bench/serving.sh [MODEL_NAME]   (default mixtral-ref)   Env: SCRATCH (/work/scratch), THREADS (2), ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-mixtral-ref}; M=../shared/models/$name
W=${SCRATCH:-/work/scratch}/serving-$name; mkdir -p "$W"
T=${THREADS:-2}; ROUNDS=${ROUNDS:-5}
command="THREADS=$T ROUNDS=$ROUNDS tools/bench/serving.sh $name"
scripts/setup.sh --vllm >&2
venv=${MOEPRESS_VLLM_VENV:-$HOME/.cache/moepress/vllm-venv}
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
for m in frequency moei2; do
  [ -d "$W/$m" ] || "$B" prune --model "$M" --method $m --ratio 0.25 --calib-dir ../shared/data/calib --output "$W/$m" --quiet
done
k=$(python3 -c "import json; print(json.load(open('$M/config.json')).get('num_experts_per_tok', 2))")
[ -d "$W/ce" ] || "$B" compress-experts --model "$M" --main-experts $((k / 2)) --data ../shared/data/calib --steps 20 \
  --batch 2 --seq-len 64 --output "$W/ce" --quiet
vllm() { echo "THREADS=$T $venv/bin/python tools/bench/vllm_throughput.py $1 2>/dev/null"; }
echo "### $name: vLLM, batch of 32"
echo
python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads "$T" --row-header "model (vLLM)" \
  --note "$name and three compressions of it, vLLM with $T OMP threads: 32 prompts of 64 tokens, 64 greedy new tokens each, one batch." \
  --metric generated_tok_s:"generated tok/s":0 --metric total_tok_s:"prompt + generated tok/s":0 \
  --engine "original, top-$k" "$(vllm "$M")" --engine "frequency 25%" "$(vllm "$W/frequency")" \
  --engine "MoE-I² 25% (plugin)" "$(vllm "$W/moei2")" --engine "compressed experts, $((k / 2)) main (plugin)" "$(vllm "$W/ce")"
echo
echo "### $name: moepress bench, one sequence"
echo
echo "Command: \`$command\`"
echo
MOEPRESS_COMMIT=$(python3 tools/bench/protocol.py commit) \
  "$B" bench --model "$M" --model "$W/frequency" --model "$W/moei2" --model "$W/ce" --tokens 64 --decode 64 --rounds "$ROUNDS" --threads "$T" 2>/dev/null
