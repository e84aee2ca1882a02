import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer
import MoECalibration
import MoECompression
import MoETraining
import MoEEval

/// The one version string: the CLI's --version, run.json and stage manifests.
public let moepressVersion = "0.2.0"

/// What a stage folder's manifest.json records; a stage is skipped on --resume when everything but the
/// outputs matches (same kind, options, input model content, seed, calibration and version).
public struct StageManifest: Codable, Sendable, Equatable {
    public var stage: String
    public var options: [String: Recipe.OptionValue]
    public var input: String
    public var inputHash: String
    public var seed: UInt64
    public var calibration: String?
    public var version: String
    /// The stage's output model folder, relative to the stage folder.
    public var model: String
    /// FNV-1a of every output file (timing logs excluded).
    public var outputs: [String: String] = [:]
    /// A heal stage's validation loss before and after training (`ValidationLoss`: fixed windows of the
    /// validation slice of its data, which training never reads).
    public var validationLossBefore: Double?
    public var validationLossAfter: Double?

    func sameWork(as o: StageManifest) -> Bool {
        stage == o.stage && options == o.options && inputHash == o.inputHash && seed == o.seed && calibration == o.calibration && version == o.version
    }
}

/// Quality, size and speed of one model, as run.json and the report show them: the original, then every
/// stage's output model in order (branch by branch in a compare run).
public struct ModelSummary: Codable, Sendable {
    public var label: String
    public var path: String
    /// The stage that made this model, its branch and run folder (nil for the original).
    public var stage: String?
    public var branch: String?
    public var folder: String?
    public var parameters: Int
    public var activeParameters: Int
    public var bytesOnDisk: Int
    public var expertsPerLayer: [Int]
    public var perplexity: [String: Double] = [:]
    public var perplexityAll: Double?
    public var taskAccuracy: Double?
    public var taskAccuracyNorm: Double?
    public var prefillTokensPerSecond: Double?
    public var decodeTokensPerSecond: Double?
    /// Change against the original in percent, per column (`Pipeline.deltaColumns`); nil for the original.
    public var deltaPercent: [String: Double]?
}

public struct StageRecord: Codable, Sendable {
    public var branch: String
    public var stage: String
    public var folder: String
    public var skipped: Bool
    public var seconds: Double
}

public struct RunSummary: Codable, Sendable {
    public var recipe: String
    public var version: String
    public var stages: [StageRecord]
    public var models: [ModelSummary]
    /// Sentences about the results, measured at run time (why a model decodes slower than the original).
    public var notes: [String]?
}

public final class Pipeline {
    public let recipe: Recipe
    public let runDir: URL
    public let resume: Bool
    public let quiet: Bool
    /// What a stage's layer-major passes and fitness caches may use.
    public let memory: MemoryBudget
    /// The recipe's input folders as they were when the run started.
    var inputs: [FolderFingerprint] = []

    public init(recipe: Recipe, runDir: URL, resume: Bool, quiet: Bool, memory: MemoryBudget = .default) {
        self.recipe = recipe
        self.memory = memory
        self.runDir = runDir.standardizedFileURL
        self.resume = resume
        self.quiet = quiet
    }

    func say(_ s: String) { if !quiet { FileHandle.standardError.write(Data((s + "\n").utf8)) } }

    public func run() throws -> RunSummary {
        let fm = FileManager.default
        if fm.fileExists(atPath: runDir.path) {
            let items = try fm.contentsOfDirectory(atPath: runDir.path)
            if !resume && !items.isEmpty { throw RecipeError(runDir.path, nil, "the run folder is not empty; pass --resume to continue it or choose another --output") }
            // A stage interrupted in the middle left its staging folder: `runStage` continues it when it is the same work.
        } else {
            try fm.createDirectory(at: runDir, withIntermediateDirectories: true)
        }
        // One run per folder at a time; the second names the first.
        let lock = try OutputLock(for: runDir)
        defer { lock.release() }
        sweepTrash(in: runDir)
        // The inputs are checked at every stage boundary: a model or data file replaced mid-run stops the run.
        inputs = try [FolderFingerprint(recipe.model)] + (recipe.calibration.map { [try FolderFingerprint($0.data)] } ?? [])
        var records: [StageRecord] = []
        // Every model the table shows: the original, then each stage's output.
        var rows: [(label: String, branch: String?, stage: StageKind?, folder: String?, model: URL)] = [("original", nil, nil, nil, recipe.model)]
        // Models evaluated early: their weights were deleted before the end (keep_intermediate: false).
        var early: [URL: ModelSummary] = [:]
        let total = recipe.branches.reduce(0) { $0 + $1.stages.count }
        var done = 0
        for branch in recipe.branches {
            var current = recipe.model
            let prefix = recipe.branches.count > 1 ? "\(branch.name)-" : ""
            let rowPrefix = recipe.branches.count > 1 ? "\(branch.name) · " : ""
            var labels: [String] = []
            func label(_ kind: StageKind, _ form: String? = nil) -> String {
                let base = Pipeline.modelLabel(kind, form: form)
                let n = labels.filter { $0 == base }.count
                labels.append(base)
                return rowPrefix + (n == 0 ? base : "\(base) (\(n + 1))")
            }
            for (si, stage) in branch.stages.enumerated() {
                done += 1
                let folder = String(format: "%@%02d-%@", prefix, si + 1, stage.kind.rawValue)
                say("== stage \(done)/\(total): \(recipe.branches.count > 1 ? "[\(branch.name)] " : "")\(stage.kind) \(describe(stage.options))")
                let t0 = Date()
                for i in inputs { try i.verifyUnchanged("before stage \(folder)") }
                let (model, skipped) = try ResourceMonitor.shared.stage(folder) { try runStage(stage, folder: folder, input: current) }
                // A stage's output made while an input changed mixes two inputs: it goes, and the run stops.
                do { for i in inputs { try i.verifyUnchanged("after stage \(folder)") } } catch {
                    if !skipped { try? fm.removeItem(at: runDir.appendingPathComponent(folder)) }
                    throw error
                }
                records.append(StageRecord(branch: branch.name, stage: stage.kind.rawValue, folder: folder, skipped: skipped, seconds: Date().timeIntervalSince(t0)))
                if skipped { say("   unchanged since the last run: skipped") }
                if !recipe.keepIntermediate && si > 0 {
                    // The previous stage's model is evaluated before its weights go (when they are still there).
                    if let i = rows.lastIndex(where: { $0.model == current }), Pipeline.hasWeights(current) {
                        early[current] = try ResourceMonitor.shared.stage("evaluate") { try summarize(rows[i]) }
                    }
                    try Pipeline.removeWeights(of: current)
                }
                current = model
                rows.append((label(stage.kind), branch.name, stage.kind, folder, model))
            }
            if recipe.export != "none" {
                let folder = "\(prefix)export-\(recipe.export)"
                let stage = Recipe.Stage(kind: .export, options: ["form": .string(recipe.export)], line: 0)
                let t0 = Date()
                for i in inputs { try i.verifyUnchanged("before stage \(folder)") }
                let (model, skipped) = try ResourceMonitor.shared.stage(folder) { try runStage(stage, folder: folder, input: current) }
                records.append(StageRecord(branch: branch.name, stage: "export", folder: folder, skipped: skipped, seconds: Date().timeIntervalSince(t0)))
                current = model
                rows.append((label(.export, recipe.export), branch.name, .export, folder, model))
            }
        }
        // Staging folders of stages no longer in the recipe.
        for i in try fm.contentsOfDirectory(atPath: runDir.path) where i.hasSuffix(".partial") { try? fm.removeItem(at: runDir.appendingPathComponent(i)) }
        say("== evaluation")
        var notes: [String] = []
        var evaluated: [(row: Int, model: URL)] = []
        var models: [ModelSummary] = []
        try ResourceMonitor.shared.stage("evaluate") {
            for r in rows {
                if let s = early[r.model] {
                    models.append(s)
                } else if Pipeline.hasWeights(r.model) {
                    models.append(try summarize(r))
                    evaluated.append((models.count - 1, r.model))
                } else {
                    notes.append("\(r.label): not evaluated, its weights were deleted by an earlier run (keep_intermediate: false).")
                }
            }
        }
        if recipe.speed {
            let loaded = try evaluated.map { try ModelRegistry.load(directory: $0.model) }
            let speeds = SpeedColumns.measure(loaded)
            for (k, e) in evaluated.enumerated() {
                models[e.row].prefillTokensPerSecond = speeds[k].prefill
                models[e.row].decodeTokensPerSecond = speeds[k].decode
            }
            // Why a model decodes slower than the original: its layers timed on one token against the original's.
            if let o = evaluated.first, o.row == 0, let base = models[0].decodeTokensPerSecond {
                for (k, e) in evaluated.enumerated().dropFirst() {
                    guard let d = models[e.row].decodeTokensPerSecond, d < base * (1 - DecodeProbe.slowerBy) else { continue }
                    notes.append(DecodeProbe.explain(label: models[e.row].label, decode: d, original: base, model: loaded[k], reference: loaded[0]))
                }
            }
        }
        Pipeline.fillDeltas(&models)
        let summary = RunSummary(recipe: recipe.path.path, version: moepressVersion, stages: records, models: models, notes: notes.isEmpty ? nil : notes)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(summary).write(to: runDir.appendingPathComponent("run.json"), options: .atomic)
        return summary
    }

    /// What a stage's output model is called in the table.
    static func modelLabel(_ kind: StageKind, form: String? = nil) -> String {
        switch kind {
        case .prune: "pruned"
        case .decompose: "decomposed"
        case .heal: "healed"
        case .compressExperts: "experts compressed"
        case .export: "exported (\(form ?? "?"))"
        }
    }

    /// Whether a model folder still has its weights (keep_intermediate: false deletes them).
    static func hasWeights(_ model: URL) -> Bool {
        !FileManager.default.fileExists(atPath: model.appendingPathComponent(weightsRemovedMarker).path)
    }

    func describe(_ o: [String: Recipe.OptionValue]) -> String {
        o.keys.sorted().map { k -> String in
            switch o[k]! {
            case .int(let v): "\(k)=\(v)"
            case .double(let v): "\(k)=\(v)"
            case .string(let v): "\(k)=\(v)"
            case .bool(let v): "\(k)=\(v)"
            case .strings(let v): "\(k)=\(v.joined(separator: ","))"
            }
        }.joined(separator: " ")
    }

    /// Runs (or skips) one stage into runDir/folder, atomically: the work happens in folder.partial, which is
    /// renamed when complete. Returns the stage's output model folder. With `resume`, a stage interrupted in the
    /// middle continues: folder.partial is kept when it was started for the same work (`job`), and its calibration,
    /// pruning journal and output layers are taken up where they stopped.
    func runStage(_ stage: Recipe.Stage, folder: String, input: URL) throws -> (URL, Bool) {
        let fm = FileManager.default
        let dir = runDir.appendingPathComponent(folder)
        let calibrationKey = recipe.calibration.map { "\($0.data.path)|\($0.samples)|\($0.seqLen)" }
        var manifest = StageManifest(stage: stage.kind.rawValue, options: stage.options, input: input.path, inputHash: try Pipeline.inputHash(input),
                                     seed: recipe.seed, calibration: calibrationKey, version: moepressVersion, model: "model")
        let manifestURL = dir.appendingPathComponent("manifest.json")
        if resume, let data = fm.contents(atPath: manifestURL.path), let old = try? JSONDecoder().decode(StageManifest.self, from: data), old.sameWork(as: manifest) {
            return (dir.appendingPathComponent(old.model), true)
        }
        if fm.fileExists(atPath: input.appendingPathComponent(Pipeline.weightsRemovedMarker).path) {
            throw RecipeError(recipe.path.path, stage.line, "\(stage.kind) needs \(input.path), whose weights were deleted after the next stage used them (keep_intermediate: false); run the recipe again into a new --output (or without keep_intermediate: false)")
        }
        removeAtomically(dir)
        let staging = runDir.appendingPathComponent(folder + ".partial")
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let job = try enc.encode(manifest)
        let jobURL = staging.appendingPathComponent("job.json")
        if resume, fm.contents(atPath: jobURL.path) == job {
            say("   resuming the interrupted stage in \(staging.path)")
        } else {
            removeAtomically(staging)
            try fm.createDirectory(at: staging, withIntermediateDirectories: true)
            try job.write(to: jobURL)
        }
        let jobKey = String(decoding: job, as: UTF8.self)
        let out = staging.appendingPathComponent("model")
        let o = stage.options
        let (int, double, string) = (o.int, o.double, o.string)
        func calibrate(model: CausalLM? = nil) throws -> CalibrationCache {
            guard let c = recipe.calibration else { throw RecipeError(recipe.path.path, stage.line, "\(stage.kind) needs a calibration section") }
            let url = staging.appendingPathComponent("calib")
            // A finished cache of this same job (an interrupted run's) is used as it is.
            let cache = try fm.fileExists(atPath: url.appendingPathComponent("manifest.json").path) ? CalibrationCache(directory: url)
                : Calibration.calibrate(modelDirectory: input, model: model, textDirectory: c.data, samples: c.samples, seqLen: c.seqLen, seed: recipe.seed,
                                        output: url, budget: memory, overwrite: true, quiet: quiet)
            try Pipeline.saveRouting(cache, to: staging.appendingPathComponent("routing.json"))
            return cache
        }
        switch stage.kind {
        case .prune:
            let method = PruningMethod(rawValue: string("method")!)!
            let budget: PruningBudget? = double("ratio").map { .ratio($0) } ?? int("keep").map { .keep($0) }
            var request = PruningRequest(method: method, budget: budget)
            request.tau = double("tau")
            request.search.seed = recipe.seed
            if let g = int("generations") { request.search.generations = g }
            if let p = int("population") { request.search.population = p }
            if let c = int("candidates") { request.search.candidates = c }
            if let t = int("block_size") { request.search.blockSize = t }
            if let f = int("fitness_tokens") { request.search.fitnessTokens = f; request.fitnessTokens = f }
            if let f = int("field_sequences") { request.search.fieldSequences = f }
            if o["uniform_counts"] == .bool(true) { request.search.uniformCounts = true }
            let m = try ModelRegistry.load(directory: input)
            let cache = method.needsCalibration ? try calibrate(model: m) : nil
            request.memory = memory
            let target = try AtomicDirectory(out, overwrite: true, resumeKey: jobKey)
            target.inputs = inputs
            try target.finish { target in
                var plan = try Pruning.plan(request, model: m, modelName: input.path, cache: cache, quiet: quiet, journal: target.journal)
                plan.parameters["seed"] = "\(recipe.seed)"
                try PlanApplier.apply(plan, model: input, into: target, shardSize: recipe.shardSize)
            }
        case .decompose:
            let lo = StageOptions.decompose(o)
            var cache: CalibrationCache? = nil
            var importance: [Int: [Double]]? = nil
            if lo.allocation == .importance { importance = try ExpertImportance.plan(in: input).flatMap(ExpertImportance.fromPlan) }
            let needsModel = lo.method == .svdllm || (lo.allocation == .importance && importance == nil)
            let m = needsModel ? try ModelRegistry.load(directory: input) : nil
            if needsModel { cache = try calibrate(model: m) }
            if lo.allocation == .importance && importance == nil, let cache, let m {
                importance = try ExpertImportance.compute(model: m, cache: cache, maxTokens: o.int("importance_tokens") ?? 8192, memory: memory, quiet: quiet)
            }
            _ = try LowRank.decompose(model: input, open: m, options: lo, whitening: lo.method == .svdllm ? cache : nil, importance: importance, output: out, quiet: quiet,
                                       shardSize: recipe.shardSize, resumable: true)
        case .heal:
            var lora = LoRA.Settings()
            if let r = int("lora_rank") { lora.rank = r }
            if let a = double("lora_alpha") { lora.alpha = Float(a) }
            if let d = double("lora_dropout") { lora.dropout = Float(d) }
            if case .strings(let t)? = o["targets"] { lora.targets = t }
            lora.seed = recipe.seed
            let settings = trainerSettings(o, defaults: .healing)
            let files = try trainingFiles(string("data"))
            let record = try TrainingRuns.heal(model: input, files: files, lora: lora, settings: settings, output: staging.appendingPathComponent("adapter"),
                                               merge: true, stateDir: runDir.appendingPathComponent(".\(folder).state"), resume: resume, quiet: quiet,
                                               shardSize: recipe.shardSize)
            manifest.validationLossBefore = record.validationLossBefore
            manifest.validationLossAfter = record.validationLossAfter
            if let b = record.validationLossBefore, let a = record.validationLossAfter { say(String(format: "   validation loss %.4f → %.4f", b, a)) }
            try fm.moveItem(at: staging.appendingPathComponent("adapter/merged"), to: out)
        case .compressExperts:
            let k = int("main_experts")!
            let plain = o["no_ce"] == .bool(true)
            let settings = trainerSettings(o, defaults: .compressedExperts)
            let ce = HFRemoteCode.compressedExpertsOutput(mainExperts: k, plainTopK: plain)
            _ = try TrainingRuns.compressExperts(
                model: input, files: try trainingFiles(string("data")), mainExperts: k, ceOnly: string("train") == "ce-only", plainTopK: plain,
                settings: settings, output: out, stateDir: runDir.appendingPathComponent(".\(folder).state"), resume: resume, quiet: quiet,
                configEdit: ce.edit, extraFiles: ce.files, shardSize: recipe.shardSize)
        case .export:
            if string("form") == "dense" {
                _ = try LowRank.densify(model: input, output: out, shardSize: recipe.shardSize)
            } else {
                guard let plan = try ExpertImportance.plan(in: input) else {
                    throw RecipeError(recipe.path.path, nil, "export uniform needs a pruned model (plan.json) as the last stage's output")
                }
                let d = try ModelRegistry.describe(directory: URL(fileURLWithPath: plan.model))
                try PlanApplier.apply(UniformPlan.nearest(plan, minimum: d.routing?.topK ?? 1), model: URL(fileURLWithPath: plan.model), output: out,
                                      shardSize: recipe.shardSize)
            }
        }
        // The calibration cache was the stage's working data, not its result.
        try? fm.removeItem(at: staging.appendingPathComponent("calib"))
        try? fm.removeItem(at: jobURL)
        manifest.outputs = try Pipeline.fileHashes(staging)
        try enc.encode(manifest).write(to: staging.appendingPathComponent("manifest.json"))
        try fm.moveItem(at: staging, to: dir)
        return (dir.appendingPathComponent("model"), false)
    }

    /// A training stage's settings: the method's defaults (the same the CLI command starts from), then the recipe's options.
    func trainerSettings(_ o: [String: Recipe.OptionValue], defaults: TrainerSettings) -> TrainerSettings {
        var s = defaults
        let (int, double) = (o.int, o.double)
        s.steps = int("steps") ?? defaults.steps
        if let lr = double("lr") { s.learningRate = Float(lr) }
        s.batchSize = int("batch") ?? 8
        s.seqLen = int("seq_len") ?? 256
        s.gradientAccumulation = int("grad_accum") ?? 1
        if let w = double("warmup_ratio") { s.warmupRatio = w }
        if let w = double("weight_decay") { s.weightDecay = Float(w) }
        if let a = double("neftune_alpha") { s.neftuneAlpha = Float(a) }
        s.seed = recipe.seed
        s.checkpointEvery = max(10, s.steps / 10)
        return s
    }

    func trainingFiles(_ data: String?) throws -> [URL] {
        let dir = data.map { URL(fileURLWithPath: $0, relativeTo: recipe.path.deletingLastPathComponent()).standardizedFileURL } ?? recipe.calibration!.data
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir) else { throw RecipeError(recipe.path.path, nil, "\(dir.path) does not exist") }
        if !isDir.boolValue { return [dir] }
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted().filter { $0.hasSuffix(".txt") || $0.hasSuffix(".jsonl") }
            .map { dir.appendingPathComponent($0) }
    }

    /// Per MoE layer: each expert's routing frequency on the calibration tokens (for the report's heatmap).
    static func saveRouting(_ cache: CalibrationCache, to url: URL) throws {
        var out: [String: [Double]] = [:]
        for l in cache.manifest.moeLayers { out["\(l)"] = try cache.statistics(l).frequency }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try enc.encode(out).write(to: url)
    }

    // MARK: - Intermediate weights

    /// The file left in a stage's model folder whose weights were deleted (keep_intermediate: false).
    static let weightsRemovedMarker = "WEIGHTS_DELETED"

    /// Deletes the weights (safetensors and their index) of a stage's output folder, keeping its config,
    /// plan, reports and manifest; the stage's manifest still identifies its content, so later stages resume.
    static func removeWeights(of model: URL) throws {
        let fm = FileManager.default
        let names = try fm.contentsOfDirectory(atPath: model.path).filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".safetensors.index.json") }
        guard !names.isEmpty else { return }
        try Data("The weights of this stage were deleted once the next stage had used them (recipe keep_intermediate: false).\n".utf8)
            .write(to: model.appendingPathComponent(weightsRemovedMarker))
        for n in names { try fm.removeItem(at: model.appendingPathComponent(n)) }
    }

    // MARK: - Identity of folders

    static func files(_ dir: URL) throws -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return [] }
        var out: [String] = []
        while let f = e.nextObject() as? String {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent(f).path, isDirectory: &isDir), !isDir.boolValue { out.append(f) }
        }
        return out.sorted()
    }

    /// Files whose content is timing, not result.
    static let timingFiles: Set<String> = ["training_log.json", "compress.json", "manifest.json", "job.json"]

    static func fnv(_ url: URL) throws -> String {
        Fingerprint.hex(Fingerprint.fnv(try Data(contentsOf: url, options: .alwaysMapped)))
    }

    static func fileHashes(_ dir: URL) throws -> [String: String] {
        var out: [String: String] = [:]
        for f in try files(dir) where !timingFiles.contains((f as NSString).lastPathComponent) {
            out[f] = try fnv(dir.appendingPathComponent(f))
        }
        return out
    }

    /// One hash over a model folder's result files (what a stage's input is).
    static func contentHash(_ dir: URL) throws -> String { combined(try fileHashes(dir)) }

    static func combined(_ hashes: [String: String]) -> String {
        Fingerprint.hex(Fingerprint.fnv(hashes.sorted { $0.key < $1.key }.flatMap { Array(($0.key + "=" + $0.value + ";").utf8) }))
    }

    /// The content hash of a stage's input. An earlier stage's output folder (`<stage>/model`) already has its
    /// files' hashes in that stage's manifest, so they are not read again (gigabytes on a real model); any other
    /// folder is read and hashed.
    static func inputHash(_ input: URL) throws -> String {
        let manifestURL = input.deletingLastPathComponent().appendingPathComponent("manifest.json")
        if input.lastPathComponent == "model", let data = FileManager.default.contents(atPath: manifestURL.path),
           let m = try? JSONDecoder().decode(StageManifest.self, from: data), m.model == "model" {
            let recorded = Dictionary(uniqueKeysWithValues: m.outputs.compactMap { k, v in k.hasPrefix("model/") ? (String(k.dropFirst(6)), v) : nil })
            if !recorded.isEmpty { return combined(recorded) }
        }
        return try contentHash(input)
    }

    // MARK: - Evaluation

    func summarize(_ row: (label: String, branch: String?, stage: StageKind?, folder: String?, model: URL)) throws -> ModelSummary {
        var s = try summarize(label: row.label, model: row.model)
        (s.branch, s.stage, s.folder) = (row.branch, row.stage?.rawValue, row.folder)
        return s
    }

    func summarize(label: String, model url: URL) throws -> ModelSummary {
        let m = try ModelRegistry.load(directory: url)
        let bytes = try Pipeline.files(url).filter { $0.hasSuffix(".safetensors") && !$0.contains("/") }.reduce(0) {
            $0 + ((try FileManager.default.attributesOfItem(atPath: url.appendingPathComponent($1).path)[.size] as? Int) ?? 0)
        }
        var s = ModelSummary(label: label, path: url.path, parameters: m.parameterCount, activeParameters: m.activeParameterCount, bytesOnDisk: bytes,
                             expertsPerLayer: m.description.moeLayerIndices.map { m.layers[$0].feedForward.moe!.numExperts })
        let tok = try Tokenizer(modelDirectory: url)
        if !recipe.perplexityFiles.isEmpty {
            let r = try Perplexity.evaluate(model: m, tokenizer: tok, files: recipe.perplexityFiles, budget: memory, quiet: quiet)
            s.perplexity = r.files.mapValues(\.perplexity)
            s.perplexityAll = r.perplexity
        }
        if let t = recipe.tasks {
            let items = try MultipleChoice.load(t, limit: recipe.taskLimit)
            let r = MultipleChoice.report(try MultipleChoice.score(model: m, tokenizer: tok, items: items, budget: memory, quiet: quiet))
            s.taskAccuracy = r.acc
            s.taskAccuracyNorm = r.acc_norm
        }
        return s
    }
}
