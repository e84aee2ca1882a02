import Foundation
import MoETensor
import MoECheckpoint

/// DeepSeek-V2 / V2-Lite (transformers `models/deepseek_v2/modeling_deepseek_v2.py`): multi-head latent
/// attention, the first `first_k_dense_replace` layers dense, MoE layers with `n_shared_experts` always-on
/// shared experts (ungated). Softmax routing, `greedy` or `group_limited_greedy` (best expert per group),
/// weights × `routed_scaling_factor`. As in HF's port, V2 never renormalises the top-k weights.
public enum DeepseekV2: ModelFamily {
    public static let modelTypes = ["deepseek_v2"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "attention_bias": .bool(false),
        "bos_token_id": .number(1),
        "eos_token_id": .number(2),
        "first_k_dense_replace": .number(0),
        "hidden_act": .string("silu"),
        "hidden_size": .number(4096),
        "intermediate_size": .number(11008),
        "kv_lora_rank": .number(512),
        "max_position_embeddings": .number(2048),
        "moe_intermediate_size": .number(1407),
        "n_routed_experts": .number(64),
        "n_shared_experts": .number(2),
        "norm_topk_prob": .bool(false),
        "num_attention_heads": .number(32),
        "num_hidden_layers": .number(32),
        "num_key_value_heads": .number(32),
        "q_lora_rank": .number(1536),
        "qk_nope_head_dim": .number(128),
        "qk_rope_head_dim": .number(64),
        "rms_norm_eps": .number(1e-06),
        "rope_theta": .number(10000.0),
        "routed_scaling_factor": .number(1.0),
        "tie_word_embeddings": .bool(false),
        "topk_method": .string("greedy"),
        "v_head_dim": .number(128),
        "vocab_size": .number(102400),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let method = try c.string("topk_method", default: "greedy")
        var routing = Routing(topK: try c.size("num_experts_per_tok"), normalizeTopK: false,
                              scalingFactor: Float(try c.double("routed_scaling_factor", default: 1)))
        switch method {
        case "greedy": break
        case "group_limited_greedy":
            routing.groups = try c.size("n_group")
            routing.topKGroups = try c.size("topk_group")
            routing.groupScore = .max
        default:
            throw ModelError.invalidConfig("\(c.path): topk_method \"\(method)\" (DeepSeek-V2 supports greedy, group_limited_greedy)")
        }
        return try deepseekDescription(c, routing: routing, fallback: "DeepseekV2ForCausalLM")
    }

    /// V2 checkpoints may carry `e_score_correction_bias` (read when present).
    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        return try deepseekNames(c, d, has: has, correctionBias: nil)
    }

    /// RoPE on the qk_rope_head_dim slice, rotating adjacent pairs; no sliding window.
    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        try c.attentionConfig(d, interleaved: true, windows: Array(repeating: nil, count: d.numLayers))
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        return try buildDeepseek(c, weights: w, description: d, attention: attention(c, description: d))
    }
}

/// Layers and sizes shared by DeepSeek-V2 and V3.
func deepseekDescription(_ c: HFConfig, routing: Routing, fallback: String) throws -> ModelDescription {
    let experts = try c.routedExperts
    let firstDense = try c.int("first_k_dense_replace", default: 0)
    guard firstDense >= 0 else { throw ModelError.invalidConfig("\(c.path): first_k_dense_replace is \(firstDense); it should be ≥ 0") }
    let moeInter = try c.size("moe_intermediate_size")
    let shared = try c.int("n_shared_experts", default: 0)
    guard shared >= 0, shared <= 1024 else { throw ModelError.invalidConfig("\(c.path): n_shared_experts is \(shared); it should be in 0...1024") }
    let layers = try (0..<c.layerCount).map { i -> ModelDescription.Layer in
        let moe = i >= firstDense
        return ModelDescription.Layer(experts: moe ? experts : nil, expertIntermediate: moeInter,
                                      denseIntermediate: moe ? nil : try c.size("intermediate_size"),
                                      sharedExpertIntermediate: moe && shared > 0 ? moeInter * shared : nil, sharedExpertGated: false)
    }
    if routing.groups > 1 && experts % routing.groups != 0 {
        throw ModelError.invalidConfig("\(c.path): \(experts) routed experts do not split into n_group = \(routing.groups) groups")
    }
    // RoPE acts on the qk_rope_head_dim slice only; HF sets head_dim to it.
    return try c.baseDescription(architectureFallback: fallback, routing: routing, layers: layers,
                                 attention: .latent, headDim: try c.size("qk_rope_head_dim"))
}

/// DeepSeek's table: MLA projections (q_proj, or q_a_proj + q_a_layernorm + q_b_proj; kv_a_proj_with_mqa,
/// kv_a_layernorm, kv_b_proj, o_proj), dense first layers, `shared_experts`, and the router's correction bias
/// (`correctionBias`: true always, nil when the file has it).
func deepseekNames(_ c: HFConfig, _ d: ModelDescription, has: @escaping (String) -> Bool, correctionBias: Bool?) throws -> CheckpointNames {
    var b = NameTableBuilder(description: d, has: has)
    let nope = try c.size("qk_nope_head_dim"), ropeDim = try c.size("qk_rope_head_dim"), vDim = try c.size("v_head_dim")
    let kvRank = try c.size("kv_lora_rank"), qRank = try c.optionalSize("q_lora_rank")
    let bias = try c.bool("attention_bias", default: false)
    let h = d.hiddenSize, nh = d.heads, qk = nope + ropeDim
    for l in 0..<d.numLayers {
        let a = "model.layers.\(l).self_attn", lg = "layers.\(l).attn"
        b.layerNorms(l)
        if let qRank {
            b.linear("\(lg).q_a", "\(a).q_a_proj", out: qRank, in: h, bias: bias)
            b.norm("\(lg).q_a_norm", "\(a).q_a_layernorm", qRank)
            b.linear("\(lg).q_b", "\(a).q_b_proj", out: nh * qk, in: qRank)
        } else {
            b.linear("\(lg).q", "\(a).q_proj", out: nh * qk, in: h)
        }
        b.linear("\(lg).kv_a", "\(a).kv_a_proj_with_mqa", out: kvRank + ropeDim, in: h, bias: bias)
        b.norm("\(lg).kv_a_norm", "\(a).kv_a_layernorm", kvRank)
        b.linear("\(lg).kv_b", "\(a).kv_b_proj", out: nh * (nope + vDim), in: kvRank)
        b.linear("\(lg).o", "\(a).o_proj", out: h, in: nh * vDim, bias: bias)
        let moe = "model.layers.\(l).mlp"
        b.feedForward(l, moe: moe, shared: "shared_experts", correctionBias: correctionBias ?? has("\(moe).gate.e_score_correction_bias"))
    }
    b.ends()
    return b.table
}

func buildDeepseek(_ c: HFConfig, weights w: WeightReader, description d: ModelDescription, attention a: AttentionConfig) throws -> CausalLM {
    let rp = a.ropeParameters, rope = a.rope
    let nope = try c.size("qk_nope_head_dim"), ropeDim = try c.size("qk_rope_head_dim"), vDim = try c.size("v_head_dim")
    let kvRank = try c.size("kv_lora_rank")
    let nh = d.heads, qk = nope + ropeDim
    // Softmax scale: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² for scaled RoPE (HF `yarn_apply_mscale`).
    var scale = 1 / Double(qk).squareRoot()
    if rp.type != "default", let mad = rp.mscaleAllDim, mad != 0, let f = rp.factor, f > 1 {
        let m = 0.1 * mad * log(f) + 1
        scale *= m * m
    }
    return try buildModel(d, w) { l in
        let a = "layers.\(l).attn"
        let hasQA = w.present("\(a).q_a")
        return LatentAttention(
            qProj: hasQA ? nil : try w.linear("\(a).q"),
            qA: hasQA ? try w.linear("\(a).q_a") : nil,
            qANorm: hasQA ? try w.rmsNorm("\(a).q_a_norm") : nil,
            qB: hasQA ? try w.linear("\(a).q_b") : nil,
            kvA: try w.linear("\(a).kv_a"), kvANorm: try w.rmsNorm("\(a).kv_a_norm"), kvB: try w.linear("\(a).kv_b"), o: try w.linear("\(a).o"),
            heads: nh, nopeDim: nope, ropeDim: ropeDim, valueDim: vDim, kvLoraRank: kvRank, rope: rope, scale: Float(scale))
    }
}
