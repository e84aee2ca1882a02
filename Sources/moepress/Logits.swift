import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a forward pass and write the logits as safetensors.",
        discussion: """
        Writes tensor `logits` (F32, [n_tokens, vocab]). The pass is layer-major, within --max-memory; the logits \
        are computed and written a block of rows at a time, so they never exist whole in memory. The output file \
        appears only when complete.
        """)

    @Option(help: "A Hugging Face model folder.")
    var model: String

    @Option(help: "A JSON array of token ids (one sequence, no special tokens added).")
    var idsFile: String

    @Option(help: "Where to write the logits (.safetensors).")
    var output: String

    @Flag(help: "Replace an existing --output file.")
    var overwrite = false

    @Option(help: "A safetensors file with expected `logits` (e.g. HF's) to compare against; exits non-zero beyond --tolerance.")
    var reference: String?

    @Option(help: "Largest max |Δlogit| accepted with --reference (default: 1e-3).")
    var tolerance: Float?

    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("eval", [("--tolerance", "tolerance", tolerance.map(Double.init))])
        if tolerance != nil && reference == nil { throw usage("only --reference is compared against a tolerance", "--tolerance") }
    }

    func run() throws {
        try compute.run {
            let outURL = try newFileOutput(output, overwrite: overwrite)
            guard let data = FileManager.default.contents(atPath: idsFile) else { throw CLIError("\(idsFile): cannot read") }
            guard let ids = try? JSONDecoder().decode([Int].self, from: data) else {
                throw CLIError("\(idsFile): expected a JSON array of integer token ids")
            }
            guard !ids.isEmpty else { throw CLIError("\(idsFile): the id array is empty") }
            let want = try reference.map { path -> (SafeTensorsFile, TensorInfo) in
                let f = try SafeTensorsFile(path: path)
                guard let info = f.info("logits"), info.dtype.isFloatingPoint else { throw CLIError("\(path): no floating-point `logits` tensor") }
                return (f, info)
            }
            let m = try ResourceMonitor.shared.stage("load") { try ModelRegistry.load(directory: modelURL(model)) }
            try m.validate(tokens: [ids])
            let plan = MemoryPlan(m)
            _ = try plan.chunks(lengths: [ids.count], budget: memory.budget)
            let start = Date()
            let hidden = ResourceMonitor.shared.stage("forward") { m.hidden([ids], evict: plan.streams(under: memory.budget)) }
            log("forward: \(ids.count) tokens in \(String(format: "%.3f", Date().timeIntervalSince(start))) s")
            let v = m.vocabSize, rowBytes = v * 4
            // Rows are produced on demand for whatever byte range the writer asks for; NaN/Inf logits are noticed
            // on the way and the file is then not kept.
            final class Seen: @unchecked Sendable { var nonFinite = false }
            let seen = Seen()
            let entry = SafeTensorsWriter.Entry("logits", dtype: .f32, shape: [ids.count, v]) { offset, buffer in
                let r0 = offset / rowBytes, r1 = min(ids.count, (offset + buffer.count + rowBytes - 1) / rowBytes)
                var copied = 0
                m.forEachLogitsBlock(hidden, rows: r0..<r1) { first, block in
                    let blockStart = first * rowBytes, blockEnd = blockStart + block.rows * rowBytes
                    let lo = max(blockStart, offset), hi = min(blockEnd, offset + buffer.count)
                    guard hi > lo else { return }
                    (buffer.baseAddress! + (lo - offset)).copyMemory(from: UnsafeRawPointer(block.data) + (lo - blockStart), byteCount: hi - lo)
                    let values = UnsafeRawPointer(block.data + (lo - blockStart) / 4).assumingMemoryBound(to: Float.self)
                    if !(0..<((hi - lo) / 4)).allSatisfy({ values[$0].isFinite }) { seen.nonFinite = true }
                    copied += hi - lo
                }
                precondition(copied == buffer.count)
            }
            try ResourceMonitor.shared.stage("write") { try SafeTensorsWriter.write([entry], to: outURL) }
            if seen.nonFinite {
                try? FileManager.default.removeItem(at: outURL)
                throw m.nonFiniteError("logits (nothing written)")
            }
            log("wrote \(output): logits [\(ids.count), \(v)]")
            if let (file, info) = want {
                guard info.shape == [ids.count, v] else {
                    throw CLIError("\(file.path): logits shape \(info.shape) differs from ours \([ids.count, v])")
                }
                let ours = try SafeTensorsFile(path: output)
                let a = try ours.tensor("logits"), b = try file.tensor("logits")
                let diff = a.maxAbsDifference(b), tolerance = tolerance ?? 1e-3
                let ok = diff <= tolerance
                print(String(format: "max |Δlogit| vs %@: %.3g (tolerance %.1g) %@", file.path, diff, tolerance, ok ? "OK" : "FAILED"))
                if !ok { throw ExitCode.failure }
            }
        }
    }
}
