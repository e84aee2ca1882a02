#!/usr/bin/env python3
"""HF transformers on PyTorch CPU, measured exactly as `moepress bench` measures itself: the same
SplitMix64 prompt ids, one warm-up, best of --repeats; prefill = one forward over the prompt with all
logits; time to first token = prefill + argmax; decode = --decode greedy steps with the KV cache.
Prints the same JSON keys. Usage: python3 tools/bench/bench_hf.py --model DIR [--threads 2] ..."""
import argparse, json, resource, time
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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa is HF's CPU default; eager also works)")
    ap.add_argument("--dtype", default="float32", help="float32 (parity runs) or bfloat16 (real-size models: weights as stored)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype), attn_implementation=args.attn).eval()
    load = time.perf_counter() - t0
    gen = splitmix64(args.seed)
    vocab = model.config.vocab_size
    prompt = [next(gen) % vocab for _ in range(args.tokens)]
    with torch.inference_mode():
        model(torch.tensor([prompt[:16]]))  # warm-up
        best_prefill = best_ttft = best_decode = float("inf")
        for _ in range(args.repeats):
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
            best_prefill, best_ttft, best_decode = min(best_prefill, prefill), min(best_ttft, ttft), min(best_decode, dec)
    print(json.dumps({
        "model": args.model, "engine": f"transformers {__import__('transformers').__version__} / torch {torch.__version__} ({args.attn}, {args.dtype})",
        "threads": args.threads, "prompt_tokens": args.tokens, "decode_tokens": args.decode,
        "prefill_tokens_per_second": args.tokens / best_prefill, "time_to_first_token_ms": best_ttft * 1000,
        "decode_tokens_per_second": args.decode / best_decode,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "load_seconds": load,
    }, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
