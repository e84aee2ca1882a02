#!/usr/bin/env bash
# Every compression stage on a random-weight checkpoint with a real model's shapes (memory, time and I/O only:
# the weights are random, so quality numbers mean nothing). Each command runs alone with --report; under the
# benchmark protocol (tools/bench/protocol.py) the steps run ROUNDS times over, in order (round 1: every step, round
# 2: every step, …), and the table gives each stage's wall time, peak RssAnon and bytes read/written (from the
# report's stages) as the median (min–max) over the rounds, headed by the command and the machine line.
#   tools/bench/outofcore.sh CONFIG.json [STEP ...]
# Steps (default: all, in this order):
#   calibrate  32 × 512 tokens of ../shared/data/calib
#   frequency reap moei2   prune 25% with that cache (frequency/reap outputs deleted after measuring; moei2 with
#              population 100, 50 generations, 8192 fitness tokens, K = T = 3, FIELD field sequences)
#   moeits     data-free NMI pruning, 25% (τ = 1.25 is refused on random weights: it would keep fewer than top-k)
#   decompose  calibrate the moei2 output (f16 activations), SVD-LLM keeping 60% with importance ranks
#   recipe     `moepress run`, calibrating on 8 × 512 tokens: prune (RECIPE_PRUNE 25%) → decompose (SVD-LLM 60% with importance
#              ranks, RECIPE_TARGETS) → heal (LoRA on attention, 4 steps of 1 × 512 tokens) → evaluate (perplexity on ~3,000
#              tokens); keep_intermediate: false (the pruned weights are deleted once decomposed, so the copies fit the disk)
#   ce         compressed-experts training (ce-only, 4 steps of 1 × 512 tokens)
#   hf         a 2-layer cut of the same shapes pruned uniformly: stock HF transformers loads its shards with
#              the logits of `moepress logits` (needs scripts/setup.sh --oracle; after the rounds, not timed)
# Env: SCRATCH (/work/scratch), THREADS (2), ROUNDS (5; one round of every step on the OLMoE shape takes hours), MAX_MEMORY (unset: the default 3/4 of MemAvailable), FIELD (4: MoE-I²'s
# reception-field sequences of 512 tokens; the default 16 costs 4× the field's time, 27 combinations per block),
# RECIPE_TARGETS ("gate, up, down": the projections the recipe's decompose stage factorises; "down" does a third of
# the SVDs, ~1 s each at Qwen1.5-MoE's 1408 × 2048 on one core), RECIPE_PRUNE (frequency; moei2 adds MoE-I²'s search).
# Needs free disk for the model, its pruned copy and one cache (Qwen1.5-MoE shape: ~70 GB at the peak).
set -euo pipefail
cd "$(dirname "$0")/../.."
command="ROUNDS=${ROUNDS:-5} THREADS=${THREADS:-2}${MAX_MEMORY:+ MAX_MEMORY=$MAX_MEMORY}${FIELD:+ FIELD=$FIELD}${RECIPE_TARGETS:+ RECIPE_TARGETS=\"$RECIPE_TARGETS\"}${RECIPE_PRUNE:+ RECIPE_PRUNE=$RECIPE_PRUNE} tools/bench/outofcore.sh${*:+ $*}"
config=$1; shift
steps=${*:-calibrate frequency reap moei2 moeits decompose recipe ce hf}
SCRATCH=${SCRATCH:-/work/scratch}; THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-5}; FIELD=${FIELD:-4}; RECIPE_TARGETS=${RECIPE_TARGETS:-gate, up, down}; RECIPE_PRUNE=${RECIPE_PRUNE:-frequency}
name=$(basename "$config" .json)
model=$SCRATCH/models/$name; W=$SCRATCH/outofcore/$name; OUT=${OUT:-$SCRATCH/bench/outofcore-$name}
mkdir -p "$W" "$OUT" "$SCRATCH/models"
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
mem=(); [ -n "${MAX_MEMORY:-}" ] && mem=(--max-memory "$MAX_MEMORY")
[ -d "$model" ] || $B synth --config "$config" --output "$model" --tokenizer-from ../shared/models/qwen-moe-ref --quiet
has() { [[ " $steps " == *" $1 "* ]]; }
# run STAGE moepress-args...: progress to rROUND/STAGE.log, report to rROUND/STAGE.json
run() { local s=$1; shift; echo "== round $round, $s: moepress $*" >&2; $B "$@" --threads "$THREADS" --report "$OUT/r$round/$s.json" 2> "$OUT/r$round/$s.log"; }
calib=$W/calib
rm -rf "$OUT"/r[0-9]*
for round in $(seq "$ROUNDS"); do
mkdir -p "$OUT/r$round"

if has calibrate; then
  run calibrate calibrate --model "$model" --calib-dir ../shared/data/calib --samples 32 --seq-len 512 --output "$calib" --overwrite "${mem[@]}"
fi
for m in frequency reap moei2; do
  has $m || continue
  extra=(); [ $m = moei2 ] && extra=(--field-sequences "$FIELD")
  run $m prune --model "$model" --method $m --calib "$calib" --ratio 0.25 --output "$W/p-$m" --overwrite "${mem[@]}" "${extra[@]}"
  [ $m = moei2 ] || rm -rf "$W/p-$m"
done
if has moeits; then
  # τ = 1.25 on random weights leaves fewer than top-k experts (refused); the same NMI work with a fixed count:
  run moeits prune --model "$model" --method moeits --ratio 0.25 --output "$W/p-moeits" --overwrite "${mem[@]}"
  rm -rf "$W/p-moeits"
fi
if has decompose; then
  rm -rf "$calib"
  run calibrate-pruned calibrate --model "$W/p-moei2" --calib-dir ../shared/data/calib --samples 32 --seq-len 512 --cache-dtype f16 \
    --output "$W/calib-pruned" --overwrite "${mem[@]}"
  run decompose decompose --model "$W/p-moei2" --method svdllm --ratio 0.6 --rank-alloc importance --calib "$W/calib-pruned" \
    --output "$W/decomposed" --overwrite "${mem[@]}"
  rm -rf "$W/decomposed"
fi
if has recipe; then
  rm -rf "$W/p-moei2" "$calib" "$W/calib-pruned"
  head -c 12000 ../shared/data/dev/austen.txt > "$W/ppl.txt"
  cat > "$W/recipe.yaml" <<EOF
model: $model
seed: 0
calibration:
  data: $PWD/../shared/data/calib
  samples: 8
  seq_len: 512
stages:
  - prune: {method: $RECIPE_PRUNE, ratio: 0.25, field_sequences: $FIELD}
  - decompose: {method: svdllm, ratio: 0.6, rank_alloc: importance, targets: [$RECIPE_TARGETS]}
  - heal: {steps: 4, batch: 1, seq_len: 512, lora_rank: 16, lora_alpha: 32, targets: [q, k, v, o]}
evaluation:
  perplexity: [$W/ppl.txt]
export: none
keep_intermediate: false
EOF
  run recipe run "$W/recipe.yaml" --output "$W/run" "${mem[@]}"
  rm -rf "$W/run"
fi
if has ce; then
  k=$(python3 -c "import json; c=json.load(open('$model/config.json')); print(c.get('num_experts_per_tok', 2) // 2)")
  run ce compress-experts --model "$model" --main-experts "$k" --train ce-only --data ../shared/data/calib --steps 4 --batch 1 --seq-len 512 \
    --output "$W/ce" --overwrite
  rm -rf "$W/ce"
fi
done

if has hf; then
  cut=$SCRATCH/models/$name-2l
  [ -d "$cut" ] || $B synth --config "$config" --layers 2 --output "$cut" --tokenizer-from ../shared/models/qwen-moe-ref --quiet
  $B calibrate --model "$cut" --calib-dir ../shared/data/calib --samples 4 --seq-len 128 --output "$W/cut-calib" --overwrite --quiet
  $B prune --model "$cut" --method frequency --calib "$W/cut-calib" --ratio 0.25 --output "$W/cut-pruned" --overwrite --quiet --shard-size 500MB
  python3 -c "import json, random; random.seed(0); json.dump([random.randrange(4096) for _ in range(16)], open('$W/ids.json', 'w'))"
  python3 tools/oracle/check_hf_parity.py "$W/cut-pruned" "$W/ids.json" "$B" | tee "$OUT/hf.json"
  rm -rf "$W/cut-calib" "$W/cut-pruned"
fi

python3 - "$OUT" "$ROUNDS" "$THREADS" "$command" "$name" <<'PY'
import json, os, sys
sys.path.insert(0, "tools/bench")
from protocol import fmt, header, machine_line, summary
out, rounds, threads, command, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
print("\n".join(header(command, machine_line(threads), rounds, f" of every step in order, each command alone; {name}, {threads} threads.")))
print("\n| command | stage | wall s | peak RssAnon MiB | read MiB | written MiB |")
print("|---|---|---:|---:|---:|---:|")
keys = [("wall_seconds", 1), ("peak_rss_anon_mib", 0), ("read_mib", 0), ("written_mib", 0)]
def cells(rs, bold=""):
    return " | ".join(bold + fmt(summary([x[k] for x in rs]), d) + bold for k, d in keys)
for s in ["calibrate", "frequency", "reap", "moei2", "moeits", "calibrate-pruned", "decompose", "recipe", "ce"]:
    paths = [os.path.join(out, f"r{r}", s + ".json") for r in range(1, rounds + 1)]
    reports = [json.load(open(p)) for p in paths if os.path.exists(p)]
    if not reports:
        continue
    for i, st in enumerate(reports[0]["stages"]):
        print(f"| {s} | {st['name']} | {cells([r['stages'][i] for r in reports])} |")
    print(f"| **{s}** | all | {cells(reports, '**')} |")
PY
