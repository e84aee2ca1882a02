#!/usr/bin/env python3
"""Stock HF transformers loads a MoEPress-pruned checkpoint (equal expert counts per layer) and gives the
same logits as MoEPress's runtime: `moepress logits` on the same ids, max |Δ| ≤ 1e-4 (f32 compute).
Usage: python3 tools/oracle/check_pruned.py PRUNED_DIR IDS.json [MOEPRESS_BINARY]"""
import json, os, subprocess, sys, tempfile
import torch
from transformers import AutoModelForCausalLM
from safetensors.torch import load_file

pruned, ids_path = sys.argv[1], sys.argv[2]
binary = sys.argv[3] if len(sys.argv) > 3 else ".build/release/moepress"
ids = json.load(open(ids_path))
model = AutoModelForCausalLM.from_pretrained(pruned, dtype=torch.float32, attn_implementation="eager").eval()
with torch.inference_mode():
    hf = model(torch.tensor([ids])).logits[0].float()
with tempfile.TemporaryDirectory() as t:
    out = os.path.join(t, "logits.safetensors")
    subprocess.run([binary, "logits", "--model", pruned, "--ids-file", ids_path, "--output", out], check=True, capture_output=True)
    ours = load_file(out)["logits"]
diff = (hf - ours).abs().max().item()
cfg = json.load(open(os.path.join(pruned, "config.json")))
experts = cfg.get("num_local_experts", cfg.get("num_experts", cfg.get("n_routed_experts")))
print(json.dumps({"model": pruned, "experts": experts, "max_abs_diff": diff, "ok": diff <= 1e-4}))
sys.exit(0 if diff <= 1e-4 else 1)
