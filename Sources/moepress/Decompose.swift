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
        Defaults are MoE-I² stage 2 as published: SVD-LLM with importance ranks (the recipe stage and `compress` \
        use the same defaults). It needs calibration: --calib CACHE (from `moepress calibrate` on THIS model), or \
        --calib-dir D to calibrate here (--samples × --seq-len; the cache is kept in .<output>.calibration beside \
        the output until the command succeeds, so a killed run calibrates only once). --ratio R is the fraction of expert parameters KEPT (SVD-LLM's own CLI uses the fraction removed): an \
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
        written and resumes after them (same bytes); delete that folder to start over. --update-steps N adds \
        SVD-LLM's parameter update: a LoRA on each factor of the decomposed projections, trained N steps on the \
        --calib-dir text and merged into its factor (same rank, same size); decompose and update then run as a \
        built-in recipe through the pipeline, in .<output>.moepress-decompose (resumable).
        """)

    @Option(help: "A Hugging Face model folder (original or pruned).") var model: String
    @Option(help: "Decomposition method: svd or svdllm.") var method: LowRank.Method = LowRank.Options().method
    @Option(help: "Calibration cache of this model (Gram matrices for svdllm; importance when there is no moei2 plan.json).") var calib: String?
    @OptionGroup var text: CalibrationTextOptions
    var calibDir: String? { text.calibDir }
    var samples: Int { text.windows }
    var seqLen: Int { text.windowTokens }
    @Option(help: "Seed of the calibration window sampler (with --calib-dir; default: 0).") var seed: UInt64?
    @Option(help: "Fraction of expert parameters KEPT, in (0, 1].") var ratio: Double?
    @Option(help: "Average rank per expert matrix (instead of --ratio).") var rank: Int?
    @Option(help: "Rank allocation over a layer's experts: uniform or importance.") var rankAlloc: LowRank.Allocation = LowRank.Options().allocation
    @Option(help: "Importance exponent α of the rank allocation (with --rank-alloc importance; default: \(LowRank.Options().alpha)).") var alpha: Double?
    @Option(help: "Calibration tokens per layer for computing importance (with --rank-alloc importance; default: 8192).") var importanceTokens: Int?
    @Option(help: "Projections to decompose, comma-separated (gate,up,down).") var targets: String = "gate,up,down"
    @Option(help: "SVD-LLM's parameter update: after decomposing, train a LoRA on each factor for N steps on the --calib-dir text and merge it (same rank). 0: none.") var updateSteps = 0
    @Option(help: "Update: peak learning rate (default: 1e-4).") var updateLr: Double?
    @Option(help: "Update: LoRA rank on each factor (default: 8).") var updateRank: Int?
    @Option(help: "Update: sequences per step (default: 8).") var updateBatch: Int?
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var out: OutputOptions
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        let t = Set(targets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        guard !t.isEmpty, t.isSubset(of: ["gate", "up", "down"]) else { throw usage("takes gate, up and/or down, comma-separated", "--targets") }
        try checkOptions("decompose", [("--ratio", "ratio", ratio), ("--rank", "rank", rank.map(Double.init)), ("--alpha", "alpha", alpha),
                                       ("--importance-tokens", "importance_tokens", importanceTokens.map(Double.init))])
        guard (ratio != nil) != (rank != nil) else { throw usage("give exactly one of them (fraction kept, or a rank)", "--ratio, --rank") }
        if calib != nil && calibDir != nil { throw usage("give one of them, not both", "--calib, --calib-dir") }
        guard updateSteps >= 0 else { throw usage("must be 0 (no update) or more", "--update-steps") }
        if rankAlloc != .importance {
            if alpha != nil { throw usage("only importance ranks use the exponent", "--alpha") }
            if importanceTokens != nil { throw usage("only importance ranks are computed from calibration tokens", "--importance-tokens") }
            if method == .svd {
                if calib != nil { throw usage("plain SVD with uniform ranks uses no calibration", "--calib") }
                if calibDir != nil && updateSteps == 0 { throw usage("plain SVD with uniform ranks uses no calibration", "--calib-dir") }
            }
        }
        if seed != nil && calibDir == nil { throw usage("only --calib-dir's calibration windows are seeded", "--seed") }
        if memory.maxMemory != nil && calibDir == nil && rankAlloc != .importance {
            throw usage("no layer-major pass runs without --calib-dir or importance ranks (factors are computed one expert at a time)", "--max-memory")
        }
        if updateSteps > 0 {
            guard calibDir != nil else { throw usage("trains on text: give --calib-dir DIR (the pipeline calibrates and trains on it)", "--update-steps") }
            try checkOptions("heal", [("--update-steps", "steps", Double(updateSteps)), ("--update-lr", "lr", updateLr),
                                      ("--update-rank", "lora_rank", updateRank.map(Double.init)), ("--update-batch", "batch", updateBatch.map(Double.init))])
        } else {
            let given = [(updateLr != nil, "--update-lr"), (updateRank != nil, "--update-rank"), (updateBatch != nil, "--update-batch")]
            if let flag = given.first(where: \.0)?.1 { throw usage("only the update trains: give --update-steps N", flag) }
        }
    }

    var seedValue: UInt64 { seed ?? 0 }
    var alphaValue: Double { alpha ?? LowRank.Options().alpha }
    var importanceTokenCount: Int { importanceTokens ?? 8192 }

    /// With --update-steps: decompose, then SVD-LLM's update (LoRA on each factor of the decomposed projections,
    /// merged), as a built-in recipe run by the pipeline.
    func runWithUpdate() throws {
        let url = modelURL(model)
        let out = try newOutput(output, overwrite: overwrite)
        func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
        let kinds = targets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let data = URL(fileURLWithPath: calibDir!).standardizedFileURL.path
        let target = ratio.map { "ratio: \($0)" } ?? "rank: \(rank!)"
        let text = """
        model: \(quoted(url.path))
        seed: \(seedValue)
        calibration: {data: \(quoted(data)), samples: \(samples), seq_len: \(seqLen)}
        keep_intermediate: false
        shard_size: \(self.out.shardBytes)
        stages:
          - decompose: {method: \(method.rawValue), \(target), rank_alloc: \(rankAlloc.rawValue), alpha: \(alphaValue), importance_tokens: \(importanceTokenCount), targets: [\(kinds.joined(separator: ", "))]}
          - heal: {data: \(quoted(data)), steps: \(updateSteps), lr: \(updateLr ?? 1e-4), lora_rank: \(updateRank ?? 8), lora_alpha: \(2 * (updateRank ?? 8)), lora_dropout: 0, batch: \(updateBatch ?? 8), seq_len: \(seqLen), targets: [\(kinds.joined(separator: ", "))]}
        export: none

        """
        let work = BuiltInRecipe(command: "decompose", text: text, output: out)
        let (_, final) = try work.run(quiet: quiet, memory: memory.budget)
        if overwrite { try? FileManager.default.removeItem(at: out) }
        try FileManager.default.moveItem(at: final, to: out)
        work.remove()
        if !quiet { log("decompose: factors updated over \(updateSteps) steps → \(out.path)") }
    }

    func run() throws {
        try compute.run {
            if updateSteps > 0 { return try runWithUpdate() }
            var o = LowRank.Options()
            o.method = method
            o.target = ratio.map { .keep($0) } ?? .rank(rank!)
            o.allocation = rankAlloc
            o.alpha = alphaValue
            o.targets = Set(targets.split(separator: ",").map { String($0) })
            let url = modelURL(model)
            let dest = try newOutput(output, overwrite: overwrite)
            var importance: [Int: [Double]]? = nil
            if rankAlloc == .importance { importance = try ExpertImportance.plan(in: url).flatMap(ExpertImportance.fromPlan) }
            var open: CausalLM? = nil
            func loadedModel() throws -> CausalLM {
                if let open { return open }
                let m = try ResourceMonitor.shared.stage("load") { try ModelRegistry.load(directory: url) }
                open = m
                return m
            }
            // --check-weights scans the weights as the model is opened, which plain SVD does not otherwise do.
            if compute.checkWeights { _ = try loadedModel() }
            // Calibration: a given cache, or one made here when SVD-LLM or importance (without a plan) needs it.
            let needsCache = method == .svdllm || (rankAlloc == .importance && importance == nil)
            let workCache = dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).calibration")
            var cache = try calib.map { try openCache($0, for: url) }
            if cache == nil && needsCache {
                guard let calibDir else {
                    throw CLIError(method == .svdllm
                        ? "svdllm (the default method) whitens with calibration: give --calib CACHE or --calib-dir DIR (or --method svd --rank-alloc uniform for plain SVD)"
                        : "--rank-alloc importance needs --calib CACHE or --calib-dir DIR, or a model pruned by moei2 (its plan.json holds the importance)")
                }
                cache = try ResourceMonitor.shared.stage("calibrate") { () -> CalibrationCache in
                    if let c = try? openCache(workCache.path, for: url), c.manifest.samples == samples, c.manifest.seqLen == seqLen, c.manifest.seed == seedValue {
                        if !quiet { log("calibration: reusing \(workCache.path) from an interrupted run") }
                        return c
                    }
                    return try calibrate(model: model, open: loadedModel(), calibDir: calibDir, samples: samples, seqLen: seqLen, seed: seedValue,
                                         output: workCache, budget: memory.budget, overwrite: true, quiet: quiet)
                }
            }
            if rankAlloc == .importance {
                if importance != nil {
                    if !quiet { log("importance: stage-1 values from \(url.appendingPathComponent("plan.json").path)") }
                } else if let cache {
                    importance = try ExpertImportance.compute(model: loadedModel(), cache: cache, maxTokens: importanceTokenCount,
                                                                    memory: memory.budget, quiet: quiet)
                } else {
                    throw CLIError("--rank-alloc importance needs --calib CACHE, or a model pruned by moei2 (its plan.json holds the importance)")
                }
            }
            let r = try ResourceMonitor.shared.stage("decompose") { try LowRank.decompose(model: url, open: method == .svdllm ? loadedModel() : nil, options: o, whitening: method == .svdllm ? cache : nil, importance: importance,
                                          output: dest, overwrite: overwrite, quiet: quiet, shardSize: out.shardBytes,
                                          resumable: true) }
            try? FileManager.default.removeItem(at: workCache)
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
