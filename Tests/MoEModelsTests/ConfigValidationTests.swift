import Foundation
import Testing
import MoETensor
import MoECheckpoint
@testable import MoEModels

/// config.json values that used to crash, hang or silently compute on garbage (issue: reliability) are refused
/// with an error naming the file and the key; the model is never built from them.
@Suite struct ConfigValidationTests {
    static let mutations: [(String, String, String)] = [
        ("mixtral", "partial_rotary_factor", "7"),
        ("mixtral", "num_hidden_layers", "-1"),
        ("mixtral", "num_hidden_layers", "0"),
        ("mixtral", "num_hidden_layers", "1e300"),
        ("mixtral", "num_hidden_layers", "1000000000000"),
        ("mixtral", "num_experts_per_tok", "-1"),
        ("mixtral", "num_experts_per_tok", "0"),
        ("mixtral", "sliding_window", "-1"),
        ("mixtral", "sliding_window", "0"),
        ("mixtral", "bos_token_id", "1e30"),
        ("mixtral", "eos_token_id", "[2, 0.5]"),
        ("mixtral", "hidden_size", "1000000000000"),
        ("mixtral", "head_dim", "1000000000000"),
        ("mixtral", "rope_theta", "0"),
        ("mixtral", "rms_norm_eps", "-1"),
        ("mixtral", "num_key_value_heads", "3"),
        ("mixtral", "num_local_experts", "0"),
        ("mixtral", "rope_scaling", #"{"type": "linear", "factor": 0}"#),
        ("qwen2_moe", "shared_expert_intermediate_size", "-4"),
        ("deepseek_v2", "n_shared_experts", "1000000000000000"),
        ("deepseek_v2", "qk_rope_head_dim", "-2"),
        // Found by the fuzz tests' long run: refused, but without naming the file.
        ("olmoe", "hidden_act", #""x""#),
        ("mixtral", "model_type", #""x""#),
    ]

    /// Guards against a bad config.json value that loads, or whose refusal does not name the file and the key.
    @Test(arguments: mutations.indices)
    func refused(_ i: Int) throws {
        let (family, key, value) = Self.mutations[i]
        let src = Paths.fixture(family)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("model.safetensors"),
                                                   withDestinationURL: src.appendingPathComponent("model.safetensors"))
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("config.json"))) as! [String: Any]
        obj[key] = try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed)
        try JSONSerialization.data(withJSONObject: obj).write(to: dir.appendingPathComponent("config.json"))
        do {
            _ = try ModelRegistry.load(directory: dir)
            Issue.record("\(family) \(key) = \(value): accepted")
        } catch {
            let message = "\(error)"
            #expect(message.contains("config.json"), "\(key) = \(value): \(message)")
            #expect(message.contains(key.split(separator: "_").first.map(String.init) ?? key) || message.contains("rope") || message.contains("head"),
                    "\(key) = \(value): \(message)")
        }
    }
}

/// Keys a config.json leaves out take transformers' defaults for that family, as HF's config classes do.
@Suite struct ConfigDefaultsTests {
    func withoutKey(_ family: String, _ key: String) throws -> (URL, () -> Void) {
        let src = Paths.fixture(family)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-defaults-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("model.safetensors"),
                                                   withDestinationURL: src.appendingPathComponent("model.safetensors"))
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("config.json"))) as! [String: Any]
        obj.removeValue(forKey: key)
        try JSONSerialization.data(withJSONObject: obj).write(to: dir.appendingPathComponent("config.json"))
        return (dir, { try? FileManager.default.removeItem(at: dir) })
    }

    @Test func missingNormEpsIsTheFamilysDefault() throws {
        // transformers: MixtralConfig and OlmoeConfig 1e-5, Qwen2MoeConfig 1e-6.
        for (family, eps) in [("mixtral", Float(1e-5)), ("olmoe", 1e-5), ("qwen2_moe", 1e-6)] {
            let (dir, clean) = try withoutKey(family, "rms_norm_eps")
            defer { clean() }
            #expect(try ModelRegistry.describe(directory: dir).rmsNormEps == eps, "\(family)")
        }
    }

    @Test func missingSharedExpertSizeIsNotADroppedExpert() throws {
        // Qwen2MoeConfig's default is 5632: the fixture's shared expert weights (another size) are then refused by
        // shape, never silently left out.
        let (dir, clean) = try withoutKey("qwen2_moe", "shared_expert_intermediate_size")
        defer { clean() }
        #expect(try ModelRegistry.describe(directory: dir).layers.compactMap(\.sharedExpertIntermediate).allSatisfy { $0 == 5632 })
        #expect(throws: (any Error).self) { _ = try ModelRegistry.load(directory: dir) }
    }

    @Test func presentKeysWinOverDefaults() throws {
        let c = HFConfig(path: "config.json", raw: ["rms_norm_eps": .number(0.25), "sliding_window": .null])
        let filled = c.filling(Mixtral.hfDefaults)
        #expect(filled.raw["rms_norm_eps"] == .number(0.25) && filled.raw["sliding_window"] == .null)
        #expect(filled.raw["num_key_value_heads"] == .number(8) && c.raw["num_key_value_heads"] == nil)
    }
}
