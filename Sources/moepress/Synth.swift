import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a random-weight checkpoint with a real model's shapes, from its config.json.",
        discussion: """
        For measuring memory, time and I/O at real scale (../shared/configs holds the configs of OLMoE-1B-7B, \
        Qwen1.5-MoE-A2.7B, DeepSeek-V2-Lite, Mixtral-8x7B and gpt-oss-20b); the model computes nothing meaningful. Every \
        tensor the family reads is written, named as save_pretrained names it, uniform with standard deviation \
        initializer_range (norms one, biases zero). The same config, --layers and --seed give byte-identical \
        files. Weights stream to disk a block at a time; the free space is checked first. These are GBs: make \
        them in a scratch folder, not in the repository.
        """)

    @Option(help: "A Hugging Face config.json of a supported family.") var config: String
    @Option(help: "Output model folder.") var output: String
    @Option(help: "Keep only the first N decoder layers (e.g. 8 of Mixtral-8x7B's 32).") var layers: Int?
    @Option(help: "Seed of the weights.") var seed: UInt64 = 0
    @Option(help: "Storage dtype: bf16, f16 or f32.") var dtype = "bf16"
    @Flag(help: "Store the routed experts as MXFP4 blocks and scales, as gpt-oss's released checkpoints do (gpt-oss only).") var mxfp4 = false
    @Option(help: "A model folder whose tokenizer files to copy (so text commands run on the result).") var tokenizerFrom: String?
    @OptionGroup var out: OutputOptions
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var compute: ComputeOptions

    static func dtype(_ s: String) -> DType? { ["bf16": DType.bf16, "f16": .f16, "f32": .f32][s.lowercased()] }

    func validate() throws {
        guard Self.dtype(dtype) != nil else { throw usage("takes bf16, f16 or f32", "--dtype") }
        if compute.checkWeights { throw usage("synth reads no weights (it writes random ones)", "--check-weights") }
    }

    func run() throws {
        try compute.run {
            let dt = Self.dtype(dtype)!
            let dest = try newOutput(output, overwrite: overwrite)
            let start = Date()
            let s = try ResourceMonitor.shared.stage("write") {
                try RandomCheckpoint.write(config: URL(fileURLWithPath: config), output: dest, layers: layers, seed: seed, dtype: dt, mxfp4: mxfp4,
                                           shardSize: out.shardBytes, tokenizerFrom: tokenizerFrom.map(modelURL), overwrite: overwrite,
                                           quiet: quiet)
            }
            let t = Date().timeIntervalSince(start)
            log(String(format: "synth: %d tensors, %@ in %d file(s), %.1f s (%.0f MB/s) → %@", s.tensors, formatBytes(s.bytes),
                       s.files.filter { $0.hasSuffix(".safetensors") }.count, t, Double(s.bytes) / max(t, 1e-9) / 1e6, dest.path))
        }
    }
}
