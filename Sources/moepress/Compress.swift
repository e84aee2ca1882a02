import ArgumentParser
import Foundation
import MoECheckpoint
import MoETensor
import MoEModels
import MoECompression
import MoEPipeline
import MoETraining

struct Compress: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compress a model with MoE-I² end to end: a built-in recipe run by the pipeline (prune → decompose → heal).",
        discussion: """
        --recipe moei2 (methods.md §3) is the recipe `moepress run` would run for: calibrate (--calib-dir, \
        --samples × --seq-len, --seed); stage 1 prunes --prune-ratio of the routed experts with MoE-I² \
        (importance, non-uniform layer counts, genetic search, KT-reception field); stage 2 recalibrates the \
        pruned model and decomposes the surviving experts keeping --keep-params of their parameters (--method, \
        --rank-alloc and --alpha default to the paper's SVD-LLM with importance ranks, as `decompose`); stage 3, \
        with --heal-steps N, heals with LoRA on --heal-targets (on low-rank experts an adapter on each factor, \
        merged at the same rank: SVD-LLM's update, so the model keeps its size; the paper's stand-in recipe is \
        LoRA r 8, lr 1e-4). The stages run in .<output>.moepress-compress beside --output, which a killed run \
        resumes (same command); each stage's weights are deleted once the next has used them. The output \
        appears whole, with plan.json, decompose.json and compress.json, and the work folder is removed.
        """)

    enum Recipe: String, ExpressibleByArgument, CaseIterable { case moei2 }

    @Option(help: "A Hugging Face model folder.") var model: String
    @Option(help: "Recipe: moei2.") var recipe: Recipe = .moei2
    @Option(help: "Fraction of routed experts to remove (stage 1).") var pruneRatio: Double
    @Option(help: "Fraction of the surviving experts' parameters to KEEP (stage 2).") var keepParams: Double
    @Option(help: "Stage-2 method: svd or svdllm.") var method: LowRank.Method = LowRank.Options().method
    @Option(help: "Stage-2 rank allocation: uniform or importance.") var rankAlloc: LowRank.Allocation = LowRank.Options().allocation
    @Option(help: "Importance exponent α (with --rank-alloc importance; default: \(LowRank.Options().alpha)).") var alpha: Double?
    @Option(help: "Projections to decompose (gate,up,down).") var targets = "gate,up,down"
    @Option(help: "Calibration text folder (.txt files).") var calibDir: String
    @Option(help: "Calibration windows.") var samples = 128
    @Option(help: "Tokens per window.") var seqLen = 256
    @Option(help: "Seed of calibration sampling, the genetic search and healing.") var seed: UInt64 = 0
    @OptionGroup var search: SearchOptions
    @Option(help: "Stage 3: LoRA optimiser steps (0: stop after stage 2).") var healSteps = 0
    @Option(help: "Stage 3: training text (default: --calib-dir).") var healData: String?
    @Option(help: "Stage 3: peak learning rate (default: 1e-4).") var healLr: Double?
    @Option(help: "Stage 3: LoRA rank (default: 8).") var healRank: Int?
    @Option(help: "Stage 3: LoRA alpha (default: 16).") var healAlpha: Double?
    @Option(help: "Stage 3: sequences per step (default: 8).") var healBatch: Int?
    @Option(help: "Stage 3: tokens per sequence (default: 256).") var healSeqLen: Int?
    @Option(help: "Stage 3: adapted projections (default: \(LoRA.allTargets.joined(separator: ","))).") var healTargets: String?
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("prune", [("--prune-ratio", "ratio", pruneRatio)])
        try checkOptions("decompose", [("--keep-params", "ratio", keepParams), ("--alpha", "alpha", alpha)])
        try checkOptions("calibration", [("--samples", "samples", Double(samples)), ("--seq-len", "seq_len", Double(seqLen))])
        if alpha != nil && rankAlloc != .importance { throw usage("only importance ranks use the exponent", "--alpha") }
        guard healSteps >= 0 else { throw usage("must be 0 (no stage 3) or more", "--heal-steps") }
        if healSteps > 0 {
            try checkOptions("heal", [("--heal-steps", "steps", Double(healSteps)), ("--heal-lr", "lr", healLr), ("--heal-rank", "lora_rank", healRank.map(Double.init)),
                                      ("--heal-alpha", "lora_alpha", healAlpha), ("--heal-batch", "batch", healBatch.map(Double.init)),
                                      ("--heal-seq-len", "seq_len", healSeqLen.map(Double.init))])
        } else {
            let given = [(healData != nil, "--heal-data"), (healLr != nil, "--heal-lr"), (healRank != nil, "--heal-rank"), (healAlpha != nil, "--heal-alpha"),
                         (healBatch != nil, "--heal-batch"), (healSeqLen != nil, "--heal-seq-len"), (healTargets != nil, "--heal-targets")]
            if let flag = given.first(where: \.0)?.1 { throw usage("only stage 3 heals: give --heal-steps N", flag) }
        }
    }

    /// The recipe this command runs (YAML, parsed and validated like any recipe file).
    func recipeText(model url: URL) -> String {
        func list(_ s: String) -> String { "[" + s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ") + "]" }
        func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
        let search = self.search.moei2(seed: seed)
        var text = """
        model: \(quoted(url.path))
        seed: \(seed)
        calibration: {data: \(quoted(URL(fileURLWithPath: calibDir).standardizedFileURL.path)), samples: \(samples), seq_len: \(seqLen)}
        keep_intermediate: false
        stages:
          - prune: {method: moei2, ratio: \(pruneRatio), population: \(search.population), generations: \(search.generations), candidates: \(search.candidates), block_size: \(search.blockSize), \(search.fitnessTokens.map { "fitness_tokens: \($0), " } ?? "")field_sequences: \(search.fieldSequences)\(search.uniformCounts ? ", uniform_counts: true" : "")}
          - decompose: {method: \(method.rawValue), ratio: \(keepParams), rank_alloc: \(rankAlloc.rawValue), alpha: \(alpha ?? LowRank.Options().alpha), targets: \(list(targets))}

        """
        if healSteps > 0 {
            let data = URL(fileURLWithPath: healData ?? calibDir).standardizedFileURL.path
            text += "  - heal: {data: \(quoted(data)), steps: \(healSteps), lr: \(healLr ?? 1e-4), lora_rank: \(healRank ?? 8), lora_alpha: \(healAlpha ?? 16), batch: \(healBatch ?? 8), seq_len: \(healSeqLen ?? 256), targets: \(list(healTargets ?? LoRA.allTargets.joined(separator: ",")))}\n"
        }
        return text + "export: none\n"
    }

    struct Summary: Codable {
        var recipe: String
        var pruneRatio: Double
        var keepParams: Double
        var method: String
        var allocation: String
        var healSteps: Int
        var seed: UInt64
        var parameters: [String: Int]
        var seconds: [String: Double]
    }

    func run() throws {
        try compute.run {
            let url = modelURL(model)
            let out = try newOutput(output, overwrite: overwrite)
            let fm = FileManager.default
            let work = BuiltInRecipe(command: "compress", text: recipeText(model: url), output: out)
            let (summary, final) = try work.run(quiet: quiet, memory: memory.budget)
            let runDir = work.runDir
            let pruned = runDir.appendingPathComponent(summary.stages[0].folder).appendingPathComponent("model")
            let plan = try ExpertImportance.plan(in: pruned)
            let params = summary.models.reduce(into: [String: Int]()) { $0[$1.label] = $1.parameters }
            let s = Summary(recipe: recipe.rawValue, pruneRatio: pruneRatio, keepParams: keepParams, method: method.rawValue,
                            allocation: rankAlloc.rawValue, healSteps: healSteps, seed: seed,
                            parameters: ["original": params["original"] ?? 0, "compressed": params["compressed"] ?? 0, "experts_removed": plan?.removed ?? 0],
                            seconds: summary.stages.reduce(into: [String: Double]()) { $0[$1.stage] = $1.seconds })
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            enc.keyEncodingStrategy = .convertToSnakeCase
            try enc.encode(s).write(to: final.appendingPathComponent("compress.json"))
            if overwrite { try? fm.removeItem(at: out) }
            try fm.moveItem(at: final, to: out)
            work.remove()
            if !quiet {
                log(String(format: "compress moei2: parameters %d → %d (%.1f%% of the original), %d experts removed → %@", s.parameters["original"]!,
                           s.parameters["compressed"]!, 100 * Double(s.parameters["compressed"]!) / Double(max(1, s.parameters["original"]!)),
                           s.parameters["experts_removed"]!, out.path))
            }
        }
    }
}

/// Parameters stored in a checkpoint folder (every tensor's element count).
func parameterCount(_ dir: URL) throws -> Int {
    let ck = try Checkpoint(directory: dir)
    return ck.names.reduce(0) { $0 + (ck.info($1)?.shape.reduce(1, *) ?? 0) }
}

/// A recipe a command builds from its options and runs through the pipeline (the one orchestrator), in
/// `.<output>.moepress-<command>` beside the output: the same command after a kill continues there (its stages'
/// manifests and journals), other options start afresh.
struct BuiltInRecipe {
    let command: String
    let text: String
    let work: URL
    var runDir: URL { work.appendingPathComponent("run") }

    init(command: String, text: String, output: URL) {
        self.command = command
        self.text = text
        work = output.deletingLastPathComponent().appendingPathComponent(".\(output.lastPathComponent).moepress-\(command)")
    }

    /// Runs the recipe; returns the run's summary and the last stage's model folder (to be moved into place).
    func run(quiet: Bool, memory: MemoryBudget) throws -> (RunSummary, URL) {
        let fm = FileManager.default
        let recipeURL = work.appendingPathComponent("recipe.yaml")
        let resume = fm.contents(atPath: recipeURL.path) == Data(text.utf8)
        if !resume {
            try? fm.removeItem(at: work)
            try fm.createDirectory(at: work, withIntermediateDirectories: true)
            try text.write(to: recipeURL, atomically: true, encoding: .utf8)
        } else if !quiet {
            log("\(command): resuming \(work.path)")
        }
        let summary: RunSummary
        do {
            let r = try MoEPipeline.Recipe(file: recipeURL)
            summary = try Pipeline(recipe: r, runDir: runDir, resume: resume, quiet: quiet, memory: memory).run()
        } catch {
            // Refused before any stage ran (no run folder yet): there is nothing to resume, so nothing is left behind.
            if !fm.fileExists(atPath: runDir.path) { remove() }
            throw error
        }
        return (summary, runDir.appendingPathComponent(summary.stages.last!.folder).appendingPathComponent("model"))
    }

    func remove() { try? FileManager.default.removeItem(at: work) }
}
