import MoETensor
import MoECheckpoint

/// Phi-3.5-MoE (transformers `models/phimoe/modeling_phimoe.py`): LayerNorm (with bias) before attention, before
/// the MoE block and at the end; GQA attention with q/k/v/o biases (`attention_bias`); longrope with Phi-MoE's
/// short/long mscale; every layer an MoE block of SwiGLU experts w1 (gate), w3 (up), w2 (down) routed by
/// sparsemixer (top-2, inference form); an LM head with a bias (`lm_head_bias`).
public enum PhiMoE: ModelFamily {
    public static let modelTypes = ["phimoe"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "attention_bias": .bool(false),
        "bos_token_id": .number(1),
        "eos_token_id": .number(2),
        "hidden_act": .string("silu"),
        "hidden_size": .number(4096),
        "input_jitter_noise": .number(0.0),
        "intermediate_size": .number(6400),
        "lm_head_bias": .bool(false),
        "max_position_embeddings": .number(131072),
        "num_attention_heads": .number(32),
        "num_experts_per_tok": .number(2),
        "num_hidden_layers": .number(32),
        "num_key_value_heads": .number(8),
        "num_local_experts": .number(16),
        "rms_norm_eps": .number(1e-05),
        "rope_theta": .number(1000000.0),
        "router_jitter_noise": .number(0.01),
        "tie_word_embeddings": .bool(false),
        "vocab_size": .number(32064),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let experts = try c.routedExperts
        let layer = ModelDescription.Layer(experts: experts, expertIntermediate: try c.size("intermediate_size"),
                                           denseIntermediate: nil, sharedExpertIntermediate: nil, sharedExpertGated: false)
        let k = try c.size("num_experts_per_tok", default: 2)
        guard k == 2 else { throw ModelError.invalidConfig("\(c.path): num_experts_per_tok is \(k); Phi-MoE's sparsemixer routes exactly 2 experts") }
        let eps = try c.positive("router_jitter_noise", default: 0.01)
        let routing = Routing(scoring: .sparseMixer, topK: 2, normalizeTopK: false, jitterEpsilon: Float(eps))
        var d = try c.baseDescription(architectureFallback: "PhimoeForCausalLM", routing: routing,
                                      layers: Array(repeating: layer, count: try c.layerCount))
        d.layerNorm = true
        return d
    }

    /// Checkpoints name the block `block_sparse_moe` (transformers v5's in-memory name is `mlp`, router `router`).
    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        var b = NameTableBuilder(description: d, has: has)
        let bias = try c.bool("attention_bias", default: false)
        for l in 0..<d.numLayers {
            b.layerNorms(l)
            b.gqa(l, bias: bias, oBias: bias)
            b.feedForward(l, moe: "model.layers.\(l).block_sparse_moe", expertNames: ["w1", "w3", "w2"])
        }
        b.ends(headBias: try c.bool("lm_head_bias", default: false))
        b.table.routerModule = "mlp.router"
        return b.table
    }

    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        try c.attentionConfig(d, windows: c.uniformWindows(d))
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let a = try attention(c, description: d)
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: a.rope, slidingWindow: a.windows[l]) }
    }
}
