import MoETensor
import MoECheckpoint

/// Qwen3-MoE (transformers `models/qwen3_moe/modeling_qwen3_moe.py`): like Qwen2-MoE without the shared
/// expert and without q/k/v biases (unless `attention_bias`), with RMSNorm on each query and key head
/// before RoPE and an explicit `head_dim`.
public enum Qwen3MoE: ModelFamily {
    public static let modelTypes = ["qwen3_moe"]

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

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let rope = try RoPE(c.ropeParameters(), headDim: d.headDim, maxPositions: d.maxPositions)
        let window: Int? = try c.bool("use_sliding_window", default: false) ? try c.optionalSize("sliding_window") : nil
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: rope, normKind: .perHead, slidingWindow: window) }
    }
}
