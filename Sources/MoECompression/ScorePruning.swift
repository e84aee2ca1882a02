import MoEModels
import MoECalibration

/// Baselines that keep, in every MoE layer, the experts with the highest score from the calibration
/// statistics: routing frequency, or REAP saliency (mean gate × ‖expert output‖ over routed tokens).
public enum ScorePruning {
    public enum Score: String, Sendable { case frequency, reap }

    public static func plan(_ score: Score, description d: ModelDescription, cache: CalibrationCache,
                            budget: PruningBudget, modelName: String) throws -> PruningPlan {
        guard let k = d.routing?.topK else { throw PruningError.invalid("the model has no MoE layers") }
        var layers: [PruningPlan.Layer] = []
        for l in d.moeLayerIndices {
            let e = d.layers[l].experts!
            let stats = try cache.statistics(l)
            let s = score == .frequency ? stats.frequency : stats.reap
            guard s.count == e else { throw PruningError.invalid("calibration cache layer \(l) has \(s.count) experts, the model \(e)") }
            let keep = try budget.keep(experts: e, topK: k)
            // Highest scores kept; ties keep the lower id.
            let order = (0..<e).sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 }
            layers.append(.init(layer: l, experts: e, kept: Array(order.prefix(keep)).sorted(),
                                scores: ["frequency": stats.frequency, "reap": stats.reap, "gate_mass": stats.gateMass]))
        }
        return PruningPlan(method: score.rawValue, model: modelName, parameters: [:], layers: layers)
    }
}
