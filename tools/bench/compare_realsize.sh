#!/usr/bin/env bash
# Real-size runtime, side by side: MoEPress, llama.cpp (bf16 GGUF) and HF transformers (bf16, PyTorch CPU) on a
# random-weight checkpoint with a real model's shapes, same prompt length, decode length and threads, plus
# MoEPress's memory (RssAnon) on the long commands. Each engine's weights are read once into the page cache
# before it is timed (the machine cannot cache two 14 GB models at once).
#   tools/bench/compare_realsize.sh CONFIG.json [--layers N] [--skip-hf] [--skip-llamacpp] [--skip-bench] [--cold]
# --cold empties the page cache (root) before each long MoEPress command, so they read the model from disk: for
# models larger than RAM, with --skip-bench --skip-hf --skip-llamacpp (decode would only measure the disk).
# Writes its JSON under $OUT (default /work/scratch/bench/<model>) and prints Markdown tables.
# Needs: scripts/setup.sh --oracle (HF), tools/bench/llamacpp.sh build (llama.cpp), ~2× the model on disk.
# Env: SCRATCH (/work/scratch), THREADS (2), TOKENS (128), DECODE (64), REPEATS (3).
set -euo pipefail
cd "$(dirname "$0")/../.."
config=$1; shift
layers=(); hf=1; llama=1; bench=1; cold=0
while [ $# -gt 0 ]; do
  case $1 in
    --layers) layers=(--layers "$2"); shift 2 ;;
    --skip-hf) hf=0; shift ;;
    --skip-llamacpp) llama=0; shift ;;
    --skip-bench) bench=0; shift ;;
    --cold) cold=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
SCRATCH=${SCRATCH:-/work/scratch}; THREADS=${THREADS:-2}; TOKENS=${TOKENS:-128}; DECODE=${DECODE:-64}; REPEATS=${REPEATS:-3}
name=$(basename "$config" .json)${layers[1]:+-${layers[1]}l}
model=$SCRATCH/models/$name; gguf=$SCRATCH/gguf/$name-bf16.gguf; OUT=${OUT:-$SCRATCH/bench/$name}
mkdir -p "$OUT" "$SCRATCH/models" "$SCRATCH/gguf"
swift build -c release --product moepress >&2
B=.build/release/moepress
[ -d "$model" ] || $B synth --config "$config" "${layers[@]}" --output "$model" --tokenizer-from ../shared/models/qwen-moe-ref
warm() { cat "$@" > /dev/null; }   # read the weights into the page cache
prepare() { if [ $cold = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; else warm "$model"/*.safetensors; fi; }

# 16 windows of 512 tokens of dev text (the qwen-moe-ref tokenizer the synthetic model carries)
text=$OUT/ppl16.txt
if [ ! -f "$text" ]; then
  cat ../shared/data/dev/*.txt | python3 -c "
import sys, subprocess
t = sys.stdin.read(); lo, hi = 1000, 200000
def count(n):
    open('$text', 'w').write(t[:n])
    return len(subprocess.run(['$B', 'tokenize', '--model', '$model', '--text-file', '$text'], capture_output=True, text=True).stdout.split())
while lo < hi:                       # shortest prefix with 8192 tokens
    mid = (lo + hi) // 2
    lo, hi = (mid + 1, hi) if count(mid) < 8192 else (lo, mid)
open('$text', 'w').write(t[:lo])"
fi
python3 -c "import json, random; random.seed(0); json.dump([random.randrange(4096) for _ in range(512)], open('$OUT/ids512.json', 'w'))"


if [ $bench = 1 ]; then
  warm "$model"/*.safetensors
  $B bench --model "$model" --threads "$THREADS" --tokens "$TOKENS" --decode "$DECODE" --repeats "$REPEATS" --bandwidth --json > "$OUT/moepress.json"
fi
prepare
$B eval perplexity --model "$model" --text-file "$text" --seq-len 512 --threads "$THREADS" --quiet --report "$OUT/ppl.report.json" > "$OUT/ppl.txt"
prepare
$B logits --model "$model" --ids-file "$OUT/ids512.json" --output "$OUT/logits.safetensors" --overwrite --threads "$THREADS" --report "$OUT/logits.report.json" 2>/dev/null
rm -f "$OUT/logits.safetensors"
if [ $bench = 1 ]; then
  prepare
  $B generate --model "$model" --prompt "The history of the" --max-tokens 32 --threads "$THREADS" --report "$OUT/generate.report.json" > /dev/null 2>&1
fi

if [ $llama = 1 ]; then
  [ -f "$gguf" ] || tools/bench/llamacpp.sh convert "$model" "$gguf" bf16 >&2
  warm "$gguf"
  tools/bench/llamacpp.sh bench "$gguf" -t "$THREADS" -p "$TOKENS" -n "$DECODE" -r "$REPEATS" -o json > "$OUT/llamacpp.json"
fi
if [ $hf = 1 ]; then
  warm "$model"/*.safetensors
  python3 tools/bench/bench_hf.py --model "$model" --threads "$THREADS" --tokens "$TOKENS" --decode "$DECODE" --repeats 1 --dtype bfloat16 > "$OUT/hf.json"
fi

python3 - "$OUT" "$name" "$bench" <<'PY'
import json, os, sys
out, name, bench = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if not bench:
    print(f"### {name}: MoEPress commands\n")
    print("| MoEPress command | wall s | peak RssAnon MiB | peak RSS MiB | read from disk MiB | disk MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for cmd, f in [("eval perplexity (16 × 512)", "ppl"), ("logits (512 tokens)", "logits")]:
        r = json.load(open(f"{out}/{f}.report.json"))
        print(f"| {cmd} | {r['wall_seconds']:.1f} | {r['peak_rss_anon_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['read_mib']:.0f} | {r['read_mib'] * 1.048576 / r['wall_seconds']:.0f} |")
    sys.exit(0)
m = json.load(open(f"{out}/moepress.json"))
rows = [("MoEPress", m["prefill_tokens_per_second"], m["decode_tokens_per_second"], m["peak_rss_anon_mib"], m["peak_rss_mib"])]
if os.path.exists(f"{out}/llamacpp.json"):
    l = json.load(open(f"{out}/llamacpp.json"))
    pp = next(r["avg_ts"] for r in l if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in l if r["n_gen"] > 0 and r["n_prompt"] == 0)
    rows.append((f"llama.cpp {l[0]['build_commit']} bf16", pp, tg, None, None))
if os.path.exists(f"{out}/hf.json"):
    h = json.load(open(f"{out}/hf.json"))
    rows.append((h["engine"], h["prefill_tokens_per_second"], h["decode_tokens_per_second"], None, h["peak_rss_mib"]))
print(f"### {name}: {m['threads']} threads, {m['prompt_tokens']} prompt tokens, {m['decode_tokens']} decode tokens\n")
print("| engine | prefill tok/s | decode tok/s | peak RssAnon MiB | peak RSS MiB |")
print("|---|---:|---:|---:|---:|")
for e, p, d, a, r in rows:
    print(f"| {e} | {p:.1f} | {d:.2f} | {'' if a is None else f'{a:.0f}'} | {'' if r is None else f'{r:.0f}'} |")
for e, p, d, _, _ in rows[1:]:
    print(f"| **MoEPress / {e.split(' ')[0]}** | **{m['prefill_tokens_per_second'] / p:.2f}×** | **{m['decode_tokens_per_second'] / d:.2f}×** | | |")
bw = m.get("memory_read_gb_per_second")
if bw:
    print(f"\nMemory read bandwidth {bw:.1f} GB/s ({m['threads']} threads); MoEPress reads {m['active_weight_gb']:.2f} GB of weights per decoded "
          f"token: bound {bw / m['active_weight_gb']:.2f} tok/s, decode at {100 * m['decode_fraction_of_bandwidth_bound']:.0f}% of it.")
print("\n| MoEPress command | wall s | peak RssAnon MiB | peak RSS MiB | read from disk MiB |")
print("|---|---:|---:|---:|---:|")
for cmd, f in [("eval perplexity (16 × 512)", "ppl"), ("logits (512 tokens)", "logits"), ("generate (32 tokens)", "generate")]:
    r = json.load(open(f"{out}/{f}.report.json"))
    print(f"| {cmd} | {r['wall_seconds']:.1f} | {r['peak_rss_anon_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['read_mib']:.0f} |")
PY
