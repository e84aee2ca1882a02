"""vLLM general plugin registering MoEPress model classes.

Loaded by vllm.plugins.load_general_plugins() in every vLLM process through the
`vllm.general_plugins` entry point (see pyproject.toml). Must be idempotent.
"""
import os

# the stock architecture names MoEPress checkpoints keep in config.json, for which models.py builds a class
STOCK = ("MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM", "DeepseekV2ForCausalLM")


def register() -> None:
    from vllm import ModelRegistry

    for arch in STOCK:   # lazy "module:class": nothing heavy is imported at plugin load
        target = f"moepress_vllm.models:MoEPress{arch}"
        ModelRegistry.register_model("MoEPress" + arch, target)
        # The MoEPress classes behave exactly like the stock ones when config.json has no moepress section, so
        # by default they also take over the stock names: a compressed checkpoint then loads with no
        # hf_overrides at all.
        if os.environ.get("MOEPRESS_VLLM_OVERRIDE_STOCK", "1") != "0":
            ModelRegistry.register_model(arch, target)
