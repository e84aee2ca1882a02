import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer

/// What a calibration cache was made from; a cache whose manifest does not match the model and data at
/// hand is refused instead of silently used.
public struct CalibrationManifest: Codable, Sendable, Equatable {
    /// 2: activations in `activations` dtype, no Gram matrices (SVD-LLM computes them per expert from `moe_in`).
    public static let currentVersion = 2
    public var version = Self.currentVersion
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
    /// The dtype of the cached activations (`hidden_in`, `moe_in`, `moe_out`): F32, or F16/BF16 for half the disk.
    public var activations: String = DType.f32.rawValue

    public init(modelHash: String, dataHash: String, seed: UInt64, samples: Int, seqLen: Int, tokens: Int, hiddenSize: Int,
                moeLayers: [Int], expertsPerLayer: [Int], numLayers: Int, files: [String], activations: DType = .f32) {
        self.modelHash = modelHash; self.dataHash = dataHash; self.seed = seed; self.samples = samples; self.seqLen = seqLen
        self.tokens = tokens; self.hiddenSize = hiddenSize; self.moeLayers = moeLayers; self.expertsPerLayer = expertsPerLayer
        self.numLayers = numLayers; self.files = files; self.activations = activations.rawValue
    }

    public var activationDType: DType { DType(rawValue: activations) ?? .f32 }

    /// Bytes the cache takes on disk: per layer its input, per MoE layer the block input and output, the
    /// router logits and four statistics per expert.
    public var diskBytes: Int {
        let act = tokens * hiddenSize * activationDType.byteSize
        return numLayers * act + zip(moeLayers, expertsPerLayer).reduce(0) { $0 + 2 * act + tokens * $1.1 * 4 + 4 * $1.1 * 4 + 2 * tokens * 8 * 4 }
            + numLayers * 4096
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

    /// `samples` windows of `seqLen` tokens from the files' concatenated token stream (the training part of
    /// each file, `TextSplit`: its last ~10% is the validation slice, never read here; tokenized whole, no
    /// special tokens), at start offsets drawn uniformly with the seed. Returns the windows and the data hash
    /// (over file names and the parts read).
    public static func sample(files: [URL], tokenizer: Tokenizer, samples: Int, seqLen: Int, seed: UInt64) throws -> ([[Int]], String) {
        guard samples > 0, seqLen >= 2 else { throw CalibrationError.invalid("--samples must be positive and --seq-len ≥ 2") }
        var stream: [Int] = []
        var h: UInt64 = FNV.offsetBasis
        for f in files {
            let data: Data, text: String
            do { (data, text) = try TextSplit.read(f, .training) } catch let e as DataFileError { throw CalibrationError.invalid(e.description) }
            h = Fingerprint.fnv(Array(f.lastPathComponent.utf8), h)
            h = Fingerprint.fnv(data, h)
            stream += try tokenizer.encode(text)
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

    /// The whole calibration of a model folder: sample windows from the `.txt` files of `textDirectory`, run
    /// the model over them (`run`) and open the resulting cache. `model`, when the caller already has the
    /// folder's model open, is used instead of loading it a second time.
    public static func calibrate(modelDirectory url: URL, model open: CausalLM? = nil, textDirectory: URL, samples: Int, seqLen: Int, seed: UInt64,
                                 output: URL, activations: DType = .f32, budget: MemoryBudget = .default, overwrite: Bool = false,
                                 quiet: Bool = false) throws -> CalibrationCache {
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
            files: files.map(\.lastPathComponent), activations: activations)
        try run(model: m, windows: windows, manifest: manifest, output: output, budget: budget, quiet: quiet, overwrite: overwrite)
        return try CalibrationCache(directory: output)
    }

    /// What a calibration run will take, printed before it starts and checked against the disk and budget.
    public struct Estimate: Sendable {
        public var diskBytes: Int
        public var freeDiskBytes: Int?
        /// The residual stream of every calibration token (held for the whole run).
        public var residualBytes: Int
        /// Peak anonymous memory: the residual stream and the activations of one chunk of sequences.
        public var memoryBytes: Int
        public var chunks: Int
        public var streams: Bool
    }

    public static func estimate(model: CausalLM, windows: [[Int]], manifest: CalibrationManifest, output: URL,
                                budget: MemoryBudget) throws -> (Estimate, [Range<Int>]) {
        let plan = MemoryPlan(model)
        let residual = manifest.tokens * manifest.hiddenSize * 4
        let lengths = windows.map(\.count)
        guard budget.bytes > residual else {
            throw CalibrationError.invalid("--max-memory \(formatBytes(budget.bytes)) is too small: the residual stream of \(manifest.tokens) calibration tokens alone takes \(formatBytes(residual)); use fewer --samples or a shorter --seq-len")
        }
        let chunks = try plan.chunks(lengths: lengths, budget: MemoryBudget(bytes: budget.bytes - residual))
        let largest = chunks.map { plan.bytes(lengths: Array(lengths[$0])) }.max() ?? 0
        let parent = output.standardizedFileURL.deletingLastPathComponent().path
        let free = DiskSpace.available(at: output)
        let e = Estimate(diskBytes: manifest.diskBytes, freeDiskBytes: free, residualBytes: residual,
                         memoryBytes: residual + largest - plan.layerBytes - plan.endsBytes, chunks: chunks.count, streams: plan.streams(under: budget))
        if let free, e.diskBytes > free {
            throw CalibrationError.invalid("\(parent) has \(formatBytes(free)) free; the calibration cache needs \(formatBytes(e.diskBytes))\(manifest.activationDType == .f32 ? " (--cache-dtype f16 halves it)" : "")")
        }
        return (e, chunks)
    }

    /// Runs the model layer-major over the windows and writes the cache folder: `manifest.json` and one
    /// `layer_<i>.safetensors` per decoder layer holding `hidden_in` (the decoder-layer input, for block-wise
    /// evaluation) and, for MoE layers, `moe_in` (the post-attention-norm MoE input), `moe_out` (the full
    /// block's output), `router_logits` and the expert statistics, all computed in the one forward pass.
    ///
    /// Memory: the residual stream of all tokens, plus one chunk of sequences (as many as `budget` allows)
    /// going through the current layer; the activations are written straight into the layer's file through a
    /// shared mapping. When the model is larger than the budget, each layer's pages are dropped after it.
    ///
    /// Resumable: the cache is built in `.<name>.partial` beside `output`, a layer file at a time (each renamed
    /// into place when complete). Run again with the same model, data and settings after a kill, it continues
    /// after the last finished layer (recomputing that layer's output from its cached input) and gives
    /// byte-identical files. `stopAfter` stops after that layer, as a kill would (for tests).
    public static func run(model: CausalLM, windows: [[Int]], manifest: CalibrationManifest, output: URL, budget: MemoryBudget = .default,
                           quiet: Bool = false, overwrite: Bool = false, stopAfter: Int? = nil) throws {
        let fm = FileManager.default
        let final = output.standardizedFileURL
        if fm.fileExists(atPath: final.path) && !overwrite {
            throw CalibrationError.invalid("\(final.path) already exists (pass --overwrite to replace it)")
        }
        let (est, chunks) = try estimate(model: model, windows: windows, manifest: manifest, output: final, budget: budget)
        // Time: one forward pass over every token, measured on one layer; writing the cache on top.
        let probe = ForwardProbe.measure(model, windows: windows)
        let seconds = probe.seconds(tokens: manifest.tokens, streams: est.streams)
        ResourceMonitor.shared.record(.init(name: "calibrate", seconds: seconds, memoryBytes: est.memoryBytes, diskBytes: est.diskBytes))
        if !quiet {
            Console.note(String(format: "calibrate: %d × %d tokens through %d layers in %d chunk(s); cache %@ on disk%@; memory ≈ %@ (residual stream %@)%@; time ≈ %@ (%@)",
                       manifest.samples, manifest.seqLen, manifest.numLayers, est.chunks, formatBytes(est.diskBytes),
                       est.freeDiskBytes.map { " (\(formatBytes($0)) free)" } ?? "", formatBytes(est.memoryBytes), formatBytes(est.residualBytes),
                       est.streams ? "; streaming the weights (model larger than --max-memory)" : "", formatDuration(seconds), probe.summary))
        }
        let staging = final.deletingLastPathComponent().appendingPathComponent(".\(final.lastPathComponent).partial")
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let manifestData = try enc.encode(manifest)
        var first = 0
        if let old = fm.contents(atPath: staging.appendingPathComponent("manifest.json").path), old == manifestData {
            while first < manifest.numLayers, fm.fileExists(atPath: staging.appendingPathComponent(layerFile(first)).path) { first += 1 }
            for name in (try? fm.contentsOfDirectory(atPath: staging.path)) ?? [] where name.hasPrefix(".") { try? fm.removeItem(at: staging.appendingPathComponent(name)) }
            if !quiet && first > 0 { Console.note("calibrate: resuming \(staging.path) after layer \(first - 1)") }
        } else {
            removeAtomically(staging)
            try fm.createDirectory(at: staging, withIntermediateDirectories: true)
            try manifestData.write(to: staging.appendingPathComponent("manifest.json"))
        }
        let n = windows.count, l = manifest.seqLen, h = model.hiddenSize
        let act = manifest.activationDType
        // Each chunk's sequences: rows of the residual stream and fresh per-layer keys and values.
        func run(_ layer: DecoderLayer, _ x: Tensor, observer: (Int) -> LayerObserver?) {
            for c in chunks {
                let rows = (c.lowerBound * l)..<(c.upperBound * l)
                let segments = (0..<c.count).map { AttentionSegment(rows: ($0 * l)..<(($0 + 1) * l), cache: KVCache.Layer(for: layer.attention)) }
                layer.forward(x.rowSlice(rows), segments: segments, observer: observer(rows.lowerBound))
            }
        }
        // The exact (f32) input of a layer: its cached `hidden_in` when the cache keeps f32, otherwise the
        // `residual.safetensors` the run writes before each layer (the only way to resume to the same bits).
        let residualURL = staging.appendingPathComponent("residual.safetensors")
        func exactInput() throws -> (layer: Int, x: Tensor)? {
            if act == .f32 {
                guard first > 0 else { return nil }
                let f = try SafeTensorsFile(path: staging.appendingPathComponent(layerFile(first - 1)).path)
                return (first - 1, try f.weight("hidden_in").float())
            }
            guard fm.fileExists(atPath: residualURL.path) else { return nil }
            let f = try SafeTensorsFile(path: residualURL.path)
            guard let layer = f.metadata["layer"].flatMap({ Int($0) }), layer <= first else { return nil }
            return (layer, try f.weight("residual").float())
        }
        var x = model.embed(windows.flatMap { $0 })
        if first > 0 {
            guard let (r, input) = try exactInput(), input.shape == [n * l, h] else {
                throw CalibrationError.invalid("\(staging.path): cannot resume (no exact input for layer \(first)); delete it to start over")
            }
            x = input
            for li in r..<first { run(model.layers[li], x) { _ in nil } }
        }
        let progress = StageProgress("calibrate", total: model.layers.count, unit: "layers", quiet: quiet, estimate: false)
        progress.advance(by: first)
        try model.forEachLayer(tokens: x.rows, evict: est.streams, from: first) { li, layer in
            var tensors: [(name: String, dtype: DType, shape: [Int])] = [("hidden_in", act, [n * l, h])]
            let block = layer.feedForward.moe
            let e = block?.numExperts ?? 0
            if block != nil {
                let k = block!.topK
                tensors += [("moe_in", act, [n * l, h]), ("moe_out", act, [n * l, h]), ("router_logits", .f32, [n * l, e]),
                            ("router_experts", .f32, [n * l, k]), ("router_weights", .f32, [n * l, k])]
                tensors += ["frequency", "gate_mass", "reap", "token_counts"].map { ($0, DType.f32, [e]) }
            }
            let out = try MappedSafeTensorsOutput(staging.appendingPathComponent(layerFile(li)), tensors: tensors, metadata: ["layer": "\(li)"])
            if act != .f32 { try SafeTensorsWriter.write([.init("residual", x)], metadata: ["layer": "\(li)"], to: residualURL) }
            out.write("hidden_in", x)
            // Statistics accumulated in token order within each expert, whatever the chunking.
            var counts = [Int](repeating: 0, count: e)
            var mass = [Double](repeating: 0, count: e), saliency = mass
            run(layer, x) { row0 in
                guard block != nil else { return nil }
                return LayerObserver(
                    feedForward: { input, output in
                        out.write("moe_in", row: row0, input)
                        out.write("moe_out", row: row0, output)
                    },
                    routing: { d in
                        out.write("router_logits", row: row0, d.logits)
                        out.write("router_experts", row: row0, Tensor(shape: [d.experts.count], values: d.experts.map(Float.init)))
                        out.write("router_weights", row: row0, Tensor(shape: [d.weights.count], values: d.weights))
                    },
                    expert: { ex, tokens, weights, outputs in
                        counts[ex] += tokens.count
                        for (k, w) in weights.enumerated() {
                            var norm = 0.0
                            let r = outputs.data + k * h
                            for j in 0..<h { norm += Double(r[j]) * Double(r[j]) }
                            saliency[ex] += Double(w) * norm.squareRoot()
                            mass[ex] += Double(w)
                        }
                    })
            }
            if block != nil {
                let t = Double(n * l)
                func vector(_ v: [Double]) -> Tensor { Tensor(shape: [e], values: v.map(Float.init)) }
                out.write("frequency", vector(counts.map { Double($0) / t }))
                out.write("gate_mass", vector(mass.map { $0 / t }))
                out.write("reap", vector((0..<e).map { counts[$0] > 0 ? saliency[$0] / Double(counts[$0]) : 0 }))
                out.write("token_counts", vector(counts.map(Double.init)))
            }
            try out.commit()
            progress.advance()
            if let stopAfter, li >= stopAfter { throw CalibrationError.interrupted(li) }
        }
        try? fm.removeItem(at: residualURL)
        removeAtomically(final)
        guard rename(staging.path, final.path) == 0 else { throw CalibrationError.invalid("\(final.path): cannot move the finished cache into place") }
    }

    static func layerFile(_ i: Int) -> String { String(format: "layer_%03d.safetensors", i) }

    /// Per-expert Gram matrices Σ x xᵀ, in f64, over the rows of `x` (row-major [n, c]) into `g` [c, c]
    /// (both triangles), with OpenBLAS's dsyrk.
    public static func gram(_ x: Tensor, into g: UnsafeMutablePointer<Double>) {
        let n = x.rows, c = x.cols
        let wide = [Double](unsafeUninitializedCapacity: n * c) { buf, count in
            for i in 0..<(n * c) { buf[i] = Double(x.data[i]) }
            count = n * c
        }
        wide.withUnsafeBufferPointer { w in BLAS.syrk(n: c, k: n, a: w.baseAddress!, into: g) }
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
        guard manifest.version == CalibrationManifest.currentVersion else {
            throw CalibrationError.invalid("\(directory.path) was made by another version of MoEPress (cache version \(manifest.version), this one reads \(CalibrationManifest.currentVersion)); recalibrate")
        }
    }

    /// Refuses a cache made from another model (or another version of it).
    public func check(modelHash: String) throws {
        guard manifest.modelHash == modelHash else {
            throw CalibrationError.invalid("\(directory.path) was made for another model (hash \(manifest.modelHash), this model \(modelHash)); recalibrate")
        }
    }

    public func file(_ layer: Int) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: directory.appendingPathComponent(Calibration.layerFile(layer)).path)
    }

    /// Rows `range` (all when nil) of a cached tensor, widened to f32.
    public func tensor(_ layer: Int, _ name: String, rows range: Range<Int>? = nil) throws -> Tensor {
        let f = try file(layer)
        let w = try f.weight(name)
        guard let range else { return w.float() }
        guard range.lowerBound >= 0, range.upperBound <= w.rows else {
            throw CalibrationError.invalid("\(f.path): \(name) has \(w.rows) rows, \(range) asked")
        }
        return w.rowSlice(range).float()
    }

    /// The routing decision cached for a MoE layer: per token its top-k experts (torch.topk order) and weights.
    public func routing(_ layer: Int) throws -> (experts: [Int32], weights: [Float], topK: Int) {
        let e = try tensor(layer, "router_experts"), w = try tensor(layer, "router_weights")
        return (e.array.map { Int32($0) }, w.array, e.cols)
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
    /// A run stopped after this layer (`stopAfter`), as if killed; run again to resume.
    case interrupted(Int)
    public var description: String {
        switch self {
        case .invalid(let s): return s
        case .interrupted(let l): return "calibration stopped after layer \(l); run again to resume"
        }
    }
}
