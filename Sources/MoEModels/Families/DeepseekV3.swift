import MoETensor
import MoECheckpoint

/// DeepSeek-V3 (transformers `models/deepseek_v3/modeling_deepseek_v3.py`): V2's latent attention and
/// layer plan, with sigmoid expert scores, an `e_score_correction_bias` that steers the choice (not the
/// weights), group-limited choice by the sum of each group's two best scores (`n_group`, `topk_group`),
/// renormalisation by `norm_topk_prob` (+1e-20), then × `routed_scaling_factor`. RoPE is applied to
/// interleaved pairs when `rope_interleave` (the default). Multi-token-prediction layers are not run.
public enum DeepseekV3: ModelFamily {
    public static let modelTypes = ["deepseek_v3"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "attention_bias": .bool(false),
        "bos_token_id": .number(0),
        "eos_token_id": .number(1),
        "first_k_dense_replace": .number(3),
        "hidden_act": .string("silu"),
        "hidden_size": .number(7168),
        "intermediate_size": .number(18432),
        "kv_lora_rank": .number(512),
        "max_position_embeddings": .number(4096),
        "moe_intermediate_size": .number(2048),
        "n_group": .number(8),
        "n_routed_experts": .number(256),
        "n_shared_experts": .number(1),
        "norm_topk_prob": .bool(true),
        "num_attention_heads": .number(128),
        "num_experts_per_tok": .number(8),
        "num_hidden_layers": .number(61),
        "num_key_value_heads": .number(128),
        "q_lora_rank": .number(1536),
        "qk_nope_head_dim": .number(128),
        "qk_rope_head_dim": .number(64),
        "rms_norm_eps": .number(1e-06),
        "rope_interleave": .bool(true),
        "rope_theta": .number(10000.0),
        "routed_scaling_factor": .number(2.5),
        "tie_word_embeddings": .bool(false),
        "topk_group": .number(4),
        "v_head_dim": .number(128),
        "vocab_size": .number(129280),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let routing = Routing(scoring: .sigmoid, topK: try c.size("num_experts_per_tok"),
                              normalizeTopK: try c.bool("norm_topk_prob", default: true), normalizationEpsilon: 1e-20,
                              scalingFactor: Float(try c.double("routed_scaling_factor", default: 1)),
                              groups: try c.size("n_group", default: 1), topKGroups: try c.size("topk_group", default: 1),
                              groupScore: .top2Sum)
        return try deepseekDescription(c, routing: routing, fallback: "DeepseekV3ForCausalLM")
    }

    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        return try deepseekNames(c, d, has: has, correctionBias: true)
    }

    /// RoPE on the qk_rope_head_dim slice, adjacent pairs when `rope_interleave` (the default); no sliding window.
    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        try c.attentionConfig(d, interleaved: c.bool("rope_interleave", default: true), windows: Array(repeating: nil, count: d.numLayers))
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        return try buildDeepseek(c, weights: w, description: d, attention: attention(c, description: d))
    }
}
