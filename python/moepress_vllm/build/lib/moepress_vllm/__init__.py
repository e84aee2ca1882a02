"""vLLM general plugin registering MoEPress model classes.

Loaded by vllm.plugins.load_general_plugins() in every vLLM process through the
`vllm.general_plugins` entry point (see pyproject.toml). Must be idempotent.
"""
import os

# architecture name -> "module:class" (lazy: nothing heavy is imported at plugin load)
_CLASSES = {
    "MoEPressMixtralForCausalLM": "moepress_vllm.models:MoEPressMixtralForCausalLM",
    "MoEPressQwen2MoeForCausalLM": "moepress_vllm.models:MoEPressQwen2MoeForCausalLM",
}
# stock architecture names that MoEPress checkpoints keep in config.json
_STOCK = {
    "MixtralForCausalLM": _CLASSES["MoEPressMixtralForCausalLM"],
    "Qwen2MoeForCausalLM": _CLASSES["MoEPressQwen2MoeForCausalLM"],
}


def register() -> None:
    from vllm import ModelRegistry

    for arch, target in _CLASSES.items():
        ModelRegistry.register_model(arch, target)
    # The MoEPress classes behave exactly like the stock ones when config.json has
    # no moepress.experts_per_layer, so by default they also take over the stock
    # names: a pruned checkpoint then loads with no hf_overrides at all.
    if os.environ.get("MOEPRESS_VLLM_OVERRIDE_STOCK", "1") != "0":
        for arch, target in _STOCK.items():
            ModelRegistry.register_model(arch, target)
