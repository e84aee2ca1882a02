import Foundation
import MoETensor
import MoEModels
import MoECalibration
import MoECheckpoint

/// MoE-I² stage-1 expert importance (methods.md §3.3): the layer-output reconstruction error when one expert
/// alone is removed, on the calibration tokens. Stage 2 allocates ranks by it.
public enum ExpertImportance {
    /// Computed on `model` from its calibration cache, MoE layer → one value per expert, over the calibration
    /// tokens a search may use (`CalibrationSplit.search`: all but the held-out windows), at most `maxTokens`.
    public static func compute(model: CausalLM, cache: CalibrationCache, maxTokens: Int = .max, memory: MemoryBudget = .default,
                               quiet: Bool = false, journal: Journal = .none) throws -> [Int: [Double]] {
        let tokens = CalibrationSplit(cache).search.prefix(maxTokens)
        var out: [Int: [Double]] = [:]
        let moe = model.description.moeLayerIndices
        let progress = StageProgress("expert importance", total: moe.count, unit: "layers", quiet: quiet)
        for l in moe {
            out[l] = try journal.record("importance-\(l)") {
                let fit = try LayerFitness(block: model.layers[l].feedForward.moe!, cache: cache, layer: l, tokens: tokens, remove: 1,
                                           storeLimit: memory.bytes / 2)
                return try fit.errors((0..<fit.numExperts).map { [$0] })
            }
            progress.advance()
        }
        return out
    }

    /// The importance a `moei2` pruning plan recorded, restricted to the experts it kept (renumbered as the
    /// pruned checkpoint numbers them): nil for plans of other methods.
    public static func fromPlan(_ plan: PruningPlan) -> [Int: [Double]]? {
        var out: [Int: [Double]] = [:]
        for l in plan.layers {
            guard let all = l.scores["expert_importance"], all.count == l.experts else { return nil }
            out[l.layer] = l.kept.map { all[$0] }
        }
        return out.isEmpty ? nil : out
    }

    /// The plan.json of a pruned model folder, when there is one.
    public static func plan(in dir: URL) throws -> PruningPlan? {
        let url = dir.appendingPathComponent("plan.json")
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do { return try JSONDecoder().decode(PruningPlan.self, from: Data(contentsOf: url)) } catch {
            throw PruningError.invalid("\(url.path): not a MoEPress pruning plan (\(error))")
        }
    }
}
