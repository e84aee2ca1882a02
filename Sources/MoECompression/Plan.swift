import Foundation
import MoECheckpoint
import MoEModels

/// Which experts each MoE layer keeps, with the scores that chose them: reviewable, replayable JSON
/// (written as plan.json next to every pruned checkpoint).
public struct PruningPlan: Codable, Sendable, Equatable {
    public struct Layer: Codable, Sendable, Equatable {
        public var layer: Int
        public var experts: Int
        /// Original expert ids kept, ascending.
        public var kept: [Int]
        /// Per-expert scores the method used (name → one value per original expert), when it has them.
        public var scores: [String: [Double]]
    }
    public var method: String
    public var model: String
    public var parameters: [String: String]
    public var layers: [Layer]

    public var uniform: Bool { Set(layers.map(\.kept.count)).count <= 1 }
    public var removed: Int { layers.reduce(0) { $0 + $1.experts - $1.kept.count } }
}

public enum PruningError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String { if case .invalid(let s) = self { return s } else { return "" } }
}

/// How many experts to remove: `ratio` removes round(R × routed experts) overall, `keep` keeps K per layer.
public enum PruningBudget: Sendable, Equatable {
    case ratio(Double)
    case keep(Int)

    /// Experts to keep in a layer of `experts` with top-k `k`, for methods that prune every layer alike.
    public func keep(experts: Int, topK k: Int) throws -> Int {
        let n: Int
        switch self {
        case .ratio(let r):
            guard r >= 0, r < 1 else { throw PruningError.invalid("--ratio must be in [0, 1)") }
            n = experts - Int((r * Double(experts)).rounded())
        case .keep(let kk): n = kk
        }
        guard n >= k else { throw PruningError.invalid("keeping \(n) of \(experts) experts leaves fewer than top-k = \(k); a layer must keep at least \(k)") }
        guard n <= experts else { throw PruningError.invalid("cannot keep \(n) experts of \(experts)") }
        return n
    }

    /// The budget as the user gave it.
    var budgetFlag: String {
        switch self {
        case .ratio(let r): return "--ratio \(r)"
        case .keep(let k): return "--keep \(k)"
        }
    }

    /// Refuses a budget that removes no expert at all (nothing to do): `perLayer` for methods that prune every
    /// layer alike, otherwise the overall count (MoE-I²).
    public func checkRemovesSome(experts: [Int], topK k: Int, perLayer: Bool) throws {
        let removed = perLayer ? try experts.reduce(0) { $0 + $1 - (try keep(experts: $1, topK: k)) } : try totalRemoved(experts: experts, topK: k)
        guard removed > 0 else { throw PruningError.invalid("\(budgetFlag) removes no expert (the layers have \(Set(experts).sorted().map(String.init).joined(separator: "/")) experts): nothing to prune") }
    }

    /// Total experts to remove over all MoE layers (for methods that distribute removals non-uniformly).
    public func totalRemoved(experts: [Int], topK k: Int) throws -> Int {
        switch self {
        case .ratio(let r):
            guard r >= 0, r < 1 else { throw PruningError.invalid("--ratio must be in [0, 1)") }
            let total = Int((r * Double(experts.reduce(0, +))).rounded())
            let cap = experts.reduce(0) { $0 + $1 - k }
            guard total <= cap else { throw PruningError.invalid("removing \(total) experts would leave some layer below top-k = \(k) (at most \(cap))") }
            return total
        case .keep(let kk):
            return try experts.reduce(0) { $0 + $1 - (try PruningBudget.keep(kk).keep(experts: $1, topK: k)) }
        }
    }
}

/// Applies a plan to a checkpoint folder: router rows and expert tensors of pruned experts are dropped,
/// kept experts renumbered 0..<kept in ascending original order, every other tensor (attention, norms,
/// shared experts, dense layers, embeddings) copied byte for byte in its original dtype. The config's
/// expert count is updated when all layers keep the same number, otherwise a `moepress.experts_per_layer`
/// section lists them. The output appears atomically, with plan.json and the tokenizer files.
public enum PlanApplier {
    public static func apply(_ plan: PruningPlan, model dir: URL, output: URL, overwrite: Bool = false,
                             shardSize: Int = CheckpointWriter.defaultShardSize) throws {
        try AtomicDirectory(output, overwrite: overwrite).finish { try apply(plan, model: dir, into: $0, shardSize: shardSize) }
    }

    /// Writes the pruned checkpoint into `out`'s staging folder (resuming its shards when `out` is resumable);
    /// the caller commits.
    public static func apply(_ plan: PruningPlan, model dir: URL, into out: AtomicDirectory,
                             shardSize: Int = CheckpointWriter.defaultShardSize) throws {
        let config = try HFConfig(modelDirectory: dir)
        let described = try ModelRegistry.describe(config)
        let (family, filled, d) = (described.family, described.config, described.description)
        let ckpt = try Checkpoint(directory: dir)
        var keptByLayer: [Int: [Int]] = [:]
        for l in plan.layers {
            guard l.layer >= 0, l.layer < d.numLayers, let e = d.layers[l.layer].experts else {
                throw PruningError.invalid("plan names layer \(l.layer), which is not an MoE layer of \(dir.path)")
            }
            guard l.kept == l.kept.sorted(), Set(l.kept).count == l.kept.count, l.kept.allSatisfy({ $0 >= 0 && $0 < e }) else {
                throw PruningError.invalid("plan layer \(l.layer): kept ids must be distinct, ascending, in 0..<\(e)")
            }
            if let k = d.routing?.topK, l.kept.count < k {
                throw PruningError.invalid("plan layer \(l.layer) keeps \(l.kept.count) experts, fewer than top-k = \(k)")
            }
            keptByLayer[l.layer] = l.kept
        }
        // Classify every tensor.
        var entries: [SafeTensorsWriter.Entry] = []
        var prefixes: [Int: (block: String, router: String)] = [:]
        let names = try family.checkpointNames(filled, description: d, has: ckpt.contains)
        for l in keptByLayer.keys {
            // The block's module: its router is `<prefix>.<gate|router>` (weight, bias, correction bias: one row per
            // expert), its experts `<prefix>.experts.…`.
            guard let router = names.module("layers.\(l).moe.router"), let dot = router.lastIndex(of: ".") else {
                throw PruningError.invalid("\(dir.path): no router for layer \(l)")
            }
            prefixes[l] = (String(router[..<dot]), router)
        }
        for name in ckpt.names {
            let info = ckpt.info(name)!
            var handled = false
            for (layer, (prefix, router)) in prefixes {
                let kept = keptByLayer[layer]!
                let e = d.layers[layer].experts!
                if name.hasPrefix("\(router).") {
                    entries.append(try sliceRows(name, info, ckpt, kept, expected: e))
                    handled = true
                } else if name.hasPrefix("\(prefix).experts.") {
                    let rest = name.dropFirst("\(prefix).experts.".count)
                    if let dot = rest.firstIndex(of: "."), let id = Int(rest[..<dot]) {
                        if let slot = kept.firstIndex(of: id) {
                            entries.append(try ckpt.rawEntry(name, as: "\(prefix).experts.\(slot)\(rest[dot...])"))
                        }
                    } else {
                        // Fused layout: [E, …] tensors (gate_up_proj, down_proj, their biases, MXFP4 blocks and scales).
                        entries.append(try sliceRows(name, info, ckpt, kept, expected: e))
                    }
                    handled = true
                }
                if handled { break }
            }
            if !handled { entries.append(try ckpt.rawEntry(name)) }
        }
        try CheckpointWriter.write(entries, into: out.staging, shardSize: shardSize, journal: out.journal)
        try CheckpointOutput.copyCompanions(from: dir, to: out)
        try writeConfig(config, description: d, keptByLayer: keptByLayer, to: out.url("config.json"))
        try CheckpointOutput.writeJSON(plan, to: out.url("plan.json"))
    }

    static func sliceRows(_ name: String, _ info: TensorInfo, _ ckpt: Checkpoint, _ kept: [Int], expected e: Int) throws -> SafeTensorsWriter.Entry {
        guard info.shape.first == e else { throw PruningError.invalid("\(name): first dimension \(info.shape) is not the expert count \(e)") }
        return try ckpt.rowsEntry(name, rows: kept)
    }

    /// Rewrites config.json textually: only the expert count changes, and unequal counts are listed in the
    /// "moepress" section (see `CheckpointOutput.settingMoEPressEntry`), with the remote code HF needs for them.
    static func writeConfig(_ config: HFConfig, description d: ModelDescription, keptByLayer: [Int: [Int]], to url: URL) throws {
        guard var text = try? String(contentsOfFile: config.path, encoding: .utf8) else { throw PruningError.invalid("\(config.path): cannot read") }
        let counts: [Int?] = d.layers.enumerated().map { i, l in l.isMoE ? (keptByLayer[i]?.count ?? l.experts) : nil }
        let moeCounts = counts.compactMap { $0 }
        guard let key = ModelRegistry.expertCountKey(config) else { throw PruningError.invalid("\(config.path): no expert-count key") }
        let uniform = Set(moeCounts).count == 1
        let re = try NSRegularExpression(pattern: "(\"\(key)\"\\s*:\\s*)[0-9]+")
        let ns = text as NSString
        guard let m = re.firstMatch(in: text, range: NSRange(location: 0, length: ns.length)) else {
            throw PruningError.invalid("\(config.path): cannot find \"\(key)\"")
        }
        let prefix = ns.substring(with: m.range(at: 1))
        text = ns.replacingCharacters(in: m.range, with: prefix + "\(uniform ? moeCounts[0] : (moeCounts.max() ?? 0))")
        if !uniform || config.raw["moepress"] != nil {
            let list = uniform ? "null" : "[" + counts.map { $0.map(String.init) ?? "null" }.joined(separator: ", ") + "]"
            text = CheckpointOutput.settingMoEPressEntry(text, key: "experts_per_layer", json: list)
        }
        // Unequal counts: HF transformers loads the folder through modeling_moepress.py (trust_remote_code).
        if !uniform {
            text = HFRemoteCode.settingAutoMap(text)
            try HFRemoteCode.source.write(to: url.deletingLastPathComponent().appendingPathComponent(HFRemoteCode.fileName), atomically: false, encoding: .utf8)
        }
        try text.write(to: url, atomically: false, encoding: .utf8)
    }
}
