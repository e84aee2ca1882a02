import MoETensor
import MoECheckpoint

/// OLMoE (transformers `models/olmoe/modeling_olmoe.py`): GQA attention with RMSNorm over the whole
/// query and key projections (not per head), optional clamping of q/k/v (`clip_qkv`); every layer an
/// MoE block, softmax routing renormalised only when `norm_topk_prob`.
public enum OLMoE: ModelFamily {
    public static let modelTypes = ["olmoe"]

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

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let rope = try RoPE(c.ropeParameters(), headDim: d.headDim, maxPositions: d.maxPositions)
        let clip = try c.optionalDouble("clip_qkv").map { Float($0) }
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: rope, normKind: .full, clip: clip) }
    }
}
