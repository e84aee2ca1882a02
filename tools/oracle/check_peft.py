#!/usr/bin/env python3
"""HF PEFT loads an adapter written by `moepress heal` onto the base model, and the adapted model's logits equal
MoEPress's merged model (`moepress heal --merge` → OUT/merged) within 1e-4 (f32). Also reports how far the
adapter moved the logits from the base model, so a zero adapter cannot pass unnoticed.
Usage: python3 tools/oracle/check_peft.py BASE_MODEL ADAPTER_DIR IDS.json [MOEPRESS_BINARY]"""
import json, os, subprocess, sys, tempfile, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
from safetensors.torch import load_file

base_dir, adapter, ids_path = sys.argv[1], sys.argv[2], sys.argv[3]
binary = sys.argv[4] if len(sys.argv) > 4 else ".build/release/moepress"
ids = torch.tensor([json.load(open(ids_path))])
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager").eval()
with torch.inference_mode():
    before = base(ids).logits[0].float()
model = PeftModel.from_pretrained(base, adapter).eval()
with torch.inference_mode():
    hf = model(ids).logits[0].float()
with tempfile.TemporaryDirectory() as t:
    out = os.path.join(t, "logits.safetensors")
    subprocess.run([binary, "logits", "--model", os.path.join(adapter, "merged"), "--ids-file", ids_path, "--output", out], check=True, capture_output=True)
    ours = load_file(out)["logits"]
diff = (hf - ours).abs().max().item()
moved = (hf - before).abs().max().item()
ok = diff <= 1e-4 and moved > 100 * max(diff, 1e-6)
print(json.dumps({"adapter": adapter, "max_abs_diff": diff, "adapter_effect": moved, "ok": ok}))
sys.exit(0 if ok else 1)
