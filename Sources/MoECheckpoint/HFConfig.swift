import Foundation
import MoETensor

/// A Hugging Face `config.json`, read the way transformers reads it in both major versions:
/// v4 spells `rope_theta` + `rope_scaling` and `torch_dtype`; v5 spells `rope_parameters` and `dtype`;
/// the routed-expert count is `num_local_experts` (Mixtral), `num_experts` (Qwen, OLMoE) or
/// `n_routed_experts` (DeepSeek); token ids may be null. Accessors throw an error naming the file and key.
public struct HFConfig: Sendable {
    public let path: String
    public let raw: [String: JSONValue]

    public init(path: String, raw: [String: JSONValue]) {
        self.path = path
        self.raw = raw
    }

    public init(contentsOf url: URL) throws {
        path = url.path
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw CheckpointError(file: url.path, "cannot read the model's config.json")
        }
        guard case .object(let o) = try JSONValue.parse(data, file: url.path) else {
            throw CheckpointError(file: url.path, "is not a JSON object")
        }
        raw = o
    }

    /// This config with `defaults` for the keys it leaves out (keys present, even as null, keep their value), as
    /// transformers' config classes fill them.
    public func filling(_ defaults: [String: JSONValue]) -> HFConfig {
        var r = raw
        for (k, v) in defaults where r[k] == nil { r[k] = v }
        return HFConfig(path: path, raw: r)
    }

    public init(modelDirectory: URL) throws {
        try self.init(contentsOf: modelDirectory.appendingPathComponent("config.json"))
    }

    func fail(_ key: String, _ problem: String) -> CheckpointError {
        CheckpointError(file: path, "key \"\(key)\" \(problem)")
    }

    public func has(_ key: String) -> Bool { raw[key].map { !$0.isNull } ?? false }

    /// The key is present with the value null.
    public func isNull(_ key: String) -> Bool { raw[key]?.isNull ?? false }

    /// Refuses a null where transformers has no meaning for one (a norm's epsilon, a scaling factor): leaving the key
    /// out gives the default, null would reach the arithmetic as None.
    func refuseNull(_ key: String) throws {
        if isNull(key) { throw fail(key, "is null; give a number, or leave the key out for the default") }
    }

    public func int(_ key: String) throws -> Int {
        guard let v = raw[key], !v.isNull else { throw fail(key, "is missing") }
        guard let i = v.int else { throw fail(key, "should be an integer") }
        return i
    }

    public func int(_ key: String, default d: Int) throws -> Int { has(key) ? try int(key) : d }
    public func optionalInt(_ key: String) throws -> Int? { has(key) ? try int(key) : nil }

    /// A size or count: an integer in 1...max (default 2²⁴), so nothing is ever allocated or looped over by an
    /// unchecked number from a file.
    public func size(_ key: String, default d: Int? = nil, max: Int = 1 << 24) throws -> Int {
        guard has(key) else {
            if let d { return d }
            throw fail(key, "is missing")
        }
        let v = try int(key)
        guard v >= 1 && v <= max else { throw fail(key, "is \(v); it should be an integer from 1 to \(max)") }
        return v
    }

    /// A size that may be absent or null.
    public func optionalSize(_ key: String, max: Int = 1 << 24) throws -> Int? { has(key) ? try size(key, max: max) : nil }

    /// A finite number, positive unless `allowZero`.
    public func positive(_ key: String, default d: Double, allowZero: Bool = false) throws -> Double {
        try refuseNull(key)
        let v = try double(key, default: d)
        guard v.isFinite, v > 0 || (allowZero && v == 0) else { throw fail(key, "is \(v); it should be a finite number \(allowZero ? "≥" : ">") 0") }
        return v
    }

    public func double(_ key: String) throws -> Double {
        guard let v = raw[key], !v.isNull else { throw fail(key, "is missing") }
        guard let d = v.double else { throw fail(key, "should be a number") }
        return d
    }

    /// A number, or `d` when the key is absent (a null is refused: see `refuseNull`).
    public func double(_ key: String, default d: Double) throws -> Double {
        try refuseNull(key)
        return has(key) ? try double(key) : d
    }
    public func optionalDouble(_ key: String) throws -> Double? { has(key) ? try double(key) : nil }

    public func bool(_ key: String, default d: Bool) throws -> Bool {
        guard has(key) else { return d }
        guard let b = raw[key]!.bool else { throw fail(key, "should be true or false") }
        return b
    }

    public func string(_ key: String) throws -> String {
        guard let v = raw[key], !v.isNull else { throw fail(key, "is missing") }
        guard let s = v.string else { throw fail(key, "should be a string") }
        return s
    }

    public func string(_ key: String, default d: String) throws -> String { has(key) ? try string(key) : d }

    public func intList(_ key: String) throws -> [Int] {
        guard has(key) else { return [] }
        guard let a = raw[key]!.array else { throw fail(key, "should be a list of integers") }
        return try a.map { guard let i = $0.int else { throw fail(key, "should be a list of integers") }; return i }
    }

    public func stringList(_ key: String) throws -> [String]? {
        guard has(key) else { return nil }
        guard let a = raw[key]!.array else { throw fail(key, "should be a list of strings") }
        return try a.map { guard let s = $0.string else { throw fail(key, "should be a list of strings") }; return s }
    }

    /// The first of several spellings that is present.
    public func int(anyOf keys: [String]) throws -> Int {
        for k in keys where has(k) { return try int(k) }
        throw CheckpointError(file: path, "none of the keys \(keys.map { "\"\($0)\"" }.joined(separator: ", ")) is present")
    }

    public var modelType: String { get throws { try string("model_type") } }

    /// Token id keys may hold an int, a list of ints (eos), or null. Ids outside the vocabulary are kept, as HF
    /// keeps them (OLMoE's default eos is 50279 whatever the vocabulary); non-integers are refused.
    public func tokenIDs(_ key: String) throws -> [Int] {
        let values: [JSONValue]
        switch raw[key] {
        case nil, .null?: return []
        case .array(let a)?: values = a
        case let v?: values = [v]
        }
        return try values.map { v in
            guard let i = v.int else { throw fail(key, "holds \(v); token ids are integers") }
            return i
        }
    }

    /// RoPE parameters from `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (v4).
    public func ropeParameters() throws -> RoPE.Parameters {
        var p = RoPE.Parameters()
        var dict: [String: JSONValue] = [:]
        for key in ["rope_parameters", "rope_scaling"] where has(key) && raw[key]!.object == nil {
            throw fail(key, "should be an object (or null)")
        }
        if let o = raw["rope_parameters"]?.object {
            // v5 may nest per layer type ({"full_attention": {...}}); MoE families here use one global dict.
            if o["rope_type"] == nil && o["rope_theta"] == nil, let first = o["full_attention"]?.object {
                dict = first
            } else {
                dict = o
            }
        }
        if let o = raw["rope_scaling"]?.object { dict.merge(o) { cur, _ in cur } }
        func num(_ k: String) throws -> Double? {
            guard let v = dict[k], !v.isNull else { return nil }
            guard let d = v.double else { throw fail("rope_parameters.\(k)", "should be a number") }
            return d
        }
        // A number transformers requires may be left out (its default applies) but not given as null.
        for k in ["rope_theta", "partial_rotary_factor"] {
            if dict[k]?.isNull == true { throw fail("rope_parameters.\(k)", "is null; give a number, or leave the key out for the default") }
            try refuseNull(k)
        }
        for k in ["rope_type", "type"] {
            if let v = dict[k], v.string == nil { throw fail("rope_parameters.\(k)", "should be a string naming the RoPE variant") }
        }
        p.type = dict["rope_type"]?.string ?? dict["type"]?.string ?? "default"
        p.theta = try num("rope_theta") ?? optionalDouble("rope_theta") ?? 10000
        p.factor = try num("factor")
        p.originalMaxPositions = try (num("original_max_position_embeddings") ?? optionalDouble("original_max_position_embeddings")).map { v in
            guard v.rounded() == v, abs(v) < 9.0e15 else { throw fail("original_max_position_embeddings", "should be an integer") }
            return Int(v)
        }
        p.attentionFactor = try num("attention_factor")
        p.betaFast = try num("beta_fast")
        p.betaSlow = try num("beta_slow")
        p.mscale = try num("mscale")
        p.mscaleAllDim = try num("mscale_all_dim")
        p.lowFreqFactor = try num("low_freq_factor")
        p.highFreqFactor = try num("high_freq_factor")
        p.truncate = dict["truncate"]?.bool ?? true
        func list(_ k: String) throws -> [Double]? {
            guard let v = dict[k], !v.isNull else { return nil }
            guard let a = v.array, case let d = a.compactMap(\.double), d.count == a.count, d.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw fail("rope_parameters.\(k)", "should be a list of finite numbers > 0")
            }
            return d
        }
        p.shortFactor = try list("short_factor")
        p.longFactor = try list("long_factor")
        p.shortMScale = try num("short_mscale")
        p.longMScale = try num("long_mscale")
        p.partialRotaryFactor = try num("partial_rotary_factor") ?? optionalDouble("partial_rotary_factor") ?? 1
        // Both spellings are checked wherever they are present, whichever one this family reads.
        for (k, v) in [("rope_theta", try num("rope_theta")), ("rope_theta", try optionalDouble("rope_theta"))] {
            if let v, !(v.isFinite && v > 0) { throw fail(k, "is \(v); it should be a finite number > 0") }
        }
        for (k, v) in [("rope_parameters.partial_rotary_factor", try num("partial_rotary_factor")), ("partial_rotary_factor", try optionalDouble("partial_rotary_factor"))] {
            if let v, !(v > 0 && v <= 1) { throw fail(k, "is \(v); it should be in (0, 1]") }
        }
        for (k, v) in [("factor", p.factor), ("attention_factor", p.attentionFactor), ("beta_fast", p.betaFast), ("beta_slow", p.betaSlow),
                       ("low_freq_factor", p.lowFreqFactor), ("high_freq_factor", p.highFreqFactor),
                       ("short_mscale", p.shortMScale), ("long_mscale", p.longMScale)] {
            if let v, !(v.isFinite && v > 0) { throw fail("rope_parameters.\(k)", "is \(v); it should be a finite number > 0") }
        }
        for (k, v) in [("mscale", p.mscale), ("mscale_all_dim", p.mscaleAllDim)] {
            if let v, !(v.isFinite && v >= 0) { throw fail("rope_parameters.\(k)", "is \(v); it should be a finite number ≥ 0") }
        }
        if let m = p.originalMaxPositions, m < 1 || m > 1 << 24 { throw fail("original_max_position_embeddings", "is \(m); it should be in 1...\(1 << 24)") }
        if p.type == "yarn" || p.type == "linear" || p.type == "dynamic" || p.type == "llama3", p.factor == nil {
            throw fail("rope_parameters.factor", "is missing; rope_type \(p.type) needs it (transformers refuses it too)")
        }
        return p
    }

    /// `sliding_window`: null, or an integer ≥ 1 where the family applies it (`applied`); where it does not
    /// (Qwen's `use_sliding_window` false) transformers drops the value, so 0 is accepted there as well. Other values
    /// (negative, fractional, a string) are refused either way.
    public func slidingWindow(applied: Bool) throws -> Int? {
        guard has("sliding_window") else { return nil }
        guard let w = raw["sliding_window"]!.int else { throw fail("sliding_window", "should be an integer, or null for no window") }
        guard applied else {
            guard w >= 0 else { throw fail("sliding_window", "is \(w); it should be an integer ≥ 1, or null for no window") }
            return nil
        }
        guard w >= 1, w <= 1 << 30 else { throw fail("sliding_window", "is \(w); it should be an integer ≥ 1, or null for no window") }
        return w
    }

    /// config.json text without the entry `"key": {…}` (an object holding no objects, such as `auto_map` or an MXFP4
    /// `quantization_config`), its separating comma with it; every other byte kept.
    public static func removingObjectEntry(_ text: String, _ key: String) -> String {
        let entry = "\"\(NSRegularExpression.escapedPattern(for: key))\"\\s*:\\s*\\{[^{}]*\\}"
        // Followed by another entry: drop it and the comma after; the last one: drop the comma before.
        for pattern in [entry + "\\s*,\\s*", ",?\\s*" + entry] {
            guard let re = try? NSRegularExpression(pattern: pattern) else { continue }
            let range = NSRange(text.startIndex..., in: text)
            if let m = re.firstMatch(in: text, range: range) { return (text as NSString).replacingCharacters(in: m.range, with: "") }
        }
        return text
    }
}
