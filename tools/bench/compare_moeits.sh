#!/usr/bin/env bash
# MoEITS NMI speed, one MoE layer, MoEPress vs the numpy/scipy re-statement of the authors' routine
# (tools/moeits_reference.py), in one run; also the largest difference of layer 0's NMI row means.
#   tools/bench/compare_moeits.sh                  the two shared reference models, whole layer 0 on both sides
#   tools/bench/compare_moeits.sh CONFIG [PAIRS]   a real model's shape (random bf16 weights, a 1-layer cut made
#                                                  in $SCRATCH): MoEPress on the whole layer; the authors' routine
#                                                  timed on its first PAIRS expert pairs (default 30) and
#                                                  extrapolated to all of them (a full layer takes it hours)
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product moepress >&2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ $# -ge 1 ]; then
  config=$1; pairs=${2:-30}; SCRATCH=${SCRATCH:-/work/scratch}
  cut=$SCRATCH/models/$(basename "$config" .json)-1l
  [ -d "$cut" ] || .build/release/moepress synth --config "$config" --layers 1 --output "$cut" --tokenizer-from ../shared/models/qwen-moe-ref --quiet
  ref=$(python3 tools/moeits_reference.py "$cut" 0 "$pairs")
  line=$(.build/release/moepress prune --model "$cut" --method moeits --ratio 0.25 --output "$tmp/out" 2>&1 | grep -E "layers/s|s each" | tail -1)
  python3 - "$config" "$ref" "$line" <<'PY'
import json, re, sys
cfg, ref, line = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), sys.argv[3]
fast = re.search(r"\(([0-9.]+) layers/s", line)
ours = 1 / float(fast.group(1)) if fast else float(re.search(r"\(([0-9.]+) s each", line).group(1))
e = cfg.get("num_experts", cfg.get("num_local_experts", cfg.get("n_routed_experts")))
inter = cfg.get("moe_intermediate_size", cfg.get("intermediate_size"))
print("| shape | experts × matrix size | numpy s/layer (pairs timed) | moepress s/layer | ratio |")
print("|---|---|---:|---:|---:|")
print(f"| {sys.argv[1].split('/')[-1]} | {e} × 3 × {inter}·{cfg['hidden_size']} | {ref['seconds']:.0f} ({ref['pairs_timed']} of {ref['pairs']}) | {ours:.2f} | **{ref['seconds'] / ours:.0f}×** |")
PY
  exit 0
fi
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
