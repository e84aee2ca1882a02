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
    ]

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
