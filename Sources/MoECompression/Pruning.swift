import Foundation
import MoETensor
import MoEModels
import MoECalibration
import MoECheckpoint

public enum PruningMethod: String, CaseIterable, Sendable, Codable {
    case frequency, reap, naee, moei2, moeits
    /// Whether the method reads a calibration cache (MoEITS is data-free).
    public var needsCalibration: Bool { self != .moeits }
}

/// One pruning request, whatever the method: what `moepress prune` and recipe stages both run.
public struct PruningRequest: Sendable {
    public var method: PruningMethod
    public var budget: PruningBudget?
    /// MoEITS threshold factor τ (instead of a budget).
    public var tau: Double?
    public var binRule: MoEITS.BinRule = .numpy23
    public var nmiWeights: [Double]?
    public var search = MoEI2.Options()
    /// NAEE / MoE-I² / reconstruction-error tokens per layer.
    public var fitnessTokens = 8192
    /// What fitness caches may hold in memory (half of it; the rest spills to a scratch file, same results).
    public var memory: MemoryBudget = .default

    public init(method: PruningMethod, budget: PruningBudget?) {
        self.method = method
        self.budget = budget
    }

    /// Everything that decides the plan (not the memory budget, which never changes it): an interrupted
    /// run's journal is reused only under the same fingerprint.
    public var fingerprint: String {
        "method \(method.rawValue) budget \(String(describing: budget)) tau \(String(describing: tau)) bins \(binRule.rawValue) " +
            "weights \(String(describing: nmiWeights)) search \(search) fitness \(fitnessTokens)"
    }
}

public enum Pruning {
    /// The plan of `request` for `model`; `cache` (of this model) is required by every method but MoEITS.
    /// With a cache, each layer's reconstruction error of the chosen subset is recorded in the plan.
    /// Per-layer results are recorded in `journal` (a resumable output's) as they are found, and taken from it
    /// when an interrupted run already found them.
    public static func plan(_ request: PruningRequest, model: CausalLM, modelName: String, cache: CalibrationCache?, quiet: Bool = false,
                            journal: Journal = .none) throws -> PruningPlan {
        var plan: PruningPlan
        let d = model.description
        if let budget = request.budget, let k = d.routing?.topK {
            try budget.checkRemovesSome(experts: d.moeLayerIndices.map { d.layers[$0].experts! }, topK: k,
                                        perLayer: request.method != .moei2 || request.search.uniformCounts)
        }
        switch request.method {
        case .moeits:
            guard request.tau != nil || request.budget != nil else { throw PruningError.invalid("moeits needs tau, or a ratio/keep budget") }
            plan = try MoEITS.plan(model: model, modelName: modelName, tau: request.tau, budget: request.budget, rule: request.binRule,
                                   weights: request.nmiWeights, quiet: quiet, journal: journal)
        case .frequency, .reap, .naee, .moei2:
            guard let cache else { throw PruningError.invalid("\(request.method.rawValue) needs a calibration cache") }
            guard let budget = request.budget else { throw PruningError.invalid("\(request.method.rawValue) needs a ratio or keep budget") }
            switch request.method {
            case .naee:
                plan = try NAEE.plan(model: model, cache: cache, budget: budget, modelName: modelName, maxTokens: request.fitnessTokens,
                                     memory: request.memory, quiet: quiet, journal: journal)
            case .moei2:
                plan = try MoEI2.plan(model: model, cache: cache, budget: budget, options: request.search, modelName: modelName,
                                      memory: request.memory, quiet: quiet, journal: journal)
            default:
                plan = try ScorePruning.plan(request.method == .frequency ? .frequency : .reap, description: model.description, cache: cache,
                                             budget: budget, modelName: modelName)
            }
            plan.parameters["calibration"] = "\(cache.manifest.samples)x\(cache.manifest.seqLen) seed \(cache.manifest.seed) data \(cache.manifest.dataHash)"
        }
        if let cache { try recordReconstructionErrors(&plan, model: model, cache: cache, maxTokens: request.fitnessTokens, memory: request.memory, journal: journal, quiet: quiet) }
        switch request.budget {
        case .ratio(let r)?: plan.parameters["ratio"] = "\(r)"
        case .keep(let k)?: plan.parameters["keep"] = "\(k)"
        case nil: break
        }
        if let tau = request.tau { plan.parameters["tau"] = "\(tau)" }
        return plan
    }

    /// Adds each layer's layer-output reconstruction error of the kept subset (masked routing, one masked pass of
    /// the block over the held-out calibration tokens of `CalibrationSplit`, at most `maxTokens` of them: each token
    /// runs only its top-k experts) to the plan, and their sum to its parameters. Every method is judged on the
    /// same tokens, which no search saw (NAEE and MoE-I² keep their search error as `search_error`).
    public static func recordReconstructionErrors(_ plan: inout PruningPlan, model: CausalLM, cache: CalibrationCache, maxTokens: Int,
                                                  memory: MemoryBudget = .default, journal: Journal = .none, quiet: Bool = true) throws {
        var sum = 0.0
        let split = CalibrationSplit(cache)
        let missing = plan.layers.filter { $0.scores["reconstruction_error"]?.first == nil }.count
        let progress = StageProgress("reconstruction error", total: missing, unit: "layers", quiet: quiet || missing == 0)
        for i in plan.layers.indices {
            let l = plan.layers[i]
            let err: Double
            if let known = l.scores["reconstruction_error"]?.first {
                err = known
            } else {
                err = try journal.record("reconstruction-\(l.layer)") {
                    var block = model.layers[l.layer].feedForward.moe!
                    let rows = split.heldOut.prefix(maxTokens)
                    let x = try cache.tensor(l.layer, "moe_in", rows: rows), y = try cache.tensor(l.layer, "moe_out", rows: rows)
                    block.expertMask = (0..<l.experts).map { l.kept.contains($0) }
                    let out = block(x)
                    var sq = 0.0
                    for j in 0..<out.count { let d = Double(y.data[j] - out.data[j]); sq += d * d }
                    return sq.squareRoot()
                }
                plan.layers[i].scores["reconstruction_error"] = [err]
                progress.advance()
            }
            sum += err
        }
        plan.parameters["reconstruction_error_sum"] = String(format: "%.6g", sum)
        plan.parameters["reconstruction_tokens"] = split.isHeldOut ? "\(split.heldOut.prefix(maxTokens).count) held out" : "\(min(maxTokens, split.heldOut.count)) (one calibration window: nothing held out)"
    }
}
