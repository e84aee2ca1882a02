#!/usr/bin/env python3
"""Training throughput of HF transformers + PEFT on PyTorch CPU, measured like `moepress heal`: LoRA (rank R,
alpha A, no dropout: PEFT refuses dropout on the fused-expert parameter targets) on q,k,v,o, the routed experts
(fused gate_up/down as target_parameters), shared/dense MLPs and the router; AdamW; batches of B windows of L
tokens from the calibration text; eager attention, f32. Prints JSON with tokens/s over the steps after the first.
Usage: python3 tools/bench/bench_train_hf.py MODEL_DIR TEXT_DIR [--steps N --batch B --seq-len L --rank R --threads T]"""
import argparse, glob, json, os, random, time, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("text")
ap.add_argument("--steps", type=int, default=6); ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq-len", type=int, default=256); ap.add_argument("--rank", type=int, default=64)
ap.add_argument("--alpha", type=float, default=16); ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--full", action="store_true", help="train every parameter instead of LoRA")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(a.model)
stream = []
for f in sorted(glob.glob(os.path.join(a.text, "*.txt"))):
    stream += tok(open(f, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
if not a.full:
    has_shared = any("shared_expert." in n for n, _ in model.named_modules())
    modules = ["q_proj", "k_proj", "v_proj", "o_proj"] + (["gate_proj", "up_proj", "down_proj"] if has_shared else [])
    cfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=modules,
                     target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight"])
    model = get_peft_model(model, cfg)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.05)
rng = random.Random(0)
times = []
for step in range(a.steps):
    ids = []
    for _ in range(a.batch):
        o = rng.randrange(len(stream) - a.seq_len - 1)
        ids.append(stream[o:o + a.seq_len])
    x = torch.tensor(ids)
    t0 = time.perf_counter()
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t0)
steady = times[1:] or times
tps = a.batch * a.seq_len / (sum(steady) / len(steady))
print(json.dumps({"engine": f"torch {torch.__version__} + peft {__import__('peft').__version__}", "torch": torch.__version__, "threads": a.threads, "mode": "full" if a.full else f"lora r{a.rank}",
                  "trainable_parameters": sum(p.numel() for p in params), "batch": a.batch, "seq_len": a.seq_len,
                  "steps": a.steps, "tokens_per_second": tps, "loss_last": loss.item()}))
