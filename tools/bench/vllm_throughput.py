#!/usr/bin/env python3
"""Offline serving throughput of vLLM's CPU build on MoEPress checkpoints (through the moepress_vllm plugin where they
need it): 32 prompts of 64 tokens from a dev file, 64 greedy new tokens each (end-of-sequence ignored), one batch.
Prints one JSON line per model: prompt and generated tokens per second of the whole batch, wall seconds (median of
REPEATS batches).
Run with the vLLM venv's python (scripts/setup.sh --vllm), beside `moepress bench` on the same models and threads.
Usage: $VENV/bin/python tools/bench/vllm_throughput.py MODEL_DIR [MODEL_DIR ...]
Env: THREADS (2): OMP threads of vLLM's CPU worker; REPEATS (5): timed batches, the median is reported."""
import json, os, statistics, sys, time
threads = os.environ.get("THREADS", "2")
REPEATS = int(os.environ.get("REPEATS", "5"))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", threads)
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{int(threads) - 1}")
from tokenizers import Tokenizer
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

text = open(os.path.join(os.path.dirname(__file__), "../../../shared/data/dev/austen.txt"), encoding="utf-8").read()
for model in sys.argv[1:]:
    ids = Tokenizer.from_file(os.path.join(model, "tokenizer.json")).encode(text[:200000]).ids
    prompts = [TokensPrompt(prompt_token_ids=ids[i * 64:(i + 1) * 64]) for i in range(32)]
    llm = LLM(model=model, dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
    sp = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True), use_tqdm=False)   # warm-up
    times = []
    for _ in range(REPEATS):   # one batch takes about a second here: the median of several is steadier
        t0 = time.time()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        times.append(time.time() - t0)
    dt = statistics.median(times)
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    cfg = json.load(open(os.path.join(model, "config.json")))
    mp = cfg.get("moepress") or {}
    print(json.dumps({"model": model, "moepress": sorted(k for k in mp if mp[k] is not None), "experts_per_layer": mp.get("experts_per_layer"),
                      "prompts": 32, "prompt_tokens": 32 * 64, "generated_tokens": gen, "seconds": round(dt, 2), "repeats": REPEATS,
                      "generated_tok_s": round(gen / dt, 1), "total_tok_s": round((gen + 32 * 64) / dt, 1)}), flush=True)
    del llm
