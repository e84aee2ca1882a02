#!/usr/bin/env python3
"""Stock HF transformers loads a MoEPress output checkpoint and gives the same logits as MoEPress's runtime
(`moepress logits` on the same ids), max |Δ| ≤ 1e-4 with f32 compute. Works for pruned checkpoints with equal
expert counts per layer (plain HF loading), for `export --dense` outputs, and for low-rank checkpoints from
`moepress decompose`, which HF loads through their modeling_moepress.py (trust_remote_code=True).
Usage: python3 tools/oracle/check_hf_parity.py MODEL_DIR IDS.json [MOEPRESS_BINARY]"""
import json, os, subprocess, sys, tempfile
import torch
from transformers import AutoModelForCausalLM
from safetensors.torch import load_file

model_dir, ids_path = sys.argv[1], sys.argv[2]
binary = sys.argv[3] if len(sys.argv) > 3 else ".build/release/moepress"
ids = json.load(open(ids_path))
cfg = json.load(open(os.path.join(model_dir, "config.json")))
remote = "auto_map" in cfg
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                             trust_remote_code=remote).eval()
with torch.inference_mode():
    hf = model(torch.tensor([ids])).logits[0].float()
with tempfile.TemporaryDirectory() as t:
    out = os.path.join(t, "logits.safetensors")
    subprocess.run([binary, "logits", "--model", model_dir, "--ids-file", ids_path, "--output", out], check=True, capture_output=True)
    ours = load_file(out)["logits"]
diff = (hf - ours).abs().max().item()
lowrank = sum(1 for m in model.modules() if type(m).__name__ == "LowRankLinear")
replaced = sum(1 for m in model.modules() if type(m).__name__ == "MoEPressExperts" or getattr(m, "moepress_resized", False))
experts = cfg.get("num_local_experts", cfg.get("num_experts", cfg.get("n_routed_experts")))
print(json.dumps({"model": model_dir, "experts": experts, "remote_code": remote, "moepress_expert_modules": replaced, "low_rank_linears": lowrank,
                  "max_abs_diff": diff, "ok": diff <= 1e-4}))
if remote and replaced == 0:
    sys.exit("the remote code replaced no experts module")
sys.exit(0 if diff <= 1e-4 else 1)
