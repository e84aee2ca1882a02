import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
import MoECalibration
@testable import MoECompression

/// A calibration cache for a tiny fixture model, from seeded random token windows.
func fixtureCache(_ name: String, samples: Int = 12, seqLen: Int = 24) throws -> (CausalLM, CalibrationCache, URL) {
    try fixtureCache(directory: Where.fixture(name), samples: samples, seqLen: seqLen)
}

/// A calibration cache for the model in `dir`, from seeded random token windows.
func fixtureCache(directory dir: URL, samples: Int = 12, seqLen: Int = 24) throws -> (CausalLM, CalibrationCache, URL) {
    let m = try ModelRegistry.load(directory: dir)
    var rng = SeededGenerator(seed: 11)
    let windows = (0..<samples).map { _ in (0..<seqLen).map { _ in Int(rng.next() % UInt64(m.vocabSize)) } }
    let d = m.description
    let manifest = CalibrationManifest(modelHash: try Fingerprint.model(dir, checkpoint: Checkpoint(directory: dir)), dataHash: "random", seed: 11,
                                       samples: samples, seqLen: seqLen, tokens: samples * seqLen, hiddenSize: d.hiddenSize,
                                       moeLayers: d.moeLayerIndices, expertsPerLayer: d.moeLayerIndices.map { d.layers[$0].experts! },
                                       numLayers: d.numLayers, files: [])
    let out = Where.temp("fixture-cache")
    try Calibration.run(model: m, windows: windows, manifest: manifest, output: out, quiet: true)
    return (m, try CalibrationCache(directory: out), out)
}

@Suite(.serialized) struct SearchTests {
    /// Worked by hand: s = 1/I = [1, .5, .25] → raw 6·s/1.75 = [3.43, 1.71, 0.86] → floors [3, 1, 0], two
    /// left go to the largest fractions (0.86, then 0.71). With caps, leftovers cycle to uncapped layers.
    @Test func layerCountsByInverseImportance() {
        #expect(MoEI2.layerCounts(importance: [1, 2, 4], experts: [8, 8, 8], topK: 2, total: 6, epsilon: 0) == [3, 2, 1])
        #expect(MoEI2.layerCounts(importance: [1, 100], experts: [4, 8], topK: 2, total: 5, epsilon: 0) == [2, 3])
        #expect(combinations(4, 2) == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
    }

    /// The fitness shortcut (precomputed expert outputs) equals running the block with the experts masked,
    /// and NAEE keeps the subset with the smallest error among all of them.
    @Test func fitnessMatchesMaskedBlockAndNAEEIsOptimal() throws {
        for name in ["mixtral", "qwen2_moe"] {
            let (m, cache, dir) = try fixtureCache(name)
            defer { try? FileManager.default.removeItem(at: dir) }
            let l = m.description.moeLayerIndices[0]
            var block = m.layers[l].feedForward.moe!
            let fit = try LayerFitness(block: block, cache: cache, layer: l, maxTokens: 10_000, remove: 2)
            // Every expert's outputs kept (f64 rounding of another Gram product), or the store spilled to a scratch
            // file (the same bits).
            let dense = try LayerFitness(block: block, cache: cache, layer: l, maxTokens: 10_000, remove: block.numExperts)
            let spilled = try LayerFitness(block: block, cache: cache, layer: l, maxTokens: 10_000, remove: 2, storeLimit: 0)
            #expect(!fit.spilled && spilled.spilled)
            let x = try cache.tensor(l, "moe_in"), y = try cache.tensor(l, "moe_out")
            let e = block.numExperts, keep = e - 2
            for s in combinations(e, 2) + combinations(e, 1) + [[]] {
                let (a, b, c) = (try fit.error(pruned: s), try dense.error(pruned: s), try spilled.error(pruned: s))
                #expect(abs(a - b) <= 1e-9 * max(1e3, a) && a == c, "\(name) \(s) \(a) \(b)")
            }
            var runtimeErrors: [Double] = []
            for s in combinations(e, 2) {
                block.expertMask = (0..<e).map { !s.contains($0) }
                let out = block(x)
                var sq = 0.0
                for j in 0..<out.count { let d = Double(y.data[j] - out.data[j]); sq += d * d }
                runtimeErrors.append(sq.squareRoot())
                #expect(abs(try fit.error(pruned: s) - sq.squareRoot()) <= 1e-3 * max(1, sq.squareRoot()), "\(name) \(s)")
            }
            let plan = try NAEE.plan(model: m, cache: cache, budget: .keep(keep), modelName: name, quiet: true)
            let best = combinations(e, 2)[runtimeErrors.indices.min { runtimeErrors[$0] < runtimeErrors[$1] }!]
            #expect(plan.layers[0].kept == (0..<e).filter { !best.contains($0) }, "\(name)")
        }
    }

    /// A one-layer random Mixtral-shaped model with `experts` experts (top-2), and a calibration cache for it.
    func manyExperts(_ experts: Int, samples: Int = 6, seqLen: Int = 16) throws -> (CausalLM, CalibrationCache, cleanup: () -> Void) {
        let tmp = Where.temp("many-experts")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: Where.fixture("mixtral").appendingPathComponent("config.json"))) as! [String: Any]
        config["num_local_experts"] = experts
        try JSONSerialization.data(withJSONObject: config).write(to: tmp.appendingPathComponent("config.json"))
        let model = tmp.appendingPathComponent("model")
        try RandomCheckpoint.write(config: tmp.appendingPathComponent("config.json"), output: model, layers: 1, seed: UInt64(experts), dtype: .f32, quiet: true)
        let (m, cache, dir) = try fixtureCache(directory: model, samples: samples, seqLen: seqLen)
        return (m, cache, { try? FileManager.default.removeItem(at: tmp); try? FileManager.default.removeItem(at: dir) })
    }

    /// Guards against NAEE starting an enumeration it cannot finish: C(28, 4) = 20,475 and C(32, 8) ≈ 10.5 M sets
    /// are refused with an error naming the count and the way out, and C(27, 4) = 17,550 (just under the limit) runs.
    @Test func naeeRefusesHugeEnumerations() throws {
        #expect(binomial(28, 4) > Double(NAEE.maxCombinations) && binomial(27, 4) <= Double(NAEE.maxCombinations))
        for (experts, keep, count) in [(28, 24, 20_475), (32, 24, 10_518_300)] {
            let (m, cache, cleanup) = try manyExperts(experts)
            defer { cleanup() }
            do {
                _ = try NAEE.plan(model: m, cache: cache, budget: .keep(keep), modelName: "many", quiet: true)
                Issue.record("NAEE enumerated C(\(experts), \(keep)) sets")
            } catch let e as PruningError {
                #expect(e.description.contains("C(\(experts), \(keep)) = \(count)") && e.description.contains("limit \(NAEE.maxCombinations)")
                        && e.description.contains("--method moei2"), "\(e)")
            }
        }
        let (m, cache, cleanup) = try manyExperts(27)
        defer { cleanup() }
        let plan = try NAEE.plan(model: m, cache: cache, budget: .keep(23), modelName: "many", quiet: true)
        #expect(plan.layers.count == 1 && plan.layers[0].kept.count == 23)
    }

    /// Guards against a plan off budget, a layer left below top-k, or a seed that does not fix the plan: MoE-I² end
    /// to end on the Qwen2-MoE fixture (MoE layers 0 and 2 around a dense layer, 6 experts, top-2).
    @Test func moei2DeterministicAndWithinBudget() throws {
        let (m, cache, dir) = try fixtureCache("qwen2_moe")
        defer { try? FileManager.default.removeItem(at: dir) }
        var o = MoEI2.Options()
        o.population = 20; o.generations = 6; o.fitnessTokens = 1000; o.fieldSequences = 4; o.blockSize = 2; o.seed = 3
        let a = try MoEI2.plan(model: m, cache: cache, budget: .ratio(0.25), options: o, modelName: "q", quiet: true)
        let b = try MoEI2.plan(model: m, cache: cache, budget: .ratio(0.25), options: o, modelName: "q", quiet: true)
        #expect(a == b)
        #expect(a.removed == 3)
        #expect(a.layers.allSatisfy { $0.kept.count >= 2 })
    }

    /// Guards against a genetic search that does not evolve: on a 16-expert layer removing 4 (1,820 sets, a
    /// population of 20), its initial population misses the brute-force optimum and the evolved one finds it,
    /// returning K distinct sets in order of error.
    @Test func geneticSearchFindsTheBruteForceOptimum() throws {
        let (m, cache, cleanup) = try manyExperts(16)
        defer { cleanup() }
        let fit = try LayerFitness(block: m.layers[0].feedForward.moe!, cache: cache, layer: 0, maxTokens: 10_000, remove: 4)
        let all = try fit.errors(combinations(16, 4))
        let optimum = all.min()!
        // The next best set is 0.46% worse here: a float difference between machines cannot swap them.
        #expect(all.filter { $0 > optimum * (1 + 1e-6) }.count == all.count - 1, "a near tie, the check would be fragile")
        var o = MoEI2.Options()
        o.population = 20; o.generations = 0; o.seed = 5
        let initial = try MoEI2.geneticSearch(fit, remove: 4, options: o)
        #expect(initial[0].error > optimum * (1 + 1e-9), "the initial population already holds the optimum: the check below proves nothing")
        o.generations = 30
        let ga = try MoEI2.geneticSearch(fit, remove: 4, options: o)
        #expect(abs(ga[0].error - optimum) <= 1e-12 * optimum, "GA best \(ga[0].error) vs brute force \(optimum)")
        #expect(ga.count == 3 && Set(ga.map(\.set)).count == 3 && ga[0].error <= ga[1].error && ga[1].error <= ga[2].error)
        let again = try ga.map { try fit.error(pruned: $0.set) }
        #expect(ga.allSatisfy { $0.set.count == 4 } && ga.map(\.error) == again)
    }

    /// Guards against a KT-reception field that does not pick the joint optimum: on one block (Mixtral's two MoE
    /// layers; Qwen2-MoE's MoE layers around a dense one), each of the K^T combinations is run here through the full
    /// decoder layers from the block input, and the field's choice must be the one nearest the unpruned output,
    /// whatever the order of the candidates.
    @Test(arguments: [("mixtral", [[[0], [1], [2]], [[1], [3], [0]]]), ("qwen2_moe", [[[0, 1], [2, 3], [4, 5]], [[1, 5], [0, 3], [2, 4]]])])
    func receptionFieldPicksTheBruteForceOptimum(_ name: String, _ candidates: [[[Int]]]) throws {
        let (m, cache, dir) = try fixtureCache(name)
        defer { try? FileManager.default.removeItem(at: dir) }
        let moe = m.description.moeLayerIndices, seqs = 4, seqLen = cache.manifest.seqLen
        let input = try cache.tensor(moe[0], "hidden_in", rows: 0..<(seqs * seqLen))
        func run(_ pruned: [[Int]?]) -> Tensor {
            let x = input.copy()
            for li in moe.first!...moe.last! {
                var layer = m.layers[li]
                if let p = pruned[li - moe.first!], var block = layer.feedForward.moe {
                    block.expertMask = (0..<block.numExperts).map { !p.contains($0) }
                    layer.feedForward = .moe(block)
                }
                layer.forward(x, segments: (0..<seqs).map { AttentionSegment(rows: ($0 * seqLen)..<(($0 + 1) * seqLen), cache: KVCache.Layer(for: layer.attention)) })
            }
            return x
        }
        let reference = run(Array(repeating: nil, count: moe.last! - moe.first! + 1))
        let k = candidates[0].count
        for rotation in 0..<k {
            let rotated = candidates.map { Array($0[rotation...] + $0[..<rotation]) }
            var oracle: [(choice: [Int], error: Double)] = []
            for a in 0..<k {
                for b in 0..<k {
                    var pruned = [[Int]?](repeating: nil, count: moe.last! - moe.first! + 1)
                    pruned[moe[0] - moe.first!] = rotated[0][a]
                    pruned[moe[1] - moe.first!] = rotated[1][b]
                    let out = run(pruned)
                    var sq = 0.0
                    for j in 0..<out.count { let d = Double(out.data[j] - reference.data[j]); sq += d * d }
                    oracle.append(([a, b], sq.squareRoot()))
                }
            }
            oracle.sort { $0.error < $1.error }
            #expect(oracle[1].error > oracle[0].error * (1 + 1e-6), "\(name): a near tie, the check would be fragile")
            let field = MoEI2.receptionField(model: m, layers: moe, candidates: rotated, input: input.copy(), sequences: seqs, seqLen: seqLen)
            #expect(field.choice == oracle[0].choice, "\(name) rotation \(rotation): field \(field) vs brute force \(oracle[0])")
            #expect(abs(field.error - oracle[0].error) <= 1e-9 * oracle[0].error, "\(name) rotation \(rotation)")
        }
    }
}

/// MoE-I² searches on all calibration windows but the last ⌊N/8⌋ and the plan's reconstruction error is measured
/// on those held-out windows: equal to the Gram-expansion error of LayerFitness on the held-out range (a different
/// computation from the masked block pass that records it), and not the error the search optimised.
@Suite struct HeldOutTests {
    @Test func moei2IsJudgedOnTokensItDidNotSearch() throws {
        let (m, cache, dir) = try fixtureCache("qwen2_moe", samples: 16, seqLen: 24)
        defer { try? FileManager.default.removeItem(at: dir) }
        let split = CalibrationSplit(cache)
        #expect(split.search == 0..<(14 * 24) && split.heldOut == (14 * 24)..<(16 * 24) && split.isHeldOut)
        var request = PruningRequest(method: .moei2, budget: .ratio(0.25))
        request.search.population = 20; request.search.generations = 6; request.search.fieldSequences = 4; request.search.blockSize = 2
        let plan = try Pruning.plan(request, model: m, modelName: "q", cache: cache, quiet: true)
        #expect(plan.parameters["importance_tokens"] == "\(14 * 24)" && plan.parameters["fitness_tokens"] == "\(14 * 24)")
        #expect(plan.parameters["reconstruction_tokens"] == "48 held out")
        // The ablation: the same search with every layer removing the per-layer budget.
        request.search.uniformCounts = true
        let uniform = try Pruning.plan(request, model: m, modelName: "q", cache: cache, quiet: true)
        #expect(uniform.parameters["counts"] == "uniform" && plan.parameters["counts"] == "by layer importance")
        #expect(uniform.layers.allSatisfy { $0.kept.count == $0.experts - Int((0.25 * Double($0.experts)).rounded()) })
        for layer in plan.layers {
            let fit = try LayerFitness(block: m.layers[layer.layer].feedForward.moe!, cache: cache, layer: layer.layer, tokens: split.heldOut,
                                       remove: layer.experts - layer.kept.count)
            let pruned = (0..<layer.experts).filter { !layer.kept.contains($0) }
            let heldOut = layer.scores["reconstruction_error"]![0], searched = layer.scores["search_error"]![0]
            #expect(abs(heldOut - (try fit.error(pruned: pruned))) <= 1e-4 * heldOut, "layer \(layer.layer)")
            #expect(abs(heldOut - searched) > 1e-6 * searched, "the reported error is the searched one")
        }
    }
}

@Suite struct UniformPlanTests {
    @Test func nearestUniformUsesTheRecordedScores() {
        let plan = PruningPlan(method: "moei2", model: "m", parameters: [:], layers: [
            .init(layer: 0, experts: 6, kept: [0, 1, 2, 3, 4], scores: ["expert_importance": [5, 4, 3, 2, 1, 0]]),
            .init(layer: 1, experts: 6, kept: [1, 2], scores: ["expert_importance": [9, 1, 2, 0, 3, 0.5]]),
        ])
        let u = UniformPlan.nearest(plan, minimum: 2)
        #expect(u.uniform)
        // mean kept 3.5 → 4 per layer: layer 0 drops its least important kept expert (4), layer 1 restores
        // the two most important removed ones (0 and 4).
        #expect(u.layers[0].kept == [0, 1, 2, 3])
        #expect(u.layers[1].kept == [0, 1, 2, 4])
    }
}
