#!/usr/bin/env python3
"""HF `tokenizers` (Rust) encode throughput measured as `moepress bench-tokenizer` measures itself: every
.txt of --text-dir encoded whole with Tokenizer.encode (one thread: RAYON_NUM_THREADS=1), a warm-up pass,
then --rounds timed passes, the median (min–max) (tools/bench/protocol.py's statistic).
Usage: python3 tools/bench/bench_tokenizer.py --tokenizer F --text-dir D"""
import argparse, json, os, time
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import tokenizers
from tokenizers import Tokenizer
from protocol import summary

ap = argparse.ArgumentParser()
ap.add_argument("--tokenizer", required=True)
ap.add_argument("--text-dir", required=True)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--lines", action="store_true", help="encode each line on its own")
a = ap.parse_args()
t0 = time.perf_counter()
tok = Tokenizer.from_file(a.tokenizer)
load = time.perf_counter() - t0
texts = [open(os.path.join(a.text_dir, f), encoding="utf-8").read() for f in sorted(os.listdir(a.text_dir)) if f.endswith(".txt")]
nbytes = sum(len(t.encode()) for t in texts)
if a.lines:
    texts = [line for t in texts for line in t.split("\n")]
tokens = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
rates = []
for _ in range(a.rounds):
    s = time.perf_counter()
    for t in texts:
        tok.encode(t, add_special_tokens=False)
    rates.append(nbytes / 1e6 / (time.perf_counter() - s))
mbps, lo, hi = summary(rates)
print(json.dumps({"engine": f"tokenizers {tokenizers.__version__}", "mode": "lines" if a.lines else "whole", "tokenizer": a.tokenizer, "bytes": nbytes, "tokens": tokens,
                  "rounds": a.rounds, "mb_per_second": mbps, "mb_per_second_min": lo, "mb_per_second_max": hi, "load_seconds": load}))
