import Foundation

/// The nearest plan with equal expert counts in every layer, for tools that need them (stock HF
/// transformers, vLLM): every layer keeps round(mean kept) experts (at least the fewest a layer needs),
/// dropping from layers that kept more the experts the plan valued least, and restoring to layers that
/// kept fewer the removed experts it valued most.
public enum UniformPlan {
    /// The per-expert score a plan ranks by (higher = keep), from what its method recorded.
    static func keepScore(_ l: PruningPlan.Layer) -> [Double] {
        if let s = l.scores["expert_importance"] { return s }          // MoE-I²: error when removed alone
        if let s = l.scores["nmi_row_mean"] { return s.map { -$0 } }   // MoEITS: the most redundant go first
        if let s = l.scores["reap"] { return s }
        if let s = l.scores["frequency"] { return s }
        return (0..<l.experts).map { l.kept.contains($0) ? 1 : 0 }
    }

    public static func nearest(_ plan: PruningPlan, minimum: Int) -> PruningPlan {
        let mean = Double(plan.layers.reduce(0) { $0 + $1.kept.count }) / Double(max(plan.layers.count, 1))
        let target = max(minimum, Int(mean.rounded()))
        var out = plan
        out.method = plan.method + "+uniform"
        out.parameters["uniform_from"] = plan.layers.map { "\($0.kept.count)" }.joined(separator: ",")
        for i in out.layers.indices {
            let l = out.layers[i]
            let s = keepScore(l)
            var kept = l.kept
            if kept.count > target {
                kept = Array(kept.sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 }.prefix(target))
            } else if kept.count < target {
                let removed = (0..<l.experts).filter { !kept.contains($0) }.sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 }
                kept += removed.prefix(min(target, l.experts) - kept.count)
            }
            out.layers[i].kept = kept.sorted()
        }
        return out
    }
}
