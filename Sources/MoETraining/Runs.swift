import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer

/// What a training run writes as training_log.json.
public struct TrainingRecord: Codable, Sendable {
    public var command: String
    public var model: String
    public var data: [String]
    public var dataHash: String
    public var settings: TrainerSettings
    public var lora: LoRA.Settings?
    public var mainExperts: Int?
    public var trainable: String
    public var trainableParameters: Int
    public var seconds: Double
    public var steps: [StepLog]
    /// Healing's validation loss (mean NLL per predicted token on `ValidationLoss`'s fixed windows of the
    /// validation slice of `data`) before and after training; nil where the slice is shorter than a window.
    public var validationLossBefore: Double?
    public var validationLossAfter: Double?
    public var validationTokens: Int?
}

/// The validation loss a training run reports: `windows` windows of the training sequence length drawn with
/// a fixed seed (0, whatever the run's seed, so runs with other seeds are scored on the same tokens) from
/// the validation slice (`TextSplit`) of the training files, which training never reads. Small enough to be
/// cheap: 32 × 256 tokens are one forward pass over 8K tokens.
public struct ValidationLoss {
    public static let defaultWindows = 32
    public static let seed: UInt64 = 0
    public let batches: [TrainingBatch]

    public init(batches: [TrainingBatch]) { self.batches = batches }

    /// Nil (with the reason) when the validation slice of `files` holds less than one window.
    public static func make(files: [URL], tokenizer: Tokenizer, seqLen: Int, windows: Int = defaultWindows) throws -> (ValidationLoss?, String?) {
        let data: TrainingData
        do {
            data = try TrainingData(files: files, tokenizer: tokenizer, seqLen: seqLen, seed: seed, part: .validation)
        } catch let e as TrainingError {
            return (nil, e.description)
        }
        let perBatch = 4
        let batches = stride(from: 0, to: windows, by: perBatch).enumerated().map { i, w in data.batch(step: i, micro: 0, size: min(perBatch, windows - w)) }
        return (ValidationLoss(batches: batches), nil)
    }

    public var tokens: Int { batches.reduce(0) { $0 + $1.predicted } }

    /// Mean NLL per predicted token of the model as it is (adapters applied, no dropout).
    public func loss(_ model: CausalLM) -> Double {
        var r = LossResult(sum: 0, tokens: 0)
        for b in batches {
            let l = CausalLMTraining.loss(model, batch: b)
            r.sum += l.sum; r.tokens += l.tokens
        }
        return r.mean
    }
}

/// Whole training runs (what `moepress heal` / `compress-experts` and recipe stages do): load, train with
/// resumable state in `stateDir`, write the outputs atomically.
public enum TrainingRuns {
    static func train(_ trainer: Trainer, stateDir: URL, resume: Bool, quiet: Bool) throws {
        estimate(trainer, quiet: quiet)
        if resume, FileManager.default.fileExists(atPath: stateDir.appendingPathComponent("state.safetensors").path) {
            try trainer.restoreState(from: stateDir)
            if !quiet { FileHandle.standardError.write(Data("resuming at step \(trainer.optimizer.step) of \(trainer.settings.steps)\n".utf8)) }
        }
        try trainer.run(quiet: quiet, checkpoint: { _ in
            try trainer.saveState(to: stateDir)
            Journal.recordedElsewhere()
        })
    }

    /// Prints (and records for the report) the time the steps will take, from one layer measured on the
    /// first batches: each step runs the layers forward, again to recompute their activations, and backward
    /// (about twice a forward), so four forwards' compute; a model larger than memory is read from disk
    /// twice a step. Runs before any weight changes (the probe drops a layer's pages).
    static func estimate(_ trainer: Trainer, quiet: Bool) {
        let s = trainer.settings
        let windows = (0..<4).flatMap { trainer.data.batch(step: $0, micro: 0, size: s.batchSize).ids }
        let probe = ForwardProbe.measure(trainer.model, windows: windows)
        let streams = probe.modelBytes > MemoryBudget.default.bytes
        let perStep = s.batchSize * s.seqLen * s.gradientAccumulation
        let seconds = probe.seconds(tokens: perStep, passes: s.steps, computeFactor: s.recompute ? 4 : 3, readsPerPass: 2, streams: streams)
        ResourceMonitor.shared.record(.init(name: "train", seconds: seconds))
        if !quiet { Console.note("train: \(s.steps) steps of \(perStep) tokens; time ≈ \(formatDuration(seconds)) (\(probe.summary))") }
    }

    static func encoded<T: Encodable>(_ v: T) throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try enc.encode(v)
    }

    /// LoRA healing: `output` gets the PEFT adapter and training_log.json, and with `merge` the merged model
    /// in `output/merged` (weights in `mergeDType`, or the source's when nil).
    @discardableResult
    public static func heal(model url: URL, files: [URL], lora: LoRA.Settings, settings: TrainerSettings, output: URL, merge: Bool,
                            mergeDType: DType? = nil, stateDir: URL, resume: Bool = false, quiet: Bool = false,
                            shardSize: Int = CheckpointWriter.defaultShardSize) throws -> TrainingRecord {
        let start = Date()
        // One training per output (`.<output>.training.lock`, apart from the locks of the state folder and output it
        // writes): a second refuses, naming the first. The input is checked
        // unchanged before the result is put in place.
        let runLock = try OutputLock(for: output.deletingLastPathComponent().appendingPathComponent("\(output.lastPathComponent).training"))
        defer { runLock.release() }
        let input = try FolderFingerprint(url)
        let m = try ModelRegistry.load(directory: url)
        try CausalLMTraining.check(m)
        try LoRA.attach(to: m, lora)
        var factorAdapted = 0
        m.forEachLinear { _, l in if l is AdaptedLowRankLinear { factorAdapted += 1 } }
        if factorAdapted > 0 && !merge {
            throw TrainingError.invalid("\(url.path): \(factorAdapted) targeted projections are low-rank factors, whose adapters (SVD-LLM's update, one per factor) PEFT cannot represent; pass --merge (the merged model keeps its size) or leave gate/up/down out of --targets")
        }
        let tokenizer = try Tokenizer(modelDirectory: url)
        let data = try TrainingData(files: files, tokenizer: tokenizer, seqLen: settings.seqLen, seed: settings.seed)
        let trainable = TrainableParameters.tensors(m) { $0.contains(".lora_") }
        let trainer = try Trainer(model: m, trainable: trainable, settings: settings, data: data)
        if !quiet {
            FileHandle.standardError.write(Data("heal: \(trainable.reduce(0) { $0 + $1.tensor.count }) LoRA parameters on \(Set(lora.targets).sorted().joined(separator: ",")), \(data.tokens) training tokens\n".utf8))
        }
        // The validation loss before (the adapters start at zero: the model as given) and after training.
        let (validation, why) = try ValidationLoss.make(files: files, tokenizer: tokenizer, seqLen: settings.seqLen)
        if let validation {
            for b in validation.batches { try m.validate(tokens: b.ids) }
        } else if !quiet {
            Console.note("heal: no validation loss (\(why ?? "no validation slice"))")
        }
        let before = validation?.loss(m)
        if !quiet, let before, let validation {
            Console.note(String(format: "heal: validation loss before %.4f (%d tokens of the validation slice)", before, validation.tokens))
        }
        try train(trainer, stateDir: stateDir, resume: resume, quiet: quiet)
        let after = validation?.loss(m)
        if !quiet, let before, let after {
            Console.note(String(format: "heal: validation loss %.4f → %.4f (%+.4f)", before, after, after - before))
        }
        let record = TrainingRecord(command: "heal", model: url.path, data: files.map(\.path), dataHash: data.hash, settings: settings, lora: lora,
                                    mainExperts: nil, trainable: "lora", trainableParameters: trainable.reduce(0) { $0 + $1.tensor.count },
                                    seconds: Date().timeIntervalSince(start), steps: trainer.log,
                                    validationLossBefore: before, validationLossAfter: after, validationTokens: validation?.tokens)
        let staging = output.deletingLastPathComponent().appendingPathComponent(".\(output.lastPathComponent).partial-\(getpid())")
        try? FileManager.default.removeItem(at: staging)
        do {
            try PEFTAdapter.write(m, settings: lora, baseModel: url.path, to: staging)
            try encoded(record).write(to: staging.appendingPathComponent("training_log.json"))
            if merge {
                LoRA.merge(m)
                try TrainedCheckpoint.write(m, source: url, output: staging.appendingPathComponent("merged"), dtype: mergeDType, shardSize: shardSize)
            }
            try input.verifyUnchanged("before writing \(output.lastPathComponent)")
            try? FileManager.default.removeItem(at: output)
            try FileManager.default.moveItem(at: staging, to: output)
        } catch {
            // Nothing half written stays (a merge refused for lack of disk left the adapter's staging folder).
            try? FileManager.default.removeItem(at: staging)
            throw error
        }
        try? FileManager.default.removeItem(at: stateDir)
        return record
    }

    /// Compressed Experts (or, with `plainTopK`, the top-K baseline): trains and writes the checkpoint to
    /// `output`. `configEdit` records the result in config.json; `extraFiles` are written beside it.
    @discardableResult
    public static func compressExperts(model url: URL, files: [URL], mainExperts: Int, ceOnly: Bool, plainTopK: Bool, settings: TrainerSettings,
                                       output: URL, stateDir: URL, resume: Bool = false, quiet: Bool = false,
                                       configEdit: (String) -> String, extraFiles: [String: Data] = [:],
                                       shardSize: Int = CheckpointWriter.defaultShardSize) throws -> TrainingRecord {
        let start = Date()
        let runLock = try OutputLock(for: output.deletingLastPathComponent().appendingPathComponent("\(output.lastPathComponent).training"))
        defer { runLock.release() }
        let input = try FolderFingerprint(url)
        let m = try ModelRegistry.load(directory: url)
        guard let k = m.description.routing?.topK else { throw TrainingError.invalid("\(url.path) has no MoE layers") }
        // The plain baseline may keep all k (the full top-k model fine-tuned with the same training).
        guard mainExperts >= 1, mainExperts < k || (plainTopK && mainExperts == k) else {
            throw TrainingError.invalid(plainTopK ? "main experts must be in 1...\(k) (top-k)" : "main experts must be in 1..<\(k) (top-k)")
        }
        for l in m.description.moeLayerIndices {
            guard var b = m.layers[l].feedForward.moe else { continue }
            if plainTopK {
                b.router.routing.topK = mainExperts
            } else {
                b.compressedExperts = CompressedExperts(mainExperts: mainExperts, experts: b.numExperts, hidden: b.hiddenSize,
                                                        intermediate: b.experts[0].intermediateSize)
            }
            m.layers[l].feedForward = .moe(b)
        }
        let data = try TrainingData(files: files, tokenizer: try Tokenizer(modelDirectory: url), seqLen: settings.seqLen, seed: settings.seed)
        let ceTrainedAlone = ceOnly && !plainTopK
        if !ceTrainedAlone {
            // Training every weight needs it in f32 with its gradient and two Adam moments: 16 bytes a parameter.
            let need = m.parameterCount * 16, budget = MemoryBudget.default.bytes
            guard need <= budget else {
                throw TrainingError.invalid("training all \(m.parameterCount) parameters of \(url.path) needs about \(formatBytes(need)) (f32 weights, gradients and Adam state), more than the \(formatBytes(budget)) available; train the compressed-expert vectors alone (--train ce-only), which keeps the frozen weights in their stored dtype")
            }
            m.makeTrainable()
        }
        let trainable = TrainableParameters.tensors(m) { !ceTrainedAlone || $0.contains(".ce_") }
        let trainer = try Trainer(model: m, trainable: trainable, settings: settings, data: data)
        try train(trainer, stateDir: stateDir, resume: resume, quiet: quiet)
        let record = TrainingRecord(command: plainTopK ? "compress-experts --no-ce" : "compress-experts", model: url.path, data: files.map(\.path),
                                    dataHash: data.hash, settings: settings, lora: nil, mainExperts: mainExperts,
                                    trainable: ceOnly ? "ce-only" : "all", trainableParameters: trainable.reduce(0) { $0 + $1.tensor.count },
                                    seconds: Date().timeIntervalSince(start), steps: trainer.log)
        var extra = extraFiles
        extra["training_log.json"] = try encoded(record)
        // The vectors sit in each expert's module (MoEPress's own layout where the family fuses experts).
        try input.verifyUnchanged("before writing \(output.lastPathComponent)")
        try TrainedCheckpoint.write(m, source: url, output: output, overwrite: true, modules: !plainTopK, config: configEdit, extraFiles: extra,
                                    shardSize: shardSize)
        try? FileManager.default.removeItem(at: stateDir)
        return record
    }
}
