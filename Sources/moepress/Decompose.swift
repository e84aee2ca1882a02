import ArgumentParser
import Foundation
import MoECompression
import MoECalibration
import MoECheckpoint
import MoEModels
import MoETensor

extension LowRank.Method: ExpressibleByArgument {}
extension LowRank.Allocation: ExpressibleByArgument {}

struct Decompose: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace routed expert matrices by low-rank factors (MoE-I² stage 2: truncated SVD or SVD-LLM).",
        discussion: """
        --ratio R is the fraction of expert parameters KEPT (SVD-LLM's own CLI uses the fraction removed): an \
        m×n matrix gets average rank ⌊R·m·n/(m+n)⌋; --rank r sets that average directly. --rank-alloc uniform \
        gives every expert that rank; importance shares each layer's budget (average × experts) by \
        (I + ε)^α with I the stage-1 importance (single-expert-removal error), capped at min(m, n), summing to \
        the budget. I comes from the plan.json of a model pruned by `moepress prune --method moei2`, otherwise \
        it is computed from --calib. --method svdllm whitens each matrix with the Gram matrix of the tokens \
        routed to its expert, made per expert from the cached block inputs (--calib made by `moepress calibrate` \
        on THIS model); an \
        expert with too few tokens gets eigenvalue jitter, one with none falls back to plain SVD. \
        Factors are stored as <name>.lowrank_a [m, r] and .lowrank_b [r, n] in the source dtype, with a \
        "moepress.low_rank" section in config.json and a modeling_moepress.py so HF transformers loads the \
        folder with trust_remote_code=True; `moepress export --dense` multiplies them back for other tools. \
        decompose.json records ranks and errors per expert. Factors are computed as the writer reaches them, one \
        expert at a time, so memory holds one expert's matrices and Gram matrices whatever the model's size. \
        The output is built in .<output>.partial beside it; after a kill, the same command keeps the layers already \
        written and resumes after them (same bytes); delete that folder to start over.
        """)

    @Option(help: "A Hugging Face model folder (original or pruned).") var model: String
    @Option(help: "Decomposition method: svd or svdllm.") var method: LowRank.Method = .svd
    @Option(help: "Calibration cache of this model (Gram matrices for svdllm; importance when there is no moei2 plan.json).") var calib: String?
    @Option(help: "Fraction of expert parameters KEPT, in (0, 1].") var ratio: Double?
    @Option(help: "Average rank per expert matrix (instead of --ratio).") var rank: Int?
    @Option(help: "Rank allocation over a layer's experts: uniform or importance.") var rankAlloc: LowRank.Allocation = .uniform
    @Option(help: "Importance exponent α of the rank allocation.") var alpha = 0.15
    @Option(help: "Calibration tokens per layer for computing importance.") var importanceTokens = 8192
    @Option(help: "Projections to decompose, comma-separated (gate,up,down).") var targets: String = "gate,up,down"
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var out: OutputOptions
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("decompose", [("--ratio", "ratio", ratio), ("--rank", "rank", rank.map(Double.init)), ("--alpha", "alpha", alpha),
                                       ("--importance-tokens", "importance_tokens", Double(importanceTokens))])
        guard (ratio != nil) != (rank != nil) else { throw ValidationError("give exactly one of --ratio (fraction kept) or --rank") }
    }

    func run() throws {
        try compute.run {
            var o = LowRank.Options()
            o.method = method
            o.target = ratio.map { .keep($0) } ?? .rank(rank!)
            o.allocation = rankAlloc
            o.alpha = alpha
            o.targets = Set(targets.split(separator: ",").map { String($0) })
            guard !o.targets.isEmpty, o.targets.isSubset(of: ["gate", "up", "down"]) else { throw CLIError("--targets takes gate, up and/or down") }
            let url = modelURL(model)
            let cache = try calib.map { try openCache($0, for: url) }
            if method == .svdllm && cache == nil { throw CLIError("svdllm needs --calib CACHE (from moepress calibrate on this model)") }
            var importance: [Int: [Double]]? = nil
            var open: CausalLM? = nil
            func loadedModel() throws -> CausalLM {
                if let open { return open }
                let m = try ResourceMonitor.shared.stage("load") { try ModelRegistry.load(directory: url) }
                open = m
                return m
            }
            if rankAlloc == .importance {
                importance = try ExpertImportance.plan(in: url).flatMap(ExpertImportance.fromPlan)
                if importance != nil {
                    if !quiet { log("importance: stage-1 values from \(url.appendingPathComponent("plan.json").path)") }
                } else if let cache {
                    importance = try ExpertImportance.compute(model: loadedModel(), cache: cache, maxTokens: importanceTokens,
                                                                    memory: memory.budget, quiet: quiet)
                } else {
                    throw CLIError("--rank-alloc importance needs --calib CACHE, or a model pruned by moei2 (its plan.json holds the importance)")
                }
            }
            let r = try ResourceMonitor.shared.stage("decompose") { try LowRank.decompose(model: url, open: method == .svdllm ? loadedModel() : nil, options: o, whitening: method == .svdllm ? cache : nil, importance: importance,
                                          output: URL(fileURLWithPath: output), overwrite: overwrite, quiet: quiet, shardSize: out.shardSize.bytes,
                                          resumable: true) }
            if !quiet { log(decomposeSummary(r, output: output)) }
        }
    }
}

func openCache(_ path: String, for model: URL) throws -> CalibrationCache {
    let c = try CalibrationCache(directory: URL(fileURLWithPath: path))
    try c.check(modelHash: Fingerprint.model(model, checkpoint: Checkpoint(directory: model)))
    return c
}

func decomposeSummary(_ r: LowRank.Report, output: String) -> String {
    var s = String(format: "decompose %@ (%@ ranks): %d matrices, expert parameters %d → %d (%.1f%% kept)", r.method, r.allocation, r.matrices,
                   r.parametersBefore, r.parametersAfter, 100 * Double(r.parametersAfter) / Double(max(r.parametersBefore, 1)))
    if r.jitteredCholesky > 0 { s += ", \(r.jitteredCholesky) Gram matrices needed jitter" }
    return s + " → \(output)"
}
