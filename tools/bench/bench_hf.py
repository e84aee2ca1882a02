#!/usr/bin/env python3
"""HF transformers on PyTorch CPU, measured exactly as `moepress bench` measures itself: the same
SplitMix64 prompt ids, one warm-up over the whole prompt, then --rounds timed rounds reported as the median,
min and max (tools/bench/protocol.py's statistic); prefill = one forward over the prompt with all logits;
time to first token = prefill + argmax; decode = --decode greedy steps with the KV cache the prompt filled
(so decode starts from a context of --tokens tokens). Run the stock way: weights in the checkpoint's dtype
unless --dtype says otherwise, PyTorch's own kernels (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA are refused).
Prints the same JSON keys. Usage: python3 tools/bench/bench_hf.py --model DIR [--threads 2] [--rounds 5] ..."""
import argparse, json, os, resource, sys, time
from protocol import HANDICAPS, summary
import torch
from transformers import AutoModelForCausalLM

MASK = (1 << 64) - 1


def splitmix64(seed):
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (at least 1; published figures need at least 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa is HF's CPU default; eager also works)")
    ap.add_argument("--dtype", default="auto", help="auto (the checkpoint's dtype, HF's default), float32 or bfloat16")
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit("bench_hf.py: --rounds must be at least 1")
    handicaps = [k for k in HANDICAPS if os.environ.get(k)]
    if handicaps:
        sys.exit(f"bench_hf.py: {', '.join(handicaps)} is set: peers run as their users run them (unset it)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=args.dtype if args.dtype == "auto" else getattr(torch, args.dtype), attn_implementation=args.attn).eval()
    load = time.perf_counter() - t0
    gen = splitmix64(args.seed)
    vocab = model.config.vocab_size
    prompt = [next(gen) % vocab for _ in range(args.tokens)]
    with torch.inference_mode():
        model(torch.tensor([prompt]))  # warm-up over the whole prompt, as moepress bench does
        prefills, ttfts, decodes = [], [], []
        for _ in range(args.rounds):
            s = time.perf_counter()
            out = model(torch.tensor([prompt]), use_cache=True)
            prefill = time.perf_counter() - s
            nxt = int(out.logits[0, -1].argmax())
            ttft = time.perf_counter() - s
            past = out.past_key_values
            d0 = time.perf_counter()
            for _ in range(args.decode):
                out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = int(out.logits[0, -1].argmax())
            dec = time.perf_counter() - d0
            prefills.append(args.tokens / prefill); ttfts.append(ttft * 1000); decodes.append(args.decode / dec)
    result = {
        "model": args.model, "threads": args.threads, "prompt_tokens": args.tokens, "decode_tokens": args.decode, "rounds": args.rounds,
        "engine": f"transformers {__import__('transformers').__version__} / torch {torch.__version__} ({args.attn}, {str(model.dtype).replace('torch.', '')})",
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "load_seconds": load,
    }
    for key, samples in [("prefill_tokens_per_second", prefills), ("time_to_first_token_ms", ttfts), ("decode_tokens_per_second", decodes)]:
        result[key], result[key + "_min"], result[key + "_max"] = summary(samples)
    print(json.dumps(result, indent=2, sort_keys=True))

if __name__ == "__main__":
    main()
