#!/usr/bin/env python3
"""Builds tiny random MoE checkpoints for every supported family with HF transformers and records the
logits HF computes for fixed inputs. Output: Tests/MoEModelsTests/Fixtures/<name>/ with config.json,
model.safetensors (f32), inputs.json and expected.safetensors. Run from the repository root:

    scripts/setup.sh --oracle && python3 tools/oracle/make_model_fixtures.py

Deterministic (seeded). Some configs are rewritten in the transformers v4 spelling (rope_theta +
rope_scaling, torch_dtype) and one checkpoint is saved in v5's fused-expert layout, and every
rewritten folder is re-loaded by HF to prove it means the same model.
"""
import json, os, shutil, sys
import torch
import transformers
from safetensors.torch import save_file

OUT = os.path.join("Tests", "MoEModelsTests", "Fixtures")
INPUTS = [[3, 17, 42, 5, 88, 61, 7, 19, 33], [90, 2, 14, 14, 70]]

COMMON = dict(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False)

FAMILIES = {
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM, dict(
        num_key_value_heads=2, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "qwen2_moe": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM, dict(
        num_hidden_layers=3, num_key_value_heads=2, intermediate_size=96, moe_intermediate_size=32,
        num_experts=6, num_experts_per_tok=2, shared_expert_intermediate_size=48, mlp_only_layers=[1],
        norm_topk_prob=False, qkv_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM, dict(
        num_key_value_heads=2, head_dim=24, intermediate_size=96, moe_intermediate_size=32, num_experts=8,
        num_experts_per_tok=3, norm_topk_prob=True,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64})),
    "olmoe": (transformers.OlmoeConfig, transformers.OlmoeForCausalLM, dict(
        num_key_value_heads=4, intermediate_size=32, num_experts=8, num_experts_per_tok=2, clip_qkv=1.5,
        norm_topk_prob=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "deepseek_v2": (transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM, dict(
        num_hidden_layers=3, num_key_value_heads=4, intermediate_size=96, moe_intermediate_size=32,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1,
        kv_lora_rank=24, q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        topk_method="group_limited_greedy", n_group=4, topk_group=2, routed_scaling_factor=1.5,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                         "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1})),
    "deepseek_v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, dict(
        num_hidden_layers=3, num_key_value_heads=4, intermediate_size=96, moe_intermediate_size=32,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=1,
        kv_lora_rank=24, q_lora_rank=20, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # DeepSeek-V2 with the low-rank query path (as DeepSeek-V2 proper; V2-Lite has q_proj) and greedy softmax
    # routing with renormalisation.
    "deepseek_v2_qlora": (transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM, dict(
        num_hidden_layers=3, num_key_value_heads=4, intermediate_size=96, moe_intermediate_size=32,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
        kv_lora_rank=24, q_lora_rank=20, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        topk_method="greedy", norm_topk_prob=True, routed_scaling_factor=1.0,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                         "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1})),
    # Phi-3.5-MoE's shape in miniature: LayerNorm with biases, q/k/v/o and LM-head biases, sparsemixer top-2
    # routing, longrope with its short/long mscale (original length 8, so the 9-token input uses the long one).
    "phimoe": (transformers.PhimoeConfig, transformers.PhimoeForCausalLM, dict(
        num_key_value_heads=2, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, router_jitter_noise=0.01,
        attention_bias=True, lm_head_bias=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 8,
                         "short_factor": [1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 6.0], "long_factor": [1.0, 1.3, 1.8, 2.5, 4.0, 6.0, 9.0, 12.0],
                         "short_mscale": 1.15, "long_mscale": 1.35})),
    # gpt-oss in miniature: fused interleaved gate_up experts [E, H, 2I] with biases, clamped SwiGLU (a limit low
    # enough that random weights reach it), a router with a bias, attention sinks, sliding (window 4, so the
    # 9-token input slides) and full layers alternating, yarn without truncation, q/k/v/o biases.
    "gpt_oss": (transformers.GptOssConfig, transformers.GptOssForCausalLM, dict(
        num_key_value_heads=2, head_dim=16, intermediate_size=96, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=4, swiglu_limit=1.0, swiglu_alpha=1.702, rms_norm_eps=1e-5, attention_bias=True,
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                         "truncate": False, "original_max_position_embeddings": 64})),
}
# The released gpt-oss form of the same model: experts stored as MXFP4 blocks and scales (made from "gpt_oss").
MXFP4_FROM = {"gpt_oss_mxfp4": "gpt_oss"}

# Which fixtures get a config in the transformers v4 spelling, and which are stored fused (v5 layout).
V4_SPELLING = {"mixtral", "deepseek_v2"}
FUSED_LAYOUT = {"olmoe"}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.copy_(0.05 * torch.randn(b.shape, generator=g))


FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def to_mxfp4(w):
    """[..., rows, cols] f32 → (blocks [..., rows, cols/32, 16] u8, scales [..., rows, cols/32] u8): each block of 32
    values along cols gets the exponent that puts its largest magnitude at or below 6, and every value the nearest FP4
    code (low nibble = even element, as transformers' dequantiser reads them)."""
    *pre, rows, cols = w.shape
    b = w.reshape(*pre, rows, cols // 32, 32)
    amax = b.abs().amax(-1).clamp(min=1e-30)
    e = torch.ceil(torch.log2(amax / 6.0)).clamp(-127, 127)
    scaled = b / torch.pow(2.0, e)[..., None]
    lut = torch.tensor(FP4_VALUES)
    codes = (scaled[..., None] - lut).abs().argmin(-1).to(torch.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.contiguous(), (e + 127).to(torch.uint8).contiguous()


def write_mxfp4(src, dst):
    """The `src` fixture folder's model with its experts' gate_up_proj [E, H, 2I] and down_proj [E, I, H] stored as
    transformers reads released gpt-oss checkpoints: `<proj>_blocks` / `<proj>_scales` over the [E, out, in] matrices."""
    from safetensors.torch import load_file
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    sd = load_file(os.path.join(src, "model.safetensors"))
    out = {}
    for k, v in sd.items():
        if k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj"):
            blocks, scales = to_mxfp4(v.transpose(1, 2).contiguous())
            out[k + "_blocks"], out[k + "_scales"] = blocks, scales
        else:
            out[k] = v
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2, sort_keys=True)


def logits_of(model):
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].float() for ids in INPUTS]


def to_v4_spelling(path):
    cfg = json.load(open(path))
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rtype = rp.pop("rope_type")
    cfg["rope_scaling"] = None if rtype == "default" else dict(rp, type=rtype)
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    cfg["transformers_version"] = "4.46.0"
    json.dump(cfg, open(path, "w"), indent=2, sort_keys=True)


def main():
    """`make_model_fixtures.py [NAME ...]` rebuilds only those fixtures (the others' files and manifest entries stay)."""
    torch.manual_seed(0)
    only = set(sys.argv[1:])
    manifest = {"transformers": transformers.__version__, "torch": torch.__version__, "inputs": INPUTS, "fixtures": {}}
    if only:
        manifest = json.load(open(os.path.join(OUT, "manifest.json")))
    for i, (name, (cfg_cls, model_cls, extra)) in enumerate(FAMILIES.items()):
        if only and name not in only:
            continue
        kw = dict(COMMON)
        kw.update(extra)
        config = cfg_cls(**kw)
        config._attn_implementation = "eager"
        model = model_cls(config).float().eval()
        randomize(model, 1234 + i)
        expected = logits_of(model)
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=True)
        for f in os.listdir(d):
            if f not in ("config.json", "model.safetensors"):
                os.remove(os.path.join(d, f))
        if name in FUSED_LAYOUT:
            sd = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        if name in V4_SPELLING:
            to_v4_spelling(os.path.join(d, "config.json"))
        # The folder as written must mean the same model to HF.
        reloaded = model_cls.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
        again = logits_of(reloaded)
        for a, b in zip(expected, again):
            assert torch.allclose(a, b, atol=1e-5), f"{name}: reloaded checkpoint differs by {(a - b).abs().max()}"
        tensors = {f"logits_{j}": t.contiguous() for j, t in enumerate(expected)}
        save_file(tensors, os.path.join(d, "expected.safetensors"))
        json.dump(INPUTS, open(os.path.join(d, "inputs.json"), "w"))
        manifest["fixtures"][name] = {
            "class": model_cls.__name__, "v4_spelling": name in V4_SPELLING, "fused_layout": name in FUSED_LAYOUT,
            "parameters": sum(p.numel() for p in model.parameters()),
            "logit_scale": float(max(t.abs().max() for t in expected)),
        }
        print(f"{name}: {manifest['fixtures'][name]}", file=sys.stderr)
    for name, src in MXFP4_FROM.items():
        if only and name not in only:
            continue
        d = os.path.join(OUT, name)
        write_mxfp4(os.path.join(OUT, src), d)
        # HF dequantises MXFP4 on CPU (exactly: every FP4 value times a power of two is an f32); its logits are the oracle.
        model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
        expected = logits_of(model)
        save_file({f"logits_{j}": t.contiguous() for j, t in enumerate(expected)}, os.path.join(d, "expected.safetensors"))
        json.dump(INPUTS, open(os.path.join(d, "inputs.json"), "w"))
        manifest["fixtures"][name] = {"class": type(model).__name__, "mxfp4_from": src,
                                      "logit_scale": float(max(t.abs().max() for t in expected))}
        print(f"{name}: {manifest['fixtures'][name]}", file=sys.stderr)
    json.dump(manifest, open(os.path.join(OUT, "manifest.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
