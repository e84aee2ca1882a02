import Foundation
import MoETensor
import MoECheckpoint

/// What attention reads from config.json besides the description: the rotary embedding (and the parameters it
/// was built from, which DeepSeek's softmax scale also reads), each layer's sliding window, and OLMoE's q/k/v clip.
public struct AttentionConfig: Sendable {
    public var ropeParameters: RoPE.Parameters
    public var rope: RoPE
    /// One entry per layer: the window, or nil for full attention.
    public var windows: [Int?]
    public var clip: Float?

    public init(ropeParameters: RoPE.Parameters, rope: RoPE, windows: [Int?], clip: Float? = nil) {
        self.ropeParameters = ropeParameters; self.rope = rope; self.windows = windows; self.clip = clip
    }
}

extension HFConfig {
    /// The rotary embedding for a head of `headDim` (or `p`, when the family adjusts the parameters first), with the
    /// file named in every refusal (an unknown `rope_type`, a variant missing its parameters).
    func attentionConfig(_ d: ModelDescription, parameters p: RoPE.Parameters? = nil, interleaved: Bool = false,
                         windows: [Int?], clip: Float? = nil) throws -> AttentionConfig {
        let p = try p ?? ropeParameters()
        do {
            let rope = try RoPE(p, headDim: d.headDim, maxPositions: d.maxPositions, interleaved: interleaved)
            return AttentionConfig(ropeParameters: p, rope: rope, windows: windows, clip: clip)
        } catch let e as TensorError {
            throw ModelError.invalidConfig("\(path): \(e)")
        }
    }

    /// One sliding window (or none) for every layer.
    func uniformWindows(_ d: ModelDescription, applied: Bool = true) throws -> [Int?] {
        Array(repeating: try slidingWindow(applied: applied), count: d.numLayers)
    }
}

/// config.json's `"moepress"` section, which MoEPress writes and only MoEPress reads: `experts_per_layer` (non-uniform
/// pruning), `low_rank` (decomposition) and `compressed_experts` (`{"main_experts": K}`). Every entry is checked
/// by `ModelRegistry.describe`, so a wrong type or an impossible count is refused by every command.
public enum MoEPressSection {
    public static let keys = ["experts_per_layer", "low_rank", "compressed_experts"]

    static func section(_ c: HFConfig) throws -> [String: JSONValue]? {
        guard let v = c.raw["moepress"], !v.isNull else { return nil }
        guard let o = v.object else { throw ModelError.invalidConfig("\(c.path): \"moepress\" should be an object") }
        return o
    }

    static func validate(_ c: HFConfig, description d: ModelDescription) throws {
        guard let o = try section(c) else { return }
        for k in o.keys.sorted() where !keys.contains(k) {
            throw ModelError.invalidConfig("\(c.path): moepress.\(k) is not a MoEPress setting (\(keys.joined(separator: ", ")))")
        }
        if let lr = o["low_rank"], !lr.isNull, lr.object == nil {
            throw ModelError.invalidConfig("\(c.path): moepress.low_rank should be an object")
        }
        if let k = try mainExperts(c) {
            let topK = d.routing?.topK ?? 0
            guard k <= topK else { throw ModelError.invalidConfig("\(c.path): moepress.compressed_experts.main_experts is \(k), above top-k \(topK)") }
        }
        // experts_per_layer was applied (and checked) by the family's description.
    }

    /// `compressed_experts.main_experts`, a positive integer, or nil when the section has no compressed experts.
    static func mainExperts(_ c: HFConfig) throws -> Int? {
        guard let v = try section(c)?["compressed_experts"], !v.isNull else { return nil }
        guard let ce = v.object else { throw ModelError.invalidConfig("\(c.path): moepress.compressed_experts should be an object") }
        for k in ce.keys.sorted() where k != "main_experts" {
            throw ModelError.invalidConfig("\(c.path): moepress.compressed_experts.\(k) is not a setting (main_experts)")
        }
        guard let k = ce["main_experts"]?.int, k >= 1 else {
            throw ModelError.invalidConfig("\(c.path): moepress.compressed_experts.main_experts should be a positive integer")
        }
        return k
    }

    /// `experts_per_layer`: one entry per layer, null for a dense layer and for an MoE layer an integer from 1 to the
    /// config's routed expert count (pruning writes the largest count there). nil when the section has none.
    static func expertsPerLayer(_ c: HFConfig, layers isMoE: [Bool]) throws -> [Int?]? {
        guard let v = try section(c)?["experts_per_layer"], !v.isNull else { return nil }
        let fail = { (problem: String) in ModelError.invalidConfig("\(c.path): moepress.experts_per_layer\(problem)") }
        guard let list = v.array else { throw fail(" should be a list with one entry per layer") }
        guard list.count == isMoE.count else { throw fail(" has \(list.count) entries for \(isMoE.count) layers") }
        let most = try c.routedExperts
        return try list.enumerated().map { i, e in
            if e.isNull {
                guard !isMoE[i] else { throw fail("[\(i)] is null for an MoE layer; it should be its expert count") }
                return nil
            }
            guard isMoE[i] else { throw fail("[\(i)] is set for a dense layer (null expected)") }
            guard let n = e.int else { throw fail("[\(i)] is \(e); it should be an integer expert count") }
            guard n >= 1, n <= most else { throw fail("[\(i)] is \(n); it should be from 1 to the \(most) experts the config declares") }
            return n
        }
    }
}
