#!/usr/bin/env bash
# Compressed Experts as the paper runs it (methods.md §4): instruction fine-tuning with the paper's OLMoE recipe
# (lr 2e-5, 3% warm-up, no weight decay, all parameters), K = top-k/2 main experts, against (a) the plain top-k/2
# model with the same training and (b) the full top-k model with the same training; all scored on the held-out
# WordNet instructions (`moepress eval instructions`: response log-likelihood, exact match of greedy answers)
# and on dev perplexity over all 11 domains.
#   tools/bench/compare_ce.sh MODEL [STEPS] [EVAL_ITEMS]      (MODEL: a folder name under ../shared/models)
# Env: SCRATCH (/work/scratch), THREADS (2), SEEDS ("0 1 2": every trained row is the mean (min–max) over them).
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
SEEDS=${SEEDS:-"0 1 2"}   # training is seeded (batch order, initialisation): every trained row is the mean (min–max) over these
run() { local tag=$1; shift; local t0=$(date +%s.%N); "$@"; python3 -c "print($(date +%s.%N) - $t0)" > "$W/$tag.seconds"; }
for seed in $SEEDS; do
  train=(--data data/instructions/wordnet-train.jsonl --steps "$steps" --batch 8 --seq-len 64 --seed "$seed" --quiet "${T[@]}")
  [ -d "$W/ce-$seed" ] || run ce-$seed "$B" compress-experts --model "$M" --main-experts "$K" "${train[@]}" --output "$W/ce-$seed"
  [ -d "$W/topk-half-$seed" ] || run topk-half-$seed "$B" compress-experts --model "$M" --main-experts "$K" --no-ce "${train[@]}" --output "$W/topk-half-$seed"
  [ -d "$W/topk-full-$seed" ] || run topk-full-$seed "$B" compress-experts --model "$M" --main-experts "$k" --no-ce "${train[@]}" --output "$W/topk-full-$seed"
done
dev=(); for f in ../shared/data/dev/*.txt; do dev+=(--text-file "$f"); done
tags=original; for seed in $SEEDS; do tags="$tags topk-full-$seed topk-half-$seed ce-$seed"; done
for tag in $tags; do
  p=$W/$tag; [ $tag = original ] && p=$M
  [ -f "$W/$tag.instructions.json" ] || "$B" eval instructions --model "$p" --data data/instructions/wordnet-heldout.jsonl --limit "$items" --json --quiet "${T[@]}" > "$W/$tag.instructions.json"
  [ -f "$W/$tag.ppl.json" ] || "$B" eval perplexity --model "$p" "${dev[@]}" --json --quiet "${T[@]}" > "$W/$tag.ppl.json"
done
echo "Command: tools/bench/compare_ce.sh $name $steps $items (SEEDS=\"$SEEDS\"); $(date -u +%F), commit $(git rev-parse --short HEAD)"
python3 - "$W" "$name" "$k" "$K" "$steps" "$items" "$SEEDS" <<'PY'
import json, os, statistics, sys
w, name, k, K, steps, items, seeds = sys.argv[1:]
seeds = seeds.split()
rows = [("original", f"top-{k}, not fine-tuned"), ("topk-full", f"top-{k} + fine-tuning"), ("topk-half", f"top-{K} + fine-tuning"),
        ("ce", f"top-{K} + compressed experts + fine-tuning")]
print(f"{name}: {steps} steps × 8 × ≤64 tokens of data/instructions/wordnet-train.jsonl, lr 2e-5, warm-up 3%, no weight decay, all parameters; "
      f"held-out: first {items} items of wordnet-heldout.jsonl; trained rows: mean (min–max) over seeds {' '.join(seeds)}")
print()
print("| model | held-out log-likelihood / item | response NLL / token | exact match | dev ppl (11 domains) | share of full top-k's gain | training s |")
print("|---|---:|---:|---:|---:|---:|---:|")
def load(tag):
    ins = json.load(open(os.path.join(w, tag + ".instructions.json")))
    ppl = json.load(open(os.path.join(w, tag + ".ppl.json")))
    sec = os.path.join(w, tag + ".seconds")
    return {"ll": ins["meanLogLikelihood"], "nll": ins["responseNLLPerToken"], "em": ins["exactMatch"], "ppl": ppl["perplexity"],
            "s": float(open(sec).read()) if os.path.exists(sec) else None}
def stat(v, fmt):
    return fmt % v[0] if len(v) == 1 else (fmt % statistics.mean(v)) + " (" + (fmt % min(v)) + "–" + (fmt % max(v)) + ")"
base = load("original")
runs = {tag: ([base] if tag == "original" else [load(f"{tag}-{s}") for s in seeds]) for tag, _ in rows}
# Share of full top-k fine-tuning's log-likelihood gain over the untuned model, per seed (same seed's full top-k).
share = {tag: [(r["ll"] - base["ll"]) / (f["ll"] - base["ll"]) for r, f in zip(runs[tag], runs["topk-full"])] for tag in ("topk-half", "ce")}
for tag, label in rows:
    rs = runs[tag]
    sh = stat([100 * x for x in share[tag]], "%.1f%%") if tag in share else "-"
    secs = "-" if rs[0]["s"] is None else stat([r["s"] for r in rs], "%.0f")
    print(f"| {label} | {stat([r['ll'] for r in rs], '%.3f')} | {stat([r['nll'] for r in rs], '%.4f')} | {stat([r['em'] for r in rs], '%.4f')} | "
          f"{stat([r['ppl'] for r in rs], '%.3f')} | {sh} | {secs} |")
gap = [(f["ll"] - h["ll"]) for f, h in zip(runs["topk-full"], runs["topk-half"])]
closed = [100 * (c["ll"] - h["ll"]) / g for c, h, g in zip(runs["ce"], runs["topk-half"], gap) if g > 0]
wins = sum(1 for c, h in zip(runs["ce"], runs["topk-half"]) if c["ll"] > h["ll"])
print()
print(f"CE above top-{K} (same seed, same training) in {wins} of {len(seeds)} seeds" +
      (f"; it closes {stat(closed, '%.0f%%')} of the log-likelihood gap between top-{K} and top-{k}" if closed else ""))
PY
