import MoETensor
import MoECheckpoint

/// gpt-oss (transformers `models/gpt_oss/modeling_gpt_oss.py`): GQA attention with q/k/v/o biases and one learned
/// sink logit per head, sliding-window and full layers as `layer_types` says, yarn rope; every layer an MoE block
/// routed by a linear router with a bias (top-k of the logits, softmax over those k), experts with biases and
/// gpt-oss's clamped SwiGLU (`swiglu_alpha`, `swiglu_limit`, up + 1).
///
/// Experts are fused per layer, in one of two stored forms, both read in place:
/// - `experts.gate_up_proj` [E, H, 2I] (input-major, gate and up interleaved: gate is column 2j, up 2j + 1),
///   `gate_up_proj_bias` [E, 2I], `down_proj` [E, I, H], `down_proj_bias` [E, H] — what `save_pretrained` writes;
/// - the released checkpoints' MXFP4: `gate_up_proj_blocks` [E, 2I, H/32, 16] + `gate_up_proj_scales` [E, 2I, H/32]
///   (output-major, gate rows 2j, up rows 2j + 1) and `down_proj_blocks`/`_scales` over [E, H, I], biases as above;
/// - and MoEPress's own, for low-rank factors and compressed-expert vectors (loaded in HF by `modeling_moepress.py`):
///   `experts.<e>.{gate,up,down}_proj.{weight|lowrank_a,lowrank_b}` and `.bias`.
public enum GptOss: ModelFamily {
    public static let modelTypes = ["gpt_oss"]

    /// What transformers 5.23's config class uses for a key config.json leaves out (`ModelRegistry.resolve` fills them).
    public static let hfDefaults: [String: JSONValue] = [
        "attention_bias": .bool(true),
        "head_dim": .number(64),
        "hidden_act": .string("silu"),
        "hidden_size": .number(2880),
        "intermediate_size": .number(2880),
        "max_position_embeddings": .number(131072),
        "num_attention_heads": .number(64),
        "num_experts_per_tok": .number(4),
        "num_hidden_layers": .number(36),
        "num_key_value_heads": .number(8),
        "num_local_experts": .number(128),
        "rms_norm_eps": .number(1e-05),
        "rope_theta": .number(150000.0),
        "sliding_window": .number(128),
        "swiglu_alpha": .number(1.702),
        "swiglu_limit": .number(7.0),
        "tie_word_embeddings": .bool(false),
        "vocab_size": .number(201088),
    ]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let layer = ModelDescription.Layer(experts: try c.routedExperts, expertIntermediate: try c.size("intermediate_size"),
                                           denseIntermediate: nil, sharedExpertIntermediate: nil, sharedExpertGated: false)
        // Softmax over the top-k logits is softmax over all of them renormalised over the top k.
        let routing = Routing(topK: try c.size("num_experts_per_tok", default: 4), normalizeTopK: true)
        var d = try c.baseDescription(architectureFallback: "GptOssForCausalLM", routing: routing,
                                      layers: Array(repeating: layer, count: try c.layerCount))
        let alpha = try c.positive("swiglu_alpha", default: 1.702), limit = try c.positive("swiglu_limit", default: 7)
        d.activation = .clampedSwiGLU(alpha: Float(alpha), limit: Float(limit))
        return d
    }

    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        var b = NameTableBuilder(description: d, has: has)
        let bias = try c.bool("attention_bias", default: true)
        for l in 0..<d.numLayers {
            b.layerNorms(l)
            b.gqa(l, bias: bias, oBias: bias)
            b.tensor("layers.\(l).attn.sinks", "model.layers.\(l).self_attn.sinks", [d.heads])
            let moe = "model.layers.\(l).mlp", e = d.layers[l].experts!
            b.linear("layers.\(l).moe.router", "\(moe).router", out: e, in: d.hiddenSize, bias: true)
            let i = d.layers[l].expertIntermediate, x = "layers.\(l).moe.experts"
            if has(CheckpointNames.perExpertModulesProbe) || has("\(moe).experts.0.gate_proj.bias") {
                // MoEPress's own layout (low-rank factors, compressed-expert vectors): one module per expert, with biases.
                for n in 0..<e {
                    b.linear("\(x).\(n).gate", "\(moe).experts.\(n).gate_proj", out: i, in: d.hiddenSize, bias: true)
                    b.linear("\(x).\(n).up", "\(moe).experts.\(n).up_proj", out: i, in: d.hiddenSize, bias: true)
                    b.linear("\(x).\(n).down", "\(moe).experts.\(n).down_proj", out: d.hiddenSize, in: i, bias: true)
                }
            } else {
                fusedExperts(&b.table, x, "\(moe).experts", count: e, hidden: d.hiddenSize, intermediate: i,
                             mxfp4: has("\(moe).experts.gate_up_proj_blocks"))
            }
        }
        b.ends()
        b.table.routerModule = "mlp.router"
        return b.table
    }

    /// Expert e's gate, up and down (and their biases) as parts of the layer's fused tensors.
    static func fusedExperts(_ t: inout CheckpointNames, _ logical: String, _ prefix: String, count n: Int, hidden h: Int,
                             intermediate i: Int, mxfp4: Bool) {
        typealias Part = TensorLocation.Part
        for e in 0..<n {
            let x = "\(logical).\(e)"
            for (k, kind) in ["gate", "up"].enumerated() {
                if mxfp4 {
                    t.add("\(x).\(kind)", TensorLocation(name: "\(prefix).gate_up_proj_blocks", shape: [i, h],
                                                         part: Part(fullShape: [n, 2 * i, h], offset: (e * 2 * i + k) * h, rowStride: 2 * h),
                                                         mxfp4Scales: "\(prefix).gate_up_proj_scales"))
                } else {
                    t.add("\(x).\(kind)", TensorLocation(name: "\(prefix).gate_up_proj", shape: [i, h],
                                                         part: Part(fullShape: [n, h, 2 * i], offset: e * h * 2 * i + k, rowStride: 2, colStride: 2 * i)))
                }
                t.add("\(x).\(kind).bias", TensorLocation(name: "\(prefix).gate_up_proj_bias", shape: [i],
                                                          part: Part(fullShape: [n, 2 * i], offset: e * 2 * i + k, rowStride: 2)))
            }
            if mxfp4 {
                t.add("\(x).down", TensorLocation(name: "\(prefix).down_proj_blocks", shape: [h, i],
                                                  part: Part(fullShape: [n, h, i], offset: e * h * i, rowStride: i),
                                                  mxfp4Scales: "\(prefix).down_proj_scales"))
            } else {
                t.add("\(x).down", TensorLocation(name: "\(prefix).down_proj", shape: [h, i],
                                                  part: Part(fullShape: [n, i, h], offset: e * i * h, rowStride: 1, colStride: h)))
            }
            t.add("\(x).down.bias", TensorLocation(name: "\(prefix).down_proj_bias", shape: [h],
                                                   part: Part(fullShape: [n, h], offset: e * h, rowStride: 1)))
        }
    }

    public static func attention(_ c: HFConfig, description d: ModelDescription) throws -> AttentionConfig {
        var p: RoPE.Parameters
        if !c.has("rope_parameters") && !c.has("rope_scaling") {
            p = try c.ropeParameters()
            // transformers' GptOssConfig default when a config gives no rope parameters.
            p.type = "yarn"; p.factor = 32; p.betaFast = 32; p.betaSlow = 1; p.truncate = false; p.originalMaxPositions = 4096
        } else {
            p = try c.ropeParameters()
        }
        let window = try c.slidingWindow(applied: true)
        let types = try c.stringList("layer_types") ?? (0..<d.numLayers).map { ($0 + 1) % 2 == 1 ? "sliding_attention" : "full_attention" }
        guard types.count == d.numLayers, types.allSatisfy({ $0 == "sliding_attention" || $0 == "full_attention" }) else {
            throw ModelError.invalidConfig("\(c.path): layer_types should list \"sliding_attention\" or \"full_attention\" for each of \(d.numLayers) layers")
        }
        return try c.attentionConfig(d, parameters: p, windows: types.map { $0 == "sliding_attention" ? window : nil })
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        let a = try attention(c, description: d)
        return try buildModel(d, w) { l in try standardAttention(d, w, layer: l, rope: a.rope, slidingWindow: a.windows[l]) }
    }
}
