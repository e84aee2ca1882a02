import MoETensor
import MoECheckpoint

/// DeepSeek-V3 (transformers `models/deepseek_v3/modeling_deepseek_v3.py`): V2's latent attention and
/// layer plan, with sigmoid expert scores, an `e_score_correction_bias` that steers the choice (not the
/// weights), group-limited choice by the sum of each group's two best scores (`n_group`, `topk_group`),
/// renormalisation by `norm_topk_prob` (+1e-20), then × `routed_scaling_factor`. RoPE is applied to
/// interleaved pairs when `rope_interleave` (the default). Multi-token-prediction layers are not run.
public enum DeepseekV3: ModelFamily {
    public static let modelTypes = ["deepseek_v3"]

    public static func describe(_ c: HFConfig) throws -> ModelDescription {
        let routing = Routing(scoring: .sigmoid, topK: try c.size("num_experts_per_tok"),
                              normalizeTopK: try c.bool("norm_topk_prob", default: true), normalizationEpsilon: 1e-20,
                              scalingFactor: Float(try c.double("routed_scaling_factor", default: 1)),
                              groups: try c.size("n_group", default: 1), topKGroups: try c.size("topk_group", default: 1),
                              groupScore: .top2Sum)
        return try deepseekDescription(c, routing: routing, fallback: "DeepseekV3ForCausalLM")
    }

    public static func checkpointNames(_ c: HFConfig, description d: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames {
        try deepseekNames(c, d, has: has, correctionBias: true)
    }

    public static func build(_ c: HFConfig, description d: ModelDescription, weights w: WeightReader) throws -> CausalLM {
        try buildDeepseek(c, weights: w, description: d, ropeInterleaved: try c.bool("rope_interleave", default: true))
    }
}
