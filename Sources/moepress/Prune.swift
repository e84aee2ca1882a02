import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer
import MoECalibration
import MoECompression

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run calibration text through a model layer by layer and cache what pruning methods need.",
        discussion: """
        Samples --samples windows of --seq-len tokens (seeded) from the .txt files of --calib-dir (the training part \
        of each: its last ~10%, the validation slice, is never read; see eval perplexity --validation-of), then stores per \
        decoder layer the layer input and, for MoE layers, the true MoE-block input (post-attention norm), the \
        full block output, router logits and decisions, and per-expert statistics (routing frequency, gate mass, \
        REAP saliency, token counts), all from one layer-major pass within --max-memory: the weights stream \
        from disk when the model is larger than that. The estimated disk, memory and time (from one layer timed on a \
        few windows) are printed first, and a \
        disk too small for the cache is refused. A killed run, started again with the same arguments, resumes \
        after its last finished layer (the work is in .<output>.partial) and gives the same bytes. The cache's \
        manifest.json records the model and data hashes, seed, N and L. Defaults suit the small shared models; \
        for real models use e.g. --samples 128 --seq-len 2048, or --cache-dtype f16 to halve the disk.
        """)

    @Option(help: "A Hugging Face model folder (with tokenizer.json).") var model: String
    @Option(help: "A folder of calibration .txt files.") var calibDir: String
    @Option(help: "Windows to sample.") var samples = 128
    @Option(help: "Tokens per window.") var seqLen = 256
    @Option(help: "Seed of the window sampler.") var seed: UInt64 = 0
    @Option(help: "The cache folder to write.") var output: String
    @Option(help: "Dtype of the cached activations: f32 (exact), f16 or bf16 (half the disk).") var cacheDtype: String = "f32"
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("calibration", [("--samples", "samples", Double(samples)), ("--seq-len", "seq_len", Double(seqLen))])
        guard Self.dtype(cacheDtype) != nil else { throw usage("takes f32, f16 or bf16", "--cache-dtype") }
    }

    static func dtype(_ s: String) -> DType? { ["f32": DType.f32, "f16": .f16, "bf16": .bf16][s.lowercased()] }

    func run() throws {
        try compute.run {
            _ = try ResourceMonitor.shared.stage("calibrate") {
                try calibrate(model: model, calibDir: calibDir, samples: samples, seqLen: seqLen, seed: seed, output: URL(fileURLWithPath: output),
                              activations: Self.dtype(cacheDtype)!, budget: memory.budget, overwrite: overwrite, quiet: quiet)
            }
        }
    }
}

/// Calibrating on the fly from a folder of text, instead of a cache made by `moepress calibrate` (prune, decompose).
struct CalibrationTextOptions: ParsableArguments {
    @Option(help: "Calibration text folder: calibrates this model here (instead of --calib).") var calibDir: String?
    @Option(help: "Calibration windows (with --calib-dir; default: 128).") var samples: Int?
    @Option(help: "Tokens per calibration window (with --calib-dir; default: 256).") var seqLen: Int?

    var windows: Int { samples ?? 128 }
    var windowTokens: Int { seqLen ?? 256 }

    func validate() throws {
        try checkOptions("calibration", [("--samples", "samples", samples.map(Double.init)), ("--seq-len", "seq_len", seqLen.map(Double.init))])
        if calibDir == nil {
            if samples != nil { throw usage("only --calib-dir calibrates here", "--samples") }
            if seqLen != nil { throw usage("only --calib-dir calibrates here", "--seq-len") }
        }
    }
}

/// Calibrates a model folder (with its model, when the caller has it open: one load, one pass).
func calibrate(model: String, open: CausalLM? = nil, calibDir: String, samples: Int, seqLen: Int, seed: UInt64, output: URL,
               activations: DType = .f32, budget: MemoryBudget = .default, overwrite: Bool, quiet: Bool) throws -> CalibrationCache {
    try Calibration.calibrate(modelDirectory: modelURL(model), model: open, textDirectory: URL(fileURLWithPath: calibDir), samples: samples,
                              seqLen: seqLen, seed: seed, output: output, activations: activations, budget: budget, overwrite: overwrite, quiet: quiet)
}

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove experts and write the pruned checkpoint with its plan.json.",
        discussion: """
        Methods needing calibration (--calib CACHE or --calib-dir D): frequency (drop the least-routed experts), \
        reap (lowest REAP saliency), naee (per layer, the kept subset with the smallest layer-output error, by \
        enumeration), all uniform per layer; moei2 (MoE-I² stage 1: importance, non-uniform counts, genetic \
        search, KT-reception field through full decoder layers). Data-free: moeits (weight NMI between experts; \
        --tau T for the paper's threshold rule, or --ratio/--keep for a fixed count). --ratio R removes \
        round(R × experts) (per layer for uniform methods, overall for moei2); --keep K keeps K per layer. A layer never keeps fewer experts than \
        top-k. Equal counts in every layer give a standard checkpoint that stock HF transformers loads; \
        unequal counts add a "moepress" section (experts_per_layer) to config.json, which MoEPress loads. \
        The output is built in .<output>.partial beside it, which journals each layer's search as it ends: after a \
        kill, the same command resumes there (same bytes); delete that folder to start over.
        """)

    enum Method: String, ExpressibleByArgument, CaseIterable { case frequency, reap, naee, moei2, moeits }

    @Option(help: "A Hugging Face model folder.") var model: String
    @Option(help: "Pruning method: \(Method.allCases.map(\.rawValue).joined(separator: ", ")).") var method: Method
    @Option(help: "The output checkpoint folder.") var output: String
    @Option(help: "A calibration cache (from `moepress calibrate`).") var calib: String?
    @OptionGroup var text: CalibrationTextOptions
    @Option(help: "Fraction of each layer's routed experts to remove.") var ratio: Double?
    @Option(help: "Experts to keep in every MoE layer.") var keep: Int?
    @Option(help: "MoEITS threshold factor τ (θ = mean + τ·IQR of the NMI matrix).") var tau: Double?
    @Option(help: "MoEITS bin rule: numpy>=2.3 (default) or numpy<2.3.") var binRule: String = "numpy>=2.3"
    @Option(help: "MoEITS NMI weights of gate,up,down (default: 0.2,0.4,0.4 with a shared expert, else 1/3 each).") var nmiWeights: String?
    @Option(help: "Seed of MoE-I²'s genetic search and of --calib-dir's calibration windows (default: 0).") var seed: UInt64?
    @OptionGroup var search: SearchOptions
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var out: OutputOptions
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    var calibDir: String? { text.calibDir }

    func validate() throws {
        try checkOptions("prune", [("--ratio", "ratio", ratio), ("--keep", "keep", keep.map(Double.init)), ("--tau", "tau", tau)])
        if method == .moeits {
            guard (tau != nil) != (ratio != nil || keep != nil) else { throw usage("moeits takes --tau, or --ratio or --keep", "--method moeits") }
            guard calibDir == nil else { throw usage("moeits is data-free; --calib CACHE only adds reconstruction errors to the plan", "--calib-dir") }
        } else {
            guard tau == nil else { throw usage("only moeits takes a threshold", "--tau") }
            guard (ratio != nil) != (keep != nil) else { throw usage("give exactly one of them", "--ratio, --keep") }
            guard (calib != nil) != (calibDir != nil) else { throw usage("\(method.rawValue) needs calibration: give exactly one of them", "--calib, --calib-dir") }
        }
        if ratio != nil && keep != nil { throw usage("give one of them, not both", "--ratio, --keep") }
        guard MoEITS.BinRule(rawValue: binRule) != nil else { throw usage("takes numpy>=2.3 or numpy<2.3", "--bin-rule") }
        if method != .moeits {
            if nmiWeights != nil { throw usage("only moeits weighs projections by NMI", "--nmi-weights") }
            if binRule != MoEITS.BinRule.numpy23.rawValue { throw usage("only moeits bins weights", "--bin-rule") }
        }
        _ = try Self.weights(nmiWeights)
        if method != .moei2, let flag = search.searchOnly.first { throw usage("only moei2 runs the genetic search", flag) }
        if search.fitnessTokens != nil && method != .moei2 && method != .naee && calib == nil && calibDir == nil {
            throw usage("scores calibration tokens: give --calib or --calib-dir", "--fitness-tokens")
        }
        if seed != nil && method != .moei2 && calibDir == nil { throw usage("only moei2's search and --calib-dir's calibration are seeded", "--seed") }
    }

    /// `--nmi-weights gate,up,down`: three finite non-negative numbers, anything else refused.
    static func weights(_ s: String?) throws -> [Double]? {
        guard let s else { return nil }
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let v = parts.compactMap { Double($0) }
        guard parts.count == 3, v.count == 3, v.allSatisfy({ $0.isFinite && $0 >= 0 }), v.contains(where: { $0 > 0 }) else {
            throw usage("needs three non-negative numbers gate,up,down, not all 0, got '\(s)'", "--nmi-weights")
        }
        return v
    }

    func run() throws {
        let seed = self.seed ?? 0
        try compute.run {
            let url = modelURL(model)
            let dest = try newOutput(output, overwrite: overwrite)
            let start = Date()
            // The inputs as they are now, before anything is read from them (checked again before the output is committed).
            let inputs = try [FolderFingerprint(url)] + [calib, calibDir].compactMap { $0 }.map { try FolderFingerprint(URL(fileURLWithPath: $0)) }
            let m = try ResourceMonitor.shared.stage("load") { try ModelRegistry.load(directory: url) }
            var request = PruningRequest(method: PruningMethod(rawValue: method.rawValue)!, budget: ratio.map { .ratio($0) } ?? keep.map { .keep($0) })
            request.tau = tau
            request.binRule = MoEITS.BinRule(rawValue: binRule)!
            request.nmiWeights = try Self.weights(nmiWeights)
            request.search = search.moei2(seed: seed)
            request.fitnessTokens = search.fitnessTokens ?? request.fitnessTokens
            request.memory = memory.budget
            var summary: PruningPlan? = nil
            // The output is resumable: its staging folder journals each layer's search as it finishes (and holds an
            // on-the-fly calibration), so the same command after a kill continues where it stopped.
            var key = "prune \(request.fingerprint) seed \(seed)\nmodel \(try Fingerprint.model(url, checkpoint: Checkpoint(directory: url)))"
            var cache: CalibrationCache? = nil
            if let calib {
                cache = try openCache(calib, for: url)
                key += "\ncalibration \(cache!.manifest.modelHash) \(cache!.manifest.dataHash) \(cache!.manifest.seed) \(cache!.manifest.samples)x\(cache!.manifest.seqLen)"
            } else if let calibDir {
                key += "\ncalibrate \(URL(fileURLWithPath: calibDir).standardizedFileURL.path) \(text.windows)x\(text.windowTokens)"
            }
            let target = try AtomicDirectory(dest, overwrite: overwrite, resumeKey: key)
            target.inputs = inputs
            if target.resuming && !quiet { Console.note("prune: resuming \(target.staging.path)") }
            try target.finish { target in
                if cache == nil, let calibDir, request.method.needsCalibration, let dir = target.journal.directory {
                    let t = dir.appendingPathComponent("calibration")
                    cache = try ResourceMonitor.shared.stage("calibrate") {
                        if FileManager.default.fileExists(atPath: t.path) { return try openCache(t.path, for: url) }
                        return try calibrate(model: model, open: m, calibDir: calibDir, samples: text.windows, seqLen: text.windowTokens, seed: seed, output: t,
                                             budget: memory.budget, overwrite: true, quiet: quiet)
                    }
                }
                var plan = try ResourceMonitor.shared.stage("plan") {
                    try Pruning.plan(request, model: m, modelName: url.path, cache: cache, quiet: quiet, journal: target.journal)
                }
                plan.parameters["seed"] = "\(seed)"
                try ResourceMonitor.shared.stage("write") {
                    try PlanApplier.apply(plan, model: url, into: target, shardSize: self.out.shardBytes)
                }
                summary = plan
            }
            let plan = summary!
            let kept = plan.layers.map { "\($0.kept.count)/\($0.experts)" }.joined(separator: " ")
            if let e = plan.parameters["reconstruction_error_sum"], !quiet { log("summed layer reconstruction error: \(e)") }
            if !quiet {
                log(String(format: "prune %@: removed %d experts (kept per layer: %@) in %.1f s → %@", method.rawValue, plan.removed, kept,
                           Date().timeIntervalSince(start), dest.path))
                if !plan.uniform { log("note: layers keep different numbers of experts; stock HF transformers/vLLM need equal counts (MoEPress loads it)") }
            }
        }
    }
}

/// MoE-I² search settings (and NAEE's token budget), shared by `prune` and `compress`.
struct SearchOptions: ParsableArguments {
    @Option(help: "MoE-I²: genetic-search population (default: \(MoEI2.Options().population)).") var population: Int?
    @Option(help: "MoE-I²: generations (default: \(MoEI2.Options().generations)).") var generations: Int?
    @Option(help: "MoE-I²: candidate prune sets kept per layer (K; default: \(MoEI2.Options().candidates)).") var candidates: Int?
    @Option(help: "MoE-I²: MoE layers per reception-field block (T; default: \(MoEI2.Options().blockSize)).") var blockSize: Int?
    @Option(help: "NAEE/MoE-I²: calibration tokens per layer used to score candidates, and the reconstruction errors of any plan made with calibration (default: NAEE 8192; MoE-I² every search token whose cache fits a quarter of --max-memory).") var fitnessTokens: Int?
    @Option(help: "MoE-I²: calibration sequences run through the decoder layers for the reception field (default: \(MoEI2.Options().fieldSequences)).") var fieldSequences: Int?
    @Flag(help: "MoE-I² ablation: remove the same number of experts in every layer instead of counts set by layer importance.") var uniformCounts = false

    func validate() throws {
        try checkOptions("prune", [("--population", "population", population.map(Double.init)), ("--generations", "generations", generations.map(Double.init)),
                                   ("--candidates", "candidates", candidates.map(Double.init)), ("--block-size", "block_size", blockSize.map(Double.init)),
                                   ("--fitness-tokens", "fitness_tokens", fitnessTokens.map(Double.init)),
                                   ("--field-sequences", "field_sequences", fieldSequences.map(Double.init))])
        do { try moei2(seed: 0).validate() } catch { throw ValidationError("\(error)") }
    }

    /// The options given that only MoE-I²'s genetic search uses.
    var searchOnly: [String] {
        [(population != nil, "--population"), (generations != nil, "--generations"), (candidates != nil, "--candidates"),
         (blockSize != nil, "--block-size"), (fieldSequences != nil, "--field-sequences"), (uniformCounts, "--uniform-counts")].filter(\.0).map(\.1)
    }

    func moei2(seed: UInt64) -> MoEI2.Options {
        var o = MoEI2.Options()
        if let population { o.population = population }
        if let generations { o.generations = generations }
        if let candidates { o.candidates = candidates }
        if let blockSize { o.blockSize = blockSize }
        if let fieldSequences { o.fieldSequences = fieldSequences }
        o.fitnessTokens = fitnessTokens; o.seed = seed; o.uniformCounts = uniformCounts
        return o
    }
}
