#!/usr/bin/env bash
# Issue "training" quality table for one reference model:
#  1. MoE-I² prunes 50% of the routed experts; LoRA healing (MoEITS defaults: r 64, α 16, dropout 0.1, lr 2e-4,
#     cosine, warm-up 5%) on ../shared/data/calib for HEAL_STEPS steps of 8 × 256 tokens; dev perplexity and
#     dev-task accuracy before pruning, after pruning, after healing, and the share of the perplexity gap recovered.
#  2. Compressed Experts with K = top-k/2 main experts against the plain top-k/2 model, both fine-tuned (all
#     parameters) for CE_STEPS steps on the same data and seed; dev perplexity, tasks, decode speed (one bench run).
# Usage: tools/bench/compare_healing.sh MODEL_NAME   (HEAL_STEPS, HEAL_LR, CE_STEPS, CE_LR override the defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1
model=../shared/models/$name
HEAL_STEPS=${HEAL_STEPS:-400}; HEAL_LR=${HEAL_LR:-2e-4}; CE_STEPS=${CE_STEPS:-200}; CE_LR=${CE_LR:-1e-4}
PPL_FILES=${PPL_FILES:-"austen handbook jargon kjv pydoc"}
swift build -c release --product moepress >&2
bin=.build/release/moepress
work=${WORK:-$(mktemp -d)}; mkdir -p "$work"
ppl_args=""; for f in $PPL_FILES; do ppl_args="$ppl_args --text-file ../shared/data/dev/$f.txt"; done
ppl() { $bin eval perplexity --model "$1" $ppl_args --json --quiet | python3 -c "import json,sys; print('%.3f' % json.load(sys.stdin)['perplexity'])"; }
tasks() { $bin eval tasks --model "$1" --tasks ../shared/data/tasks/dev.jsonl --json --quiet | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f / %.4f' % (d['acc'], d['acc_norm']))"; }
secs() { python3 -c "import json; print('%.0f' % json.load(open('$1'))['seconds'])"; }

echo "### $name: LoRA healing after MoE-I² 50% pruning ($HEAL_STEPS steps × 8 × 256 tokens, lr $HEAL_LR)"
echo
p0=$(ppl "$model"); t0=$(tasks "$model")
[ -d "$work/pruned" ] || $bin prune --model "$model" --method moei2 --ratio 0.5 --calib-dir ../shared/data/calib --output "$work/pruned" --quiet
p1=$(ppl "$work/pruned"); t1=$(tasks "$work/pruned")
[ -d "$work/healed" ] || $bin heal --model "$work/pruned" --data ../shared/data/calib --steps "$HEAL_STEPS" --lr "$HEAL_LR" --batch 8 --seq-len 256 \
  --merge --output "$work/healed" --quiet
p2=$(ppl "$work/healed/merged"); t2=$(tasks "$work/healed/merged")
echo "| model | dev ppl | dev tasks acc / acc_norm | training s |"
echo "|---|---:|---:|---:|"
echo "| original | $p0 | $t0 | - |"
echo "| MoE-I² pruned 50% | $p1 | $t1 | - |"
echo "| + LoRA healing | $p2 | $t2 | $(secs "$work/healed/training_log.json") |"
echo
python3 -c "print('Share of the perplexity gap recovered: %.0f%%' % (100 * ($p1 - $p2) / ($p1 - $p0)))"
echo

k=$(python3 -c "import json; c=json.load(open('$model/config.json')); print(c['num_experts_per_tok'])")
half=$((k / 2))
echo "### $name: Compressed Experts (K = $half of top-$k) vs top-$half, both fine-tuned $CE_STEPS steps (lr $CE_LR, all parameters)"
echo
[ -d "$work/ce" ] || $bin compress-experts --model "$model" --main-experts "$half" --data ../shared/data/calib --steps "$CE_STEPS" --lr "$CE_LR" \
  --batch 8 --seq-len 256 --output "$work/ce" --quiet
[ -d "$work/topk" ] || $bin compress-experts --model "$model" --main-experts "$half" --no-ce --data ../shared/data/calib --steps "$CE_STEPS" --lr "$CE_LR" \
  --batch 8 --seq-len 256 --output "$work/topk" --quiet
echo "| model | dev ppl | dev tasks acc / acc_norm | training s |"
echo "|---|---:|---:|---:|"
echo "| top-$k (original, not fine-tuned) | $p0 | $t0 | - |"
echo "| top-$half + fine-tuning | $(ppl "$work/topk") | $(tasks "$work/topk") | $(secs "$work/topk/training_log.json") |"
echo "| top-$half + compressed experts + fine-tuning | $(ppl "$work/ce") | $(tasks "$work/ce") | $(secs "$work/ce/training_log.json") |"
echo
echo "Decode and prefill speed (original top-$k, CE, top-$half; median (min–max) of \`moepress bench\`'s alternating rounds):"
echo
MOEPRESS_COMMIT=$(python3 tools/bench/protocol.py commit) $bin bench --model "$model" --model "$work/ce" --model "$work/topk" --tokens 128 --decode 64 --rounds "${ROUNDS:-5}" 2>/dev/null
