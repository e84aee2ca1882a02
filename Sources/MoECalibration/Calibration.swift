import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer

/// What a calibration cache was made from; a cache whose manifest does not match the model and data at
/// hand is refused instead of silently used.
public struct CalibrationManifest: Codable, Sendable, Equatable {
    public var version = 1
    public var modelHash: String
    public var dataHash: String
    public var seed: UInt64
    public var samples: Int
    public var seqLen: Int
    public var tokens: Int
    public var hiddenSize: Int
    /// Decoder-layer indices of the MoE layers, and their routed expert counts.
    public var moeLayers: [Int]
    public var expertsPerLayer: [Int]
    public var numLayers: Int
    public var files: [String]

    public init(modelHash: String, dataHash: String, seed: UInt64, samples: Int, seqLen: Int, tokens: Int, hiddenSize: Int,
                moeLayers: [Int], expertsPerLayer: [Int], numLayers: Int, files: [String]) {
        self.modelHash = modelHash; self.dataHash = dataHash; self.seed = seed; self.samples = samples; self.seqLen = seqLen
        self.tokens = tokens; self.hiddenSize = hiddenSize; self.moeLayers = moeLayers; self.expertsPerLayer = expertsPerLayer
        self.numLayers = numLayers; self.files = files
    }
}

/// Per MoE layer statistics over the calibration tokens.
public struct ExpertStatistics: Sendable {
    /// Fraction of tokens that chose the expert (any top-k slot).
    public var frequency: [Double]
    /// Mean routing weight per token (0 where not chosen).
    public var gateMass: [Double]
    /// REAP saliency: mean over the tokens routed to the expert of weight × ‖expert output‖₂.
    public var reap: [Double]
    /// Tokens routed to the expert.
    public var tokenCounts: [Int]
}

/// Hashes that identify a model and a data set (FNV-1a 64; the model's is over config.json, the
/// safetensors headers and sizes, which change whenever any weight's layout does).
public enum Fingerprint {
    public static func fnv(_ bytes: some Sequence<UInt8>, _ start: UInt64 = FNV.offsetBasis) -> UInt64 { FNV.hash(bytes, start) }

    public static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    public static func model(_ dir: URL, checkpoint: Checkpoint) throws -> String {
        var h = fnv(try Data(contentsOf: dir.appendingPathComponent("config.json")))
        for f in checkpoint.files {
            h = fnv(Data(bytes: f.mapping.base, count: min(f.dataOffset, f.mapping.size)), h)
            h = fnv(withUnsafeBytes(of: UInt64(f.mapping.size).littleEndian) { Array($0) }, h)
        }
        return hex(h)
    }
}

public enum Calibration {
    /// The text files of a calibration folder, sorted by name.
    public static func files(in dir: URL) throws -> [URL] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw CalibrationError.invalid("\(dir.path): not a folder of calibration text")
        }
        let names = try fm.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".txt") }.sorted()
        guard !names.isEmpty else { throw CalibrationError.invalid("\(dir.path): no .txt files") }
        return names.map { dir.appendingPathComponent($0) }
    }

    /// `samples` windows of `seqLen` tokens from the files' concatenated token stream (each file tokenized
    /// whole, no special tokens), at start offsets drawn uniformly with the seed. Returns the windows and
    /// the data hash (over file names and contents).
    public static func sample(files: [URL], tokenizer: Tokenizer, samples: Int, seqLen: Int, seed: UInt64) throws -> ([[Int]], String) {
        guard samples > 0, seqLen >= 2 else { throw CalibrationError.invalid("--samples must be positive and --seq-len ≥ 2") }
        var stream: [Int] = []
        var h: UInt64 = FNV.offsetBasis
        for f in files {
            guard let data = FileManager.default.contents(atPath: f.path), let text = String(data: data, encoding: .utf8) else {
                throw CalibrationError.invalid("\(f.path): cannot read as UTF-8 text")
            }
            h = Fingerprint.fnv(Array(f.lastPathComponent.utf8), h)
            h = Fingerprint.fnv(data, h)
            stream += tokenizer.encode(text)
        }
        guard stream.count >= seqLen else {
            throw CalibrationError.invalid("the calibration text has \(stream.count) tokens, fewer than one window of \(seqLen)")
        }
        var rng = SeededGenerator(seed: seed)
        let span = UInt64(stream.count - seqLen + 1)
        let windows = (0..<samples).map { _ -> [Int] in
            let s = Int(rng.next() % span)
            return Array(stream[s..<(s + seqLen)])
        }
        return (windows, Fingerprint.hex(h))
    }

    /// Runs the model layer by layer over the windows and writes the cache folder atomically:
    /// `manifest.json` and one `layer_<i>.safetensors` per decoder layer holding `hidden_in` (the decoder-
    /// layer input, for block-wise evaluation) and, for MoE layers, `moe_in` (the post-attention-norm MoE
    /// input), `moe_out` (the full block's output), `router_logits` and the expert statistics.
    /// Only the activations of the current layer are held besides the residual stream.
    /// With `grams`, each MoE layer also stores per-expert Gram matrices Σ x xᵀ over the tokens routed to
    /// the expert, accumulated in f64 and stored as F64: `gram_in` [E, H, H] of the block input (what gate
    /// and up see) and `gram_mid` [E, I, I] of the expert's intermediate activation (what down sees), for
    /// SVD-LLM whitening. They cost E·(H² + I²)·8 bytes per layer (for Mixtral-8x7B about 14 GB per layer:
    /// turn them off there).
    /// The whole calibration of a model folder: sample windows from the `.txt` files of `textDirectory`, run
    /// the model over them (`run`) and open the resulting cache. `model`, when the caller already has the
    /// folder's model open, is used instead of loading it a second time.
    public static func calibrate(modelDirectory url: URL, model open: CausalLM? = nil, textDirectory: URL, samples: Int, seqLen: Int, seed: UInt64,
                                 output: URL, grams: Bool = false, overwrite: Bool = false, quiet: Bool = false) throws -> CalibrationCache {
        let m = try open ?? ModelRegistry.load(directory: url)
        let tok = try Tokenizer(modelDirectory: url)
        let files = try Calibration.files(in: textDirectory)
        let (windows, dataHash) = try Calibration.sample(files: files, tokenizer: tok, samples: samples, seqLen: seqLen, seed: seed)
        try m.validate(tokens: windows)
        let d = m.description
        let manifest = CalibrationManifest(
            modelHash: try Fingerprint.model(url, checkpoint: Checkpoint(directory: url)), dataHash: dataHash, seed: seed,
            samples: samples, seqLen: seqLen, tokens: samples * seqLen, hiddenSize: d.hiddenSize, moeLayers: d.moeLayerIndices,
            expertsPerLayer: d.moeLayerIndices.map { d.layers[$0].experts! }, numLayers: d.numLayers,
            files: files.map(\.lastPathComponent))
        try run(model: m, windows: windows, manifest: manifest, output: output, grams: grams, quiet: quiet, overwrite: overwrite)
        return try CalibrationCache(directory: output)
    }

    public static func run(model: CausalLM, windows: [[Int]], manifest: CalibrationManifest, output: URL,
                           chunk: Int = 16, grams: Bool = true, quiet: Bool = false, overwrite: Bool = false) throws {
        let n = windows.count, l = windows.first?.count ?? 0, h = model.hiddenSize
        try AtomicDirectory.write(output, overwrite: overwrite) { dir in
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(manifest).write(to: dir.url("manifest.json"))
            var x = model.embed(windows.flatMap { $0 })
            let progress = StageProgress("calibrate", total: model.layers.count, unit: "layers", quiet: quiet)
            for (li, layer) in model.layers.enumerated() {
                let next = x.copy()
                let moeIn = Tensor(zeros: [n * l, h]), moeOut = Tensor(zeros: [n * l, h])
                var start = 0
                while start < n {
                    let count = min(chunk, n - start)
                    let rows = (start * l)..<((start + count) * l)
                    let xs = next.rowSlice(rows)
                    let segments = (0..<count).map { AttentionSegment(rows: ($0 * l)..<(($0 + 1) * l), cache: KVCache.Layer(for: layer.attention)) }
                    layer.forward(xs, segments: segments) { input, output in
                        (moeIn.data + rows.lowerBound * h).update(from: input.data, count: input.count)
                        (moeOut.data + rows.lowerBound * h).update(from: output.data, count: output.count)
                    }
                    start += count
                }
                var entries: [SafeTensorsWriter.Entry] = [.init("hidden_in", x)]
                if let block = layer.feedForward.moe {
                    let decision = block.router.route(moeIn)
                    let stats = statistics(block, moeIn, decision)
                    entries += [
                        .init("moe_in", moeIn), .init("moe_out", moeOut), .init("router_logits", decision.logits),
                        .init("frequency", Tensor(shape: [stats.frequency.count], values: stats.frequency.map(Float.init))),
                        .init("gate_mass", Tensor(shape: [stats.gateMass.count], values: stats.gateMass.map(Float.init))),
                        .init("reap", Tensor(shape: [stats.reap.count], values: stats.reap.map(Float.init))),
                        .init("token_counts", Tensor(shape: [stats.tokenCounts.count], values: stats.tokenCounts.map(Float.init))),
                    ]
                    if grams { entries += gramMatrices(block, moeIn, decision) }
                }
                try SafeTensorsWriter.write(entries, metadata: ["layer": "\(li)"], to: dir.url(String(format: "layer_%03d.safetensors", li)))
                x = next
                progress.advance()
            }
        }
    }

    /// Per-expert Gram matrices of the expert inputs and intermediate activations (f64 accumulation via dgemm-free
    /// blocked sums in Double).
    static func gramMatrices(_ block: MoEBlock, _ x: Tensor, _ d: Router.Decision) -> [SafeTensorsWriter.Entry] {
        let e = block.numExperts, h = x.cols
        let inter = block.experts.first?.intermediateSize ?? 0
        let lists = block.assignments(d)
        var gin = [Double](repeating: 0, count: e * h * h), gmid = [Double](repeating: 0, count: e * inter * inter)
        gin.withUnsafeMutableBufferPointer { gi in
            gmid.withUnsafeMutableBufferPointer { gm in
                let pi = SendablePointer(gi.baseAddress!), pm = SendablePointer(gm.baseAddress!)
                parallelFor(e) { ex in
                    let tokens = lists[ex].map(\.token)
                    guard !tokens.isEmpty else { return }
                    let xe = Tensor(zeros: [tokens.count, h])
                    for (r, t) in tokens.enumerated() { (xe.data + r * h).update(from: x.data + t * h, count: h) }
                    let mlp = block.experts[ex]
                    let g = mlp.gate(xe, parallel: false), u = mlp.up(xe, parallel: false)
                    let act = Tensor(zeros: [tokens.count, inter])
                    gatedActivation(mlp.activation, gate: g.data, up: u.data, into: act.data, count: act.count)
                    accumulateGram(xe, into: pi.raw + ex * h * h)
                    accumulateGram(act, into: pm.raw + ex * inter * inter)
                }
            }
        }
        func f64(_ name: String, _ v: [Double], _ shape: [Int]) -> SafeTensorsWriter.Entry {
            .init(name, raw: v.withUnsafeBytes { Data($0) }, dtype: .f64, shape: shape)
        }
        return [f64("gram_in", gin, [e, h, h]), f64("gram_mid", gmid, [e, inter, inter])]
    }

    /// g += Σ_rows x xᵀ, in f64.
    static func accumulateGram(_ x: Tensor, into g: UnsafeMutablePointer<Double>) {
        let n = x.rows, c = x.cols
        var row = [Double](repeating: 0, count: c)
        for r in 0..<n {
            for j in 0..<c { row[j] = Double(x.data[r * c + j]) }
            for i in 0..<c {
                let a = row[i]
                if a == 0 { continue }
                let gi = g + i * c
                for j in 0..<c { gi[j] += a * row[j] }
            }
        }
    }

    static func statistics(_ block: MoEBlock, _ x: Tensor, _ d: Router.Decision) -> ExpertStatistics {
        let e = block.numExperts, t = x.rows, hd = x.cols
        var freq = [Double](repeating: 0, count: e), mass = freq, reap = freq
        var counts = [Int](repeating: 0, count: e)
        for (expert, r) in block.expertOutputs(x, decision: d) {
            counts[expert] = r.tokens.count
            var s = 0.0
            for (k, w) in r.weights.enumerated() {
                var norm = 0.0
                let row = r.outputs.data + k * hd
                for j in 0..<hd { norm += Double(row[j]) * Double(row[j]) }
                s += Double(w) * norm.squareRoot()
                mass[expert] += Double(w)
            }
            reap[expert] = s / Double(r.tokens.count)
            freq[expert] = Double(r.tokens.count) / Double(t)
        }
        for i in 0..<e { mass[i] /= Double(t) }
        return ExpertStatistics(frequency: freq, gateMass: mass, reap: reap, tokenCounts: counts)
    }
}

/// A calibration cache folder, checked against the model and data it is used with.
public final class CalibrationCache: @unchecked Sendable {
    public let directory: URL
    public let manifest: CalibrationManifest

    public init(directory: URL) throws {
        self.directory = directory
        let m = directory.appendingPathComponent("manifest.json")
        guard let data = FileManager.default.contents(atPath: m.path) else {
            throw CalibrationError.invalid("\(directory.path): not a calibration cache (no manifest.json)")
        }
        do { manifest = try JSONDecoder().decode(CalibrationManifest.self, from: data) } catch {
            throw CalibrationError.invalid("\(m.path): malformed manifest (\(error))")
        }
    }

    /// Refuses a cache made from another model (or another version of it).
    public func check(modelHash: String) throws {
        guard manifest.modelHash == modelHash else {
            throw CalibrationError.invalid("\(directory.path) was made for another model (hash \(manifest.modelHash), this model \(modelHash)); recalibrate")
        }
    }

    public func file(_ layer: Int) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: directory.appendingPathComponent(String(format: "layer_%03d.safetensors", layer)).path)
    }

    public func tensor(_ layer: Int, _ name: String) throws -> Tensor { try file(layer).tensor(name).copy() }

    /// Expert `expert`'s Gram matrix ("gram_in" or "gram_mid") in f64, or nil when the cache has none.
    public func gram(_ layer: Int, _ name: String, expert: Int) throws -> [Double]? {
        let f = try file(layer)
        guard let info = f.info(name), info.dtype == .f64, info.shape.count == 3, expert < info.shape[0] else { return nil }
        let n = info.shape[1] * info.shape[2]
        let base = f.bytes(info) + expert * n * 8
        return (0..<n).map { base.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
    }

    public func statistics(_ layer: Int) throws -> ExpertStatistics {
        let f = try file(layer)
        func d(_ n: String) throws -> [Double] { try f.tensor(n).array.map(Double.init) }
        return ExpertStatistics(frequency: try d("frequency"), gateMass: try d("gate_mass"), reap: try d("reap"),
                                tokenCounts: try d("token_counts").map { Int($0) })
    }
}

public enum CalibrationError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String { if case .invalid(let s) = self { return s } else { return "" } }
}
