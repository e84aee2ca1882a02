#!/usr/bin/env bash
# lm-eval (HF transformers backend, f32, CPU, offline) on a MoEPress task file, through the local task
# definition beside this script. Prints lm-eval's acc and acc_norm as JSON.
# Usage: tools/lm_eval/run.sh MODEL_DIR TASKS.jsonl [LIMIT] [BOS]     (needs: pip install lm-eval accelerate)
# BOS: "false" (default) scores contexts without special tokens, MoEPress's protocol; "default" leaves
# add_bos_token unset, so the tokenizer adds its BOS as lm-eval 0.4 does (moepress eval tasks --add-special-tokens).
set -euo pipefail
model=$(realpath "$1"); tasks=$(realpath "$2"); limit=${3:-}; bos=${4:-false}
bosarg=",add_bos_token=False"; [ "$bos" = "default" ] && bosarg=""
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|MOEPRESS_TASKS_FILE|$tasks|" "$(dirname "$0")/moepress_mc.yaml" > "$work/moepress_mc.yaml"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m lm_eval --model hf --model_args "pretrained=$model,dtype=float32$bosarg" --device cpu --batch_size 16 \
  --include_path "$work" --tasks moepress_mc ${limit:+--limit $limit} --output_path "$work/out" >&2
python3 - "$work/out" <<'PY'
import json, glob, sys
f = sorted(glob.glob(sys.argv[1] + "/**/results_*.json", recursive=True))[-1]
r = json.load(open(f))["results"]["moepress_mc"]
print(json.dumps({"acc": r["acc,none"], "acc_norm": r["acc_norm,none"], "n": json.load(open(f))["n-samples"]["moepress_mc"]["effective"]}))
PY
