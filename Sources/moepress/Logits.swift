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
        }
    }
}
