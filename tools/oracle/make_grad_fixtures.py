#!/usr/bin/env python3
"""Gradient oracle: for the tiny fixtures of Tests/MoEModelsTests/Fixtures (mixtral, qwen2_moe, qwen3_moe,
olmoe, deepseek_v2, deepseek_v2_qlora, deepseek_v3, phimoe, gpt_oss; in eval mode, so Phi-MoE's sparsemixer routes as at
inference), HF transformers computes the causal-LM loss of a fixed batch (labels = inputs, some set to -100, HF
shifts them) and the gradient of every parameter, in f32. Saved as Tests/MoETrainingTests/Fixtures/<name>.safetensors
under MoEPress's logical parameter names (see MoETraining's `TrainableParameters`), with "loss" as a scalar.
Fused expert tensors are split per expert. Run from the repository root after `scripts/setup.sh --oracle`.
"""
import json, os, re, sys
import torch
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file

SRC = os.path.join("Tests", "MoEModelsTests", "Fixtures")
OUT = os.path.join("Tests", "MoETrainingTests", "Fixtures")
IDS = [[3, 17, 42, 5, 88, 61, 7, 19, 33], [90, 2, 14, 14, 70, 11, 9, 23, 4]]
LABELS = [[3, 17, 42, 5, 88, 61, 7, 19, 33], [-100, -100, -100, 14, 70, 11, -100, 23, 4]]


def logical(name, grad, out):
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if name == "model.embed_tokens.weight": out["embed"] = grad; return
    if name == "model.norm.weight": out["norm"] = grad; return
    if name == "model.norm.bias": out["norm.bias"] = grad; return
    if name == "lm_head.weight": out["lm_head"] = grad; return
    if name == "lm_head.bias": out["lm_head.bias"] = grad; return
    assert m, name
    l, rest = m.group(1), m.group(2)
    p = f"layers.{l}."
    simple = {
        "input_layernorm.weight": "input_norm", "post_attention_layernorm.weight": "post_norm",
        "input_layernorm.bias": "input_norm.bias", "post_attention_layernorm.bias": "post_norm.bias",
        "mlp.router.weight": "moe.router",   # Phi-MoE's and gpt-oss's router module
        "mlp.router.bias": "moe.router.bias", "self_attn.sinks": "attn.sinks",
        "self_attn.q_norm.weight": "attn.q_norm", "self_attn.k_norm.weight": "attn.k_norm",
        "mlp.gate.weight": "moe.router", "mlp.shared_expert_gate.weight": "moe.shared_gate",
        # DeepSeek's multi-head latent attention.
        "self_attn.q_a_proj.weight": "attn.q_a", "self_attn.q_b_proj.weight": "attn.q_b",
        "self_attn.kv_a_proj_with_mqa.weight": "attn.kv_a", "self_attn.kv_b_proj.weight": "attn.kv_b",
        "self_attn.q_a_layernorm.weight": "attn.q_a_norm", "self_attn.kv_a_layernorm.weight": "attn.kv_a_norm",
    }
    if rest in simple: out[p + simple[rest]] = grad; return
    a = re.fullmatch(r"self_attn\.([qkvo])_proj\.(weight|bias)", rest)
    if a: out[p + "attn." + a.group(1) + (".bias" if a.group(2) == "bias" else "")] = grad; return
    s = re.fullmatch(r"mlp\.shared_experts?\.(gate|up|down)_proj\.weight", rest)
    if s: out[p + "moe.shared." + s.group(1)] = grad; return
    d = re.fullmatch(r"mlp\.(gate|up|down)_proj\.weight", rest)
    if d: out[p + "mlp." + d.group(1)] = grad; return
    if INPUT_MAJOR and rest in ("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj_bias"):
        # gpt-oss: [E, H, 2I] (and its bias [E, 2I]) with gate and up interleaved along the last dimension.
        bias = rest.endswith("_bias")
        for e in range(grad.shape[0]):
            for k, kind in enumerate(["gate", "up"]):
                g = grad[e][..., k::2]
                out[p + f"moe.experts.{e}.{kind}" + (".bias" if bias else "")] = (g if bias else g.T).contiguous()
        return
    if INPUT_MAJOR and rest in ("mlp.experts.down_proj", "mlp.experts.down_proj_bias"):
        bias = rest.endswith("_bias")
        for e in range(grad.shape[0]):
            out[p + f"moe.experts.{e}.down" + (".bias" if bias else "")] = (grad[e] if bias else grad[e].T).contiguous()
        return
    if rest == "mlp.experts.gate_up_proj":
        inter = grad.shape[1] // 2
        for e in range(grad.shape[0]):
            out[p + f"moe.experts.{e}.gate"] = grad[e, :inter].contiguous()
            out[p + f"moe.experts.{e}.up"] = grad[e, inter:].contiguous()
        return
    if rest == "mlp.experts.down_proj":
        for e in range(grad.shape[0]):
            out[p + f"moe.experts.{e}.down"] = grad[e].contiguous()
        return
    raise SystemExit(f"unmapped parameter {name}")


class CompressedExperts(torch.nn.Module):
    """methods.md §4.2 written directly in PyTorch over the model's own fused expert parameters: the first
    `main` top-k experts run, modulated by the aux experts' vectors mixed with weights renormalised among
    the aux experts (eps 1e-6)."""

    def __init__(self, experts, main, gen):
        super().__init__()
        self.inner, self.main = experts, main
        e, two_i, h = experts.gate_up_proj.shape
        self.inter = two_i // 2
        self.ce_gate = torch.nn.Parameter(1 + 0.3 * torch.randn(e, h, generator=gen))
        self.ce_up = torch.nn.Parameter(1 + 0.3 * torch.randn(e, h, generator=gen))
        self.ce_mid = torch.nn.Parameter(1 + 0.3 * torch.randn(e, self.inter, generator=gen))

    def forward(self, h, idx, w):
        m, i = self.main, self.inter
        aux, wa = idx[:, m:], w[:, m:]
        alpha = wa / (wa.sum(-1, keepdim=True) + 1e-6)
        cg = (alpha[..., None] * self.ce_gate[aux]).sum(1)
        cu = (alpha[..., None] * self.ce_up[aux]).sum(1)
        cm = (alpha[..., None] * self.ce_mid[aux]).sum(1)
        out = torch.zeros_like(h)
        for s in range(m):
            for e in range(self.ce_gate.shape[0]):
                rows = torch.where(idx[:, s] == e)[0]
                if rows.numel() == 0:
                    continue
                x = h[rows]
                gu = self.inner.gate_up_proj[e]
                g = torch.nn.functional.linear(x * cg[rows], gu[:i])
                u = torch.nn.functional.linear(x * cu[rows], gu[i:])
                y = torch.nn.functional.linear(torch.nn.functional.silu(g) * u * cm[rows], self.inner.down_proj[e])
                out.index_add_(0, rows, y * w[rows, s, None])
        return out


def compressed_experts_fixture(manifest):
    """qwen3_moe (top-3, renormalised) with 1 main expert and 2 auxiliary ones per token, random vectors."""
    model = AutoModelForCausalLM.from_pretrained(os.path.join(SRC, "qwen3_moe"), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    gen = torch.Generator().manual_seed(7)
    for layer in model.model.layers:
        if hasattr(layer.mlp, "experts"):
            layer.mlp.experts = CompressedExperts(layer.mlp.experts, 1, gen)
    out = model(torch.tensor(IDS), labels=torch.tensor(LABELS))
    out.loss.backward()
    tensors = {"loss": out.loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        m = re.fullmatch(r"model\.layers\.(\d+)\.mlp\.experts\.(ce_gate|ce_up|ce_mid)", pname)
        if m:
            for e in range(p.shape[0]):
                key = f"layers.{m.group(1)}.moe.experts.{e}.{m.group(2)}"
                tensors[key] = p.grad[e].contiguous()
                tensors["init." + key] = p.detach()[e].contiguous()
            continue
        logical(pname.replace(".experts.inner.", ".experts."), p.grad.detach().float(), tensors)
    save_file(tensors, os.path.join(OUT, "qwen3_moe_ce.safetensors"))
    manifest["fixtures"]["qwen3_moe_ce"] = {"loss": out.loss.item(), "main_experts": 1}
    print("qwen3_moe_ce", out.loss.item())


ONLY = set(sys.argv[1:])
INPUT_MAJOR = False   # the model being mapped stores experts input-major (gpt-oss)


def main():
    """`make_grad_fixtures.py [NAME ...]` rebuilds only those fixtures (the others' files and manifest entries stay)."""
    os.makedirs(OUT, exist_ok=True)
    manifest = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
                "ids": IDS, "labels": LABELS, "fixtures": {}}
    if ONLY:
        manifest = json.load(open(os.path.join(OUT, "manifest.json")))
    global INPUT_MAJOR
    for name in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v2_qlora", "deepseek_v3", "phimoe", "gpt_oss"]:
        if ONLY and name not in ONLY:
            continue
        model = AutoModelForCausalLM.from_pretrained(os.path.join(SRC, name), dtype=torch.float32, attn_implementation="eager")
        INPUT_MAJOR = model.config.model_type == "gpt_oss"
        model.eval()
        out = model(torch.tensor(IDS), labels=torch.tensor(LABELS))
        out.loss.backward()
        tensors = {"loss": out.loss.detach().reshape(1)}
        for pname, p in model.named_parameters():
            if p.grad is None:   # used for the routing choice only (DeepSeek-V3's e_score_correction_bias)
                continue
            logical(pname, p.grad.detach().float(), tensors)
        save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
        manifest["fixtures"][name] = {"loss": out.loss.item(), "tensors": len(tensors) - 1}
        print(name, out.loss.item(), len(tensors) - 1)
    if not ONLY or "qwen3_moe_ce" in ONLY:
        compressed_experts_fixture(manifest)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


if __name__ == "__main__":
    main()
