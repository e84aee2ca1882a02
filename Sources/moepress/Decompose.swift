import ArgumentParser
import Foundation
import MoECompression
import MoECalibration
import MoECheckpoint

struct Decompose: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace routed expert matrices by low-rank factors (truncated SVD or SVD-LLM).",
        discussion: """
        --ratio R is the fraction of expert parameters KEPT (SVD-LLM's own CLI uses the fraction removed): each \
        m×n matrix gets rank ⌊R·m·n/(m+n)⌋. Factors are stored as <name>.lowrank_a [m, r] and .lowrank_b [r, n] \
        in the source dtype, with a "moepress.low_rank" section in config.json; MoEPress runs them as two \
        skinny GEMMs. Stock HF transformers cannot load factorised experts yet. --method svdllm whitens each \
        matrix with the Gram matrix of the tokens routed to its expert (from --calib, made by `moepress \
        calibrate` on this model), minimising the error on the actual inputs. Importance-weighted ranks are \
        not implemented yet.
        """)

    @Option(help: "A Hugging Face model folder (original or pruned).") var model: String
    @Option(help: "Decomposition method: svd or svdllm.") var method: String = "svd"
    @Option(help: "Calibration cache with Gram matrices (for svdllm).") var calib: String?
    @Option(help: "Fraction of each expert matrix's parameters kept.") var ratio: Double
    @Option(help: "Projections to decompose, comma-separated (gate,up,down).") var targets: String = "gate,up,down"
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false

    func run() throws {
        try reportingErrors {
            guard method == "svd" || method == "svdllm" else { throw CLIError("--method \(method): use svd or svdllm") }
            var cache: CalibrationCache? = nil
            if method == "svdllm" {
                guard let calib else { throw CLIError("svdllm needs --calib CACHE (from moepress calibrate)") }
                let c = try CalibrationCache(directory: URL(fileURLWithPath: calib))
                let url = modelURL(model)
                try c.check(modelHash: Fingerprint.model(url, checkpoint: Checkpoint(directory: url)))
                cache = c
            }
            let t = Set(targets.split(separator: ",").map { String($0) })
            guard !t.isEmpty, t.isSubset(of: ["gate", "up", "down"]) else { throw CLIError("--targets takes gate, up and/or down") }
            let r = try LowRank.decompose(model: modelURL(model), keep: ratio, targets: t, whitening: cache, output: URL(fileURLWithPath: output),
                                          overwrite: overwrite, quiet: quiet)
            if !quiet {
                log(String(format: "decompose \(method): %d matrices, expert parameters %d → %d (%.1f%%) → %@", r.matrices, r.parametersBefore,
                           r.parametersAfter, 100 * Double(r.parametersAfter) / Double(max(r.parametersBefore, 1)), output))
            }
        }
    }
}
