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
        try configVariant(family) { $0.removeValue(forKey: key) }
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

/// The classes of garbage an independent fuzzer found accepted (issue: reliability II), several inputs each. Every case
/// is refused by `ModelRegistry.describe`, the config validation every command runs before anything else (so `inspect`
/// refuses what `logits` refuses), with the file named; the weight-level ones (`weights: true`) by the load every
/// command (inspect included) then runs.
@Suite struct ConfigClassTests {
    /// (class, family, keys set on the fixture's config.json as a JSON object, refused already by describe).
    static let cases: [(String, String, String, Bool)] = [
        ("rope", "mixtral", #"{"rope_theta": -1}"#, true),
        ("rope", "mixtral", #"{"rope_theta": null}"#, true),
        ("rope", "mixtral", #"{"rope_theta": "x"}"#, true),
        ("rope", "olmoe", #"{"rope_parameters": {"rope_type": "default", "rope_theta": null}}"#, true),
        ("rope", "olmoe", #"{"rope_parameters": {"rope_type": "default", "rope_theta": 0}}"#, true),
        ("rope", "mixtral", #"{"rope_scaling": {"type": "warp", "factor": 2}}"#, true),
        ("rope", "olmoe", #"{"rope_parameters": {"rope_type": 3, "rope_theta": 10000}}"#, true),
        ("rope", "qwen3_moe", #"{"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000, "original_max_position_embeddings": 64}}"#, true),
        ("rope", "mixtral", #"{"rope_scaling": {"type": "linear", "factor": -2}}"#, true),
        ("rope", "mixtral", #"{"rope_scaling": {"type": "linear"}}"#, true),
        ("rope", "qwen2_moe", #"{"partial_rotary_factor": 1.5}"#, true),
        ("rope", "olmoe", #"{"rope_parameters": {"rope_type": "default", "rope_theta": 10000, "partial_rotary_factor": 2}}"#, true),
        ("rope", "deepseek_v2", #"{"partial_rotary_factor": 3}"#, true),
        ("rope", "mixtral", #"{"partial_rotary_factor": null}"#, true),
        ("rope", "olmoe", #"{"rope_parameters": "default"}"#, true),
        ("rope", "mixtral", #"{"rope_scaling": [1, 2]}"#, true),
        ("sliding window", "mixtral", #"{"sliding_window": "x"}"#, true),
        ("sliding window", "mixtral", #"{"sliding_window": 2.5}"#, true),
        ("sliding window", "gpt_oss", #"{"sliding_window": 0}"#, true),
        ("sliding window", "gpt_oss", #"{"sliding_window": -3}"#, true),
        ("sliding window", "qwen2_moe", #"{"use_sliding_window": true, "sliding_window": 0}"#, true),
        ("sliding window", "qwen2_moe", #"{"sliding_window": -1}"#, true),
        ("sliding window", "qwen3_moe", #"{"sliding_window": "wide"}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"experts_per_layer": ["4", "4"]}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"experts_per_layer": [4, 99]}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"experts_per_layer": [4]}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"experts_per_layer": [4, null]}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"experts_per_layer": 4}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"compressed_experts": {"main_experts": 0}}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"compressed_experts": {"main_experts": 5}}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"compressed_experts": {"main_experts": "1"}}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": {"speed": 2}}"#, true),
        ("moepress section", "mixtral", #"{"moepress": [1]}"#, true),
        ("norm epsilon", "mixtral", #"{"rms_norm_eps": null}"#, true),
        ("norm epsilon", "olmoe", #"{"rms_norm_eps": null}"#, true),
        ("norm epsilon", "phimoe", #"{"rms_norm_eps": null}"#, true),
        ("norm epsilon", "deepseek_v2", #"{"routed_scaling_factor": null}"#, true),
        ("shared expert", "qwen2_moe", #"{"shared_expert_intermediate_size": 0}"#, false),
        ("shared expert", "deepseek_v2", #"{"n_shared_experts": null}"#, false),
        ("shared expert", "deepseek_v3", #"{"n_shared_experts": 0}"#, false),
    ]

    static func folder(_ family: String, patch: String) throws -> (URL, () -> Void) {
        let set = try JSONSerialization.jsonObject(with: Data(patch.utf8)) as! [String: Any]
        return try configVariant(family) { obj in
            for (k, v) in set { obj[k] = v }
            if set["rope_parameters"] != nil { obj.removeValue(forKey: "rope_scaling") }
        }
    }

    /// Guards against a class of garbage that a command accepts, or that `inspect` accepts while `logits` refuses it.
    @Test(arguments: cases.indices)
    func refused(_ i: Int) throws {
        let (kind, family, patch, byDescribe) = Self.cases[i]
        let (dir, clean) = try Self.folder(family, patch: patch)
        defer { clean() }
        do {
            _ = try ModelRegistry.describe(directory: dir)
            if byDescribe { Issue.record("\(kind): \(family) \(patch): describe accepted it") }
        } catch {
            #expect(byDescribe && "\(error)".contains("config.json"), "\(kind): \(family) \(patch): \(error)")
        }
        do {
            _ = try ModelRegistry.load(directory: dir)
            Issue.record("\(kind): \(family) \(patch): load accepted it")
        } catch {
            #expect("\(error)".contains(dir.path), "\(kind): \(family) \(patch): the refusal does not name the folder: \(error)")
        }
    }

    /// The fixtures themselves (and the values transformers accepts beside the refused ones) still load.
    @Test func validNeighboursLoad() throws {
        for (family, patch) in [("qwen2_moe", #"{"sliding_window": 0}"#), ("qwen2_moe", #"{"sliding_window": null}"#),
                                ("mixtral", #"{"sliding_window": null, "rope_scaling": null}"#), ("mixtral", #"{"sliding_window": 4096}"#),
                                ("olmoe", #"{"clip_qkv": null}"#), ("mixtral", #"{"moepress": {"experts_per_layer": [4, 4]}}"#),
                                ("mixtral", #"{"moepress": null}"#)] {
            let (dir, clean) = try Self.folder(family, patch: patch)
            defer { clean() }
            do { _ = try ModelRegistry.load(directory: dir) } catch { Issue.record("\(family) \(patch): \(error)") }
        }
    }

    /// A key given twice is ambiguous (Python keeps the last value): refused, with the key and the file named, in
    /// config.json, in a safetensors header and in an index.
    @Test func duplicateKeysAreRefused() throws {
        let src = Paths.fixture("mixtral")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-dup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("model.safetensors"),
                                                   withDestinationURL: src.appendingPathComponent("model.safetensors"))
        let text = try String(contentsOf: src.appendingPathComponent("config.json"), encoding: .utf8)
        for (key, value) in [("hidden_size", "64"), ("model_type", "\"mixtral\""), ("rope_theta", "10000.0")] {
            let brace = text.firstIndex(of: "{")!
            var dup = text
            dup.insert(contentsOf: "\"\(key)\": \(value), ", at: dup.index(after: brace))
            try dup.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
            #expect(throws: CheckpointError.self) { try ModelRegistry.describe(directory: dir) }
            do { _ = try ModelRegistry.describe(directory: dir) } catch {
                #expect("\(error)".contains("config.json") && "\(error)".contains("\"\(key)\" appears twice"), "\(error)")
            }
        }
        // Nested: twice inside one rope object.
        try #"{"model_type": "mixtral", "rope_scaling": {"type": "linear", "factor": 2, "factor": 4}}"#.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        #expect(throws: CheckpointError.self) { try ModelRegistry.describe(directory: dir) }
        // The same key in two different objects is not a duplicate.
        #expect(try JSONValue.parse(Data(#"{"a": {"x": 1}, "b": {"x": 2}}"#.utf8), file: "t.json").object?.count == 2)
    }
}

/// A temporary model folder: a fixture's weights (linked) and its config.json changed by `edit`; the closure removes it.
func configVariant(_ family: String, _ edit: (inout [String: Any]) -> Void) throws -> (URL, () -> Void) {
    let src = Paths.fixture(family)
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-config-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("model.safetensors"),
                                               withDestinationURL: src.appendingPathComponent("model.safetensors"))
    var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("config.json"))) as! [String: Any]
    edit(&obj)
    try JSONSerialization.data(withJSONObject: obj).write(to: dir.appendingPathComponent("config.json"))
    return (dir, { try? FileManager.default.removeItem(at: dir) })
}
