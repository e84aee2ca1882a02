#!/usr/bin/env bash
# Decode speed, MoEPress against llama.cpp (bf16 GGUF of the same weights), in alternating rounds so host
# noise hits both alike: each round reads one engine's weights into the page cache, times its decode, then the
# other's. Prints each round and the median ratio.
#   tools/bench/decode_pairs.sh MODEL_DIR GGUF [ROUNDS]     (THREADS=2, DECODE=64)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1; gguf=$2; rounds=${3:-3}; THREADS=${THREADS:-2}; DECODE=${DECODE:-64}
swift build -c release --product moepress >&2
ratios=()
for r in $(seq "$rounds"); do
  cat "$model"/*.safetensors > /dev/null
  ours=$(.build/release/moepress bench --model "$model" --threads "$THREADS" --tokens 16 --decode "$DECODE" --repeats 2 --json 2>/dev/null |
    python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tokens_per_second'])")
  cat "$gguf" > /dev/null
  theirs=$(tools/bench/llamacpp.sh bench "$gguf" -t "$THREADS" -p 0 -n "$DECODE" -r 2 -o json 2>/dev/null |
    python3 -c "import json,sys; print(json.load(sys.stdin)[0]['avg_ts'])")
  ratio=$(python3 -c "print($ours / $theirs)")
  ratios+=("$ratio")
  printf 'round %d: MoEPress %.2f tok/s, llama.cpp %.2f tok/s, ratio %.2f\n' "$r" "$ours" "$theirs" "$ratio"
done
python3 -c "import statistics, sys; print('median ratio %.2f' % statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
