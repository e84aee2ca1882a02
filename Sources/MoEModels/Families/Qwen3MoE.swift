import MoETensor
import MoECheckpoint

/// Qwen3-MoE (transformers `models/qwen3_moe/modeling_qwen3_moe.py`): like Qwen2-MoE without the shared
/// expert and without q/k/v biases (unless `attention_bias`), with RMSNorm on each query and key head
/// before RoPE and an explicit `head_dim`.
public enum Qwen3MoE: ModelFamily {
    public static let modelTypes = ["qwen3_moe"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "attention_bias": .bool(false),
        "decoder_sparse_step": .number(1),
        "hidden_act": .string("silu"),
        "hidden_size": .number(2048),
        "intermediate_size": .number(6144),
        "max_position_embeddings": .number(32768),
        "moe_intermediate_size": .number(768),
        "norm_topk_prob": .bool(false),
        "num_attention_heads": .number(32),
        "num_experts": .number(128),
        "num_experts_per_tok": .number(8),
        "num_hidden_layers": .number(24),
        "num_key_value_heads": .number(4),
        "rms_norm_eps": .number(1e-06),
        "rope_theta": .number(10000.0),
        "tie_word_embeddings": .bool(false),
        "use_sliding_window": .bool(false),
        "vocab_size": .number(151936),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let experts = try c.routedExperts
        let step = try c.size("decoder_sparse_step", default: 1)
        let mlpOnly = Set(try c.intList("mlp_only_layers"))
        let layers = try (0..<c.layerCount).map { i -> ModelDescription.Layer in
            let moe = !mlpOnly.contains(i) && experts > 0 && (i + 1) % max(step, 1) == 0
            return ModelDescription.Layer(experts: moe ? experts : nil, expertIntermediate: try c.size("moe_intermediate_size"),
                                          denseIntermediate: moe ? nil : try c.size("intermediate_size"),
                                          sharedExpertIntermediate: nil, sharedExpertGated: false)
        }
        let routing = Routing(topK: try c.size("num_experts_per_tok"), normalizeTopK: try c.bool("norm_topk_prob", default: false))
        return try c.baseDescription(architectureFallback: "Qwen3MoeForCausalLM", routing: routing, layers: layers)
    }

    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        var b = NameTableBuilder(description: d, has: has)
        let bias = try c.bool("attention_bias", default: false)
        for l in 0..<d.numLayers {
            b.layerNorms(l)
            b.gqa(l, bias: bias, oBias: bias, qNorm: d.headDim, kNorm: d.headDim)
            b.feedForward(l, moe: "model.layers.\(l).mlp")
        }
        b.ends()
        return b.table
    }

    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        try c.attentionConfig(d, windows: c.uniformWindows(d, applied: c.bool("use_sliding_window", default: false)))
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let a = try attention(c, description: d)
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: a.rope, normKind: .perHead, slidingWindow: a.windows[l]) }
    }
}
