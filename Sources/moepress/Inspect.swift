import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model folder: family, layers, experts, routing, parameters and bytes on disk.",
        discussion: "Runs the validation every command runs (config.json as a whole, every tensor name and shape from the safetensors headers); no weight matrix is read.")

    @Argument(help: "A Hugging Face model folder (config.json + *.safetensors).")
    var model: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Flag(help: "Also read every weight and refuse NaN/Inf values, naming the tensor (reads the whole model once).")
    var verify = false

    struct Report: Codable {
        var path: String
        var modelType: String
        var architecture: String
        var layers: Int
        var hiddenSize: Int
        var vocabSize: Int
        var attention: String
        var heads: Int
        var kvHeads: Int
        var moeLayers: [Int]
        var denseLayers: [Int]
        var expertsPerLayer: [Int?]
        var topK: Int?
        var routing: Routing?
        var sharedExpertIntermediate: Int?
        var sharedExpertGated: Bool
        var totalParameters: Int
        var activeParameters: Int
        var expertParameters: Int
        var bytesOnDisk: Int
        var dtype: String
        var tensors: Int
        var files: Int
    }

    func run() throws {
        try reportingErrors {
            let url = modelURL(model)
            // The validation every command runs: the config as a whole and every weight's name and shape (read from
            // the headers; the weights stay mapped, unread).
            let d = try ModelRegistry.load(directory: url).description
            let ckpt = try Checkpoint(directory: url)
            let names = try ModelRegistry.checkpointNames(directory: url, checkpoint: ckpt)
            let r = Self.report(d, ckpt, names: names, path: url.path)
            if verify {
                let progress = StageProgress("verify", total: ckpt.tensorBytes >> 20, unit: "MiB", estimate: false)
                var done = 0
                try ckpt.requireFinite(evict: true) { n in
                    let before = done >> 20
                    done += n
                    if done >> 20 > before { progress.advance(by: (done >> 20) - before) }
                }
                Console.note("verify: all \(ckpt.names.count) tensors are finite")
            }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(r), as: UTF8.self))
            } else {
                print(Self.table(r))
            }
        }
    }

    /// Parameter counts from the tensor headers: total as stored (MXFP4 codes counted as values); active = total minus, in each MoE
    /// layer, the routed experts a token does not use (all but top-k of them, at that layer's mean size).
    static func report(_ d: ModelDescription, _ ckpt: Checkpoint, names: CheckpointNames, path: String) -> Report {
        var total = 0
        var expertsPerLayer = [Int](repeating: 0, count: d.numLayers)
        // MXFP4 tensors hold two values a byte (blocks) and one exponent per 32 values (scales, not parameters).
        var blocks = Set<String>(), scales = Set<String>()
        for (_, loc) in names.entries { if let s = loc.mxfp4Scales { blocks.insert(loc.name); scales.insert(s) } }
        for name in ckpt.names {
            let stored = ckpt.info(name)!.elementCount
            let n = blocks.contains(name) ? 2 * stored : scales.contains(name) ? 0 : stored
            total += n
            // Routed-expert tensors, by the family's name table (`layers.L.moe.experts.…`).
            guard let logical = names.logicalNames(ofTensor: name).first else { continue }
            let parts = logical.split(separator: ".")
            if parts.count > 4, parts[0] == "layers", parts[2] == "moe", parts[3] == "experts", let l = Int(parts[1]), l < d.numLayers {
                expertsPerLayer[l] += n
            }
        }
        var inactive = 0
        for (i, l) in d.layers.enumerated() {
            if let e = l.experts, e > 0, let k = d.routing?.topK {
                inactive += expertsPerLayer[i] * max(e - k, 0) / e
            }
        }
        let shared = d.layers.first(where: { $0.isMoE })
        return Report(
            path: path, modelType: d.modelType, architecture: d.architecture, layers: d.numLayers,
            hiddenSize: d.hiddenSize, vocabSize: d.vocabSize, attention: d.attention.rawValue, heads: d.heads, kvHeads: d.kvHeads,
            moeLayers: d.moeLayerIndices, denseLayers: d.denseLayerIndices, expertsPerLayer: d.layers.map(\.experts),
            topK: d.routing?.topK, routing: d.routing, sharedExpertIntermediate: shared?.sharedExpertIntermediate,
            sharedExpertGated: shared?.sharedExpertGated ?? false, totalParameters: total, activeParameters: total - inactive,
            expertParameters: expertsPerLayer.reduce(0, +), bytesOnDisk: ckpt.fileBytes, dtype: ckpt.dominantDType.rawValue,
            tensors: ckpt.names.count, files: ckpt.files.count)
    }

    static func table(_ r: Report) -> String {
        func human(_ n: Int) -> String {
            let v = Double(n)
            if v >= 1e9 { return String(format: "%.2fB", v / 1e9) }
            if v >= 1e6 { return String(format: "%.2fM", v / 1e6) }
            if v >= 1e3 { return String(format: "%.1fK", v / 1e3) }
            return "\(n)"
        }
        let experts = Set(r.expertsPerLayer.compactMap { $0 }).sorted().map(String.init).joined(separator: "/")
        var routing = "-"
        if let ro = r.routing {
            routing = "\(ro.scoring.rawValue), top-\(ro.topK)\(ro.normalizeTopK ? ", renormalised" : ", not renormalised")"
            if ro.groups > 1 { routing += ", \(ro.topKGroups) of \(ro.groups) groups (\(ro.groupScore.rawValue))" }
            if ro.scalingFactor != 1 { routing += ", × \(ro.scalingFactor)" }
        }
        let rows: [(String, String)] = [
            ("model", r.path),
            ("family", "\(r.modelType) (\(r.architecture))"),
            ("layers", "\(r.layers) (\(r.moeLayers.count) MoE, \(r.denseLayers.count) dense\(r.denseLayers.isEmpty ? "" : ": \(r.denseLayers)"))"),
            ("hidden / vocab", "\(r.hiddenSize) / \(r.vocabSize)"),
            ("attention", "\(r.attention), \(r.heads) heads, \(r.kvHeads) KV heads"),
            ("experts per MoE layer", experts.isEmpty ? "-" : experts),
            ("routing", routing),
            ("shared expert", r.sharedExpertIntermediate.map { "intermediate \($0)\(r.sharedExpertGated ? ", sigmoid-gated" : "")" } ?? "none"),
            ("parameters", "\(human(r.totalParameters)) total, \(human(r.activeParameters)) active per token, \(human(r.expertParameters)) in routed experts"),
            ("on disk", "\(formatBytes(r.bytesOnDisk)) in \(r.files) file(s), \(r.tensors) tensors, mostly \(r.dtype)"),
        ]
        let w = rows.map(\.0.count).max()!
        return rows.map { $0.0.padding(toLength: w, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }
}
