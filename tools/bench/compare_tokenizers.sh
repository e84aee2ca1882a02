#!/usr/bin/env bash
# Encode throughput of moepress vs HF tokenizers (Rust) on ../shared/data/dev, one thread, one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product moepress >&2
DEV=${DEV:-../shared/data/dev}
echo "| tokenizer | mode | moepress MB/s | HF tokenizers MB/s | ratio | tokens (equal) |"
echo "|---|---|---:|---:|---:|---|"
for mode in "" --lines; do
for t in ../shared/models/mixtral-ref ../shared/models/qwen-moe-ref ../shared/tokenizers/mixtral-8x7b ../shared/tokenizers/tekken-240911; do
  a=$(.build/release/moepress bench-tokenizer --tokenizer "$t/tokenizer.json" --text-dir "$DEV" --json $mode)
  b=$(python3 tools/bench/bench_tokenizer.py --tokenizer "$t/tokenizer.json" --text-dir "$DEV" $mode)
  python3 - "$a" "$b" "$(basename "$t")" <<'PY'
import json, sys
a, b, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"| {n} | {a['mode']} | {a['mb_per_second']:.2f} | {b['mb_per_second']:.2f} | **{a['mb_per_second']/b['mb_per_second']:.2f}×** | {a['tokens']} {'=' if a['tokens']==b['tokens'] else '≠'} {b['tokens']} |")
PY
done
done
