import MoETensor
import MoECheckpoint

/// Mixtral (transformers `models/mixtral/modeling_mixtral.py`): GQA attention without biases, every
/// layer an MoE block of SwiGLU experts w1 (gate), w3 (up), w2 (down); softmax routing in f32, top-k,
/// always renormalised over the chosen experts.
public enum Mixtral: ModelFamily {
    public static let modelTypes = ["mixtral"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "bos_token_id": .number(1),
        "eos_token_id": .number(2),
        "hidden_act": .string("silu"),
        "hidden_size": .number(4096),
        "intermediate_size": .number(14336),
        "max_position_embeddings": .number(131072),
        "num_attention_heads": .number(32),
        "num_experts_per_tok": .number(2),
        "num_hidden_layers": .number(32),
        "num_key_value_heads": .number(8),
        "num_local_experts": .number(8),
        "rms_norm_eps": .number(1e-05),
        "rope_theta": .number(1000000.0),
        "tie_word_embeddings": .bool(false),
        "vocab_size": .number(32000),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let experts = try c.routedExperts
        let layer = ModelDescription.Layer(experts: experts, expertIntermediate: try c.size("intermediate_size"),
                                           denseIntermediate: nil, sharedExpertIntermediate: nil, sharedExpertGated: false)
        let routing = Routing(topK: try c.size("num_experts_per_tok", default: 2), normalizeTopK: true)
        return try c.baseDescription(architectureFallback: "MixtralForCausalLM", routing: routing,
                                     layers: Array(repeating: layer, count: try c.layerCount))
    }

    /// v4 (and what `save_pretrained` writes) names the block `block_sparse_moe`; v5's in-memory name is `mlp`.
    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        var b = NameTableBuilder(description: d, has: has)
        for l in 0..<d.numLayers {
            let v4 = "model.layers.\(l).block_sparse_moe"
            let moe = has("\(v4).gate.weight") || !has("model.layers.\(l).mlp.gate.weight") ? v4 : "model.layers.\(l).mlp"
            b.layerNorms(l)
            b.gqa(l, bias: false)
            b.feedForward(l, moe: moe, expertNames: ["w1", "w3", "w2"])
        }
        b.ends()
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
