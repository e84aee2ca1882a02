import Foundation
import MoETensor
import MoECheckpoint
#if canImport(Glibc)
import Glibc
#endif

/// A random-weight checkpoint with the exact shapes of a real model, written from its config.json through
/// the family's name table: for measuring memory, time and I/O at real scale (its quality means nothing).
/// Weights are uniform with standard deviation `initializer_range` (HF's default 0.02), norms are one,
/// biases zero. Every value is a function of (seed, tensor name, index), so the files are the same whatever
/// the order or the threads, and tensors stream to disk a block at a time in bounded memory.
public enum RandomCheckpoint {
    public struct Summary: Sendable {
        public var tensors: Int
        public var bytes: Int
        public var files: [String]
    }

    /// Writes `output` (config.json, the weights, and the tokenizer files of `tokenizerFrom` when given).
    /// `layers` keeps the first N decoder layers (config.json says so too). `mxfp4` stores the experts as MXFP4
    /// blocks and scales, as gpt-oss's released checkpoints do (random codes, exponents 2⁻⁸…2⁻⁶, about the
    /// magnitude of `initializer_range` weights), and config.json gets their `quantization_config`.
    @discardableResult
    public static func write(config url: URL, output: URL, layers: Int? = nil, seed: UInt64 = 0, dtype: DType = .bf16, mxfp4: Bool = false,
                             shardSize: Int = CheckpointWriter.defaultShardSize, tokenizerFrom: URL? = nil, overwrite: Bool = false,
                             quiet: Bool = false) throws -> Summary {
        guard dtype == .bf16 || dtype == .f16 || dtype == .f32 else { throw ModelError.invalidInput("--dtype must be bf16, f16 or f32") }
        guard var text = try? String(contentsOf: url, encoding: .utf8) else { throw ModelError.invalidInput("\(url.path): cannot read") }
        if let n = layers {
            guard n >= 1 else { throw ModelError.invalidInput("--layers must be at least 1") }
            let re = try NSRegularExpression(pattern: "(\"num_hidden_layers\"\\s*:\\s*)[0-9]+")
            let ns = text as NSString
            guard let m = re.firstMatch(in: text, range: NSRange(location: 0, length: ns.length)) else {
                throw ModelError.invalidInput("\(url.path): no \"num_hidden_layers\" to change")
            }
            text = ns.replacingCharacters(in: m.range, with: ns.substring(with: m.range(at: 1)) + "\(n)")
        }
        // One name per call: concurrent calls in one process (parallel tests) must not read each other's config.
        let tmpConfig = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-synth-\(getpid())-\(UUID().uuidString).json")
        try text.write(to: tmpConfig, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: tmpConfig) }
        var config = try HFConfig(contentsOf: tmpConfig)
        config = HFConfig(path: url.path, raw: config.raw)
        let described = try ModelRegistry.describe(config)
        let (family, filled, d) = (described.family, described.config, described.description)
        let names = try family.checkpointNames(filled, description: d, has: { mxfp4 && $0.hasSuffix(".experts.gate_up_proj_blocks") })
        var packed = Set<String>()
        for (_, loc) in names.entries { if let scales = loc.mxfp4Scales { packed.insert(loc.name); packed.insert(scales) } }
        if mxfp4 {
            guard !packed.isEmpty else { throw ModelError.invalidInput("\(url.path): \(d.modelType) has no MXFP4 form (gpt-oss has)") }
            guard !text.contains("\"quantization_config\"") else { throw ModelError.invalidInput("\(url.path) already has a quantization_config") }
            guard let close = text.lastIndex(of: "}") else { throw ModelError.invalidInput("\(url.path): not a JSON object") }
            var head = String(text[..<close])
            while head.last?.isWhitespace == true { head.removeLast() }
            text = head + ",\n  \"quantization_config\": {\"quant_method\": \"mxfp4\", \"modules_to_not_convert\": [\"model.layers.*.self_attn\", " +
                "\"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"]}\n}\n"
        }
        let std = Float(try config.double("initializer_range", default: 0.02))
        let shapes = names.tensorShapes
        var entries: [SafeTensorsWriter.Entry] = []
        for (name, shape) in shapes {
            if packed.contains(name) {
                // MXFP4 codes (any byte) and exponents 119…121.
                let tensorSeed = FNV.hash(name.utf8, seed &+ FNV.offsetBasis), scales = name.hasSuffix("_scales")
                entries.append(.init(name, dtype: .u8, shape: shape) { offset, buffer in
                    fill(scales ? .bytes(119, 3) : .bytes(0, 256), seed: tensorSeed, firstElement: offset, dtype: .u8, into: buffer)
                })
                continue
            }
            let tensorSeed = FNV.hash(name.utf8, seed &+ FNV.offsetBasis)
            let kind: Fill = name.hasSuffix("norm.weight") || name.hasSuffix("layernorm.weight") ? .ones
                : (name.hasSuffix(".bias") || name.hasSuffix("e_score_correction_bias") ? .zeros : .uniform(std * Float(3).squareRoot()))
            entries.append(.init(name, dtype: dtype, shape: shape) { offset, buffer in
                fill(kind, seed: tensorSeed, firstElement: offset / dtype.byteSize, dtype: dtype, into: buffer)
            })
        }
        let total = entries.reduce(0) { $0 + $1.byteCount }
        try requireFreeSpace(total, at: output.deletingLastPathComponent())
        let progress = StageProgress("synth", total: total >> 20, unit: "MiB", quiet: quiet, estimate: false)
        var written: [String] = []
        var carry = 0
        try AtomicDirectory.write(output, overwrite: overwrite) { out in
            written = try CheckpointWriter.write(entries, into: out.staging, shardSize: shardSize, onBytes: { n in
                carry += n
                if carry >= 1 << 20 { progress.advance(by: carry >> 20); carry &= (1 << 20) - 1 }
            })
            try text.write(to: out.url("config.json"), atomically: false, encoding: .utf8)
            if let tok = tokenizerFrom {
                for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
                    let src = tok.appendingPathComponent(f)
                    if FileManager.default.fileExists(atPath: src.path) { try FileManager.default.copyItem(at: src, to: out.url(f)) }
                }
            }
        }
        return Summary(tensors: entries.count, bytes: total, files: written)
    }

    /// `bytes(lo, n)`: u8 values lo..<lo + n (MXFP4 codes and exponents).
    enum Fill: Sendable { case ones, zeros, uniform(Float), bytes(Int, Int) }

    /// Elements [first, first + n) of a tensor: element i is drawn from SplitMix64 at position i of the
    /// tensor's stream (random access, so any block can be generated on its own). Blocks are split over the cores.
    static func fill(_ kind: Fill, seed: UInt64, firstElement: Int, dtype: DType, into buffer: UnsafeMutableRawBufferPointer) {
        let n = buffer.count / dtype.byteSize
        let out = SendablePointer(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self))
        if case .bytes(let lo, let count) = kind {
            parallelChunks(n, align: 4096) { r in
                for j in r { out[j] = UInt8(lo + Int(splitMix(seed, firstElement + j) % UInt64(count))) }
            }
            return
        }
        parallelChunks(n, align: 4096) { r in
            var values = [Float](repeating: 0, count: r.count)
            for j in 0..<r.count {
                switch kind {
                case .ones: values[j] = 1
                case .zeros: values[j] = 0
                case .uniform(let a): values[j] = (Float(splitMix(seed, firstElement + r.lowerBound + j) >> 40) * 0x1.0p-24 * 2 - 1) * a
                case .bytes: break
                }
            }
            values.withUnsafeBufferPointer {
                Convert.fromFloat($0.baseAddress!, count: r.count, dtype: dtype, into: UnsafeMutableRawPointer(out.raw + r.lowerBound * dtype.byteSize))
            }
        }
    }

    /// Position i of the SplitMix64 stream of `seed`.
    @inline(__always) static func splitMix(_ seed: UInt64, _ i: Int) -> UInt64 {
        var z = seed &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Refuses up front when the disk cannot hold `bytes` (plus 1 GiB of slack) instead of failing half-way.
    static func requireFreeSpace(_ bytes: Int, at dir: URL) throws {
        var s = statvfs()
        guard statvfs(dir.path, &s) == 0 else { return }
        let free = Int(s.f_bavail) * Int(s.f_frsize)
        if free < bytes + (1 << 30) {
            throw ModelError.invalidInput(String(format: "%@ has %.1f GB free; the checkpoint needs %.1f GB (+1 GB slack)", dir.path,
                                                 Double(free) / 1e9, Double(bytes) / 1e9))
        }
    }
}

