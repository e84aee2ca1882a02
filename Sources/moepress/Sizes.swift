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
        guard let b = CheckpointWriter.parseSize(argument) else { return nil }
        bytes = b
    }

    var description: String { formatBytes(bytes) }

}

/// How a command that writes a checkpoint lays out its weights.
struct OutputOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Largest weight file: larger models are written as model-0000i-of-0000N.safetensors shards with an index (e.g. 5GB, 500MB, 2GiB).",
                               valueName: "size"))
    var shardSize: ByteSize?

    /// The largest weight file, in bytes (HF's 5 GB unless --shard-size says otherwise).
    var shardBytes: Int { shardSize?.bytes ?? CheckpointWriter.defaultShardSize }
}

/// The memory a layer-major pass may use.
struct MemoryOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Memory a pass may use: one decoder layer's weights, the embedding and head, and the activations of the sequences run together (default: 3/4 of the memory available at start; e.g. 4GiB). Too little for one layer is refused before any work.",
                               valueName: "size"))
    var maxMemory: ByteSize?

    /// The budget the command's work runs under (kept for the --report JSON).
    var budget: MemoryBudget {
        let b = maxMemory.map { MemoryBudget(bytes: $0.bytes) } ?? .default
        ResourceMonitor.shared.noteMemoryBudget(bytes: b.bytes)
        return b
    }
}
