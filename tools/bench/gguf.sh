#!/usr/bin/env bash
# `moepress export --gguf` against llama.cpp (built by tools/bench/llamacpp.sh) on a reference model and a uniform
# frequency prune of it (25% of experts):
#   1. token ids: llama-tokenize on every whole dev file (and 20 lines of each) against `moepress tokenize --special`
#      (HF's ids: tokenizers' encode with its special tokens);
#   2. greedy text: llama-simple against `moepress generate` (temperature 0), same prompt and length;
#   3. perplexity: llama-perplexity (its own windows: n_ctx 256, the second half of each scored) on a dev file for both
#      models, and the pruned/original ratio beside `moepress eval perplexity`'s ratio on the same file;
#   4. logits: llama.cpp's prompt logits against MoEPress's (max |Δ|, top-1 agreement) when numpy is present.
# Usage: tools/bench/gguf.sh MODEL_NAME [TYPE]     (TYPE: f32 (default), bf16, f16, q8_0)
# Env: SCRATCH (/work/scratch), LLAMACPP_DIR (/work/scratch/llamacpp), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; type=${2:-f32}
M=../shared/models/$name
W=${SCRATCH:-/work/scratch}/gguf-$name; mkdir -p "$W"
BIN=${LLAMACPP_DIR:-/work/scratch/llamacpp}/build/bin
tools/bench/llamacpp.sh build >&2
swift build -c release --product moepress >&2
B=$PWD/.build/release/moepress
T=${THREADS:-2}
# llama.cpp's AMX repacking of quantised weights is refused in some sandboxes (SIGILL): --no-repack avoids it.
NR=(); [ "$type" = q8_0 ] && NR=(--no-repack)
[ -d "$W/pruned" ] || "$B" prune --model "$M" --method frequency --ratio 0.25 --calib-dir ../shared/data/calib --output "$W/pruned" --quiet
for v in original pruned; do
  src=$M; [ $v = pruned ] && src=$W/pruned
  "$B" export --model "$src" --gguf --gguf-type "$type" --output "$W/$v-$type.gguf" --overwrite
done
G=$W/original-$type.gguf
echo "## $name ($type)"
# 1. token ids
same=0; total=0; tokens=0; k=0; lead=0; leadsame=0
for f in ../shared/data/dev/*.txt; do
  pieces=("$f")
  { head -c 200000 "$f" | awk 'NF' | head -n 20; } > "$W/lines.txt" 2>/dev/null || true
  while IFS= read -r line; do k=$((k + 1)); printf '%s' "$line" > "$W/line-$k.txt"; pieces+=("$W/line-$k.txt"); done < "$W/lines.txt"
  for p in "${pieces[@]}"; do
    ours=$("$B" tokenize --model "$M" --text-file "$p" --special | tr -d ' \n')
    theirs=$("$BIN/llama-tokenize" -m "$G" -f "$p" --ids --no-escape --log-disable 2>/dev/null | tail -1 | tr -d ' \n')
    total=$((total + 1)); tokens=$((tokens + $(echo "$ours" | tr ',' '\n' | wc -l)))
    # llama.cpp's SentencePiece path always prepends ▁; HF's Metaspace (prepend_scheme first) does not before a leading
    # space: texts that start with one are counted apart.
    if [ "$(head -c 1 "$p")" = " " ]; then
      lead=$((lead + 1)); [ "$ours" = "$theirs" ] && leadsame=$((leadsame + 1))
    else
      [ "$ours" = "$theirs" ] && same=$((same + 1)) || echo "differs: $p" >&2
    fi
  done
  rm -f "$W"/line-*.txt
done
echo "token ids identical: $same of $((total - lead)) texts not starting with a space, $leadsame of $lead starting with one (11 whole dev files + 20 lines of each; $tokens tokens)"
# 2. greedy text (unquantised types: llama-simple has no --no-repack, and quantised weights need not give the same text)
if [ "$type" != q8_0 ]; then
  prompt="The old man looked at the sea and said"
  ours=$("$B" generate --model "$M" --prompt "$prompt" --max-tokens 32 --temperature 0 --threads "$T" 2>/dev/null)
  theirs=$("$BIN/llama-simple" -m "$G" -n 32 "$prompt" 2>/dev/null | sed 's/^<s> //')
  echo "greedy, moepress : $ours"
  echo "greedy, llama.cpp: $theirs"
  [ "$(echo "$ours" | tr -s ' \n')" = "$(echo "$theirs" | tr -s ' \n')" ] && echo "greedy text identical" || echo "greedy text differs"
fi
# 3. perplexity ratios
f=../shared/data/dev/austen.txt
# llama-perplexity stops now and then on this machine before its estimate (an illegal instruction); one retry, then nan.
lp() {
  for _ in 1 2; do
    v=$("$BIN/llama-perplexity" -m "$1" -f "$f" -c 256 -b 256 -t "$T" "${NR[@]}" 2>&1 | grep -o 'Final estimate: PPL = [0-9.]*' | grep -o '[0-9.]*$' || true)
    [ -n "$v" ] && { echo "$v"; return; }
  done
  echo nan
}
mp() { "$B" eval perplexity --model "$1" --text-file "$f" --json --quiet --threads "$T" | python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])"; }
lo=$(lp "$G"); lpr=$(lp "$W/pruned-$type.gguf"); mo=$(mp "$M"); mpr=$(mp "$W/pruned")
python3 - "$lo" "$lpr" "$mo" "$mpr" <<'PY'
import sys
lo, lp, mo, mp = map(float, sys.argv[1:])
print(f"perplexity on austen.txt: llama.cpp {lo:.3f} → {lp:.3f} pruned (ratio {lp / lo:.4f}); moepress {mo:.3f} → {mp:.3f} (ratio {mp / mo:.4f})")
PY
