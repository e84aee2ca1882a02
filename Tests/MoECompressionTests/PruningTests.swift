import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
import MoECalibration
@testable import MoECompression

enum Where {
    static var repo: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
    static func fixture(_ n: String) -> URL { repo.appendingPathComponent("Tests/MoEModelsTests/Fixtures/\(n)") }
    static var shared: URL {
        ProcessInfo.processInfo.environment["MOEPRESS_SHARED"].map { URL(fileURLWithPath: $0) } ?? repo.deletingLastPathComponent().appendingPathComponent("shared")
    }
    static func temp(_ tag: String) -> URL { FileManager.default.temporaryDirectory.appendingPathComponent("moepress-\(tag)-\(UUID().uuidString)") }
}

@Suite(.serialized) struct PlanApplyTests {
    /// A pruned checkpoint computes what the original does with the pruned experts' logits masked to −∞
    /// (methods.md §5.1), for renormalised (Mixtral) and non-renormalised routing with a shared expert
    /// and a dense layer (Qwen2-MoE fixture), and gpt-oss's fused experts with biases and its router bias, in
    /// bf16-style and MXFP4 storage (the kept experts' blocks and scales are copied, so pruning loses nothing).
    @Test(arguments: [("mixtral", [[0, 1, 3], [1, 2, 3]]), ("qwen2_moe", [[0, 2, 3, 5], [1, 2, 4]]),
                      ("gpt_oss", [[0, 2, 3], [1, 3]]), ("gpt_oss_mxfp4", [[1, 2, 3], [0, 2]])])
    func prunedEqualsMaskedRouting(_ name: String, _ kept: [[Int]]) throws {
        let src = Where.fixture(name)
        let original = try ModelRegistry.load(directory: src)
        let moe = original.description.moeLayerIndices
        let plan = PruningPlan(method: "test", model: name, parameters: [:],
                               layers: zip(moe, kept).map { .init(layer: $0, experts: original.description.layers[$0].experts!, kept: $1, scores: [:]) })
        let out = Where.temp("pruned")
        defer { try? FileManager.default.removeItem(at: out) }
        try PlanApplier.apply(plan, model: src, output: out)
        let pruned = try ModelRegistry.load(directory: out)
        for (l, k) in zip(moe, kept) {
            #expect(pruned.description.layers[l].experts == k.count)
            var block = original.layers[l].feedForward.moe!
            block.expertMask = (0..<block.numExperts).map { k.contains($0) }
            original.layers[l].feedForward = .moe(block)
        }
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let diff = pruned.forward(ids).maxAbsDifference(original.forward(ids))
        #expect(diff <= 1e-4, "\(name): pruned vs masked max |Δ| = \(diff)")
        // Shared expert and dense layer tensors are copied byte for byte.
        let a = try Checkpoint(directory: src), b = try Checkpoint(directory: out)
        for n in a.names where !n.contains(".experts.") && !n.hasSuffix(".gate.weight") && !n.contains(".mlp.router.") {
            let ia = a.info(n)!, ib = b.info(n)!
            #expect(ia.shape == ib.shape && ia.dtype == ib.dtype)
            #expect(Data(bytes: a.files[0].bytes(ia), count: ia.byteCount) == Data(bytes: b.files[0].bytes(ib), count: ib.byteCount), "\(n)")
        }
        // Fused expert tensors (gpt-oss) keep the kept experts' slabs byte for byte, whatever their storage.
        for n in a.names where n.range(of: #"\.experts\.[a-z]"#, options: .regularExpression) != nil {
            guard let l = Int(n.split(separator: ".")[2]), let slot = moe.firstIndex(of: l) else { continue }
            let ia = a.info(n)!, ib = b.info(n)!
            let slab = ia.byteCount / ia.shape[0]
            #expect(ib.shape == [kept[slot].count] + ia.shape.dropFirst() && ib.dtype == ia.dtype, "\(n)")
            for (i, e) in kept[slot].enumerated() {
                #expect(Data(bytes: a.files[0].bytes(ia) + e * slab, count: slab) == Data(bytes: b.files[0].bytes(ib) + i * slab, count: slab), "\(n) expert \(e)")
            }
        }
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("plan.json").path))
    }

    @Test func unequalCountsGetAMoEPressSection() throws {
        let src = Where.fixture("olmoe")   // fused expert layout
        let plan = PruningPlan(method: "test", model: "olmoe", parameters: [:],
                               layers: [.init(layer: 0, experts: 8, kept: [0, 1, 2, 3, 4, 5], scores: [:]), .init(layer: 1, experts: 8, kept: [2, 7], scores: [:])])
        let out = Where.temp("olmoe")
        defer { try? FileManager.default.removeItem(at: out) }
        try PlanApplier.apply(plan, model: src, output: out)
        let d = try ModelRegistry.describe(directory: out)
        #expect(d.layers.map(\.experts) == [6, 2])
        let m = try ModelRegistry.load(directory: out)
        #expect(m.forward([[1, 2, 3]]).shape == [3, 96])
    }

    @Test func refusesBadPlans() throws {
        let src = Where.fixture("deepseek_v3")   // 8 experts in 4 groups, top-3
        func attempt(_ kept: [Int], layer: Int = 1) throws {
            let out = Where.temp("bad")
            defer { try? FileManager.default.removeItem(at: out) }
            try PlanApplier.apply(PruningPlan(method: "t", model: "m", parameters: [:], layers: [.init(layer: layer, experts: 8, kept: kept, scores: [:])]), model: src, output: out)
            _ = try ModelRegistry.load(directory: out)
        }
        #expect(throws: PruningError.self) { try attempt([0, 1]) }              // fewer than top-k
        #expect(throws: PruningError.self) { try attempt([1, 0, 2]) }           // not ascending
        #expect(throws: PruningError.self) { try attempt([0, 1, 2], layer: 0) } // dense layer
        #expect(throws: (any Error).self) { try attempt([0, 1, 2, 3, 4, 5]) }    // 6 experts do not split into 4 groups
        #expect(throws: PruningError.self) { try PruningBudget.keep(1).keep(experts: 8, topK: 2) }
        #expect(try PruningBudget.ratio(0.25).keep(experts: 8, topK: 2) == 6)
        #expect(try PruningBudget.ratio(0.5).totalRemoved(experts: [32, 32], topK: 4) == 32)
    }
}

@Suite(.serialized) struct CalibrationAndScorePruningTests {
    /// Calibrate (small), prune by frequency, REAP and MoEITS on the shared mixtral-ref; twice with the same
    /// seed gives byte-identical caches' manifests, plans and checkpoints.
    @Test func endToEndDeterministic() throws {
        let model = Where.shared.appendingPathComponent("models/mixtral-ref")
        let m = try ModelRegistry.load(directory: model)
        let tok = try MoETokenizerShim.tokenizer(model)
        let files = try Calibration.files(in: Where.shared.appendingPathComponent("data/calib"))
        let (w1, h1) = try Calibration.sample(files: files, tokenizer: tok, samples: 6, seqLen: 48, seed: 5)
        let (w2, h2) = try Calibration.sample(files: files, tokenizer: tok, samples: 6, seqLen: 48, seed: 5)
        let (w3, _) = try Calibration.sample(files: files, tokenizer: tok, samples: 6, seqLen: 48, seed: 6)
        #expect(w1 == w2 && h1 == h2 && w1 != w3)
        let hash = try Fingerprint.model(model, checkpoint: Checkpoint(directory: model))
        let d = m.description
        let manifest = CalibrationManifest(modelHash: hash, dataHash: h1, seed: 5, samples: 6, seqLen: 48, tokens: 288, hiddenSize: d.hiddenSize,
                                           moeLayers: d.moeLayerIndices, expertsPerLayer: d.moeLayerIndices.map { d.layers[$0].experts! },
                                           numLayers: d.numLayers, files: files.map(\.lastPathComponent))
        let cacheDir = Where.temp("cache")
        defer { try? FileManager.default.removeItem(at: cacheDir) }
        try Calibration.run(model: m, windows: w1, manifest: manifest, output: cacheDir, quiet: true)
        let cache = try CalibrationCache(directory: cacheDir)
        try cache.check(modelHash: hash)
        #expect(throws: CalibrationError.self) { try cache.check(modelHash: "0000000000000000") }
        // The cached MoE output is the block applied to the cached MoE input.
        let x = try cache.tensor(2, "moe_in"), y = try cache.tensor(2, "moe_out")
        #expect(m.layers[2].feedForward(x).maxAbsDifference(y) < 1e-4)
        // The cached routing decision is the router's on the cached input.
        let block = m.layers[2].feedForward.moe!
        let d0 = block.route(x)
        let cached = try cache.routing(2)
        #expect(cached.experts == d0.experts && cached.weights == d0.weights && cached.topK == 2)
        // Gram matrices (dsyrk in f64): Σ x xᵀ over the tokens routed to expert 0, recomputed directly.
        let tokens = (0..<x.rows).filter { t in (0..<2).contains { d0.experts[t * 2 + $0] == 0 } }
        let h = x.cols
        let xe = Tensor(zeros: [tokens.count, h])
        for (r, t) in tokens.enumerated() { (xe.data + r * h).update(from: x.data + t * h, count: h) }
        var g = [Double](repeating: 0, count: h * h)
        g.withUnsafeMutableBufferPointer { Calibration.gram(xe, into: $0.baseAddress!) }
        for (i, j) in [(0, 0), (3, 7), (7, 3), (100, 255)] {
            let want = tokens.reduce(0.0) { $0 + Double(x.data[$1 * h + i]) * Double(x.data[$1 * h + j]) }
            #expect(abs(g[i * h + j] - want) <= 1e-9 * max(1, abs(want)))
        }
        let stats = try cache.statistics(2)
        #expect(abs(stats.frequency.reduce(0, +) - 2) < 1e-6)   // top-2: every token picks two experts (stored as f32)
        #expect(stats.tokenCounts.reduce(0, +) == 2 * 288)

        for score in [ScorePruning.Score.frequency, .reap] {
            let plan = try ScorePruning.plan(score, description: d, cache: cache, budget: .ratio(0.25), modelName: "mixtral-ref")
            #expect(plan.layers.allSatisfy { $0.kept.count == 6 })
            let s = plan.layers[0].scores[score.rawValue]!
            let dropped = Set(0..<8).subtracting(plan.layers[0].kept)
            #expect(dropped.allSatisfy { e in plan.layers[0].kept.allSatisfy { s[$0] >= s[e] } })
            let a = Where.temp("a"), b = Where.temp("b")
            defer { try? FileManager.default.removeItem(at: a); try? FileManager.default.removeItem(at: b) }
            try PlanApplier.apply(plan, model: model, output: a)
            try PlanApplier.apply(plan, model: model, output: b)
            for f in ["model.safetensors", "plan.json", "config.json"] {
                #expect(try Data(contentsOf: a.appendingPathComponent(f)) == Data(contentsOf: b.appendingPathComponent(f)), "\(f)")
            }
        }
        let p1 = try MoEITS.plan(model: m, modelName: "m", tau: nil, budget: .keep(6), rule: .numpy23, weights: nil, quiet: true)
        let p2 = try MoEITS.plan(model: m, modelName: "m", tau: nil, budget: .keep(6), rule: .numpy23, weights: nil, quiet: true)
        #expect(p1 == p2 && p1.layers.allSatisfy { $0.kept.count == 6 })
    }
}

/// config.json edits keep every other byte and leave valid JSON whichever position the entry holds.
@Suite struct ConfigTextTests {
    @Test func removingAnObjectEntryKeepsTheRest() throws {
        let q = #""quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]}"#
        for (text, want) in [("{\n  \(q),\n  \"a\": 1\n}", "{\n  \"a\": 1\n}"), ("{\n  \"a\": 1,\n  \(q),\n  \"b\": [2]\n}", "{\n  \"a\": 1,\n  \"b\": [2]\n}"),
                             ("{\n  \"a\": 1,\n  \(q)\n}", "{\n  \"a\": 1\n}"), ("{\"a\": 1}", "{\"a\": 1}")] {
            let got = HFConfig.removingObjectEntry(text, "quantization_config")
            #expect(got == want, "\(text)")
            #expect((try? JSONSerialization.jsonObject(with: Data(got.utf8))) != nil)
        }
        #expect(HFRemoteCode.removingAutoMap("{\"a\": 1,\n  \"auto_map\": {\"AutoModelForCausalLM\": \"m.C\"}\n}") == "{\"a\": 1\n}")
    }
}

/// config.json's "moepress" section is edited as text (every other value keeps its spelling); each edit must leave JSON
/// the strict reader accepts: no trailing comma, no key twice, whatever order the entries were set and removed in.
@Suite struct MoEPressSectionTextTests {
    @Test func everySequenceOfEditsStaysValidJSON() throws {
        let base = "{\n  \"model_type\": \"mixtral\",\n  \"num_local_experts\": 8\n}\n"
        let values = ["experts_per_layer": "[4, 3]", "low_rank": "{\"keep\": 0.5}", "compressed_experts": "{\"main_experts\": 1}"]
        let keys = values.keys.sorted()
        // Every order of setting the three keys, then removing them in every order, re-setting one on the way.
        func permutations(_ a: [String]) -> [[String]] { a.count <= 1 ? [a] : a.indices.flatMap { i in permutations(a.enumerated().filter { $0.offset != i }.map(\.element)).map { [a[i]] + $0 } } }
        for setOrder in permutations(keys) {
            for removeOrder in permutations(keys) {
                var text = base
                for k in setOrder { text = CheckpointOutput.settingMoEPressEntry(text, key: k, json: values[k]!) }
                text = CheckpointOutput.settingMoEPressEntry(text, key: setOrder[0], json: "null")
                for k in removeOrder {
                    text = CheckpointOutput.removingMoEPressEntry(text, key: k)
                    let parsed = try JSONValue.parse(Data(text.utf8), file: "config.json")
                    #expect(parsed.object?["moepress"]?.object?[k] == nil, "\(setOrder) \(removeOrder): \(text)")
                }
                #expect(try JSONValue.parse(Data(text.utf8), file: "config.json").object?["moepress"] == nil, "\(text)")
            }
        }
        // Sections spelled by other tools: pretty-printed over several lines, or compact without spaces.
        for spelled in ["{\n  \"model_type\": \"mixtral\",\n  \"moepress\": {\n    \"experts_per_layer\": [\n      4,\n      3\n    ],\n    \"low_rank\": {\"keep\": 0.5}\n  }\n}\n",
                        "{\"model_type\":\"mixtral\",\"moepress\":{\"experts_per_layer\":[4,3]}}"] {
            for k in keys {
                var text = CheckpointOutput.settingMoEPressEntry(spelled, key: k, json: values[k]!)
                var parsed = try JSONValue.parse(Data(text.utf8), file: "config.json")
                #expect(parsed.object?["moepress"]?.object?[k] != nil, "\(text)")
                text = CheckpointOutput.removingMoEPressEntry(text, key: k)
                parsed = try JSONValue.parse(Data(text.utf8), file: "config.json")
                #expect(parsed.object?["moepress"]?.object?[k] == nil, "\(text)")
            }
        }
    }
}
