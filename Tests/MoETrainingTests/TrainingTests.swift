import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer
import MoECompression
@testable import MoETraining

/// A tiny in-memory token stream as training data (the fixtures have no tokenizer).
func fixtureData(seqLen: Int, seed: UInt64) -> TrainingData {
    var rng = SeededGenerator(seed: 99)
    // A repetitive stream the model can learn: a cycle of 12 tokens with some noise.
    let stream = (0..<4000).map { i in rng.nextUnit() < 0.1 ? Int(rng.next() % 96) : [3, 17, 42, 5, 88, 61, 7, 19, 33, 90, 2, 14][i % 12] }
    return TrainingData(stream: stream, seqLen: seqLen, seed: seed)
}

@Suite(.serialized) struct TrainingLoopTests {
    func train(_ family: String, steps: Int, seed: UInt64, lora: Bool, recompute: Bool = true) throws -> (Trainer, CausalLM) {
        let m = try ModelRegistry.load(directory: Where.model(family))
        var trainable = TrainableParameters.tensors(m)
        if lora {
            var s = LoRA.Settings()
            s.rank = 4; s.seed = seed; s.dropout = 0.1
            try LoRA.attach(to: m, s)
            trainable = TrainableParameters.tensors(m) { $0.contains(".lora_") }
        }
        var settings = TrainerSettings()
        settings.steps = steps; settings.batchSize = 2; settings.seqLen = 16; settings.learningRate = lora ? 1e-2 : 3e-3
        settings.seed = seed; settings.gradientAccumulation = 2; settings.recompute = recompute
        let t = try Trainer(model: m, trainable: trainable, settings: settings, data: fixtureData(seqLen: 16, seed: seed))
        try t.run(quiet: true)
        return (t, m)
    }

    /// A short run lowers the loss, and the same seed gives the same loss curve, bit for bit; recomputation
    /// changes memory, not numbers.
    @Test(arguments: [("mixtral", true), ("qwen2_moe", false), ("olmoe", true)])
    func lossFallsDeterministically(_ family: String, _ lora: Bool) throws {
        let (a, _) = try train(family, steps: 12, seed: 1, lora: lora)
        let (b, _) = try train(family, steps: 12, seed: 1, lora: lora, recompute: false)
        #expect(a.log.map(\.loss) == b.log.map(\.loss))
        let first = a.log.prefix(3).map(\.loss).reduce(0, +) / 3, last = a.log.suffix(3).map(\.loss).reduce(0, +) / 3
        #expect(last < first - 0.1, "\(family): loss \(first) → \(last)")
        let (c, _) = try train(family, steps: 12, seed: 2, lora: lora)
        #expect(c.log.map(\.loss) != a.log.map(\.loss))
    }

    /// Stopping after step 3 and resuming from the saved state ends exactly where an uninterrupted run ends.
    @Test func resumeIsExact() throws {
        let (full, fm) = try train("mixtral", steps: 6, seed: 3, lora: true)
        let m = try ModelRegistry.load(directory: Where.model("mixtral"))
        var s = LoRA.Settings()
        s.rank = 4; s.seed = 3; s.dropout = 0.1
        try LoRA.attach(to: m, s)
        var settings = full.settings
        let trainable = TrainableParameters.tensors(m) { $0.contains(".lora_") }
        let dir = Where.temp("state")
        defer { try? FileManager.default.removeItem(at: dir) }
        settings.checkpointEvery = 3
        let first = try Trainer(model: m, trainable: trainable, settings: settings, data: fixtureData(seqLen: 16, seed: 3))
        struct Stop: Error {}
        do { try first.run(quiet: true, checkpoint: { _ in try first.saveState(to: dir); throw Stop() }) } catch is Stop {}
        // A fresh process: reload, re-attach (same seed), restore, continue.
        let m2 = try ModelRegistry.load(directory: Where.model("mixtral"))
        try LoRA.attach(to: m2, s)
        let t2 = try Trainer(model: m2, trainable: TrainableParameters.tensors(m2) { $0.contains(".lora_") }, settings: settings,
                             data: fixtureData(seqLen: 16, seed: 3))
        try t2.restoreState(from: dir)
        #expect(t2.optimizer.step == 3)
        try t2.run(quiet: true)
        #expect(t2.log.map(\.loss) == full.log.map(\.loss))
        for (x, y) in zip(TrainableParameters.tensors(fm) { $0.contains(".lora_") }, TrainableParameters.tensors(m2) { $0.contains(".lora_") }) {
            #expect(x.tensor.array == y.tensor.array, "\(x.name)")
        }
        // Other settings: refused.
        var other = settings
        other.learningRate *= 2
        let t3 = try Trainer(model: m2, trainable: t2.parameters, settings: other, data: fixtureData(seqLen: 16, seed: 3))
        #expect(throws: TrainingError.self) { try t3.restoreState(from: dir) }
    }

    /// Merging adapters (into dense and into low-rank bases) keeps the function.
    @Test func mergeKeepsTheFunction() throws {
        let (_, m) = try train("qwen2_moe", steps: 4, seed: 4, lora: true)
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let before = m.forward(ids)
        LoRA.merge(m)
        #expect(!TrainableParameters.all(m).contains { $0.name.contains("lora") })
        #expect(m.forward(ids).maxAbsDifference(before) < 1e-4)
        // A LoRA over a low-rank base merges by concatenating factors (here in a dense MLP of layer 1).
        func rand(_ shape: [Int], _ seed: Int) -> Tensor { Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { sin(Float($0 * 7 + seed)) / 3 }) }
        let h = m.hiddenSize
        let lora = LoRALinear(base: LowRankLinear(a: rand([6, 2], 1), b: rand([2, h], 2)), a: rand([3, h], 3), b: rand([6, 3], 4), scale: 0.5)
        let mlp = GatedMLP(gate: lora, up: DenseLinear(weight: rand([6, h], 5)), down: DenseLinear(weight: rand([h, 6], 6)), activation: .silu)
        m.layers[1].feedForward = .dense(mlp)
        let x = rand([4, h], 7)
        let want = lora(x)
        LoRA.merge(m)
        guard case .dense(let merged) = m.layers[1].feedForward, let lr = merged.gate as? LowRankLinear else { Issue.record("not low-rank"); return }
        #expect(lr.rank == 5)
        #expect(lr(x).maxAbsDifference(want) < 1e-5)
    }
}

/// gpt-oss keeps its experts fused: a trained, merged model is written back into the fused tensors (from an
/// MXFP4 source, unquantised, and config.json loses its quantization_config), and reloads as the same function.
@Suite(.serialized) struct FusedExportTests {
    @Test(arguments: ["gpt_oss", "gpt_oss_mxfp4"])
    func mergedGptOssReloadsAsTheSameModel(_ name: String) throws {
        let m = try ModelRegistry.load(directory: Where.model(name))
        var s = LoRA.Settings()
        s.rank = 4; s.seed = 3
        try LoRA.attach(to: m, s)
        // Non-zero adapters everywhere (B starts at 0), so the merge moves every expert.
        for (name, t) in TrainableParameters.tensors(m, where: { $0.hasSuffix(".lora_B") }) {
            for i in 0..<t.count { t.data[i] = 0.05 * sin(Float(i + name.count)) }
        }
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let before = try ModelRegistry.load(directory: Where.model(name)).forward(ids)
        LoRA.merge(m)
        let want = m.forward(ids)
        #expect(want.maxAbsDifference(before) > 1e-2, "the adapters should change the model")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-fused-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try TrainedCheckpoint.write(m, source: Where.model(name), output: out, dtype: .f32)
        let back = try ModelRegistry.load(directory: out)
        #expect(back.forward(ids).maxAbsDifference(want) < 1e-5)
        let ck = try Checkpoint(directory: out)
        #expect(ck.contains("model.layers.0.mlp.experts.gate_up_proj") && !ck.names.contains { $0.hasSuffix("_blocks") || $0.hasSuffix("_scales") })
        let config = try String(contentsOf: out.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(!config.contains("quantization_config"))
        #expect((try? JSONSerialization.jsonObject(with: Data(config.utf8))) != nil)
    }

    /// Compressed-expert vectors sit in each expert's module: gpt-oss's are written in MoEPress's per-expert layout
    /// (with the experts' biases), which reloads as the same model.
    @Test func compressedGptOssIsWrittenPerExpert() throws {
        let m = try ModelRegistry.load(directory: Where.model("gpt_oss_mxfp4"))
        for l in m.description.moeLayerIndices {
            guard var b = m.layers[l].feedForward.moe else { continue }
            let e = b.numExperts, h = b.hiddenSize, i = b.experts[0].intermediateSize
            func vectors(_ n: Int, _ k: Int) -> [Tensor] { (0..<e).map { x in Tensor(shape: [n], values: (0..<n).map { 1 + 0.2 * sin(Float($0 + 7 * x + k + l)) }) } }
            b.compressedExperts = CompressedExperts(mainExperts: 1, gate: vectors(h, 1), up: vectors(h, 2), mid: vectors(i, 3))
            m.layers[l].feedForward = .moe(b)
        }
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let want = m.forward(ids)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-ce-gptoss-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let ce = HFRemoteCode.compressedExpertsOutput(mainExperts: 1, plainTopK: false)
        try TrainedCheckpoint.write(m, source: Where.model("gpt_oss_mxfp4"), output: out, dtype: .f32, modules: true, config: ce.edit, extraFiles: ce.files)
        let ck = try Checkpoint(directory: out)
        #expect(ck.contains("model.layers.0.mlp.experts.2.ce_mid") && ck.contains("model.layers.0.mlp.experts.2.down_proj.bias"))
        #expect(!ck.names.contains { $0.hasSuffix("_blocks") || $0.contains("gate_up_proj") })
        #expect(try ModelRegistry.load(directory: out).forward(ids).maxAbsDifference(want) < 1e-5)
    }
}

@Suite struct CompressedExpertsRuntimeTests {
    /// OLMoE does not renormalise top-k weights, so a CE block with all vectors at 1 and K main experts is
    /// exactly the same model routed top-K: the CE runtime and the training forward agree with it.
    @Test func untrainedVectorsEqualTopK() throws {
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let ce = try ModelRegistry.load(directory: Where.model("olmoe"))
        let topK = try ModelRegistry.load(directory: Where.model("olmoe"))
        for l in ce.description.moeLayerIndices {
            var b = ce.layers[l].feedForward.moe!
            var vectors = CompressedExperts(mainExperts: 1, experts: b.numExperts, hidden: b.hiddenSize, intermediate: b.experts[0].intermediateSize)
            vectors.epsilon = 0   // α' = w / w = 1 exactly (the default ε = 1e-6 shifts it by ~1e-5)
            b.compressedExperts = vectors
            ce.layers[l].feedForward = .moe(b)
            var t = topK.layers[l].feedForward.moe!
            t.router.routing.topK = 1
            topK.layers[l].feedForward = .moe(t)
        }
        #expect(ce.forward(ids).maxAbsDifference(topK.forward(ids)) < 1e-5)
        #expect(ce.activeParameterCount == topK.activeParameterCount + 0)
    }
}

@Suite struct TrainingDataTests {
    /// JSONL examples: the prompt is outside the loss, the response and EOS inside, padding outside.
    @Test func instructionPromptIsMasked() throws {
        let tok = try Tokenizer(modelDirectory: Where.shared.appendingPathComponent("models/mixtral-ref"))
        let dir = Where.temp("jsonl")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("a.jsonl")
        try "{\"instruction\": \"Name a colour.\", \"response\": \"Blue.\"}\n\n".write(to: f, atomically: true, encoding: .utf8)
        let d = try TrainingData(files: [f], tokenizer: tok, seqLen: 32, seed: 0)
        let b = d.batch(step: 0, micro: 0, size: 1)
        let prompt = try tok.encode("Instruction:\nName a colour.\n\nResponse:\n"), response = try tok.encode("Blue.")
        let predicted = b.targets[0].filter { $0 != TrainingBatch.ignoreIndex }
        #expect(predicted == response + [d.eos])
        #expect(Array(b.ids[0].prefix(prompt.count)) == prompt)
        #expect(b.targets[0].prefix(prompt.count - 1).allSatisfy { $0 == TrainingBatch.ignoreIndex })
        try "{\"instruction\": 3}\n".write(to: f, atomically: true, encoding: .utf8)
        #expect(throws: TrainingError.invalid("\(f.path):1: \"instruction\" should be a string, not a number")) {
            _ = try TrainingData(files: [f], tokenizer: tok, seqLen: 32, seed: 0)
        }
    }
}

/// Training reads the training part of each file (`TextSplit`), the validation loss exactly the rest, and
/// `heal` records the validation loss before and after training (issue 26 §2).
@Suite(.serialized) struct ValidationSplitTrainingTests {
    static let model = Where.shared.appendingPathComponent("models/mixtral-ref")

    /// Two small real-text files.
    static func folder() throws -> URL {
        let dir = Where.temp("split")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in ["austen.txt", "perldoc.txt"] {
            let text = try String(contentsOf: Where.shared.appendingPathComponent("data/calib/\(name)"), encoding: .utf8)
            try (text.split(separator: "\n", omittingEmptySubsequences: false).prefix(250).joined(separator: "\n") + "\n")
                .write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return dir
    }

    @Test func trainingAndValidationStreamsAreTheTwoParts() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tok = try Tokenizer(modelDirectory: Self.model)
        let files = try TextSplit.textFiles(in: dir)
        let train = try TrainingData(files: files, tokenizer: tok, seqLen: 32, seed: 0)
        let val = try TrainingData(files: files, tokenizer: tok, seqLen: 32, seed: 0, part: .validation)
        func stream(_ d: TrainingData) -> [Int] { if case .stream(let s) = d.kind { return s }; return [] }
        func expected(_ part: TextSplit.Part) throws -> [Int] {
            var out: [Int] = []
            for f in files {
                if !out.isEmpty { out.append(train.eos) }
                out += try tok.encode(TextSplit.read(f, part).text)
            }
            return out
        }
        #expect(stream(train) == (try expected(.training)))
        #expect(stream(val) == (try expected(.validation)))
        // Together the parts are the files: nothing is dropped, nothing read twice.
        for f in files {
            #expect((try TextSplit.read(f, .training).data) + (try TextSplit.read(f, .validation).data) == (try Data(contentsOf: f)))
        }
        #expect(train.hash != val.hash)
    }

    /// `heal` scores the same fixed validation windows before and after training and records both numbers.
    @Test func healRecordsValidationLoss() throws {
        let dir = try Self.folder()
        let out = Where.temp("heal-out")
        defer { try? FileManager.default.removeItem(at: dir); try? FileManager.default.removeItem(at: out) }
        var lora = LoRA.Settings()
        lora.rank = 4; lora.alpha = 8; lora.targets = ["q", "v", "o"]
        var s = TrainerSettings.healing
        s.steps = 3; s.batchSize = 2; s.seqLen = 32; s.learningRate = 1e-3
        let files = try TextSplit.textFiles(in: dir)
        let r = try TrainingRuns.heal(model: Self.model, files: files, lora: lora, settings: s, output: out, merge: false,
                                      stateDir: Where.temp("heal-state"), quiet: true)
        let before = try #require(r.validationLossBefore), after = try #require(r.validationLossAfter)
        #expect(r.validationTokens == ValidationLoss.defaultWindows * 32)
        #expect(before.isFinite && after.isFinite && before != after)
        // Before training the adapters are zero: the loss is the model's own on the validation windows.
        let m = try ModelRegistry.load(directory: Self.model)
        let (v, _) = try ValidationLoss.make(files: files, tokenizer: try Tokenizer(modelDirectory: Self.model), seqLen: 32)
        #expect(abs(try #require(v).loss(m) - before) < 1e-4)
        let log = try JSONDecoder().decode(TrainingRecord.self, from: Data(contentsOf: out.appendingPathComponent("training_log.json")))
        #expect(log.validationLossBefore == before && log.validationLossAfter == after)
    }
}

@Suite struct TrainingDataSamplingTests {
    /// Batches of different steps (and micro-batches) are independent draws: at seed 0 consecutive steps used
    /// to share all windows but one (the step seed was SplitMix64's own increment times the step).
    @Test func consecutiveStepsDrawFreshWindows() throws {
        let d = TrainingData(stream: Array(0..<100_000), seqLen: 16, seed: 0)
        var seen = Set<Int>()
        var total = 0
        for step in 0..<50 {
            for micro in 0..<2 {
                let starts = d.batch(step: step, micro: micro, size: 8).ids.map { $0[0] }
                seen.formUnion(starts)
                total += starts.count
            }
        }
        #expect(seen.count > total * 9 / 10, "\(total) windows drawn, \(seen.count) distinct")
        #expect(d.batch(step: 3, micro: 0, size: 8).ids == d.batch(step: 3, micro: 0, size: 8).ids)
    }
}
