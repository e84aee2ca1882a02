#!/usr/bin/env bash
# Runtime speed on the reference models: MoEPress against HF transformers on PyTorch CPU (and llama.cpp with
# LLAMACPP=1) under the benchmark protocol (tools/bench/protocol.py, BENCHMARKS.md "Protocol"): for each model one
# table of ROUNDS alternating rounds (MoEPress, HF[, llama.cpp], MoEPress, …), every engine a fresh process with its
# own warm-up, the same TOKENS-token SplitMix64 prompt, DECODE greedy tokens decoded from that context, THREADS
# threads and weight dtype; median (min–max) for every engine.
# DTYPE=f32 (default): every engine reads an f32 copy of the weights that this script writes under $SCRATCH/f32
# (HF's parity setting; llama.cpp an f32 GGUF). DTYPE=bf16: the weights as stored (bf16; HF loads them as stored,
# llama.cpp a bf16 GGUF). Needs scripts/setup.sh --oracle (and tools/bench/llamacpp.sh build for LLAMACPP=1).
# Usage: tools/bench/compare.sh [MODEL_DIR ...]   (default: both shared reference models)
# Env: THREADS (2), TOKENS (128), DECODE (64), ROUNDS (5), DTYPE (f32), LLAMACPP (0), SCRATCH (/work/scratch).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-2}; TOKENS=${TOKENS:-128}; DECODE=${DECODE:-64}; ROUNDS=${ROUNDS:-5}; DTYPE=${DTYPE:-f32}; LLAMACPP=${LLAMACPP:-0}
SCRATCH=${SCRATCH:-/work/scratch}
case $DTYPE in f32|bf16) ;; *) echo "DTYPE must be f32 or bf16" >&2; exit 2 ;; esac
command="THREADS=$THREADS TOKENS=$TOKENS DECODE=$DECODE ROUNDS=$ROUNDS DTYPE=$DTYPE LLAMACPP=$LLAMACPP tools/bench/compare.sh${*:+ $*}"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(../shared/models/mixtral-ref ../shared/models/qwen-moe-ref)
swift build -c release --product moepress >&2
[ "$LLAMACPP" = 1 ] && tools/bench/llamacpp.sh build >&2
B=$PWD/.build/release/moepress
for m in "${models[@]}"; do
  name=$(basename "$m")
  if [ "$DTYPE" = f32 ]; then
    w=$SCRATCH/f32/$name
    [ -f "$w/model.safetensors" ] || python3 - "$m" "$w" <<'PY'
import json, os, shutil, sys
from safetensors.torch import load_file, save_file
src, dst = sys.argv[1:]
os.makedirs(dst, exist_ok=True)
for f in os.listdir(src):
    if f.endswith(".json") and f != "model.safetensors.index.json":
        shutil.copy(os.path.join(src, f), dst)
c = json.load(open(os.path.join(dst, "config.json")))
c["dtype"] = "float32"
json.dump(c, open(os.path.join(dst, "config.json"), "w"), indent=2)
tensors = {}
for f in sorted(os.listdir(src)):
    if f.endswith(".safetensors"):
        tensors.update({k: v.float() for k, v in load_file(os.path.join(src, f)).items()})
save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
PY
  else
    w=$m
  fi
  engines=(--engine MoEPress "cat $w/*.safetensors > /dev/null; $B bench --model $w --threads $THREADS --tokens $TOKENS --decode $DECODE --rounds 1 --no-bandwidth --json"
           --engine HF "cat $w/*.safetensors > /dev/null; python3 tools/bench/bench_hf.py --model $w --threads $THREADS --tokens $TOKENS --decode $DECODE --rounds 1")
  if [ "$LLAMACPP" = 1 ]; then
    g=$SCRATCH/gguf/$name-$DTYPE.gguf
    mkdir -p "$SCRATCH/gguf"
    [ -f "$g" ] || tools/bench/llamacpp.sh convert "$w" "$g" "$DTYPE" >&2
    engines+=(--engine llama.cpp "cat $g > /dev/null; python3 tools/bench/protocol.py llama-bench $g --tokens $TOKENS --decode $DECODE --threads $THREADS")
  fi
  echo "### $name ($DTYPE weights)"
  echo
  python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads "$THREADS" --ratio \
    --note "$name, $DTYPE weights for every engine, $THREADS threads, $TOKENS-token prompt (all logits), then $DECODE tokens decoded greedily from that $TOKENS-token context." \
    --metric prefill_tokens_per_second:"prefill tok/s":0:ratio --metric time_to_first_token_ms:"TTFT ms":1 \
    --metric decode_tokens_per_second:"decode tok/s":0:ratio --metric peak_rss_mib:"peak RSS MiB":0 "${engines[@]}"
  echo
done
