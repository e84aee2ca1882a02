import MoECompression

/// The original expert id of every expert of a stage's model, per MoE layer, followed through a branch's prune
/// plans (a plan's kept ids are its input model's; pruning renumbers the kept experts 0..<kept), so the report
/// labels experts as the original model does.
struct ExpertIDs {
    /// Layer → the original id of each expert of the current model; a layer not pruned yet is absent (identity).
    var ids: [Int: [Int]] = [:]
    /// Layer → the original model's expert count.
    var original: [Int: Int] = [:]

    /// Whether some layer has lost experts to an earlier stage.
    var pruned: Bool { ids.contains { $0.value.count < (original[$0.key] ?? 0) } }

    /// Records a layer's expert count when it is first seen (before any pruning of it: the original count).
    mutating func meet(layer: Int, experts: Int) {
        if original[layer] == nil && ids[layer] == nil { original[layer] = experts }
    }

    /// Values of the current model's experts (by current index) placed at their original ids; nil where an
    /// earlier stage pruned the expert.
    func spread(_ values: [Double], layer: Int) -> [Double?] {
        let current = ids[layer] ?? Array(values.indices)
        var out = [Double?](repeating: nil, count: max(original[layer] ?? values.count, (current.max() ?? -1) + 1))
        for (i, v) in values.enumerated() where i < current.count { out[current[i]] = v }
        return out
    }

    /// After a prune stage: each layer keeps the plan's experts, named by their original ids.
    mutating func prune(_ plan: PruningPlan) {
        for l in plan.layers {
            let current = ids[l.layer] ?? Array(0..<l.experts)
            ids[l.layer] = l.kept.map { $0 < current.count ? current[$0] : $0 }
        }
    }
}
