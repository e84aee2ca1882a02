import Foundation
import Testing
import MoETensor
import MoECheckpoint
@testable import MoEModels

/// Logits of every supported family against HF transformers (fixtures from tools/oracle/make_model_fixtures.py).
@Suite struct FamilyParityTests {
    static let families = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "phimoe", "gpt_oss"]
    /// Fixture folders: one per family, plus DeepSeek-V2 with the low-rank query path.
    static let fixtures = families + ["deepseek_v2_qlora", "gpt_oss_mxfp4"]

    func load(_ name: String) throws -> (CausalLM, [[Int]], [Tensor]) {
        let dir = Paths.fixture(name)
        let model = try ModelRegistry.load(directory: dir)
        let inputs = try JSONDecoder().decode([[Int]].self, from: Data(contentsOf: dir.appendingPathComponent("inputs.json")))
        let expected = try SafeTensorsFile(path: dir.appendingPathComponent("expected.safetensors").path)
        return (model, inputs, try inputs.indices.map { try expected.tensor("logits_\($0)") })
    }

    @Test(arguments: fixtures)
    func fullForwardMatchesHF(_ name: String) throws {
        let (model, inputs, expected) = try load(name)
        #expect(name.hasPrefix(model.description.modelType))
        for (ids, want) in zip(inputs, expected) {
            let got = model.forward([ids])
            #expect(got.shape == want.shape)
            let diff = got.maxAbsDifference(want)
            #expect(diff <= 1e-4, "\(name): max |Δlogit| = \(diff)")
        }
    }

    @Test(arguments: fixtures)
    func batchedForwardMatchesHF(_ name: String) throws {
        let (model, inputs, expected) = try load(name)
        let got = model.forward(inputs)
        let want = Tensor.concatRows(expected)
        let diff = got.maxAbsDifference(want)
        #expect(diff <= 1e-4, "\(name): batched max |Δlogit| = \(diff)")
    }

    /// Prefill part of each fixture input, then decode the rest one token at a time through the KV cache; guards
    /// against cached decoding that drifts from the full forward or from HF's logits of the same input.
    @Test(arguments: fixtures)
    func incrementalDecodingMatchesFullForward(_ name: String) throws {
        let (model, inputs, expected) = try load(name)
        // Phi-MoE switches every position's rotary scaling once a pass reaches past the original length, so an input
        // longer than that decoded step by step differs from its full forward in HF too (and HF's logits of the long
        // input are all long-scaled, so none of its rows is the oracle for a shorter pass): only inputs within that
        // length are checked (the fixture's second, 5 tokens, for Phi-MoE's original length of 8).
        let limit = (model.layers[0].attention as? GroupedQueryAttention)?.rope.longScaling?.positions ?? Int.max
        var checked = 0
        for (ids, want) in zip(inputs, expected) where ids.count <= limit {
            let full = model.forward([ids])
            let cache = KVCache(for: model)
            let prefix = min(4, ids.count / 2)
            var rows = [model.forward([Array(ids[0..<prefix])], caches: [cache])]
            for t in prefix..<ids.count {
                rows.append(model.forward([[ids[t]]], caches: [cache]))
            }
            #expect(cache.count == ids.count)
            let stepped = Tensor.concatRows(rows)
            let selfDiff = stepped.maxAbsDifference(full)
            let hfDiff = stepped.maxAbsDifference(want)
            #expect(selfDiff <= 1e-4, "\(name) \(ids.count) tokens: cached vs full max |Δ| = \(selfDiff)")
            #expect(hfDiff <= 1e-4, "\(name) \(ids.count) tokens: cached vs HF max |Δ| = \(hfDiff)")
            checked += 1
        }
        #expect(checked >= 1, "\(name): no fixture input within the original context of \(limit)")
    }
}

/// The shared reference models (bf16 weights computed in f32) against HF's logits.
@Suite struct ReferenceModelParityTests {
    @Test(arguments: ["mixtral-ref", "qwen-moe-ref"])
    func referenceLogits(_ name: String) throws {
        let dir = Paths.sharedModel(name)
        let model = try ModelRegistry.load(directory: dir)
        let ids = try JSONDecoder().decode([Int].self, from: Data(contentsOf: dir.appendingPathComponent("reference/ids.json")))
        let want = try SafeTensorsFile(path: dir.appendingPathComponent("reference/logits.safetensors").path).tensor("logits")
        let got = model.forward([ids])
        #expect(got.shape == want.shape)
        let diff = got.maxAbsDifference(want)
        #expect(diff <= 1e-3, "\(name): max |Δlogit| = \(diff)")
    }
}

@Suite struct RegistryTests {
    @Test func unsupportedArchitectureListsSupported() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-unsupported-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"model_type": "llama", "hidden_size": 8}"#.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        do {
            _ = try ModelRegistry.load(directory: dir)
            Issue.record("expected an error")
        } catch let e as ModelError {
            #expect(e.description.contains("\"llama\""))
            for t in FamilyParityTests.families { #expect(e.description.contains(t)) }
        }
    }

    /// The same architecture described from a v4-spelled config (fixture) and a v5-spelled one (shared model).
    @Test func v4AndV5SpellingsDescribeAlike() throws {
        let v4 = try HFConfig(modelDirectory: Paths.fixture("mixtral"))
        let v5 = try HFConfig(modelDirectory: Paths.sharedModel("mixtral-ref"))
        #expect(v4.has("rope_theta") && !v4.has("rope_parameters"))
        #expect(v5.has("rope_parameters") && !v5.has("rope_theta"))
        #expect(try v4.ropeParameters().theta == 10000)
        #expect(try v5.ropeParameters().theta == 10000)
        let d4 = try Mixtral.describe(v4), d5 = try Mixtral.describe(v5)
        #expect(d4.routing == d5.routing)
        #expect(d4.layers.first?.experts == 4 && d5.layers.first?.experts == 8)
        // The DeepSeek-V2 fixture keeps yarn scaling under v4's "rope_scaling" with "type".
        let ds = try HFConfig(modelDirectory: Paths.fixture("deepseek_v2")).ropeParameters()
        #expect(ds.type == "yarn" && ds.factor == 4 && ds.mscaleAllDim == 0.707)
    }

    @Test func describesLayerPlans() throws {
        let q2 = try ModelRegistry.describe(directory: Paths.fixture("qwen2_moe"))
        #expect(q2.moeLayerIndices == [0, 2] && q2.denseLayerIndices == [1])
        #expect(q2.layers[0].sharedExpertGated && q2.layers[0].sharedExpertIntermediate == 48)
        let v3 = try ModelRegistry.describe(directory: Paths.fixture("deepseek_v3"))
        #expect(v3.denseLayerIndices == [0])
        #expect(v3.routing?.scoring == .sigmoid && v3.routing?.groups == 4 && v3.routing?.groupScore == .top2Sum)
        #expect(v3.attention == .latent)
    }
}
