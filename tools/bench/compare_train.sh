#!/usr/bin/env bash
# Training throughput, MoEPress vs HF transformers + PEFT on PyTorch CPU, same model, data, threads and
# settings: LoRA r 64 / α 16 on q,k,v,o, experts, shared/dense MLPs and router, no dropout (PEFT refuses it on
# expert parameters), AdamW, clipping, batches of 8 × 256 tokens; tokens/s over the steps after the first.
# Usage: tools/bench/compare_train.sh MODEL_NAME [THREADS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; threads=${2:-$(nproc)}; steps=${3:-6}
model=../shared/models/$name
swift build -c release --product moepress >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
.build/release/moepress heal --model "$model" --data ../shared/data/calib --steps "$steps" --batch 8 --seq-len 256 --lora-dropout 0 ${RECOMPUTE:---no-recompute} \
  --threads "$threads" --output "$work/heal" --quiet
ours=$(python3 -c "
import json; s=json.load(open('$work/heal/training_log.json'))['steps'][1:]
print(sum(x['tokens'] for x in s) / sum(x['tokens'] / x['tokensPerSecond'] for x in s))")
theirs=$(python3 tools/bench/bench_train_hf.py "$model" ../shared/data/calib --steps "$steps" --batch 8 --seq-len 256 --threads "$threads" \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_second'])")
python3 -c "print('| $name | $threads | %.0f | %.0f | %.2f× |' % ($ours, $theirs, $ours / $theirs))"
