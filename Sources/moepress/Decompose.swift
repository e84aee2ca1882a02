import ArgumentParser
import Foundation
import MoECompression

struct Decompose: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace routed expert matrices by low-rank factors (truncated SVD).",
        discussion: """
        --ratio R is the fraction of expert parameters KEPT (SVD-LLM's own CLI uses the fraction removed): each \
        m×n matrix gets rank ⌊R·m·n/(m+n)⌋. Factors are stored as <name>.lowrank_a [m, r] and .lowrank_b [r, n] \
        in the source dtype, with a "moepress.low_rank" section in config.json; MoEPress runs them as two \
        skinny GEMMs. Stock HF transformers cannot load factorised experts yet. SVD-LLM whitening and \
        importance-weighted ranks are not implemented yet.
        """)

    @Option(help: "A Hugging Face model folder (original or pruned).") var model: String
    @Option(help: "Decomposition method (svd).") var method: String = "svd"
    @Option(help: "Fraction of each expert matrix's parameters kept.") var ratio: Double
    @Option(help: "Projections to decompose, comma-separated (gate,up,down).") var targets: String = "gate,up,down"
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false

    func run() throws {
        try reportingErrors {
            guard method == "svd" else { throw CLIError("--method \(method): only svd is implemented so far") }
            let t = Set(targets.split(separator: ",").map { String($0) })
            guard !t.isEmpty, t.isSubset(of: ["gate", "up", "down"]) else { throw CLIError("--targets takes gate, up and/or down") }
            let r = try LowRank.decompose(model: modelURL(model), keep: ratio, targets: t, output: URL(fileURLWithPath: output),
                                          overwrite: overwrite, quiet: quiet)
            if !quiet {
                log(String(format: "decompose svd: %d matrices, expert parameters %d → %d (%.1f%%) → %@", r.matrices, r.parametersBefore,
                           r.parametersAfter, 100 * Double(r.parametersAfter) / Double(max(r.parametersBefore, 1)), output))
            }
        }
    }
}
