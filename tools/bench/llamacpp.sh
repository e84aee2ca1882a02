#!/usr/bin/env bash
# llama.cpp (CPU) as a baseline for MoEPress. llama.cpp comes from the llama-cpp-python sdist on PyPI
# (its vendor/llama.cpp), since PyPI is the only source registry reachable here.
#   tools/bench/llamacpp.sh build                          download + build into $LLAMACPP_DIR (idempotent)
#   tools/bench/llamacpp.sh convert MODEL_DIR OUT.gguf [outtype]   HF safetensors -> GGUF (default bf16)
#   tools/bench/llamacpp.sh bench GGUF [llama-bench args]  llama-bench, -t $THREADS (2) unless args say otherwise
# Env: LLAMACPP_DIR (/work/scratch/llamacpp), LLAMACPP_PY_VERSION (0.3.36 = llama.cpp 0c1e57098),
#      LLAMACPP_TOKPRE (gpt-2; pre-tokenizer used when convert_hf_to_gguf.py does not know the tokenizer).
set -euo pipefail
DIR=${LLAMACPP_DIR:-/work/scratch/llamacpp}
VER=${LLAMACPP_PY_VERSION:-0.3.36}
SRC=$DIR/llama_cpp_python-$VER/vendor/llama.cpp
BIN=$DIR/build/bin
TARGETS=(llama-bench llama-cli llama-simple llama-perplexity llama-quantize llama-tokenize)

build() {
  if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-quantize" ] && [ -x "$BIN/llama-perplexity" ]; then
    echo "llamacpp: already built in $BIN" >&2; return
  fi
  command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >/dev/null; }
  # converter deps beyond the oracle; NOT llama.cpp's requirements.txt, which pins an older torch/transformers
  python3 -c "import sentencepiece, yaml, tqdm" 2>/dev/null || python3 -m pip install -q sentencepiece pyyaml tqdm
  mkdir -p "$DIR"
  if [ ! -d "$SRC" ]; then
    # --no-binary for this package only: ':all:' would also build pip's build deps (cmake!) from source
    [ -f "$DIR/llama_cpp_python-$VER.tar.gz" ] ||
      python3 -m pip download -q --no-deps --no-binary llama-cpp-python -d "$DIR" "llama-cpp-python==$VER"
    tar -xzf "$DIR/llama_cpp_python-$VER.tar.gz" -C "$DIR"
  fi
  # CPU only (no BLAS/CUDA), -march=native (GGML_NATIVE default); no HTTPS model download support needed
  cmake -S "$SRC" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DGGML_BLAS=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
  nice -n 10 cmake --build "$DIR/build" -j "${JOBS:-2}" --target "${TARGETS[@]}"
  "$BIN/llama-bench" --version 2>&1 | head -2 >&2
}

convert() {
  [ $# -ge 2 ] || { echo "usage: $0 convert MODEL_DIR OUT.gguf [outtype]" >&2; exit 2; }
  [ -d "$SRC" ] || build
  # Unmodified convert_hf_to_gguf.py, run with two monkeypatches (nothing in the tree is edited):
  # 1. a byte-level BPE tokenizer whose pre-tokenizer hash it does not know (our test tokenizers, e.g. qwen-moe-ref's)
  #    gets tokenizer.ggml.pre = $LLAMACPP_TOKPRE instead of a NotImplementedError;
  # 2. a tokenizer.json BPE with byte_fallback and no tokenizer.model (mixtral-ref) becomes an SPM vocab whose scores
  #    are all -1000 upstream, so llama.cpp merges in the wrong order; score = -(merge rank) makes it match HF.
  # A config vocab_size larger than the tokenizer needs nothing: the converter pads with [PAD<i>] UNUSED tokens.
  python3 - "$SRC/convert_hf_to_gguf.py" "$1" --outfile "$2" --outtype "${3:-bf16}" <<'PY'
import json, os, runpy, sys
script = sys.argv[1]; sys.argv = sys.argv[1:]
sys.path[:0] = [os.path.dirname(script), os.path.join(os.path.dirname(script), "gguf-py")]  # as the script does
import gguf
from conversion.base import TextModel, logger
known_pre = TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known_pre(self, tokenizer)
    except NotImplementedError:
        pre = os.environ.get("LLAMACPP_TOKPRE", "gpt-2")
        logger.warning(f"unknown BPE pre-tokenizer: using tokenizer.ggml.pre = {pre!r}")
        return pre
TextModel.get_vocab_base_pre = get_vocab_base_pre
hf_init = gguf.LlamaHfVocab.__init__
def llama_hf_init(self, base_path):
    hf_init(self, base_path)
    bpe = json.load(open(base_path / "tokenizer.json", encoding="utf-8"))["model"]
    self.merge_rank = {}
    for rank, m in enumerate(bpe.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        self.merge_rank.setdefault(bpe["vocab"][a + b], rank)
gguf.LlamaHfVocab.__init__ = llama_hf_init
gguf.LlamaHfVocab.get_token_score = lambda self, i: -float(self.merge_rank.get(i, 1e9))  # unmerged: never preferred
runpy.run_path(script, run_name="__main__")
PY
}

bench() {
  [ $# -ge 1 ] || { echo "usage: $0 bench GGUF [llama-bench args]" >&2; exit 2; }
  # ggml's threads spin at barriers: with another busy process on this 2-core machine -t 2 runs 10-500x slower,
  # so benchmark only on an idle machine.
  local m=$1; shift
  local t=(-t "${THREADS:-2}")
  case " $* " in *" -t "*|*" --threads "*) t=() ;; esac
  "$BIN/llama-bench" -m "$m" "${t[@]}" "$@" 2>/dev/null
}

cmd=${1:-}; shift || true
case "$cmd" in
  build|convert|bench) "$cmd" "$@" ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
