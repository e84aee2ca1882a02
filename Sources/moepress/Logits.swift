import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a forward pass and write the logits as safetensors.",
        discussion: "Writes tensor `logits` (F32, [n_tokens, vocab]). The output file appears only when complete.")

    @Option(help: "A Hugging Face model folder.")
    var model: String

    @Option(help: "A JSON array of token ids (one sequence, no special tokens added).")
    var idsFile: String

    @Option(help: "Where to write the logits (.safetensors).")
    var output: String

    @Option(help: "A safetensors file with expected `logits` (e.g. HF's) to compare against; exits non-zero beyond --tolerance.")
    var reference: String?

    @Option(help: "Largest max |Δlogit| accepted with --reference.")
    var tolerance: Float = 1e-3

    @OptionGroup var compute: ComputeOptions

    func run() throws {
        compute.apply()
        try reportingErrors {
            guard let data = FileManager.default.contents(atPath: idsFile) else { throw CLIError("\(idsFile): cannot read") }
            guard let ids = try? JSONDecoder().decode([Int].self, from: data) else {
                throw CLIError("\(idsFile): expected a JSON array of integer token ids")
            }
            guard !ids.isEmpty else { throw CLIError("\(idsFile): the id array is empty") }
            let m = try ModelRegistry.load(directory: modelURL(model))
            try m.validate(tokens: [ids])
            let start = Date()
            let logits = m.forward([ids])
            log("forward: \(ids.count) tokens in \(String(format: "%.3f", Date().timeIntervalSince(start))) s")
            try SafeTensorsWriter.write([.init("logits", logits)], to: URL(fileURLWithPath: output))
            log("wrote \(output): logits [\(logits.shape.map(String.init).joined(separator: ", "))]")
            if let reference {
                let want = try SafeTensorsFile(path: reference).tensor("logits")
                guard want.shape == logits.shape else {
                    throw CLIError("\(reference): logits shape \(want.shape) differs from ours \(logits.shape)")
                }
                let diff = logits.maxAbsDifference(want)
                let ok = diff <= tolerance
                print(String(format: "max |Δlogit| vs %@: %.3g (tolerance %.1g) %@", reference, diff, tolerance, ok ? "OK" : "FAILED"))
                if !ok { throw ExitCode.failure }
            }
        }
    }
}
