import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

/// The optimisation loop shared by LoRA healing and compressed-experts training: gradient accumulation,
/// global-norm clipping, AdamW with warm-up + cosine, progress on stderr, a JSON log line per step, and
/// resumable checkpoints (trainable tensors + optimiser moments + step).
public struct TrainerSettings: Codable, Sendable, Equatable {
    public var steps = 100
    public var learningRate: Float = 2e-4
    public var batchSize = 8
    public var gradientAccumulation = 1
    public var seqLen = 256
    public var warmupRatio = 0.05
    public var weightDecay: Float = 0.05
    public var maxGradNorm = 1.0
    public var seed: UInt64 = 0
    /// Learning rate of compressed-expert vectors (nil: the common one). They start at 1 and act as scales,
    /// so a short fine-tuning at a weight-sized learning rate barely moves them.
    public var ceLearningRate: Float?
    /// Recompute each layer's activations in the backward pass (keeps one layer's activations at a time).
    public var recompute = true
    public var checkpointEvery = 0
    /// NEFTune (Jain et al. 2023, as HF Trainer's `neftune_noise_alpha`): uniform noise in ±α/√(L·d) added to
    /// the input embeddings in training; nil or 0 is off. MoEITS heals with α = 5.
    public var neftuneAlpha: Float?
    public init() {}

    /// LoRA healing: 100 steps, warm-up 5% and weight decay 0.05 as MoEITS's train.py (methods.md §2.6); lr 2e-3
    /// chosen on the validation slice (issue 26: after MoE-I² 50% on mixtral-ref, 100 steps of 8 × 256 tokens
    /// recover 71% of the validation perplexity gap at 2e-3 (3 seeds, 71.2–71.6%), 62% at 1e-3 (3 seeds),
    /// 38% at 3e-4 and 29% at MoEITS's 2e-4; 3e-3 (74%, 3 seeds) and 5e-3 (73%, one seed) show a plateau, of
    /// which 2e-3 is the cautious end).
    public static var healing: TrainerSettings {
        var s = TrainerSettings()
        s.learningRate = 2e-3
        return s
    }

    /// Compressed Experts as the paper's OLMoE recipe (methods.md §4): lr 2e-5, warm-up 3%, no weight decay.
    public static var compressedExperts: TrainerSettings {
        var s = TrainerSettings()
        s.learningRate = 2e-5; s.warmupRatio = 0.03; s.weightDecay = 0
        return s
    }
}

public struct StepLog: Codable, Sendable {
    public var step: Int
    public var loss: Double
    public var learningRate: Float
    public var gradNorm: Double
    public var tokens: Int
    public var tokensPerSecond: Double
    public var elapsed: Double
}

public final class Trainer {
    public let model: CausalLM
    public let parameters: [(name: String, tensor: Tensor)]
    public let settings: TrainerSettings
    public let data: TrainingData
    public let gradients: Gradients
    public let optimizer: AdamW
    public private(set) var log: [StepLog] = []

    public init(model: CausalLM, trainable: [(name: String, tensor: Tensor)], settings: TrainerSettings, data: TrainingData) throws {
        try CausalLMTraining.check(model)
        guard settings.steps >= 1, settings.batchSize >= 1, settings.gradientAccumulation >= 1 else {
            throw TrainingError.invalid("--steps, --batch and --grad-accum must be positive")
        }
        guard !trainable.isEmpty else { throw TrainingError.invalid("nothing to train") }
        // Weights read in place from a checkpoint file are views of a read-only mapping: the optimiser writes them.
        for p in trainable { try p.tensor.prepareForWritesInPlace() }
        // Every id the tokenizer produced must name a row of this model's embedding.
        switch data.kind {
        case .stream(let ids): try model.validate(tokens: [ids])
        case .examples(let ex): try model.validate(tokens: ex.map(\.ids))
        }
        self.model = model
        self.parameters = trainable
        self.settings = settings
        self.data = data
        gradients = Gradients(trainable: trainable.map(\.tensor))
        var o = AdamW.Settings()
        o.weightDecay = settings.weightDecay
        optimizer = AdamW(parameters: trainable, settings: o)
        if let ce = settings.ceLearningRate {
            for (i, p) in trainable.enumerated() where p.name.contains(".ce_") { optimizer.lrScale[i] = ce / settings.learningRate }
        }
    }

    public var schedule: CosineSchedule {
        CosineSchedule(peak: settings.learningRate, warmupSteps: Int((settings.warmupRatio * Double(settings.steps)).rounded(.up)), totalSteps: settings.steps)
    }

    /// Runs steps `optimizer.step ..< settings.steps`. `checkpoint` is called every `checkpointEvery` steps.
    public func run(quiet: Bool = false, onStep: (StepLog) -> Void = { _ in }, checkpoint: (Int) throws -> Void = { _ in }) throws {
        let start = Date()
        let first = optimizer.step
        let progress = StageProgress("train", total: settings.steps - first, unit: "steps", quiet: quiet, estimate: false)
        var seen = 0
        for step in first..<settings.steps {
            let t0 = Date()
            let batches = (0..<settings.gradientAccumulation).map { data.batch(step: step, micro: $0, size: settings.batchSize) }
            let normalizer = Double(batches.reduce(0) { $0 + $1.predicted })
            var loss = LossResult(sum: 0, tokens: 0)
            for (micro, b) in batches.enumerated() {
                let r = CausalLMTraining.lossAndGradients(model, batch: b, gradients: gradients, normalizer: normalizer,
                                                          seed: settings.seed ^ (UInt64(step) << 8) ^ UInt64(micro), training: true,
                                                          recompute: settings.recompute, neftuneAlpha: settings.neftuneAlpha ?? 0)
                loss.sum += r.sum; loss.tokens += r.tokens
            }
            let norm = clipGradients(gradients, maxNorm: settings.maxGradNorm)
            let lr = schedule.rate(step)
            optimizer.update(gradients, lr: lr)
            gradients.zero()
            let tokens = batches.reduce(0) { $0 + $1.ids.count * $1.seqLen }
            seen += tokens
            let entry = StepLog(step: step + 1, loss: loss.mean, learningRate: lr, gradNorm: norm, tokens: tokens,
                                tokensPerSecond: Double(tokens) / Date().timeIntervalSince(t0), elapsed: Date().timeIntervalSince(start))
            log.append(entry)
            onStep(entry)
            progress.advance(note: String(format: "loss %.4f, lr %.2e, %.0f tok/s", entry.loss, lr, Double(seen) / Date().timeIntervalSince(start)))
            if settings.checkpointEvery > 0 && (step + 1) % settings.checkpointEvery == 0 && step + 1 < settings.steps { try checkpoint(step + 1) }
        }
    }

    // MARK: - Resumable state

    /// The settings that determine the trajectory (not how often checkpoints are written), as sorted JSON.
    func settingsFingerprint() throws -> String {
        var s = settings
        s.checkpointEvery = 0
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        return String(decoding: try enc.encode(s), as: UTF8.self)
    }

    /// Writes the trainable tensors, optimiser moments and step to `dir` (atomically).
    public func saveState(to dir: URL) throws {
        var entries: [SafeTensorsWriter.Entry] = []
        for (i, p) in parameters.enumerated() {
            entries.append(.init("param.\(p.name)", p.tensor))
            entries.append(.init("m.\(p.name)", optimizer.m[i]))
            entries.append(.init("v.\(p.name)", optimizer.v[i]))
        }
        let meta = ["step": "\(optimizer.step)", "settings": try settingsFingerprint(), "data": data.hash]
        try AtomicDirectory.write(dir, overwrite: true) { out in
            try SafeTensorsWriter.write(entries, metadata: meta.merging(["format": "pt"]) { a, _ in a }, to: out.url("state.safetensors"))
            try JSONEncoder().encode(log).write(to: out.url("log.json"))
        }
    }

    /// Restores what `saveState` wrote; refuses state from other settings or data.
    public func restoreState(from dir: URL) throws {
        let f = try SafeTensorsFile(path: dir.appendingPathComponent("state.safetensors").path)
        let wantSettings = try settingsFingerprint()
        guard f.metadata["settings"] == wantSettings, f.metadata["data"] == data.hash, let step = f.metadata["step"].flatMap(Int.init) else {
            throw TrainingError.invalid("\(dir.path): the checkpoint was made with other settings or data; start afresh or use the same options")
        }
        var m: [Tensor] = [], v: [Tensor] = []
        for p in parameters {
            let t = try f.tensor("param.\(p.name)")
            guard t.count == p.tensor.count else { throw TrainingError.invalid("\(dir.path): \(p.name) has another shape") }
            p.tensor.data.update(from: t.data, count: t.count)
            m.append(try f.tensor("m.\(p.name)").copy()); v.append(try f.tensor("v.\(p.name)").copy())
        }
        optimizer.restore(step: step, m: m, v: v)
        if let data = FileManager.default.contents(atPath: dir.appendingPathComponent("log.json").path) {
            log = (try? JSONDecoder().decode([StepLog].self, from: data)) ?? []
        }
    }
}
