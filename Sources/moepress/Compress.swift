import ArgumentParser
import Foundation
import MoECheckpoint
import MoETensor
import MoEModels
import MoECalibration
import MoECompression

struct Compress: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a whole compression recipe (MoE-I²: stage-1 expert pruning, then stage-2 low-rank experts).",
        discussion: """
        --recipe moei2 (methods.md §3): calibrate, prune --prune-ratio R1 of the routed experts with MoE-I² \
        (importance, non-uniform layer counts, genetic search, KT-reception field), then decompose the surviving \
        experts keeping --keep-params R2 of their parameters, ranks shared by the stage-1 importance \
        (--rank-alloc importance, α = --alpha). With --method svdllm (default) the pruned model is calibrated \
        again on the same windows, so each surviving expert is whitened by the tokens routed to it after \
        pruning. Expert parameters end near (1 − R1)·R2 of the original. Intermediate folders live next to \
        --output and are removed; the output appears whole, with plan.json, decompose.json and compress.json. \
        LoRA healing (stage 3) is not part of this command yet.
        """)

    enum Recipe: String, ExpressibleByArgument, CaseIterable { case moei2 }

    @Option(help: "A Hugging Face model folder.") var model: String
    @Option(help: "Recipe: moei2.") var recipe: Recipe = .moei2
    @Option(help: "Fraction of routed experts to remove (stage 1).") var pruneRatio: Double
    @Option(help: "Fraction of the surviving experts' parameters to KEEP (stage 2).") var keepParams: Double
    @Option(help: "Stage-2 method: svd or svdllm.") var method: LowRank.Method = LowRank.Options().method
    @Option(help: "Stage-2 rank allocation: uniform or importance.") var rankAlloc: LowRank.Allocation = LowRank.Options().allocation
    @Option(help: "Importance exponent α.") var alpha = LowRank.Options().alpha
    @Option(help: "Projections to decompose (gate,up,down).") var targets = "gate,up,down"
    @Option(help: "Calibration text folder (.txt files).") var calibDir: String?
    @Option(help: "A calibration cache of the original model (instead of calibrating it here; svdllm still needs --calib-dir).") var calib: String?
    @Option(help: "Calibration windows.") var samples = 128
    @Option(help: "Tokens per window.") var seqLen = 256
    @Option(help: "Seed of calibration sampling and the genetic search.") var seed: UInt64 = 0
    @OptionGroup var search: SearchOptions
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var out: OutputOptions
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("prune", [("--prune-ratio", "ratio", pruneRatio)])
        try checkOptions("decompose", [("--keep-params", "ratio", keepParams), ("--alpha", "alpha", alpha)])
        try checkOptions("calibration", [("--samples", "samples", Double(samples)), ("--seq-len", "seq_len", Double(seqLen))])
        guard calib != nil || calibDir != nil else { throw ValidationError("give --calib-dir DIR (or --calib CACHE with --method svd)") }
        if method == .svdllm && calibDir == nil { throw ValidationError("svdllm calibrates the pruned model: give --calib-dir DIR") }
    }

    struct Summary: Codable {
        var recipe: String
        var pruneRatio: Double
        var keepParams: Double
        var method: String
        var allocation: String
        var seed: UInt64
        var parameters: [String: Int]
        var seconds: [String: Double]
    }

    func run() throws {
        try compute.run {
            let url = modelURL(model)
            let out = try newOutput(output, overwrite: overwrite)
            removeStaleWork(beside: out, prefix: ".\(out.lastPathComponent).moepress-work-")
            let work = out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).moepress-work-\(getpid())")
            try? FileManager.default.removeItem(at: work)
            try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: work) }
            var seconds: [String: Double] = [:]
            func timed<T>(_ stage: String, _ body: () throws -> T) rethrows -> T {
                let t = Date()
                defer { seconds[stage] = Date().timeIntervalSince(t) }
                if !quiet { log("== \(stage)") }
                return try body()
            }

            let m = try ResourceMonitor.shared.stage("load") { try ModelRegistry.load(directory: url) }
            let cache = try timed("calibrate") { () -> CalibrationCache in
                if let calib { return try openCache(calib, for: url) }
                return try calibrate(model: url.path, open: m, calibDir: calibDir!, samples: samples, seqLen: seqLen, seed: seed,
                                     output: work.appendingPathComponent("calib"), budget: memory.budget, overwrite: true, quiet: quiet)
            }
            let pruned = work.appendingPathComponent("pruned")
            var plan = try timed("prune (MoE-I² stage 1)") { () -> PruningPlan in
                try MoEI2.plan(model: m, cache: cache, budget: .ratio(pruneRatio), options: search.moei2(seed: seed), modelName: url.path,
                               memory: memory.budget, quiet: quiet)
            }
            plan.parameters["ratio"] = "\(pruneRatio)"
            plan.parameters["seed"] = "\(seed)"
            try PlanApplier.apply(plan, model: url, output: pruned, shardSize: self.out.shardSize.bytes)
            var whitening: CalibrationCache? = nil
            let prunedModel = method == .svdllm ? try ModelRegistry.load(directory: pruned) : nil
            if method == .svdllm {
                whitening = try timed("calibrate the pruned model (its experts' inputs)") {
                    try calibrate(model: pruned.path, open: prunedModel, calibDir: calibDir!, samples: cache.manifest.samples, seqLen: cache.manifest.seqLen,
                                  seed: cache.manifest.seed, output: work.appendingPathComponent("calib-pruned"), budget: memory.budget,
                                  overwrite: true, quiet: quiet)
                }
            }
            var o = LowRank.Options()
            o.method = method
            o.target = .keep(keepParams)
            o.allocation = rankAlloc
            o.alpha = alpha
            o.targets = Set(targets.split(separator: ",").map { String($0) })
            let staged = work.appendingPathComponent("final")
            let report = try timed("decompose (MoE-I² stage 2)") {
                try LowRank.decompose(model: pruned, open: prunedModel, options: o, whitening: whitening, importance: ExpertImportance.fromPlan(plan),
                                      output: staged, quiet: quiet, shardSize: self.out.shardSize.bytes)
            }
            let summary = Summary(recipe: recipe.rawValue, pruneRatio: pruneRatio, keepParams: keepParams, method: method.rawValue,
                                  allocation: rankAlloc.rawValue, seed: seed,
                                  parameters: ["original": try parameterCount(url), "pruned": try parameterCount(pruned), "compressed": try parameterCount(staged),
                                               "experts_removed": plan.removed],
                                  seconds: seconds)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            enc.keyEncodingStrategy = .convertToSnakeCase
            try enc.encode(summary).write(to: staged.appendingPathComponent("compress.json"))
            if overwrite { try? FileManager.default.removeItem(at: out) }
            try FileManager.default.moveItem(at: staged, to: out)
            if !quiet {
                let p = summary.parameters
                log(decomposeSummary(report, output: out.path))
                log(String(format: "compress moei2: parameters %d → %d after pruning → %d (%.1f%% of the original) → %@", p["original"]!, p["pruned"]!,
                           p["compressed"]!, 100 * Double(p["compressed"]!) / Double(p["original"]!), out.path))
            }
        }
    }
}

/// Parameters stored in a checkpoint folder (every tensor's element count).
func parameterCount(_ dir: URL) throws -> Int {
    let ck = try Checkpoint(directory: dir)
    return ck.names.reduce(0) { $0 + (ck.info($1)?.shape.reduce(1, *) ?? 0) }
}
