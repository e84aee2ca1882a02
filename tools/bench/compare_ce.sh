#!/usr/bin/env bash
# Compressed Experts as the paper runs it (methods.md §4): instruction fine-tuning with the paper's OLMoE recipe
# (lr 2e-5, 3% warm-up, no weight decay, all parameters), K = top-k/2 main experts, against (a) the plain top-k/2
# model with the same training and (b) the full top-k model with the same training; all scored on the held-out
# WordNet instructions (`moepress eval instructions`: response log-likelihood, exact match of greedy answers)
# and on dev perplexity over all 11 domains.
#   tools/bench/compare_ce.sh MODEL [STEPS] [EVAL_ITEMS]      (MODEL: a folder name under ../shared/models)
# Env: SCRATCH (/work/scratch), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; steps=${2:-1000}; items=${3:-800}
M=../shared/models/$name
W=${SCRATCH:-/work/scratch}/ce-$name; mkdir -p "$W"
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
T=(--threads "${THREADS:-2}")
k=$(python3 -c "import json; c=json.load(open('$M/config.json')); print(c.get('num_experts_per_tok', 2))")
K=$((k / 2))
train=(--data data/instructions/wordnet-train.jsonl --steps "$steps" --batch 8 --seq-len 64 --seed 0 --quiet "${T[@]}")
run() { local tag=$1; shift; local t0=$(date +%s.%N); "$@"; python3 -c "print($(date +%s.%N) - $t0)" > "$W/$tag.seconds"; }
[ -d "$W/ce" ] || run ce "$B" compress-experts --model "$M" --main-experts "$K" "${train[@]}" --output "$W/ce"
[ -d "$W/topk-half" ] || run topk-half "$B" compress-experts --model "$M" --main-experts "$K" --no-ce "${train[@]}" --output "$W/topk-half"
[ -d "$W/topk-full" ] || run topk-full "$B" compress-experts --model "$M" --main-experts "$k" --no-ce "${train[@]}" --output "$W/topk-full"
dev=(); for f in ../shared/data/dev/*.txt; do dev+=(--text-file "$f"); done
for tag in original topk-full topk-half ce; do
  p=$W/$tag; [ $tag = original ] && p=$M
  [ -f "$W/$tag.instructions.json" ] || "$B" eval instructions --model "$p" --data data/instructions/wordnet-heldout.jsonl --limit "$items" --json --quiet "${T[@]}" > "$W/$tag.instructions.json"
  [ -f "$W/$tag.ppl.json" ] || "$B" eval perplexity --model "$p" "${dev[@]}" --json --quiet "${T[@]}" > "$W/$tag.ppl.json"
done
python3 - "$W" "$name" "$k" "$K" "$steps" "$items" <<'PY'
import json, os, sys
w, name, k, K, steps, items = sys.argv[1:]
rows = [("original", f"top-{k}, not fine-tuned"), ("topk-full", f"top-{k} + fine-tuning"), ("topk-half", f"top-{K} + fine-tuning"),
        ("ce", f"top-{K} + compressed experts + fine-tuning")]
print(f"{name}: {steps} steps × 8 × ≤64 tokens of data/instructions/wordnet-train.jsonl, lr 2e-5, warm-up 3%, no weight decay, all parameters; "
      f"held-out: first {items} items of wordnet-heldout.jsonl")
print()
print("| model | held-out log-likelihood / item | response NLL / token | exact match | dev ppl (11 domains) | training s |")
print("|---|---:|---:|---:|---:|---:|")
r = {}
for tag, label in rows:
    ins = json.load(open(os.path.join(w, tag + ".instructions.json")))
    ppl = json.load(open(os.path.join(w, tag + ".ppl.json")))
    sec = os.path.join(w, tag + ".seconds")
    s = f"{float(open(sec).read()):.0f}" if os.path.exists(sec) else "-"
    r[tag] = ins
    pp = ppl.get("perplexity", ppl.get("overall", {}).get("perplexity") if isinstance(ppl.get("overall"), dict) else None)
    print(f"| {label} | {ins['meanLogLikelihood']:.3f} | {ins['responseNLLPerToken']:.4f} | {ins['exactMatch']:.4f} | {pp:.3f} | {s} |")
half, full, ce = (r[t]["meanLogLikelihood"] for t in ("topk-half", "topk-full", "ce"))
gap = full - half
print()
print(f"CE closes {100 * (ce - half) / gap:.0f}% of the log-likelihood gap between top-{K} and top-{k} (both fine-tuned)" if gap > 0 else "top-k/2 is not below top-k here")
if r["topk-full"]["exactMatch"] > 0:
    print(f"CE exact match = {100 * r['ce']['exactMatch'] / r['topk-full']['exactMatch']:.0f}% of full top-{k}'s")
PY
