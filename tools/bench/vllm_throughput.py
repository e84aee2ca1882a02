#!/usr/bin/env python3
"""Offline serving throughput of vLLM's CPU build on one MoEPress checkpoint (through the moepress_vllm plugin where it
needs it): 32 prompts of 64 tokens from a dev file, 64 greedy new tokens each (end-of-sequence ignored), one batch after
a warm-up. Prints one JSON line: prompt and generated tokens per second of the batch, and its wall seconds. One sample:
tools/bench/serving.sh runs it in the protocol's alternating rounds (tools/bench/protocol.py) and takes the median.
Run with the vLLM venv's python (scripts/setup.sh --vllm).
Usage: $VENV/bin/python tools/bench/vllm_throughput.py MODEL_DIR
Env: THREADS (2): OMP threads of vLLM's CPU worker."""
import json, os, sys, time
threads = os.environ.get("THREADS", "2")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", threads)
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{int(threads) - 1}")
from tokenizers import Tokenizer
from vllm import LLM, SamplingParams, __version__ as vllm_version
from vllm.inputs import TokensPrompt

(model,) = sys.argv[1:]
text = open(os.path.join(os.path.dirname(__file__), "../../../shared/data/dev/austen.txt"), encoding="utf-8").read()
ids = Tokenizer.from_file(os.path.join(model, "tokenizer.json")).encode(text[:200000]).ids
prompts = [TokensPrompt(prompt_token_ids=ids[i * 64:(i + 1) * 64]) for i in range(32)]
llm = LLM(model=model, dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
sp = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
llm.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True), use_tqdm=False)   # warm-up
t0 = time.time()
outs = llm.generate(prompts, sp, use_tqdm=False)
dt = time.time() - t0
gen = sum(len(o.outputs[0].token_ids) for o in outs)
cfg = json.load(open(os.path.join(model, "config.json")))
mp = cfg.get("moepress") or {}
print(json.dumps({"engine": f"vLLM {vllm_version} (CPU, f32, eager)", "model": model, "moepress": sorted(k for k in mp if mp[k] is not None),
                  "experts_per_layer": mp.get("experts_per_layer"), "prompts": 32, "prompt_tokens": 32 * 64, "generated_tokens": gen,
                  "seconds": dt, "generated_tok_s": gen / dt, "total_tok_s": (gen + 32 * 64) / dt}), flush=True)
