#!/usr/bin/env bash
# Measures moepress (release build) and HF transformers on PyTorch CPU with the same threads and
# prompts, for each model given (default: both shared reference models), and prints a Markdown table
# with the ratios. Needs scripts/setup.sh --oracle. Usage: tools/bench/compare.sh [MODEL_DIR ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-2}; TOKENS=${TOKENS:-128}; DECODE=${DECODE:-64}; REPEATS=${REPEATS:-5}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(../shared/models/mixtral-ref ../shared/models/qwen-moe-ref)
swift build -c release --product moepress >&2
out=$(mktemp -d)
echo "| model | engine | prefill tok/s | TTFT ms | decode tok/s | peak RSS MiB |"
echo "|---|---|---:|---:|---:|---:|"
for m in "${models[@]}"; do
  name=$(basename "$m")
  .build/release/moepress bench --model "$m" --threads "$THREADS" --tokens "$TOKENS" --decode "$DECODE" --repeats "$REPEATS" --json 2>/dev/null > "$out/$name.moepress.json"
  python3 tools/bench/bench_hf.py --model "$m" --threads "$THREADS" --tokens "$TOKENS" --decode "$DECODE" --repeats "$REPEATS" 2>/dev/null > "$out/$name.hf.json"
  python3 - "$out/$name.moepress.json" "$out/$name.hf.json" "$name" <<'PY'
import json, sys
a, b, name = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
for r in (a, b):
    print(f"| {name} | {r['engine']} | {r['prefill_tokens_per_second']:.0f} | {r['time_to_first_token_ms']:.1f} | {r['decode_tokens_per_second']:.0f} | {r['peak_rss_mib']:.0f} |")
print(f"| {name} | **ratio moepress / PyTorch** | **{a['prefill_tokens_per_second']/b['prefill_tokens_per_second']:.2f}×** | "
      f"{b['time_to_first_token_ms']/a['time_to_first_token_ms']:.2f}× faster | **{a['decode_tokens_per_second']/b['decode_tokens_per_second']:.2f}×** | "
      f"{a['peak_rss_mib']/b['peak_rss_mib']:.2f}× |")
PY
done
rm -rf "$out"
