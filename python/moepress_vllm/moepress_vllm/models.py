"""MoEPress checkpoints in vLLM's own model implementations.

What MoEPress writes beyond a stock checkpoint, and how each is served here:
- `"moepress": {"experts_per_layer": [n_0, ..., n_{L-1}]}` in config.json (null for dense layers), with the
  global expert count set to max(n_i). vLLM builds every decoder layer from the one shared hf_config, so while
  decoder layer i is being constructed its expert count is set to n_i on that config (and put back after):
  vLLM's router (GateLinear) and FusedMoE runner get this layer's size, and weight loading, attention and
  tensor parallelism stay vLLM's own code (checked on two CPU workers; vLLM 0.32's CPU expert parallelism crashes
  on unpruned models too, so it is untested; EPLB, whose metadata is global, is refused).
- Low-rank experts (`<name>.lowrank_a` [out, r], `<name>.lowrank_b` [r, in]) are multiplied back into
  `<name>.weight` as the weights stream in (`dense_weights`).
- Compressed experts (`"moepress": {"compressed_experts": {"main_experts": K}}` and per-expert `ce_gate`,
  `ce_up`, `ce_mid` vectors, He et al. 2025): each MoE block is replaced after construction by
  `CompressedExpertsBlock`, which keeps vLLM's router and shared expert and runs the K main experts with the
  auxiliary experts' vectors modulating their gate and up inputs and their intermediate activation. vLLM's
  fused-MoE kernels take one input per token for gate and up together, so the main experts run as per-expert
  matrix products in PyTorch (one tensor-parallel rank).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vllm.model_executor.models import deepseek_v2, mixtral, olmoe, qwen2_moe, qwen3_moe
from vllm.model_executor.models.utils import extract_layer_index

_KNOWN = ("experts_per_layer", "low_rank", "compressed_experts")


def moepress_section(config) -> dict:
    section = getattr(config, "moepress", None) or {}
    if not isinstance(section, dict):
        raise ValueError("config.json: `moepress` must be an object")
    unknown = sorted(k for k in section if k not in _KNOWN and section[k] is not None)
    if unknown:
        raise NotImplementedError(f"moepress_vllm: config.json moepress.{unknown} is not supported")
    return section


def experts_per_layer(config) -> list | None:
    counts = moepress_section(config).get("experts_per_layer")
    if counts is None:
        return None
    if len(counts) != config.num_hidden_layers:
        raise ValueError(f"config.json: moepress.experts_per_layer has {len(counts)} entries for "
                         f"{config.num_hidden_layers} layers")
    return list(counts)


def main_experts(config) -> int | None:
    ce = moepress_section(config).get("compressed_experts")
    return None if ce is None else int(ce["main_experts"])


def _all_moe(config, i: int) -> bool:
    return True


def _qwen_is_moe(config, i: int) -> bool:  # mirrors qwen2_moe.py / qwen3_moe.py's decoder layers
    mlp_only = getattr(config, "mlp_only_layers", None) or []
    return i not in mlp_only and config.num_experts > 0 and (i + 1) % config.decoder_sparse_step == 0


def _deepseek_is_moe(config, i: int) -> bool:  # mirrors deepseek_v2.py's decoder layer
    return (config.n_routed_experts is not None and i >= config.first_k_dense_replace
            and i % getattr(config, "moe_layer_freq", 1) == 0)


@dataclass(frozen=True)
class Family:
    """What differs between vLLM's MoE model files, as far as MoEPress's checkpoints are concerned."""
    module: ModuleType        # vLLM's model file; its `make_layers` builds the decoder layers
    stock: str                # the CausalLM class name in it (and in config.json's architectures)
    count_key: str            # config attribute holding the number of routed experts
    block: str                # decoder-layer attribute holding the MoE block
    is_moe: Callable          # (config, layer index) -> whether that layer is an MoE layer
    compressed_experts: bool = True   # routing is softmax top-k (renormalised or not) and one `shared_expert`


FAMILIES = [
    Family(mixtral, "MixtralForCausalLM", "num_local_experts", "block_sparse_moe", _all_moe),
    Family(qwen2_moe, "Qwen2MoeForCausalLM", "num_experts", "mlp", _qwen_is_moe),
    Family(qwen3_moe, "Qwen3MoeForCausalLM", "num_experts", "mlp", _qwen_is_moe),
    Family(olmoe, "OlmoeForCausalLM", "num_experts", "mlp", _all_moe),
    # Checked in f32 with vLLM's CPU_MLA attention backend (its AMX one takes bf16 weights only).
    Family(deepseek_v2, "DeepseekV2ForCausalLM", "n_routed_experts", "mlp", _deepseek_is_moe, compressed_experts=False),
]


def _configs(vllm_config) -> list:
    """The config objects vLLM's model code reads (hf_config, and hf_text_config when it is another object)."""
    mc = vllm_config.model_config
    return list({id(c): c for c in (mc.hf_config, mc.hf_text_config)}.values())


@contextlib.contextmanager
def per_layer_counts(family: Family, vllm_config):
    """While the model is constructed, decoder layer i sees its own expert count n_i on the shared config."""
    config = vllm_config.model_config.hf_config
    counts = experts_per_layer(config)
    if counts is None:
        yield
        return
    if vllm_config.parallel_config.enable_eplb:
        raise ValueError("moepress_vllm: EPLB is not supported with per-layer expert counts")
    configs, original = _configs(vllm_config), family.module.make_layers  # AttributeError if vLLM renames it

    def build(layer_fn):
        def fn(prefix):
            i = extract_layer_index(prefix)
            n = counts[i]
            if (n is None) != (not family.is_moe(config, i)):
                raise ValueError(f"config.json: moepress.experts_per_layer[{i}] = {n}, but layer {i} is "
                                 f"{'an MoE' if family.is_moe(config, i) else 'a dense'} layer")
            if n is None:
                return layer_fn(prefix)
            top_k, most = config.num_experts_per_tok, getattr(config, family.count_key)
            if not top_k <= n <= most:
                raise ValueError(f"config.json: layer {i} keeps {n} experts; need top-k {top_k} <= n <= {most}")
            for c in configs:
                setattr(c, family.count_key, n)
            try:
                return layer_fn(prefix)
            finally:
                for c in configs:
                    setattr(c, family.count_key, most)
        return fn

    family.module.make_layers = lambda num, layer_fn, prefix: original(num, build(layer_fn), prefix)
    try:
        yield
    finally:
        family.module.make_layers = original


def dense_weights(weights):
    """The checkpoint's tensors with every low-rank pair (`<name>.lowrank_a` [out, r], `<name>.lowrank_b` [r, in], from
    `moepress decompose`) multiplied back into `<name>.weight` as it streams past: vLLM's fused-MoE kernels take
    whole expert matrices, so low-rank experts are served at their dense size and speed (no gain over the
    uncompressed layer; MoEPress's own runtime and HF with modeling_moepress.py run the two skinny products)."""
    pending = {}
    for name, tensor in weights:
        for suffix in (".lowrank_a", ".lowrank_b"):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                pair = pending.setdefault(base, {})
                pair[suffix] = tensor
                if len(pair) == 2:
                    del pending[base]
                    a, b = pair[".lowrank_a"], pair[".lowrank_b"]
                    yield base + ".weight", a.float() @ b.float()   # in f32; vLLM casts to the dtype it serves in
                break
        else:
            yield name, tensor
    if pending:
        raise ValueError(f"moepress_vllm: low-rank factors without their pair: {sorted(pending)[:3]}")


# ---------------------------------------------------------------- compressed experts

_PARAM = {"w1": "gate_proj", "gate_proj": "gate_proj", "w3": "up_proj", "up_proj": "up_proj", "w2": "down_proj",
          "down_proj": "down_proj", "ce_gate": "ce_gate", "ce_up": "ce_up", "ce_mid": "ce_mid"}
_EXPERT_TENSOR = re.compile(r"^model\.layers\.(\d+)\.\w+\.experts\.(\d+)\.(\w+?)(?:\.weight)?$")


@torch.library.custom_op("moepress::compressed_experts", mutates_args=())
def compressed_experts(x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor, gate_proj: torch.Tensor,
                       up_proj: torch.Tensor, down_proj: torch.Tensor, ce_gate: torch.Tensor, ce_up: torch.Tensor,
                       ce_mid: torch.Tensor, main: int) -> torch.Tensor:
    """The routed output of compressed experts for tokens `x` [T, hidden] with their top-k `weights` and expert
    `index` [T, k], largest first. A custom op: vLLM's torch.compile treats it as one call (its per-expert token
    gathering depends on the data), so the model also runs compiled, not only with enforce_eager."""
    main_index, aux, wa = index[:, :main], index[:, main:], weights[:, main:]
    alpha = (wa / (wa.sum(dim=-1, keepdim=True) + 1e-6))[..., None]
    cg, cu, cm = ((alpha * v[aux]).sum(dim=1) for v in (ce_gate, ce_up, ce_mid))
    out = torch.zeros_like(x)
    for e in torch.unique(main_index).tolist():
        tok, slot = torch.where(main_index == e)
        xe = x[tok]
        h = F.silu(F.linear(xe * cg[tok], gate_proj[e])) * F.linear(xe * cu[tok], up_proj[e])
        out.index_add_(0, tok, F.linear(h * cm[tok], down_proj[e]) * weights[tok, slot, None])
    return out


@compressed_experts.register_fake
def _(x, weights, index, gate_proj, up_proj, down_proj, ce_gate, ce_up, ce_mid, main):
    return torch.empty_like(x)


class CompressedExpertsBlock(nn.Module):
    """A decoder layer's MoE block for compressed experts: vLLM's router `gate` (and the shared expert with its
    gate, when the family has one) taken from the block it replaces; the routed experts as [E, ., .] tensors
    `gate_proj`, `up_proj`, `down_proj` with their vectors `ce_gate`, `ce_up` [E, hidden], `ce_mid` [E, inter].

    Routing as HF: softmax over the experts, top-k, renormalised when the config says so (`norm_topk_prob`;
    always for Mixtral, which has no such key). Only the K largest of the top-k run; the other weights,
    renormalised among themselves (+1e-6), mix the auxiliary experts' vectors, which scale the main experts'
    gate and up inputs and their activation before the down projection."""

    def __init__(self, block: nn.Module, config, main: int, layer: int):
        super().__init__()
        from vllm.distributed import get_tensor_model_parallel_world_size
        if get_tensor_model_parallel_world_size() != 1:
            raise NotImplementedError("moepress_vllm: compressed experts run on one tensor-parallel rank")
        if config.hidden_act != "silu":
            raise NotImplementedError(f"moepress_vllm: compressed experts with hidden_act {config.hidden_act!r}")
        self.gate = block.gate
        self.shared_expert_gate = getattr(block, "shared_expert_gate", None)
        self.shared_expert = getattr(block, "shared_expert", None)
        self.layer, self.top_k, self.main = layer, config.num_experts_per_tok, main
        if not 1 <= main < self.top_k:
            raise ValueError(f"config.json: moepress.compressed_experts.main_experts = {main}; need 1 <= K < top-k "
                             f"{self.top_k}")
        self.renormalize = bool(getattr(config, "norm_topk_prob", True))
        n, h = self.gate.weight.shape
        i = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
        shapes = {"gate_proj": (n, i, h), "up_proj": (n, i, h), "down_proj": (n, h, i), "ce_gate": (n, h),
                  "ce_up": (n, h), "ce_mid": (n, i)}
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=self.gate.weight.dtype),
                                                       requires_grad=False))
        self._loaded = {name: set() for name in shapes}

    def load(self, expert: int, param_name: str, tensor: torch.Tensor, name: str) -> str:
        param = getattr(self, param_name)
        if expert >= param.shape[0] or tuple(tensor.shape) != tuple(param.shape[1:]):
            raise ValueError(f"moepress_vllm: {name} has shape {list(tensor.shape)}; layer {self.layer} holds "
                             f"{param.shape[0]} experts of {list(param.shape[1:])}")
        param.data[expert].copy_(tensor)
        self._loaded[param_name].add(expert)
        return param_name

    def check_loaded(self):
        n = self.gate.weight.shape[0]
        for name, experts in self._loaded.items():
            if len(experts) != n:
                raise ValueError(f"moepress_vllm: layer {self.layer}: no {name} for experts "
                                 f"{sorted(set(range(n)) - experts)[:3]} in the checkpoint")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        logits, _ = self.gate(x)
        weights, index = torch.topk(torch.softmax(logits.float(), dim=-1), self.top_k, dim=-1)  # largest first
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        out = torch.ops.moepress.compressed_experts(x, weights, index, self.gate_proj, self.up_proj, self.down_proj,
                                                    self.ce_gate, self.ce_up, self.ce_mid, self.main)
        if self.shared_expert is not None:
            out = out + self.shared_expert(x)
        return out.view(shape)


def _install_compressed_experts(model: nn.Module, family: Family, vllm_config) -> dict:
    """Every MoE block replaced by a CompressedExpertsBlock (when config.json asks for compressed experts), and
    the replaced blocks' fused-MoE layers dropped from vLLM's forward context; returns {layer index: block}."""
    config = vllm_config.model_config.hf_config
    main = main_experts(config)
    if main is None:
        return {}
    if not family.compressed_experts:
        raise NotImplementedError(f"moepress_vllm: compressed experts are not served for {family.stock} (grouped or "
                                  "biased routing, scaled routed output); MoEPress and HF with modeling_moepress.py run them")
    if vllm_config.parallel_config.enable_eplb:
        raise ValueError("moepress_vllm: EPLB is not supported with compressed experts")
    context = vllm_config.compilation_config.static_forward_context
    blocks = {}
    for i, layer in enumerate(model.model.layers):
        block = getattr(layer, family.block, None)
        if block is None or not hasattr(block, "experts"):
            continue   # a dense layer, or a layer another pipeline stage holds
        replaced = {id(m) for m in block.experts.modules()}
        for key in [k for k, v in context.items() if id(v) in replaced]:
            del context[key]
        blocks[i] = CompressedExpertsBlock(block, config, main, i)
        setattr(layer, family.block, blocks[i])
    return blocks


def _causal_lm(family: Family) -> type:
    """vLLM's CausalLM class for `family`, built with per-layer expert counts and compressed experts, and loading
    low-rank factors and compressed experts' tensors. Without a moepress section in config.json it is the stock
    class."""
    stock = getattr(family.module, family.stock)

    def __init__(self, *, vllm_config, prefix: str = ""):
        with per_layer_counts(family, vllm_config):
            stock.__init__(self, vllm_config=vllm_config, prefix=prefix)
        self._moepress_ce = _install_compressed_experts(self, family, vllm_config)

    def load_weights(self, weights):
        blocks, taken = self._moepress_ce, set()

        def rest():
            for name, tensor in dense_weights(weights):
                m = _EXPERT_TENSOR.match(name) if blocks else None
                if m and int(m.group(1)) in blocks and m.group(3) in _PARAM:
                    i = int(m.group(1))
                    param = blocks[i].load(int(m.group(2)), _PARAM[m.group(3)], tensor, name)
                    taken.add(f"model.layers.{i}.{family.block}.{param}")
                    continue
                yield name, tensor

        loaded = stock.load_weights(self, rest())
        for block in blocks.values():
            block.check_loaded()
        return set(loaded or ()) | taken

    return type("MoEPress" + family.stock, (stock,), {"__init__": __init__, "load_weights": load_weights,
                                                      "__doc__": _causal_lm.__doc__.replace("`family`", family.stock)})


for _family in FAMILIES:
    globals()["MoEPress" + _family.stock] = _causal_lm(_family)
