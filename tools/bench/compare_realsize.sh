#!/usr/bin/env bash
# Real-size runtime under the benchmark protocol (tools/bench/protocol.py, BENCHMARKS.md "Protocol"): MoEPress,
# llama.cpp (bf16 GGUF, llama-bench) and HF transformers (the stored bf16 weights, PyTorch CPU, stock) on a
# random-weight checkpoint with a real model's shapes. One table of ROUNDS alternating rounds (MoEPress, llama.cpp,
# HF, MoEPress, …), every engine a fresh process after its own warm-up, each reading its weights into the page cache
# first (the machine cannot cache two 14 GB models at once); the same TOKENS-token prompt, DECODE tokens decoded from
# that TOKENS-token context (llama-bench -d TOKENS), THREADS threads and bf16 weights; median (min–max) for every
# engine, and MoEPress's decode bound (read bandwidth / weight bytes per decoded token) measured in each round.
# Then a second table, ROUNDS alternating rounds of MoEPress's long commands (perplexity 16 × 512, logits of 512
# tokens, generate 32 tokens): wall time, peak RssAnon, peak RSS and bytes read from disk.
#   tools/bench/compare_realsize.sh CONFIG.json [--layers N] [--skip-hf] [--skip-llamacpp] [--skip-bench] [--cold]
# --cold empties the page cache (root) before each long command, so they read the model from disk: for models larger
# than RAM, with --skip-bench --skip-hf --skip-llamacpp (decode would only measure the disk).
# Writes under $OUT (default $SCRATCH/bench/<model>). Needs: scripts/setup.sh --oracle (HF),
# tools/bench/llamacpp.sh build (llama.cpp), ~2× the model on disk.
# Env: SCRATCH (/work/scratch), THREADS (2), TOKENS (128), DECODE (64), ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/../.."
command="THREADS=${THREADS:-2} TOKENS=${TOKENS:-128} DECODE=${DECODE:-64} ROUNDS=${ROUNDS:-5} tools/bench/compare_realsize.sh${*:+ $*}"
config=$1; shift
layers=(); hf=1; llama=1; bench=1; cold=0
while [ $# -gt 0 ]; do
  case $1 in
    --layers) layers=(--layers "$2"); shift 2 ;;
    --skip-hf) hf=0; shift ;;
    --skip-llamacpp) llama=0; shift ;;
    --skip-bench) bench=0; shift ;;
    --cold) cold=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
SCRATCH=${SCRATCH:-/work/scratch}; THREADS=${THREADS:-2}; TOKENS=${TOKENS:-128}; DECODE=${DECODE:-64}; ROUNDS=${ROUNDS:-5}
name=$(basename "$config" .json)${layers[1]:+-${layers[1]}l}
model=$SCRATCH/models/$name; gguf=$SCRATCH/gguf/$name-bf16.gguf; OUT=${OUT:-$SCRATCH/bench/$name}
mkdir -p "$OUT" "$SCRATCH/models" "$SCRATCH/gguf"
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
[ -d "$model" ] || $B synth --config "$config" "${layers[@]}" --output "$model" --tokenizer-from ../shared/models/qwen-moe-ref
warm="cat $model/*.safetensors > /dev/null"   # read the weights into the page cache
if [ $cold = 1 ]; then prepare="sync; echo 3 > /proc/sys/vm/drop_caches"; else prepare=$warm; fi

# 16 windows of 512 tokens of dev text (the qwen-moe-ref tokenizer the synthetic model carries)
text=$OUT/ppl16.txt
if [ ! -f "$text" ]; then
  cat ../shared/data/dev/*.txt | python3 -c "
import sys, subprocess
t = sys.stdin.read(); lo, hi = 1000, 200000
def count(n):
    open('$text', 'w').write(t[:n])
    return len(subprocess.run(['$B', 'tokenize', '--model', '$model', '--text-file', '$text'], capture_output=True, text=True).stdout.split())
while lo < hi:                       # shortest prefix with 8192 tokens
    mid = (lo + hi) // 2
    lo, hi = (mid + 1, hi) if count(mid) < 8192 else (lo, mid)
open('$text', 'w').write(t[:lo])"
fi
python3 -c "import json, random; random.seed(0); json.dump([random.randrange(4096) for _ in range(512)], open('$OUT/ids512.json', 'w'))"

if [ $bench = 1 ]; then
  engines=(--engine MoEPress "$warm; $B bench --model $model --threads $THREADS --tokens $TOKENS --decode $DECODE --rounds 1 --json")
  if [ $llama = 1 ]; then
    tools/bench/llamacpp.sh build >&2
    [ -f "$gguf" ] || tools/bench/llamacpp.sh convert "$model" "$gguf" bf16 >&2
    engines+=(--engine llama.cpp "cat $gguf > /dev/null; python3 tools/bench/protocol.py llama-bench $gguf --tokens $TOKENS --decode $DECODE --threads $THREADS")
  fi
  [ $hf = 1 ] && engines+=(--engine HF "$warm; python3 tools/bench/bench_hf.py --model $model --threads $THREADS --tokens $TOKENS --decode $DECODE --rounds 1")
  echo "### $name: engines"
  echo
  python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads "$THREADS" --ratio --samples "$OUT/engines.json" \
    --note "$name, bf16 weights for every engine, $THREADS threads, $TOKENS-token prompt, then $DECODE tokens decoded from that $TOKENS-token context. MoEPress's decode bound is its weight bytes per decoded token against the read bandwidth measured in the same round." \
    --metric prefill_tokens_per_second:"prefill tok/s":1:ratio --metric decode_tokens_per_second:"decode tok/s":2:ratio \
    --metric decode_bound_tokens_per_second:"decode bound tok/s":2 --metric peak_rss_anon_mib:"peak RssAnon MiB":0 \
    --metric peak_rss_mib:"peak RSS MiB":0 "${engines[@]}"
  echo
fi

# MoEPress's long commands, each printing its --report as one JSON line.
report() { echo "$prepare; $B $* --threads $THREADS --report $OUT/r.json > /dev/null 2>&1; python3 -c 'import json; print(json.dumps(json.load(open(\"$OUT/r.json\"))))'"; }
commands=(--engine "eval perplexity (16 × 512 tokens)" "$(report eval perplexity --model "$model" --text-file "$text" --seq-len 512 --quiet)"
          --engine "logits (512 tokens)" "$(report logits --model "$model" --ids-file "$OUT/ids512.json" --output "$OUT/logits.safetensors" --overwrite)")
[ $bench = 1 ] && commands+=(--engine "generate (32 tokens)" "$(report generate --model "$model" --prompt "'The history of the'" --max-tokens 32)")
echo "### $name: MoEPress commands"
echo
python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads "$THREADS" --samples "$OUT/commands.json" --row-header "MoEPress command" \
  --note "$name, $THREADS threads, $([ $cold = 1 ] && echo 'the page cache emptied before each command' || echo 'the weights read into the page cache before each command')." \
  --metric wall_seconds:"wall s":1 --metric peak_rss_anon_mib:"peak RssAnon MiB":0 --metric peak_rss_mib:"peak RSS MiB":0 \
  --metric read_mib:"read from disk MiB":0 "${commands[@]}"
rm -f "$OUT/logits.safetensors" "$OUT/r.json"
