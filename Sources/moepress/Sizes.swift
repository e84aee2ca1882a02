import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

/// A byte count on the command line: plain bytes, or with a unit — KB/MB/GB/TB (powers of 1000, as Hugging
/// Face spells shard sizes) or KiB/MiB/GiB/TiB (powers of 1024).
struct ByteSize: ExpressibleByArgument, CustomStringConvertible, Sendable {
    let bytes: Int

    init(bytes: Int) { self.bytes = bytes }

    init?(argument: String) {
        let s = argument.trimmingCharacters(in: .whitespaces)
        let number = s.prefix { $0.isNumber || $0 == "." }
        let unit = s.dropFirst(number.count).trimmingCharacters(in: .whitespaces).lowercased()
        let scales: [String: Double] = ["": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1e3, "m": 1048576, "mib": 1048576, "mb": 1e6,
                                        "g": 1073741824, "gib": 1073741824, "gb": 1e9, "t": 1099511627776, "tib": 1099511627776, "tb": 1e12]
        guard let v = Double(number), let scale = scales[unit], v.isFinite, v > 0, v * scale < 9e18, v * scale >= 1 else { return nil }
        bytes = Int(v * scale)
    }

    var description: String { formatBytes(bytes) }

}

/// How a command that writes a checkpoint lays out its weights.
struct OutputOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Largest weight file: larger models are written as model-0000i-of-0000N.safetensors shards with an index (e.g. 5GB, 500MB, 2GiB).",
                               valueName: "size"))
    var shardSize = ByteSize(bytes: CheckpointWriter.defaultShardSize)
}

/// The memory a layer-major pass may use.
struct MemoryOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Memory a pass may use: one decoder layer's weights, the embedding and head, and the activations of the sequences run together (default: 3/4 of the memory available at start; e.g. 4GiB). Too little for one layer is refused before any work.",
                               valueName: "size"))
    var maxMemory: ByteSize?

    var budget: MemoryBudget { maxMemory.map { MemoryBudget(bytes: $0.bytes) } ?? .default }
}
