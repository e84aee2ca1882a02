#!/usr/bin/env bash
# MoEITS NMI speed, one MoE layer, the numpy/scipy re-statement of the authors' routine (tools/moeits_reference.py)
# vs MoEPress, under the benchmark protocol (tools/bench/protocol.py): ROUNDS alternating rounds (numpy, MoEPress,
# numpy, …), each a fresh process; seconds per layer, median (min–max); the ratio row is numpy's median over
# MoEPress's. Then the largest difference of layer 0's NMI row means (from the last round; not a timing).
#   tools/bench/compare_moeits.sh                  the two shared reference models, whole layer 0 on both sides
#   tools/bench/compare_moeits.sh CONFIG [PAIRS]   a real model's shape (random bf16 weights, a 1-layer cut made
#                                                  in $SCRATCH): MoEPress on the whole layer; the authors' routine
#                                                  timed on its first PAIRS expert pairs (default 30) and
#                                                  extrapolated to all of them (a full layer takes it hours)
# Env: ROUNDS (5), SCRATCH (/work/scratch).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
command="ROUNDS=$ROUNDS tools/bench/compare_moeits.sh${*:+ $*}"
swift build -c release --product moepress >&2
export B=$PWD/.build/release/moepress
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# ours MODEL OUT PRUNE_ARGS...: MoEPress's seconds per layer, from its progress line, as one JSON sample
ours() {
  local model=$1 out=$2; shift 2
  "$B" prune --model "$model" --method moeits "$@" --output "$out" --overwrite 2>&1 >/dev/null | grep -E "layers/s|s each" | tail -1 | python3 -c "
import json, re, sys
line = sys.stdin.read(); fast = re.search(r'\(([0-9.]+) layers/s', line)
print(json.dumps({'seconds': 1 / float(fast.group(1)) if fast else float(re.search(r'\(([0-9.]+) s each', line).group(1))}))"
}
export -f ours
table() {   # table MODEL_DIR NOTE REF_ARGS OUR_ARGS
  python3 tools/bench/protocol.py rounds --command "$command" --rounds "$ROUNDS" --ratio --note "$2" \
    --metric seconds:"s/layer":3:ratio --engine "numpy (authors' routine)" "python3 tools/moeits_reference.py $1 0 $3 | tee $tmp/ref.json" \
    --engine MoEPress "ours $1 $tmp/out $4"
}
if [ $# -ge 1 ]; then
  config=$1; pairs=${2:-30}; SCRATCH=${SCRATCH:-/work/scratch}
  cut=$SCRATCH/models/$(basename "$config" .json)-1l
  [ -d "$cut" ] || "$B" synth --config "$config" --layers 1 --output "$cut" --tokenizer-from ../shared/models/qwen-moe-ref --quiet
  shape=$(python3 -c "
import json; c = json.load(open('$config'))
print(c.get('num_experts', c.get('num_local_experts', c.get('n_routed_experts'))), '× 3 ×', c.get('moe_intermediate_size', c.get('intermediate_size')), '·', c['hidden_size'])")
  echo "### $(basename "$config" .json): one layer, $shape"
  echo
  table "$cut" "The authors' routine timed on the first $pairs expert pairs and extrapolated to the layer; MoEPress on the whole layer (--ratio 0.25)." "$pairs" "--ratio 0.25"
  exit 0
fi
for m in mixtral-ref qwen-moe-ref; do
  echo "### $m: layer 0"
  echo
  table ../shared/models/$m "Layer 0, both cores; MoEPress prunes with --keep 6." "" "--keep 6"
  python3 - "$tmp/ref.json" "$tmp/out/plan.json" <<'PY'
import json, sys
ref, plan = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
d = max(abs(a - b) for a, b in zip(plan["layers"][0]["scores"]["nmi_row_mean"], ref["row_mean"]))
print(f"\nmax |Δ NMI row mean| of layer 0 against numpy: {d:.1e}\n")
PY
done
