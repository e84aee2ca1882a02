import Foundation
import MoECheckpoint

/// The `modeling_moepress.py` every factorised checkpoint carries, so stock HF transformers (v5) loads it with
/// `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`: the family's own model class loads
/// every tensor it knows, then each MoE layer's experts module is swapped for one running each projection
/// as two linears (or one, where the checkpoint keeps `.weight`). `tools/oracle/check_lowrank.py` checks its
/// logits against MoEPress's runtime.
public enum HFRemoteCode {
    public static let fileName = "modeling_moepress.py"
    static let autoMap = "\"auto_map\": {\"AutoModelForCausalLM\": \"modeling_moepress.MoEPressForCausalLM\"}"

    /// config.json text with MoEPress's `auto_map` (replacing one the source had, e.g. DeepSeek's remote code).
    public static func settingAutoMap(_ text: String) -> String {
        var text = removingAutoMap(text)
        guard let close = text.lastIndex(of: "}") else { return text }
        var head = String(text[..<close])
        while head.last?.isWhitespace == true { head.removeLast() }
        text = head + ",\n  " + autoMap + "\n}\n"
        return text
    }

    /// config.json of a compressed-experts result (K main experts, with remote code), or of the plain top-K
    /// baseline (`num_experts_per_tok` set to K), and the files to write beside it.
    public static func compressedExpertsOutput(mainExperts k: Int, plainTopK: Bool) -> (edit: @Sendable (String) -> String, files: [String: Data]) {
        if plainTopK {
            return ({ $0.replacingOccurrences(of: #""num_experts_per_tok"\s*:\s*[0-9]+"#, with: "\"num_experts_per_tok\": \(k)", options: .regularExpression) }, [:])
        }
        return ({ settingAutoMap(CheckpointOutput.settingMoEPressEntry($0, key: "compressed_experts", json: "{\"main_experts\": \(k)}")) },
                [fileName: Data(source.utf8)])
    }

    public static func removingAutoMap(_ text: String) -> String { HFConfig.removingObjectEntry(text, "auto_map") }

    public static let source = #"""
# Written by `moepress decompose`. Lets HF transformers (v5) load this factorised checkpoint:
#     AutoModelForCausalLM.from_pretrained(this_folder, trust_remote_code=True)
# Routed-expert projections stored as `<name>.lowrank_a` [out, r] and `<name>.lowrank_b` [r, in] run as
# x -> (x B^T) A^T; projections stored as `<name>.weight` run as one linear. Every other tensor is loaded by
# the family's stock model class. Compressed-experts checkpoints (`<expert>.ce_gate/_up/_mid` vectors and
# "moepress.compressed_experts") run their main experts modulated by the auxiliary ones' vectors.
# `moepress export --dense` writes a checkpoint that needs no remote code.
import glob
import os
import re

import torch
from torch import nn
from safetensors import safe_open
from transformers import AutoConfig
from transformers.activations import ACT2FN
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

_EXPERT = re.compile(r"\.layers\.(\d+)\..*\.experts\.(\d+)\.(\w+)\.(weight|lowrank_a|lowrank_b|bias)$")
_CE = re.compile(r"\.layers\.(\d+)\..*\.experts\.(\d+)\.(ce_gate|ce_up|ce_mid)$")
_ROUTER = re.compile(r"\.layers\.(\d+)\.[a-z_]+\.(gate|router)\.(weight|bias|e_score_correction_bias)$")
# Fused-only experts (gpt-oss): whole-layer tensors, bf16-style or MXFP4 blocks and scales.
_FUSED = re.compile(r"\.layers\.(\d+)\.mlp\.experts\.((?:gate_up|down)_proj(?:_bias|_blocks|_scales)?)$")
_FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def _dequantize_mxfp4(blocks, scales, dtype):
    """[E, rows, cols/32, 16] codes + [E, rows, cols/32] exponents -> [E, cols, rows] (as transformers does)."""
    lut = torch.tensor(_FP4, dtype=torch.float32)
    b = blocks.to(torch.int64)
    vals = torch.stack([lut[b & 0x0F], lut[b >> 4]], dim=-1).reshape(*blocks.shape[:-1], 32)
    vals = torch.ldexp(vals, (scales.to(torch.int32) - 127)[..., None].to(torch.float32))
    return vals.reshape(*blocks.shape[:-2], -1).transpose(1, 2).contiguous().to(dtype)
_KIND = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up", "w2": "down", "down_proj": "down"}


class LowRankLinear(nn.Module):
    def __init__(self, a, b, bias=None):
        super().__init__()
        self.lowrank_a = nn.Parameter(a, requires_grad=False)
        self.lowrank_b = nn.Parameter(b, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x):
        return nn.functional.linear(nn.functional.linear(x, self.lowrank_b), self.lowrank_a, self.bias)


class DenseLinear(nn.Module):
    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def _gated(config):
    """The expert's gated unit: act(gate) * up, or gpt-oss's clamped SwiGLU ((up + 1) * gate * sigmoid(alpha * gate),
    gate clamped above and up on both sides at swiglu_limit)."""
    if config.model_type == "gpt_oss":
        alpha, limit = config.swiglu_alpha, config.swiglu_limit

        def glu(g, u):
            g = g.clamp(min=None, max=limit)
            return (u.clamp(min=-limit, max=limit) + 1) * (g * torch.sigmoid(g * alpha))
        return glu
    act = ACT2FN[config.hidden_act]
    return lambda g, u: act(g) * u


class MoEPressExperts(nn.Module):
    """Same call as transformers' fused experts modules: (hidden_states, top_k_index, top_k_weights).
    With compressed experts (He et al. 2025), only the first `main` of the top-k experts run; the others'
    vectors, mixed by their weights renormalised among themselves, scale the main experts' gate and up inputs
    and intermediate activation."""

    def __init__(self, experts, glu, ce=None, main=None):
        super().__init__()
        self.experts = nn.ModuleList(nn.ModuleDict(e) for e in experts)
        self.num_experts = len(experts)
        self.glu = glu
        self.main = main
        if ce is not None:
            self.ce_gate = nn.Parameter(ce["ce_gate"], requires_grad=False)
            self.ce_up = nn.Parameter(ce["ce_up"], requires_grad=False)
            self.ce_mid = nn.Parameter(ce["ce_mid"], requires_grad=False)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        k = top_k_index.shape[1]
        main = min(self.main or k, k)
        mods = None
        if main < k and hasattr(self, "ce_gate"):
            # The main experts are the largest weights (DeepSeek's routers return their top-k unsorted).
            order = torch.sort(top_k_weights, dim=-1, descending=True, stable=True).indices
            top_k_index, top_k_weights = top_k_index.gather(1, order), top_k_weights.gather(1, order)
            aux, wa = top_k_index[:, main:], top_k_weights[:, main:]
            alpha = (wa / (wa.sum(-1, keepdim=True) + 1e-6))[..., None]
            mods = ((alpha * self.ce_gate[aux]).sum(1), (alpha * self.ce_up[aux]).sum(1), (alpha * self.ce_mid[aux]).sum(1))
        for e in range(self.num_experts):
            token_idx, slot = torch.where(top_k_index[:, :main] == e)
            if token_idx.numel() == 0:
                continue
            p = self.experts[e]
            x = hidden_states[token_idx]
            if mods is None:
                y = p["down"](self.glu(p["gate"](x), p["up"](x)))
            else:
                cg, cu, cm = (m[token_idx] for m in mods)
                y = p["down"](self.glu(p["gate"](x * cg), p["up"](x * cu)) * cm)
            y = y * top_k_weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out


class MoEPressForCausalLM:
    """A loader, not a model class: `from_pretrained` returns the stock model with low-rank experts."""

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModelForCausalLM"):
        pass

    @classmethod
    def from_pretrained(cls, path, *args, config=None, **kwargs):
        if not os.path.isdir(path):
            raise ValueError(f"{path}: MoEPress low-rank checkpoints load from a local folder")
        config = config or AutoConfig.from_pretrained(path)
        kwargs.pop("trust_remote_code", None)
        stock = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        # The stock class loads everything but the routed experts, which it is told to set aside (renamed
        # before its own expert-merging conversions see them) and which are loaded below.
        quiet = type(stock.__name__, (stock,), {
            "_keys_to_ignore_on_load_unexpected": [r"\.moepress_experts\."],
            "_keys_to_ignore_on_load_missing": [r"\.experts\."],
        })
        # Pruned by MoE-I² or MoEITS, layers may keep different numbers of experts; the config holds the largest
        # and the smaller routers are replaced below.
        uneven = bool((getattr(config, "moepress", None) or {}).get("experts_per_layer"))
        model = quiet.from_pretrained(path, *args, config=config, key_mapping={r"\.experts\.(\d+)\.": r".moepress_experts.\1."},
                                      ignore_mismatched_sizes=uneven, **kwargs)
        dtype = next(model.parameters()).dtype
        found, routers, ce, fused = {}, {}, {}, {}
        main = ((getattr(config, "moepress", None) or {}).get("compressed_experts") or {}).get("main_experts")
        for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
            with safe_open(file, "pt") as f:
                for name in f.keys():
                    m = _EXPERT.search(name)
                    if m and m.group(3) in _KIND:
                        layer, expert, kind = int(m.group(1)), int(m.group(2)), _KIND[m.group(3)]
                        found.setdefault(layer, {}).setdefault(expert, {}).setdefault(kind, {})[m.group(4)] = f.get_tensor(name).to(dtype)
                    c = _CE.search(name)
                    if c:
                        ce.setdefault(int(c.group(1)), {}).setdefault(c.group(3), {})[int(c.group(2))] = f.get_tensor(name).to(dtype)
                    r = _ROUTER.search(name)
                    if r and uneven:
                        routers.setdefault(int(r.group(1)), {"module": r.group(2)})[r.group(3)] = f.get_tensor(name)
                    u = _FUSED.search(name)
                    if u and uneven:
                        fused.setdefault(int(u.group(1)), {})[u.group(2)] = f.get_tensor(name)
        glu = _gated(config)
        layers = model.get_decoder().layers
        for layer, parts in sorted(routers.items()):
            gate = getattr(layers[layer].mlp, parts["module"])
            gate.weight = nn.Parameter(parts["weight"].to(dtype), requires_grad=False)
            gate.num_experts = parts["weight"].shape[0]
            if "bias" in parts:
                gate.bias = nn.Parameter(parts["bias"].to(dtype), requires_grad=False)
            if "e_score_correction_bias" in parts:
                gate.e_score_correction_bias = parts["e_score_correction_bias"].to(gate.e_score_correction_bias.dtype)
        for layer, parts in sorted(fused.items()):
            # A fused experts module keeps its class; its tensors are set to this layer's expert count.
            experts = layers[layer].mlp.experts
            for proj in ("gate_up_proj", "down_proj"):
                w = parts.get(proj)
                if w is None:
                    w = _dequantize_mxfp4(parts[proj + "_blocks"], parts[proj + "_scales"], dtype)
                setattr(experts, proj, nn.Parameter(w.to(dtype), requires_grad=False))
                setattr(experts, proj + "_bias", nn.Parameter(parts[proj + "_bias"].to(dtype), requires_grad=False))
            experts.num_experts = experts.gate_up_proj.shape[0]
            experts.moepress_resized = True
        for layer, experts in sorted(found.items()):
            modules = []
            for e in range(len(experts)):
                parts = {}
                for kind in ("gate", "up", "down"):
                    t = experts[e][kind]
                    bias = t.get("bias")
                    parts[kind] = LowRankLinear(t["lowrank_a"], t["lowrank_b"], bias) if "lowrank_a" in t else DenseLinear(t["weight"], bias)
                modules.append(parts)
            vectors = None
            if layer in ce:
                vectors = {kind: torch.stack([v[e] for e in range(len(experts))]) for kind, v in ce[layer].items()}
            layers[layer].mlp.experts = MoEPressExperts(modules, glu, vectors, main)
        return model
"""#
}
