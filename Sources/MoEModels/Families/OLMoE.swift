import MoETensor
import MoECheckpoint

/// OLMoE (transformers `models/olmoe/modeling_olmoe.py`): GQA attention with RMSNorm over the whole
/// query and key projections (not per head), optional clamping of q/k/v (`clip_qkv`); every layer an
/// MoE block, softmax routing renormalised only when `norm_topk_prob`.
public enum OLMoE: ModelFamily {
    public static let modelTypes = ["olmoe"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "attention_bias": .bool(false),
        "eos_token_id": .number(50279),
        "hidden_act": .string("silu"),
        "hidden_size": .number(2048),
        "intermediate_size": .number(2048),
        "max_position_embeddings": .number(4096),
        "norm_topk_prob": .bool(false),
        "num_attention_heads": .number(16),
        "num_experts": .number(64),
        "num_experts_per_tok": .number(8),
        "num_hidden_layers": .number(16),
        "num_key_value_heads": .number(16),
        "rms_norm_eps": .number(1e-05),
        "rope_theta": .number(10000.0),
        "tie_word_embeddings": .bool(false),
        "vocab_size": .number(50304),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let layer = ModelDescription.Layer(experts: try c.routedExperts, expertIntermediate: try c.size("intermediate_size"),
                                           denseIntermediate: nil, sharedExpertIntermediate: nil, sharedExpertGated: false)
        let routing = Routing(topK: try c.size("num_experts_per_tok"), normalizeTopK: try c.bool("norm_topk_prob", default: false))
        return try c.baseDescription(architectureFallback: "OlmoeForCausalLM", routing: routing,
                                     layers: Array(repeating: layer, count: try c.layerCount))
    }

    /// HF sizes k_norm as (hidden / heads) · kv_heads, whatever head_dim says; `attention_bias` covers q, k, v and o.
    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        var b = NameTableBuilder(description: d, has: has)
        let bias = try c.bool("attention_bias", default: false)
        for l in 0..<d.numLayers {
            b.layerNorms(l)
            b.gqa(l, bias: bias, oBias: bias, qNorm: d.hiddenSize, kNorm: d.hiddenSize / d.heads * d.kvHeads)
            b.feedForward(l, moe: "model.layers.\(l).mlp")
        }
        b.ends()
        return b.table
    }

    /// No sliding window; `clip_qkv` null means no clipping, a number must be finite and > 0.
    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        let clip = try c.optionalDouble("clip_qkv")
        if let v = clip, !(v.isFinite && v > 0) { throw ModelError.invalidConfig("\(c.path): clip_qkv is \(v); it should be a finite number > 0, or null") }
        return try c.attentionConfig(d, windows: Array(repeating: nil, count: d.numLayers), clip: clip.map { Float($0) })
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let a = try attention(c, description: d)
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: a.rope, normKind: .full, clip: a.clip) }
    }
}
