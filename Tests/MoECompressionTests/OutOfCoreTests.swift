import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer
import MoECalibration
@testable import MoECompression

/// Every compression stage in bounded memory gives what the in-memory path gave: calibration chunked a
/// sequence at a time with the weights streamed, fitness caches spilled to scratch files, a calibration
/// killed midway and resumed, and SVD-LLM's Gram matrices made per expert from the cache.
@Suite(.serialized) struct OutOfCoreTests {
    static func windows(_ model: URL, samples: Int, seqLen: Int, seed: UInt64) throws -> ([[Int]], CalibrationManifest, CausalLM) {
        let m = try ModelRegistry.load(directory: model)
        let files = try Calibration.files(in: Where.shared.appendingPathComponent("data/calib"))
        let (w, hash) = try Calibration.sample(files: files, tokenizer: try MoETokenizerShim.tokenizer(model), samples: samples, seqLen: seqLen, seed: seed)
        let d = m.description
        let manifest = CalibrationManifest(modelHash: try Fingerprint.model(model, checkpoint: Checkpoint(directory: model)), dataHash: hash, seed: seed,
                                           samples: samples, seqLen: seqLen, tokens: samples * seqLen, hiddenSize: d.hiddenSize,
                                           moeLayers: d.moeLayerIndices, expertsPerLayer: d.moeLayerIndices.map { d.layers[$0].experts! },
                                           numLayers: d.numLayers, files: files.map(\.lastPathComponent))
        return (w, manifest, m)
    }

    /// A budget that lets one sequence at a time through a layer (and is far smaller than the model).
    static func tightBudget(_ m: CausalLM, _ manifest: CalibrationManifest) -> MemoryBudget {
        MemoryBudget(bytes: manifest.tokens * manifest.hiddenSize * 4 + MemoryPlan(m).bytes(lengths: [manifest.seqLen]) + 1)
    }

    static func files(_ dir: URL) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for n in try FileManager.default.contentsOfDirectory(atPath: dir.path) { out[n] = try Data(contentsOf: dir.appendingPathComponent(n)) }
        return out
    }

    /// The shared reference models calibrated a sequence at a time with their weights streamed give the
    /// cache of one pass over all sequences with the weights resident, byte for byte (every kernel computes a
    /// token's values the same way whatever its batch); its statistics are those recomputed here from the
    /// router and experts on the cached inputs; and every pruning method makes the same plan (kept experts and
    /// every score) with its fitness caches spilled to scratch files as in memory.
    @Test func streamedCalibrationAndSpilledFitnessMatchTheInMemoryPath() throws {
        for name in ["mixtral-ref", "qwen-moe-ref"] {
            let model = Where.shared.appendingPathComponent("models/\(name)")
            let (w, manifest, m) = try Self.windows(model, samples: 8, seqLen: 64, seed: 3)
            let tight = Self.tightBudget(m, manifest), roomy = MemoryBudget(bytes: 8 << 30)
            #expect(MemoryPlan(m).streams(under: tight) && !MemoryPlan(m).streams(under: roomy))
            #expect(try Calibration.estimate(model: m, windows: w, manifest: manifest, output: Where.temp("x"), budget: tight).0.chunks == 8)
            #expect(try Calibration.estimate(model: m, windows: w, manifest: manifest, output: Where.temp("x"), budget: roomy).0.chunks == 1)
            let parent = Where.temp("oneway")
            defer { try? FileManager.default.removeItem(at: parent) }
            let streamed = parent.appendingPathComponent("streamed"), resident = parent.appendingPathComponent("resident")
            try Calibration.run(model: m, windows: w, manifest: manifest, output: streamed, budget: tight, quiet: true)
            try Calibration.run(model: m, windows: w, manifest: manifest, output: resident, budget: roomy, quiet: true)
            #expect(try Self.files(streamed) == Self.files(resident), "\(name)")

            let cache = try CalibrationCache(directory: streamed)
            let l = m.description.moeLayerIndices.last!
            let block = m.layers[l].feedForward.moe!
            let x = try cache.tensor(l, "moe_in")
            let d = block.route(x)
            let stats = try cache.statistics(l)
            var counts = [Int](repeating: 0, count: block.numExperts), saliency = [Double](repeating: 0, count: block.numExperts)
            for (e, r) in block.expertOutputs(x, decision: d) {
                counts[e] = r.tokens.count
                for (k, wt) in r.weights.enumerated() {
                    let row = (0..<x.cols).map { Double(r.outputs.data[k * x.cols + $0]) }
                    saliency[e] += Double(wt) * row.reduce(0) { $0 + $1 * $1 }.squareRoot()
                }
            }
            #expect(stats.tokenCounts == counts)
            #expect(stats.frequency == counts.map { Double(Float(Double($0) / Double(x.rows))) })
            #expect(stats.reap == (0..<counts.count).map { counts[$0] > 0 ? Double(Float(saliency[$0] / Double(counts[$0]))) : 0 })

            for method in [PruningMethod.frequency, .reap, .naee, .moei2] where !(method == .naee && block.numExperts > 16) {
                var request = PruningRequest(method: method, budget: .ratio(0.25))
                request.fitnessTokens = 300
                request.search.population = 20
                request.search.generations = 5
                request.search.fitnessTokens = 300
                let inMemory = try Pruning.plan(request, model: m, modelName: name, cache: cache, quiet: true)
                request.memory = MemoryBudget(bytes: 0)   // every fitness cache spilled
                let spilled = try Pruning.plan(request, model: m, modelName: name, cache: cache, quiet: true)
                #expect(spilled == inMemory, "\(name) \(method)")
            }
        }
    }

    /// A calibration stopped after layer 2 (as a kill would) leaves its finished layers in .<name>.partial;
    /// run again, it resumes there and the cache is byte-identical to an uninterrupted run, with a tight budget
    /// or not. A finished cache is not replaced without overwrite, and nothing else is left beside it.
    @Test func killedCalibrationResumesByteIdentical() throws {
        for fixture in ["qwen2_moe", "deepseek_v2"] {
            let model = Where.fixture(fixture)
            let m = try ModelRegistry.load(directory: model)
            var rng = SeededGenerator(seed: 4)
            let w = (0..<5).map { _ in (0..<16).map { _ in Int(rng.next() % UInt64(m.vocabSize)) } }
            let d = m.description
            let manifest = CalibrationManifest(modelHash: "fixture", dataHash: "random", seed: 4, samples: 5, seqLen: 16, tokens: 80,
                                               hiddenSize: d.hiddenSize, moeLayers: d.moeLayerIndices,
                                               expertsPerLayer: d.moeLayerIndices.map { d.layers[$0].experts! }, numLayers: d.numLayers, files: [])
            let parent = Where.temp("resume")
            defer { try? FileManager.default.removeItem(at: parent) }
            let whole = parent.appendingPathComponent("whole"), resumed = parent.appendingPathComponent("resumed")
            try Calibration.run(model: m, windows: w, manifest: manifest, output: whole, quiet: true)
            let tight = Self.tightBudget(m, manifest)
            #expect(throws: CalibrationError.interrupted(1)) {
                try Calibration.run(model: m, windows: w, manifest: manifest, output: resumed, budget: tight, quiet: true, stopAfter: 1)
            }
            let partial = parent.appendingPathComponent(".resumed.partial")
            #expect(FileManager.default.fileExists(atPath: partial.appendingPathComponent("layer_001.safetensors").path))
            #expect(!FileManager.default.fileExists(atPath: resumed.path))
            try Calibration.run(model: m, windows: w, manifest: manifest, output: resumed, budget: tight, quiet: true)
            #expect(try Self.files(whole) == Self.files(resumed), "\(fixture)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: parent.path).sorted() == ["resumed", "whole"])
            #expect(throws: CalibrationError.self) { try Calibration.run(model: m, windows: w, manifest: manifest, output: whole, quiet: true) }
            // f16 activations: half the bytes, the same values to f16 rounding.
            let half = parent.appendingPathComponent("half")
            var m16 = manifest
            m16.activations = DType.f16.rawValue
            try Calibration.run(model: m, windows: w, manifest: m16, output: half, quiet: true)
            // Resuming an f16 cache continues from the f32 residual stream it saved, not the rounded input.
            let half2 = parent.appendingPathComponent("half2")
            #expect(throws: CalibrationError.interrupted(2)) {
                try Calibration.run(model: m, windows: w, manifest: m16, output: half2, quiet: true, stopAfter: 2)
            }
            try Calibration.run(model: m, windows: w, manifest: m16, output: half2, quiet: true)
            #expect(try Self.files(half) == Self.files(half2), "\(fixture) f16")
            let l = d.moeLayerIndices[0]
            let a = try CalibrationCache(directory: whole).tensor(l, "moe_in"), b = try CalibrationCache(directory: half).tensor(l, "moe_in")
            #expect(a.maxAbsDifference(b) <= 1e-3 * max(1, a.array.map(abs).max()!))
            #expect(try CalibrationCache(directory: half).file(l).info("moe_in")?.dtype == .f16)
        }
    }

    /// SVD-LLM from a calibration cache: each expert's factors are those of its Gram matrices summed directly
    /// over the tokens the router sends it (recomputed here from the cached block input), to f32 rounding; the
    /// streamed write holds the factors of every expert and the report of each.
    @Test func svdllmFactorsFromCachedInputs() throws {
        let (m, cache, cdir) = try fixtureCache("mixtral", samples: 10, seqLen: 24)
        defer { try? FileManager.default.removeItem(at: cdir) }
        let model = Where.fixture("mixtral")
        let out = Where.temp("svdllm")
        defer { try? FileManager.default.removeItem(at: out) }
        var o = LowRank.Options()
        o.method = .svdllm
        o.allocation = .uniform
        o.target = .keep(0.5)
        let report = try LowRank.decompose(model: model, options: o, whitening: cache, output: out, quiet: true)
        let written = try Checkpoint(directory: out)
        let l = m.description.moeLayerIndices[0]
        let block = m.layers[l].feedForward.moe!
        let x = try cache.tensor(l, "moe_in")
        let d = block.route(x)
        let names = try ModelRegistry.checkpointNames(directory: out, checkpoint: written, perExpert: true)
        for e in [0, block.numExperts - 1] {
            let tokens = (0..<x.rows).filter { t in (0..<d.topK).contains { d.experts[t * d.topK + $0] == Int32(e) } }
            let h = x.cols
            var g = [Double](repeating: 0, count: h * h)
            for t in tokens { for i in 0..<h { for j in 0..<h { g[i * h + j] += Double(x.data[t * h + i]) * Double(x.data[t * h + j]) } } }
            let w = block.experts[e].gate.denseWeight()
            let r = report.layers[0].ranks["gate"]![e]
            let (a, b, _) = try LowRank.svdLLMFactors(w, gram: g, rank: r)
            let base = try #require(names.module("layers.\(l).moe.experts.\(e).gate"))
            let wa = try written.tensor("\(base).lowrank_a"), wb = try written.tensor("\(base).lowrank_b")
            // Factors are unique up to the sign of each singular pair: compare the products.
            let p1 = matmul(a, b), p2 = matmul(wa, wb)
            #expect(p1.maxAbsDifference(p2) <= 1e-4 * max(1, p1.array.map(abs).max()!), "expert \(e)")
        }
        #expect(report.layers.allSatisfy { $0.relativeError["down"]?.count == block.numExperts && $0.relativeError["down"]!.allSatisfy(\.isFinite) })
    }
}
