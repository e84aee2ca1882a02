#!/usr/bin/env python3
"""vLLM (CPU build) serves a MoEPress checkpoint, through the moepress_vllm plugin where it needs one, with the prompt
log-probabilities of MoEPress's runtime: max |Δ| ≤ 1e-4 over every position (f32).
Run with the vLLM venv's python (scripts/setup.sh --vllm).
Usage: $VENV/bin/python tools/oracle/check_vllm.py MODEL_DIR IDS.json MOEPRESS_BINARY
Env: CHECK_VLLM_COMPILED=1 runs vLLM's default torch.compile path instead of eager mode; CHECK_VLLM_ATTENTION=NAME
picks vLLM's attention backend (CPU_MLA for DeepSeek's latent attention in f32: the AMX one takes bf16 weights only);
CHECK_VLLM_TP=N runs N tensor-parallel CPU workers (processes, one core each) instead of the in-process engine."""
import json, os, subprocess, sys, tempfile

TP = int(os.environ.get("CHECK_VLLM_TP", "1"))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0" if TP == 1 else "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
if TP > 1:   # one core per worker (vLLM's automatic binding wants a NUMA node per worker)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "|".join(str(i) for i in range(TP)))


def main():
    import torch
    from safetensors.torch import load_file

    model_dir, ids_path, binary = sys.argv[1], sys.argv[2], sys.argv[3]
    ids = json.load(open(ids_path))
    with tempfile.TemporaryDirectory() as t:
        out = os.path.join(t, "logits.safetensors")
        subprocess.run([binary, "logits", "--model", model_dir, "--ids-file", ids_path, "--output", out], check=True,
                       capture_output=True)
        ours = torch.log_softmax(load_file(out)["logits"].double(), dim=-1)
    want = torch.tensor([ours[i, ids[i + 1]].item() for i in range(len(ids) - 1)], dtype=torch.float64)

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    extra = {"attention_backend": os.environ["CHECK_VLLM_ATTENTION"]} if os.environ.get("CHECK_VLLM_ATTENTION") else {}
    if TP > 1:
        extra.update(tensor_parallel_size=TP, distributed_executor_backend="mp")
    llm = LLM(model=model_dir, dtype="float32", max_model_len=max(512, len(ids) + 8),
              enforce_eager=os.environ.get("CHECK_VLLM_COMPILED") != "1", **extra)
    res = llm.generate([TokensPrompt(prompt_token_ids=ids)],
                       SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0))[0]
    got = torch.tensor([res.prompt_logprobs[p][ids[p]].logprob for p in range(1, len(ids))], dtype=torch.float64)
    diff = (got - want).abs().max().item()
    llm.llm_engine.engine_core.shutdown()
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    mp = cfg.get("moepress") or {}
    print(json.dumps({"model": model_dir, "architecture": cfg["architectures"][0],
                      "moepress": sorted(k for k in mp if mp[k] is not None), "experts_per_layer": mp.get("experts_per_layer"),
                      "tensor_parallel": TP, "positions": len(ids) - 1, "max_abs_diff_logprob": diff, "ok": diff <= 1e-4}))
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":   # worker processes (CHECK_VLLM_TP > 1) import this file again
    code = main()
    # With worker processes, vLLM's teardown at interpreter exit sometimes aborts ("terminate called without an active
    # exception") after the result is printed; the engine was shut down in main(), so leave without that teardown.
    sys.stdout.flush()
    os._exit(code)
