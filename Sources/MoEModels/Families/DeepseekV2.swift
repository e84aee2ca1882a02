import Foundation
import MoETensor
import MoECheckpoint

/// DeepSeek-V2 / V2-Lite (transformers `models/deepseek_v2/modeling_deepseek_v2.py`): multi-head latent
/// attention, the first `first_k_dense_replace` layers dense, MoE layers with `n_shared_experts` always-on
/// shared experts (ungated). Softmax routing, `greedy` or `group_limited_greedy` (best expert per group),
/// weights × `routed_scaling_factor`. As in HF's port, V2 never renormalises the top-k weights.
public enum DeepseekV2: ModelFamily {
    public static let modelTypes = ["deepseek_v2"]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let method = try c.string("topk_method", default: "greedy")
        var routing = Routing(topK: try c.int("num_experts_per_tok"), normalizeTopK: false,
                              scalingFactor: Float(try c.double("routed_scaling_factor", default: 1)))
        switch method {
        case "greedy": break
        case "group_limited_greedy":
            routing.groups = try c.int("n_group")
            routing.topKGroups = try c.int("topk_group")
            routing.groupScore = .max
        default:
            throw ModelError.invalidConfig("\(c.path): topk_method \"\(method)\" (DeepSeek-V2 supports greedy, group_limited_greedy)")
        }
        return try deepseekDescription(c, routing: routing, fallback: "DeepseekV2ForCausalLM")
    }

    public static func build(_ c: HFConfig, weights: Checkpoint) throws -> CausalLM {
        try buildDeepseek(c, weights: weights, description: describe(c), ropeInterleaved: true)
    }
}

/// Layers and sizes shared by DeepSeek-V2 and V3.
func deepseekDescription(_ c: HFConfig, routing: Routing, fallback: String) throws -> ModelDescription {
    let experts = try c.routedExperts
    let firstDense = try c.int("first_k_dense_replace", default: 0)
    let moeInter = try c.int("moe_intermediate_size")
    let shared = try c.int("n_shared_experts", default: 0)
    let layers = try (0..<c.int("num_hidden_layers")).map { i -> ModelDescription.Layer in
        let moe = i >= firstDense
        return ModelDescription.Layer(experts: moe ? experts : nil, expertIntermediate: moeInter,
                                      denseIntermediate: moe ? nil : try c.int("intermediate_size"),
                                      sharedExpertIntermediate: moe && shared > 0 ? moeInter * shared : nil, sharedExpertGated: false)
    }
    if routing.groups > 1 && experts % routing.groups != 0 {
        throw ModelError.invalidConfig("\(c.path): \(experts) routed experts do not split into n_group = \(routing.groups) groups")
    }
    // RoPE acts on the qk_rope_head_dim slice only; HF sets head_dim to it.
    return try c.baseDescription(architectureFallback: fallback, routing: routing, layers: layers,
                                 attention: .latent, headDim: try c.int("qk_rope_head_dim"))
}

func buildDeepseek(_ c: HFConfig, weights: Checkpoint, description d: ModelDescription, ropeInterleaved: Bool) throws -> CausalLM {
    let w = WeightReader(ckpt: weights, description: d)
    let rp = try c.ropeParameters()
    let rope = try RoPE(rp, headDim: d.headDim, maxPositions: d.maxPositions, interleaved: ropeInterleaved)
    let nope = try c.int("qk_nope_head_dim"), ropeDim = try c.int("qk_rope_head_dim"), vDim = try c.int("v_head_dim")
    let kvRank = try c.int("kv_lora_rank"), qRank = try c.optionalInt("q_lora_rank")
    let bias = try c.bool("attention_bias", default: false)
    let h = d.hiddenSize, nh = d.heads, qk = nope + ropeDim
    // Softmax scale: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² for scaled RoPE (HF `yarn_apply_mscale`).
    var scale = 1 / Double(qk).squareRoot()
    if rp.type != "default", let mad = rp.mscaleAllDim, mad != 0, let f = rp.factor, f > 1 {
        let m = 0.1 * mad * log(f) + 1
        scale *= m * m
    }
    var layers: [DecoderLayer] = []
    for i in 0..<d.numLayers {
        let p = "model.layers.\(i)"
        let a = "\(p).self_attn"
        let attention = LatentAttention(
            qProj: qRank == nil ? try w.linear("\(a).q_proj", out: nh * qk, in: h) : nil,
            qA: try qRank.map { try w.linear("\(a).q_a_proj", out: $0, in: h, bias: bias) },
            qANorm: try qRank.map { try w.norm("\(a).q_a_layernorm", $0) },
            qB: try qRank.map { try w.linear("\(a).q_b_proj", out: nh * qk, in: $0) },
            kvA: try w.linear("\(a).kv_a_proj_with_mqa", out: kvRank + ropeDim, in: h, bias: bias),
            kvANorm: try w.norm("\(a).kv_a_layernorm", kvRank),
            kvB: try w.linear("\(a).kv_b_proj", out: nh * (nope + vDim), in: kvRank),
            o: try w.linear("\(a).o_proj", out: h, in: nh * vDim, bias: bias),
            heads: nh, nopeDim: nope, ropeDim: ropeDim, valueDim: vDim, kvLoraRank: kvRank, rope: rope, scale: Float(scale))
        let l = d.layers[i]
        let ffn: FeedForward
        if let e = l.experts {
            let bias = try weights.tensorIfPresent("\(p).mlp.gate.e_score_correction_bias", shape: [e])
            let router = try w.router("\(p).mlp", experts: e, correctionBias: bias)
            ffn = .moe(MoEBlock(router: router,
                                experts: try w.experts("\(p).mlp.experts", count: e, intermediate: l.expertIntermediate),
                                sharedExpert: try l.sharedExpertIntermediate.map { try w.mlp("\(p).mlp.shared_experts", intermediate: $0) }))
        } else {
            ffn = .dense(try w.mlp("\(p).mlp", intermediate: l.denseIntermediate!))
        }
        layers.append(DecoderLayer(inputNorm: try w.norm("\(p).input_layernorm", h), attention: attention,
                                   postAttentionNorm: try w.norm("\(p).post_attention_layernorm", h), feedForward: ffn))
    }
    return CausalLM(description: d, embedding: try w.embedding(), layers: layers,
                    norm: try w.norm("model.norm", h), lmHead: try w.lmHead())
}
