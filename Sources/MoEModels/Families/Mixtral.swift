import MoETensor
import MoECheckpoint

/// Mixtral (transformers `models/mixtral/modeling_mixtral.py`): GQA attention without biases, every
/// layer an MoE block of SwiGLU experts w1 (gate), w3 (up), w2 (down); softmax routing in f32, top-k,
/// always renormalised over the chosen experts.
public enum Mixtral: ModelFamily {
    public static let modelTypes = ["mixtral"]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let experts = try c.routedExperts
        let layer = ModelDescription.Layer(experts: experts, expertIntermediate: try c.int("intermediate_size"),
                                           denseIntermediate: nil, sharedExpertIntermediate: nil, sharedExpertGated: false)
        let routing = Routing(topK: try c.int("num_experts_per_tok", default: 2), normalizeTopK: true)
        return try c.baseDescription(architectureFallback: "MixtralForCausalLM", routing: routing,
                                     layers: Array(repeating: layer, count: try c.int("num_hidden_layers")))
    }

    public static var expertProjectionNames: ExpertProjectionNames { .init(gate: "w1", up: "w3", down: "w2") }

    public static func moePrefix(layer: Int, in checkpoint: Checkpoint) -> String {
        let v4 = "model.layers.\(layer).block_sparse_moe"
        return checkpoint.contains("\(v4).gate.weight") ? v4 : "model.layers.\(layer).mlp"
    }

    public static func build(_ c: HFConfig, weights: Checkpoint) throws -> CausalLM {
        let d = try describe(c)
        let w = WeightReader(ckpt: weights, description: d)
        let rope = try RoPE(c.ropeParameters(), headDim: d.headDim, maxPositions: d.maxPositions)
        let window = try c.optionalInt("sliding_window")
        return try buildGQAModel(d, c, w, attention: { _, p in
            try standardAttention(d, w, prefix: p, rope: rope, bias: false, slidingWindow: window)
        }, feedForward: { i, p in
            // v4 names the block `block_sparse_moe`; v5's in-memory name is `mlp`.
            let m = moePrefix(layer: i, in: weights)
            let l = d.layers[i]
            let router = try w.router(m, experts: l.experts!)
            let experts = try w.experts("\(m).experts", count: l.experts!, intermediate: l.expertIntermediate, names: expertProjectionNames)
            return .moe(MoEBlock(router: router, experts: experts))
        })
    }
}
