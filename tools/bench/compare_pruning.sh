#!/usr/bin/env bash
# Every pruning method on a reference model at 25% and 50% expert removal: summed layer reconstruction
# error (on the held-out calibration windows, the last 1/8, which no search saw), dev perplexity (pooled over
# PPL_FILES, default all 11 domains), dev-task accuracy, parameters, time to prune, peak RSS.
# Usage: tools/bench/compare_pruning.sh MODEL_NAME [METHODS]
# METHODS may include moei2-uniform: MoE-I² with --uniform-counts (the non-uniform vs uniform ablation).
# MoE-I²'s genetic search is random: its rows are the mean (min–max) over SEEDS (default "0 1 2"), the others are deterministic.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; methods=${2:-"frequency reap naee moei2 moeits"}
model=../shared/models/$name
PPL_FILES=${PPL_FILES:-"austen fortunes gcide handbook jargon kjv linuxdoc perldoc pydoc web wordnet"}
swift build -c release --product moepress >&2
bin=.build/release/moepress
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
$bin calibrate --model "$model" --calib-dir ../shared/data/calib --samples 128 --seq-len 256 --seed 0 --output "$work/cal" --quiet
ppl_args=""; for f in $PPL_FILES; do ppl_args="$ppl_args --text-file ../shared/data/dev/$f.txt"; done
SEEDS=${SEEDS:-"0 1 2"}   # MoE-I²'s genetic search is seeded: its rows are the mean (min–max) over these seeds
# measure LABEL DIR PRUNE_SECONDS RSS_KIB: one JSON line per model into $work/rows
measure() {
  p=$($bin eval perplexity --model "$2" $ppl_args --json --quiet | python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])")
  t=$($bin eval tasks --model "$2" --tasks ../shared/data/tasks/dev.jsonl --json --quiet | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['acc'], d['acc_norm'])")
  $bin inspect "$2" --json > "$work/inspect.json"
  python3 - "$1" "$2" "$3" "$4" "$p" $t "$work/inspect.json" >> "$work/rows" <<'PY'
import json, os, sys
label, d, secs, kib, ppl, acc, accn, insp = sys.argv[1:9]
i = json.load(open(insp)); plan = os.path.join(d, "plan.json")
p = json.load(open(plan)) if os.path.exists(plan) else None
print(json.dumps({"label": label, "ppl": float(ppl), "acc": float(acc), "acc_norm": float(accn),
                  "params": i["totalParameters"], "active": i["activeParameters"], "secs": secs, "kib": kib,
                  "error": float(p["parameters"]["reconstruction_error_sum"]) if p else 0.0,
                  "counts": " ".join(str(len(l["kept"])) for l in p["layers"]) if p else "all"}))
PY
}
measure "none (original)" "$model" "-" "-"
for ratio in 0.25 0.5; do
  for m in $methods; do
    method=$m; extra="--calib $work/cal"; seeds=0
    [ "$m" = moei2-uniform ] && { method=moei2; extra="$extra --uniform-counts"; }
    [ "$method" = moei2 ] && seeds=$SEEDS
    for seed in $seeds; do
      out="$work/$m-$ratio-$seed"
      seeded=""; [ "$method" = moei2 ] && seeded="--seed $seed"   # the other methods take no seed (and refuse one)
      /usr/bin/time -f "%e %M" -o "$work/time" $bin prune --model "$model" --method "$method" --ratio "$ratio" $seeded --output "$out" $extra --quiet 2>"$work/err" \
        || { echo "{\"label\": \"$m @ $ratio\", \"failed\": \"$(tail -1 "$work/err" | tr -d '"')\"}" >> "$work/rows"; continue; }
      read secs kib < "$work/time"
      measure "$m @ $ratio" "$out" "$secs" "$kib"
      rm -rf "$out"
    done
  done
done
echo "Command: tools/bench/compare_pruning.sh $name \"$methods\" (SEEDS=\"$SEEDS\"); $(date -u +%F), commit $(git rev-parse --short HEAD)"
python3 - "$work/rows" "$PPL_FILES" "$SEEDS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"| method | experts kept per layer | Σ layer reconstruction error (held out) | dev ppl ({sys.argv[2]}) | dev tasks acc / acc_norm | parameters | prune s | peak RSS MiB |")
print("|---|---|---:|---:|---:|---|---:|---:|")
def stat(v, fmt):   # one value, or the mean (min–max) over seeds
    return fmt % v[0] if len(v) == 1 else (fmt % statistics.mean(v)) + " (" + (fmt % min(v)) + "–" + (fmt % max(v)) + ")"
labels = list(dict.fromkeys(r["label"] for r in rows))
for label in labels:
    rs = [r for r in rows if r["label"] == label]
    if "failed" in rs[0]: print(f"| {label} | failed: {rs[0]['failed']} | | | | | | |"); continue
    n = f" ({len(rs)} seeds)" if len(rs) > 1 else ""
    counts = rs[0]["counts"] if len({r["counts"] for r in rs}) == 1 else "; ".join(r["counts"] for r in rs)
    secs = "-" if rs[0]["secs"] == "-" else stat([float(r["secs"]) for r in rs], "%.1f")
    rss = "-" if rs[0]["kib"] == "-" else stat([int(r["kib"]) / 1024 for r in rs], "%.0f")
    print(f"| {label}{n} | {counts} | {stat([r['error'] for r in rs], '%.1f')} | {stat([r['ppl'] for r in rs], '%.2f')} | "
          f"{stat([r['acc'] for r in rs], '%.4f')} / {stat([r['acc_norm'] for r in rs], '%.4f')} | "
          f"{rs[0]['params'] / 1e6:.2f}M ({rs[0]['active'] / 1e6:.2f}M active) | {secs} | {rss} |")
PY
