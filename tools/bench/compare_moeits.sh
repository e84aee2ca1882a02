#!/usr/bin/env bash
# MoEITS NMI speed, one MoE layer, MoEPress vs the numpy/scipy re-statement of the authors' routine
# (tools/moeits_reference.py), in one run; also the largest difference of layer 0's NMI row means.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product moepress >&2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "| model | experts × matrix size | numpy s/layer | moepress s/layer | ratio | max |Δ NMI row mean| |"
echo "|---|---|---:|---:|---:|---:|"
for m in mixtral-ref qwen-moe-ref; do
  python3 tools/moeits_reference.py ../shared/models/$m 0 > "$tmp/ref.json"
  line=$(.build/release/moepress prune --model ../shared/models/$m --method moeits --keep 6 --output "$tmp/out-$m" 2>&1 | grep -E "layers/s|s each" | tail -1)
  python3 - "$m" "$tmp/ref.json" "$tmp/out-$m/plan.json" "$line" <<'PY'
import json, re, sys
m, ref, plan, line = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), sys.argv[4]
fast = re.search(r"\(([0-9.]+) layers/s", line)
ours = 1 / float(fast.group(1)) if fast else float(re.search(r"\(([0-9.]+) s each", line).group(1))
d = max(abs(a - b) for a, b in zip(plan["layers"][0]["scores"]["nmi_row_mean"], ref["row_mean"]))
size = {"mixtral-ref": "8 × 3 × 512·256", "qwen-moe-ref": "32 × 3 × 128·256"}[m]
print(f"| {m} | {size} | {ref['seconds']:.3f} | {ours:.3f} | **{ref['seconds'] / ours:.0f}×** | {d:.1e} |")
PY
done
