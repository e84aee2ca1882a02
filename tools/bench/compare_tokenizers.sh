#!/usr/bin/env bash
# Encode throughput of moepress vs HF tokenizers (Rust) on ../shared/data/dev, one thread, under the benchmark
# protocol (tools/bench/protocol.py): for each tokenizer and mode (files whole, then each line on its own), ROUNDS
# alternating rounds (moepress, HF, moepress, …), each engine a fresh process that loads the tokenizer, encodes
# everything once as a warm-up and times one pass; median (min–max). The token counts must be equal.
# Usage: tools/bench/compare_tokenizers.sh     Env: ROUNDS (5), DEV (../shared/data/dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}; DEV=${DEV:-../shared/data/dev}
command="ROUNDS=$ROUNDS tools/bench/compare_tokenizers.sh${*:+ $*}"
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
for mode in "" --lines; do
for t in ../shared/models/mixtral-ref ../shared/models/qwen-moe-ref ../shared/tokenizers/mixtral-8x7b ../shared/tokenizers/tekken-240911; do
  echo "### $(basename "$t"), ${mode:+each line on its own}${mode:-each file whole}"
  echo
  THREADS=1 python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --threads 1 --ratio \
    --note "Encode of the .txt files of $DEV ($(basename "$t")/tokenizer.json, ${mode:+each line on its own}${mode:-each file whole}), one thread." \
    --metric mb_per_second:"MB/s":2:ratio --metric tokens:"tokens":0 \
    --engine MoEPress "$B bench-tokenizer --tokenizer $t/tokenizer.json --text-dir $DEV --rounds 1 --json $mode" \
    --engine "HF tokenizers" "python3 tools/bench/bench_tokenizer.py --tokenizer $t/tokenizer.json --text-dir $DEV --rounds 1 $mode"
  echo
done
done
