import MoETensor
import MoECheckpoint

/// OLMoE (transformers `models/olmoe/modeling_olmoe.py`): GQA attention with RMSNorm over the whole
/// query and key projections (not per head), optional clamping of q/k/v (`clip_qkv`); every layer an
/// MoE block, softmax routing renormalised only when `norm_topk_prob`.
public enum OLMoE: ModelFamily {
    public static let modelTypes = ["olmoe"]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let layer = ModelDescription.Layer(experts: try c.routedExperts, expertIntermediate: try c.int("intermediate_size"),
                                           denseIntermediate: nil, sharedExpertIntermediate: nil, sharedExpertGated: false)
        let routing = Routing(topK: try c.int("num_experts_per_tok"), normalizeTopK: try c.bool("norm_topk_prob", default: false))
        return try c.baseDescription(architectureFallback: "OlmoeForCausalLM", routing: routing,
                                     layers: Array(repeating: layer, count: try c.int("num_hidden_layers")))
    }

    public static func build(_ c: HFConfig, weights: Checkpoint) throws -> CausalLM {
        let d = try describe(c)
        let w = WeightReader(ckpt: weights, description: d)
        let rope = try RoPE(c.ropeParameters(), headDim: d.headDim, maxPositions: d.maxPositions)
        let clip = try c.optionalDouble("clip_qkv").map { Float($0) }
        // HF sizes k_norm as (hidden / heads) · kv_heads, whatever head_dim says.
        let kDim = d.hiddenSize / d.heads * d.kvHeads
        return try buildGQAModel(d, c, w, attention: { _, p in
            let norms = GroupedQueryAttention.QKNorm.full(q: try w.norm("\(p).self_attn.q_norm", d.hiddenSize),
                                                          k: try w.norm("\(p).self_attn.k_norm", kDim))
            return try standardAttention(d, w, prefix: p, rope: rope, bias: try c.bool("attention_bias", default: false),
                                         qkNorm: norms, clip: clip)
        }, feedForward: { i, p in
            let l = d.layers[i]
            let router = try w.router("\(p).mlp", experts: l.experts!)
            return .moe(MoEBlock(router: router, experts: try w.experts("\(p).mlp.experts", count: l.experts!, intermediate: l.expertIntermediate)))
        })
    }
}
