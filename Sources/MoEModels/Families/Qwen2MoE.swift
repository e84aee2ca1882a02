import MoETensor
import MoECheckpoint

/// Qwen2-MoE / Qwen1.5-MoE (transformers `models/qwen2_moe/modeling_qwen2_moe.py`): GQA attention with
/// q/k/v biases, MoE layers every `decoder_sparse_step` except `mlp_only_layers`, routed experts plus an
/// always-on shared expert scaled by sigmoid(shared_expert_gate(x)); softmax routing, renormalised only
/// when `norm_topk_prob`.
public enum Qwen2MoE: ModelFamily {
    public static let modelTypes = ["qwen2_moe"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "decoder_sparse_step": .number(1),
        "hidden_act": .string("silu"),
        "hidden_size": .number(2048),
        "intermediate_size": .number(5632),
        "max_position_embeddings": .number(32768),
        "max_window_layers": .number(28),
        "moe_intermediate_size": .number(1408),
        "norm_topk_prob": .bool(false),
        "num_attention_heads": .number(16),
        "num_experts": .number(60),
        "num_experts_per_tok": .number(4),
        "num_hidden_layers": .number(24),
        "num_key_value_heads": .number(16),
        "qkv_bias": .bool(true),
        "rms_norm_eps": .number(1e-06),
        "rope_theta": .number(10000.0),
        "shared_expert_intermediate_size": .number(5632),
        "sliding_window": .number(4096),
        "tie_word_embeddings": .bool(false),
        "use_sliding_window": .bool(false),
        "vocab_size": .number(151936),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let experts = try c.routedExperts
        let step = try c.size("decoder_sparse_step", default: 1)
        let mlpOnly = Set(try c.intList("mlp_only_layers"))
        let shared = try c.int("shared_expert_intermediate_size", default: 0)
        guard shared >= 0, shared <= 1 << 24 else {
            throw ModelError.invalidConfig("\(c.path): shared_expert_intermediate_size is \(shared); it should be in 0...\(1 << 24)")
        }
        let n = try c.layerCount
        let layers = try (0..<n).map { i -> ModelDescription.Layer in
            let moe = !mlpOnly.contains(i) && experts > 0 && (i + 1) % max(step, 1) == 0
            return ModelDescription.Layer(
                experts: moe ? experts : nil, expertIntermediate: try c.size("moe_intermediate_size"),
                denseIntermediate: moe ? nil : try c.size("intermediate_size"),
                sharedExpertIntermediate: moe && shared > 0 ? shared : nil, sharedExpertGated: moe && shared > 0)
        }
        let routing = Routing(topK: try c.size("num_experts_per_tok"), normalizeTopK: try c.bool("norm_topk_prob", default: false))
        return try c.baseDescription(architectureFallback: "Qwen2MoeForCausalLM", routing: routing, layers: layers)
    }

    /// q/k/v carry biases unless `qkv_bias` is false; the shared expert is scaled by `shared_expert_gate`.
    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        var b = NameTableBuilder(description: d, has: has)
        let bias = try c.bool("qkv_bias", default: true)
        for l in 0..<d.numLayers {
            b.layerNorms(l)
            b.gqa(l, bias: bias)
            b.feedForward(l, moe: "model.layers.\(l).mlp", sharedGate: true)
        }
        b.ends()
        return b.table
    }

    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        try c.attentionConfig(d, windows: slidingWindows(c, layers: d.numLayers))
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let a = try attention(c, description: d)
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: a.rope, slidingWindow: a.windows[l]) }
    }

    /// Qwen's sliding window applies only with `use_sliding_window`, to the layers `layer_types` marks
    /// "sliding_attention" (v5) or, without that list, to layers below `max_window_layers` (v4).
    static func slidingWindows(_ c: HFConfig, layers n: Int) throws -> [Int?] {
        guard let w = try c.slidingWindow(applied: c.bool("use_sliding_window", default: false)) else {
            return Array(repeating: nil, count: n)
        }
        if let types = try c.stringList("layer_types") {
            return (0..<n).map { i in i < types.count && types[i] == "sliding_attention" ? w : nil }
        }
        let maxWindow = try c.int("max_window_layers", default: n)
        return (0..<n).map { i in (i + 1) % 2 == 1 && i < maxWindow ? w : nil }
    }
}
