"""Per-layer expert counts for vLLM's Mixtral and Qwen2-MoE implementations.

MoEPress writes `"moepress": {"experts_per_layer": [n_0, ..., n_{L-1}]}` (null for
dense layers) into config.json and sets the global expert count to max(n_i).
vLLM's models build every decoder layer from the one shared hf_config, so each
layer's MoE (GateLinear router + FusedMoE runner) would get the global count.
Here each decoder layer is built from a shallow copy of the config whose expert
count is that layer's own; the layer index comes from the layer's prefix
("model.layers.<i>"). Everything else (attention, FusedMoE, GateLinear, weight
loading) is vLLM's own code: RoutedExperts.load_weights builds its expert
mapping from its own layer's count, and the router's weight has n_i rows.
"""
from __future__ import annotations

import contextlib
import copy

from vllm.model_executor.models import mixtral, qwen2_moe
from vllm.model_executor.models.utils import extract_layer_index


def experts_per_layer(config) -> list | None:
    section = getattr(config, "moepress", None) or {}
    unsupported = sorted(k for k in section if k not in ("experts_per_layer", "low_rank") and section[k] is not None)
    if unsupported:  # compressed_experts change the expert math itself
        raise NotImplementedError(f"moepress_vllm: config.json moepress.{unsupported} is not supported")
    counts = section.get("experts_per_layer") if isinstance(section, dict) else None
    if counts is None:
        return None
    if len(counts) != config.num_hidden_layers:
        raise ValueError(
            f"moepress.experts_per_layer has {len(counts)} entries for "
            f"{config.num_hidden_layers} layers")
    return list(counts)


def layer_config(config, prefix: str, key: str, is_moe):
    """The config a decoder layer at `prefix` is built from: the shared one, or a
    shallow copy with `key` set to this layer's expert count."""
    counts = experts_per_layer(config)
    if counts is None:
        return config
    i = extract_layer_index(prefix)
    n = counts[i]
    if (n is None) != (not is_moe(config, i)):
        raise ValueError(
            f"moepress.experts_per_layer[{i}] = {n} does not match layer {i} being "
            f"{'an MoE' if is_moe(config, i) else 'a dense'} layer")
    if n is None:
        return config
    top_k = config.num_experts_per_tok
    if not (top_k <= n <= getattr(config, key)):
        raise ValueError(f"layer {i}: {n} experts, need top-k {top_k} <= n <= {key}")
    c = copy.copy(config)  # shallow: shares rope/quant dicts, only `key` differs
    setattr(c, key, n)
    return c


def _check_no_eplb(vllm_config, config):
    if experts_per_layer(config) and vllm_config.parallel_config.enable_eplb:
        raise ValueError("MoEPress: EPLB is not supported with per-layer expert counts")


@contextlib.contextmanager
def _layer_class(module, name: str, cls):
    """Swap the decoder-layer class that vLLM's model __init__ looks up by global
    name (mixtral.py:326 / qwen2_moe.py:380) while the model is constructed."""
    old = getattr(module, name)  # AttributeError if vLLM renamed it: fail loudly
    setattr(module, name, cls)
    try:
        yield
    finally:
        setattr(module, name, old)


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


# ---------------------------------------------------------------- Mixtral

class MoEPressMixtralDecoderLayer(mixtral.MixtralDecoderLayer):
    def __init__(self, config, cache_config=None, quant_config=None, prefix="", enable_eplb=False):
        config = layer_config(config, prefix, "num_local_experts", lambda c, i: True)
        super().__init__(config, cache_config, quant_config=quant_config, prefix=prefix,
                         enable_eplb=enable_eplb)


class MoEPressMixtralForCausalLM(mixtral.MixtralForCausalLM):
    def __init__(self, *, vllm_config, prefix: str = ""):
        _check_no_eplb(vllm_config, vllm_config.model_config.hf_config)
        with _layer_class(mixtral, "MixtralDecoderLayer", MoEPressMixtralDecoderLayer):
            super().__init__(vllm_config=vllm_config, prefix=prefix)

    def load_weights(self, weights):
        return super().load_weights(dense_weights(weights))


# ---------------------------------------------------------------- Qwen2-MoE

def _qwen2_is_moe(config, i: int) -> bool:  # mirrors qwen2_moe.py:314-320
    mlp_only = getattr(config, "mlp_only_layers", None) or []
    return i not in mlp_only and config.num_experts > 0 and (i + 1) % config.decoder_sparse_step == 0


class MoEPressQwen2MoeDecoderLayer(qwen2_moe.Qwen2MoeDecoderLayer):
    def __init__(self, config, cache_config=None, quant_config=None, prefix=""):
        config = layer_config(config, prefix, "num_experts", _qwen2_is_moe)
        super().__init__(config=config, cache_config=cache_config, quant_config=quant_config,
                         prefix=prefix)


class MoEPressQwen2MoeForCausalLM(qwen2_moe.Qwen2MoeForCausalLM):
    def __init__(self, *, vllm_config, prefix: str = ""):
        _check_no_eplb(vllm_config, vllm_config.model_config.hf_config)
        with _layer_class(qwen2_moe, "Qwen2MoeDecoderLayer", MoEPressQwen2MoeDecoderLayer):
            super().__init__(vllm_config=vllm_config, prefix=prefix)

    def load_weights(self, weights):
        return super().load_weights(dense_weights(weights))
