import Foundation

/// The one rule set for every numeric option a stage reads, whether it comes from a recipe (errors carry
/// file:line) or from the CLI (errors name the flag): counts with their minimum, numbers finite and in their
/// range (so NaN, ±inf and out-of-range values are refused before any work).
public enum OptionRule: Sendable, Equatable, CustomStringConvertible {
    /// An integer ≥ min.
    case count(min: Int)
    /// A finite number in the interval (open ends exclusive); nil upper = unbounded.
    case number(lower: Double?, lowerOpen: Bool, upper: Double?, upperOpen: Bool)

    static let positive = OptionRule.number(lower: 0, lowerOpen: true, upper: nil, upperOpen: true)
    static let nonNegative = OptionRule.number(lower: 0, lowerOpen: false, upper: nil, upperOpen: true)
    static let finite = OptionRule.number(lower: nil, lowerOpen: true, upper: nil, upperOpen: true)
    static func interval(_ a: Double, _ b: Double, open: (Bool, Bool)) -> OptionRule { .number(lower: a, lowerOpen: open.0, upper: b, upperOpen: open.1) }

    public var description: String {
        switch self {
        case .count(let m): return m == 0 ? "a whole number ≥ 0" : m == 1 ? "a positive whole number" : "a whole number ≥ \(m)"
        case .number(nil, _, nil, _): return "a finite number"
        case .number(let a?, let ao, nil, _): return "a finite number \(ao ? ">" : "≥") \(Self.show(a))"
        case .number(let a?, let ao, let b?, let bo): return "a number in \(ao ? "(" : "[")\(Self.show(a)), \(Self.show(b))\(bo ? ")" : "]")"
        case .number(nil, _, let b?, let bo): return "a finite number \(bo ? "<" : "≤") \(Self.show(b))"
        }
    }

    static func show(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : "\(v)" }

    /// Whether `v` obeys the rule.
    public func accepts(_ v: Double) -> Bool {
        switch self {
        case .count(let m): return v.isFinite && v == v.rounded() && v >= Double(m) && v <= Double(Int32.max)
        case .number(let a, let ao, let b, let bo):
            guard v.isFinite else { return false }
            if let a, ao ? !(v > a) : !(v >= a) { return false }
            if let b, bo ? !(v < b) : !(v <= b) { return false }
            return true
        }
    }
}

public enum OptionRules {
    static let fraction = OptionRule.interval(0, 1, open: (false, true))   // [0, 1)
    static let removedFraction = OptionRule.interval(0, 1, open: (true, true))   // (0, 1): removing nothing is nothing to do
    static let keptFraction = OptionRule.interval(0, 1, open: (true, false))   // (0, 1]

    /// Stage kind → option (recipe spelling) → rule. Every numeric option of `Recipe.schema` has one
    /// (a test walks the schema); the CLI checks its flags against the same entries.
    public static let stages: [String: [String: OptionRule]] = [
        "calibration": ["samples": .count(min: 1), "seq_len": .count(min: 2)],
        "prune": ["ratio": removedFraction, "keep": .count(min: 1), "tau": .finite, "generations": .count(min: 0), "population": .count(min: 2),
                  "candidates": .count(min: 1), "block_size": .count(min: 1), "fitness_tokens": .count(min: 1), "field_sequences": .count(min: 1)],
        "decompose": ["ratio": keptFraction, "rank": .count(min: 1), "alpha": .nonNegative, "importance_tokens": .count(min: 1)],
        "heal": ["steps": .count(min: 1), "lr": .positive, "batch": .count(min: 1), "seq_len": .count(min: 2), "grad_accum": .count(min: 1),
                 "lora_rank": .count(min: 1), "lora_alpha": .positive, "lora_dropout": fraction, "warmup_ratio": .interval(0, 1, open: (false, false)),
                 "weight_decay": .nonNegative, "max_grad_norm": .nonNegative, "checkpoint_every": .count(min: 0), "neftune_alpha": .nonNegative],
        "compress_experts": ["main_experts": .count(min: 1), "steps": .count(min: 1), "lr": .positive, "ce_lr": .positive, "batch": .count(min: 1),
                             "seq_len": .count(min: 2), "grad_accum": .count(min: 1), "warmup_ratio": .interval(0, 1, open: (false, false)),
                             "weight_decay": .nonNegative, "max_grad_norm": .nonNegative, "checkpoint_every": .count(min: 0)],
        "eval": ["seq_len": .count(min: 2), "limit": .count(min: 1), "batch": .count(min: 1), "task_limit": .count(min: 1),
                 "max_tokens": .count(min: 1), "temperature": .nonNegative, "top_p": keptFraction, "tolerance": .nonNegative],
    ]

    /// The problem with `value` for `stage`'s option `key` ("must be …, got …"), or nil when it obeys its rule.
    public static func problem(_ stage: String, _ key: String, _ value: Double) -> String? {
        guard let rule = stages[stage]?[key] else { preconditionFailure("no rule for \(stage).\(key)") }
        return rule.accepts(value) ? nil : "must be \(rule), got \(value.isNaN ? "nan" : OptionRule.show(value))"
    }

    /// Checks CLI values (flag → (stage option, value)); the first problem names the flag.
    public static func check(_ stage: String, _ values: [(flag: String, key: String, value: Double?)]) throws -> Void {
        for (flag, key, value) in values {
            guard let value else { continue }
            if let p = problem(stage, key, value) { throw OptionError(message: "\(p) (\(flag))") }
        }
    }
}

public struct OptionError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
