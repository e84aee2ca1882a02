import MoECompression

/// A recipe stage's options as the typed options struct its library entry point takes, starting from that
/// struct's defaults (the paper's), so a recipe stage and the CLI command of the same name run the same thing
/// when an option is left out.
public enum StageOptions {
    /// `decompose`: `LowRank.Options` (SVD-LLM with importance ranks unless told otherwise).
    public static func decompose(_ o: [String: Recipe.OptionValue]) -> LowRank.Options {
        var lo = LowRank.Options()
        if let m = o.string("method") { lo.method = LowRank.Method(rawValue: m)! }
        if let r = o.double("ratio") { lo.target = .keep(r) } else if let r = o.int("rank") { lo.target = .rank(r) }
        if let a = o.string("rank_alloc") { lo.allocation = LowRank.Allocation(rawValue: a)! }
        if let a = o.double("alpha") { lo.alpha = a }
        if case .strings(let t)? = o["targets"] { lo.targets = Set(t) }
        return lo
    }
}
