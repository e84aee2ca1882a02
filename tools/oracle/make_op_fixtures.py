#!/usr/bin/env python3
"""Expected values of MoEPress's tensor ops, computed by torch / transformers, for
Tests/MoETensorTests/Fixtures/ops.json. Run from the repository root:  python3 tools/oracle/make_op_fixtures.py"""
import json, math, os
import torch
import torch.nn.functional as F
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

torch.manual_seed(7)
out = {}
x = torch.randn(3, 10) * 2
w = torch.randn(10) * 0.5 + 1
out["x"] = x.flatten().tolist()
out["norm_weight"] = w.tolist()
var = x.pow(2).mean(-1, keepdim=True)
out["rmsnorm"] = (w * (x * torch.rsqrt(var + 1e-6))).flatten().tolist()
b = torch.randn(10) * 0.1
out["layernorm_bias"] = b.tolist()
out["layernorm"] = F.layer_norm(x, (10,), w, b, 1e-5).flatten().tolist()
out["softmax"] = torch.softmax(x, -1).flatten().tolist()
out["silu"] = F.silu(x).flatten().tolist()
out["gelu"] = F.gelu(x).flatten().tolist()
out["gelu_tanh"] = F.gelu(x, approximate="tanh").flatten().tolist()
out["sigmoid"] = torch.sigmoid(x).flatten().tolist()
vals, idx = torch.topk(x, 4, dim=-1)
out["topk4_values"] = vals.flatten().tolist()
out["topk4_indices"] = idx.flatten().tolist()

# bf16 / f16 rounding of awkward values (ties, subnormals, overflow, NaN excluded)
probe = torch.tensor([1.0, 1.00390625, 1.01171875, 3.14159265, -2.71828, 65504.0, 65520.0, 1e-8, 6e-5, 1e38, -0.0, 3.0e-39])
out["probe"] = probe.tolist()
out["probe_bf16_bits"] = probe.to(torch.bfloat16).view(torch.int16).to(torch.int32).bitwise_and(0xFFFF).tolist()
out["probe_bf16_back"] = probe.to(torch.bfloat16).float().tolist()
# f16 overflows to inf above 65519.99; JSON has no inf, so the f16 probe keeps to finite results.
probe16 = probe[probe.abs() < 65520]
out["probe16"] = probe16.tolist()
out["probe_f16_back"] = probe16.to(torch.float16).float().tolist()

# RoPE inverse frequencies and attention factors for each rope_type MoEPress supports.
ropes = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 4096,
             "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "yarn_plain": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 32768},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}
out["rope"] = {}
for name, rp in ropes.items():
    cfg = PretrainedConfig()
    cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.max_position_embeddings = 512, 8, 64, 163840
    cfg.rope_parameters = dict(rp)
    if rp["rope_type"] == "default":
        inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, 64, 2, dtype=torch.float) / 64))
        factor = 1.0
    else:
        inv, factor = ROPE_INIT_FUNCTIONS[rp["rope_type"]](cfg, "cpu")
    pos = torch.tensor([0.0, 1.0, 7.0, 1000.0])
    freqs = pos[:, None] * inv[None, :]
    out["rope"][name] = {"params": rp, "inv_freq": inv.tolist(), "attention_factor": float(factor),
                         "cos": (freqs.cos() * factor).flatten().tolist(), "sin": (freqs.sin() * factor).flatten().tolist()}

os.makedirs("Tests/MoETensorTests/Fixtures", exist_ok=True)
json.dump(out, open("Tests/MoETensorTests/Fixtures/ops.json", "w"))
print("wrote Tests/MoETensorTests/Fixtures/ops.json")
