import Foundation
import MoECheckpoint
import Yams
import MoEModels
import MoETraining

/// A compression recipe (YAML), validated completely before any work: every error names the file and line.
///
///     model: ../../shared/models/mixtral-ref     # relative paths are relative to the recipe file
///     seed: 0
///     calibration: {data: ../../shared/data/calib, samples: 64, seq_len: 256}
///     stages:                                     # or `compare: {name: [stages…], …}`
///       - prune: {method: moei2, ratio: 0.25}
///       - decompose: {method: svdllm, ratio: 0.6, rank_alloc: importance}
///       - heal: {data: ../../shared/data/calib, steps: 60, lora_rank: 16}
///     evaluation: {perplexity: [../../shared/data/dev/austen.txt], tasks: ../../shared/data/tasks/dev.jsonl, task_limit: 200, speed: true}
///     export: none                                # none, dense or uniform
///     keep_intermediate: true                     # false: a stage's weights are deleted once the next stage is done
/// The kinds of stage a recipe can list (spelled as in YAML), plus the export the pipeline appends.
public enum StageKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case prune, decompose, heal, compressExperts = "compress_experts", export
    public var description: String { rawValue }
    /// What a recipe may list under `stages` (export is the recipe's `export:` key).
    public static let listable: [StageKind] = [.prune, .decompose, .heal, .compressExperts]
}

public struct Recipe: Sendable {
    public struct Stage: Sendable {
        public var kind: StageKind
        /// Options as canonical JSON values (String, Double, Int, Bool, [String]).
        public var options: [String: OptionValue]
        public var line: Int
    }

    public enum OptionValue: Sendable, Equatable, Codable {
        case int(Int), double(Double), string(String), bool(Bool), strings([String])
        public var json: Any {
            switch self {
            case .int(let v): v
            case .double(let v): v
            case .string(let v): v
            case .bool(let v): v
            case .strings(let v): v
            }
        }
    }

    public var path: URL
    public var model: URL
    public var seed: UInt64 = 0
    public var calibration: (data: URL, samples: Int, seqLen: Int)?
    /// Branch name → stages; a plain recipe has one branch named "main".
    public var branches: [(name: String, stages: [Stage])]
    public var perplexityFiles: [URL] = []
    public var tasks: URL?
    public var taskLimit: Int?
    public var speed = false
    public var export = "none"
    /// Whether each stage's output weights stay on disk after the next stage has used them (false lets a model
    /// as large as a third of the disk go through prune → decompose → heal).
    public var keepIntermediate = true
    /// Largest weight file of every checkpoint the stages write (`shard_size`, e.g. 5GB; the CLI's --shard-size).
    public var shardSize = CheckpointWriter.defaultShardSize

    /// Option types per stage kind: "int", "double", "string", "bool", "strings"; and allowed string values.
    static let schema: [String: [String: String]] = [
        "prune": ["method": "string", "ratio": "double", "keep": "int", "tau": "double", "generations": "int", "population": "int",
                  "candidates": "int", "block_size": "int", "fitness_tokens": "int", "field_sequences": "int",
                  "uniform_counts": "bool"],
        "decompose": ["method": "string", "ratio": "double", "rank": "int", "rank_alloc": "string", "alpha": "double", "targets": "strings",
                      "importance_tokens": "int"],
        "heal": ["data": "string", "steps": "int", "lr": "double", "batch": "int", "seq_len": "int", "lora_rank": "int", "lora_alpha": "double",
                 "lora_dropout": "double", "targets": "strings", "grad_accum": "int", "warmup_ratio": "double", "weight_decay": "double",
                 "neftune_alpha": "double"],
        "compress_experts": ["data": "string", "main_experts": "int", "steps": "int", "lr": "double", "batch": "int", "seq_len": "int",
                             "train": "string", "no_ce": "bool", "grad_accum": "int", "warmup_ratio": "double", "weight_decay": "double"],
    ]
    static let allowedStrings: [String: [String: [String]]] = [
        "prune": ["method": ["frequency", "reap", "naee", "moei2", "moeits"]],
        "decompose": ["method": ["svd", "svdllm"], "rank_alloc": ["uniform", "importance"]],
        "compress_experts": ["train": ["all", "ce-only"]],
    ]
    /// Allowed names of list options.
    static let allowedLists: [String: [String: [String]]] = [
        "decompose": ["targets": ["gate", "up", "down"]],
        "heal": ["targets": LoRA.allTargets],
    ]
    static let required: [String: [String]] = ["prune": ["method"], "decompose": [], "heal": ["steps"], "compress_experts": ["main_experts", "steps"]]

    public init(file: URL) throws {
        path = file.standardizedFileURL
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { throw RecipeError(file.path, nil, "cannot read the recipe") }
        let root: Node
        do {
            guard let r = try Yams.compose(yaml: text) else { throw RecipeError(file.path, 1, "the recipe is empty") }
            root = r
        } catch let e as RecipeError {
            throw e
        } catch let e as YamlError {
            throw RecipeError(file.path, Recipe.line(of: e), "not valid YAML: \(e)")
        }
        let base = path.deletingLastPathComponent()
        func fail(_ node: Node?, _ message: String) -> RecipeError { RecipeError(file.path, node?.mark?.line, message) }
        func resolve(_ node: Node, _ what: String) throws -> URL {
            guard let s = node.scalar?.string, node.scalar != nil, !s.isEmpty else { throw fail(node, "\(what) must be a path") }
            return URL(fileURLWithPath: s, relativeTo: base).standardizedFileURL
        }
        func existing(_ node: Node, _ what: String) throws -> URL {
            let u = try resolve(node, what)
            guard FileManager.default.fileExists(atPath: u.path) else { throw fail(node, "\(what) \(u.path) does not exist") }
            return u
        }
        guard let top = root.mapping else { throw fail(root, "the recipe must be a mapping of keys (model, stages, …)") }
        let known = ["model", "seed", "calibration", "stages", "compare", "evaluation", "export", "keep_intermediate", "shard_size"]
        for (k, _) in top where !known.contains(k.string ?? "") {
            throw fail(k, "unknown key \"\(k.string ?? "?")\" (known: \(known.joined(separator: ", ")))")
        }
        guard let modelNode = top["model"] else { throw fail(root, "missing \"model\" (the Hugging Face model folder to compress)") }
        model = try existing(modelNode, "model")
        guard FileManager.default.fileExists(atPath: model.appendingPathComponent("config.json").path) else {
            throw fail(modelNode, "model \(model.path) has no config.json")
        }
        if let s = top["seed"] {
            guard let v = s.int, v >= 0 else { throw fail(s, "seed must be a non-negative integer") }
            seed = UInt64(v)
        }
        if let c = top["calibration"] {
            guard let m = c.mapping else { throw fail(c, "calibration must be a mapping {data, samples, seq_len}") }
            for (k, _) in m where !["data", "samples", "seq_len"].contains(k.string ?? "") { throw fail(k, "unknown calibration key \"\(k.string ?? "?")\"") }
            guard let d = m["data"] else { throw fail(c, "calibration needs \"data\" (a folder of .txt files)") }
            func count(_ key: String, _ d: Int) throws -> Int {
                guard let n = m[key] else { return d }
                guard let v = n.int else { throw fail(n, "calibration.\(key) must be an integer") }
                if let p = OptionRules.problem("calibration", key, Double(v)) { throw fail(n, "calibration.\(key) \(p)") }
                return v
            }
            let samples = try count("samples", 64), seqLen = try count("seq_len", 256)
            calibration = (try existing(d, "calibration data"), samples, seqLen)
        }
        // The model's routing, for the checks that depend on it (experts kept, main experts), done before any work.
        let described: ModelDescription
        do { described = try ModelRegistry.describe(directory: model) } catch { throw fail(modelNode, "model \(model.path): \(error)") }
        let topK = described.routing?.topK
        let fewestExperts = described.layers.compactMap(\.experts).min()
        let modelName = model.lastPathComponent
        func stages(_ node: Node) throws -> [Stage] {
            guard let seq = node.sequence else { throw fail(node, "stages must be a list, e.g. - prune: {method: moei2, ratio: 0.25}") }
            guard !seq.isEmpty else { throw fail(node, "the stage list is empty: give at least one stage") }
            var out: [Stage] = []
            for item in seq {
                guard let m = item.mapping, m.count == 1, let (kn, vn) = m.first.map({ ($0.key, $0.value) }), let kind = kn.string else {
                    throw fail(item, "each stage is a one-key mapping: stage name → options")
                }
                guard let stageKind = StageKind(rawValue: kind), StageKind.listable.contains(stageKind), let schema = Recipe.schema[kind] else {
                    throw fail(kn, "unknown stage \"\(kind)\" (known: \(StageKind.listable.map(\.rawValue).sorted().joined(separator: ", ")))")
                }
                var options: [String: OptionValue] = [:]
                guard vn.mapping != nil || vn.null != nil else { throw fail(vn, "the options of \(kind) must be a mapping") }
                for (ok, ov) in vn.mapping ?? [:] {
                    guard let key = ok.string, let type = schema[key] else {
                        throw fail(ok, "unknown option \"\(ok.string ?? "?")\" of \(kind) (known: \(schema.keys.sorted().joined(separator: ", ")))")
                    }
                    let value: OptionValue
                    switch type {
                    case "int":
                        guard let v = ov.int else { throw fail(ov, "\(kind).\(key) must be an integer, not \"\(ov.scalar?.string ?? "…")\"") }
                        if let p = OptionRules.problem(kind, key, Double(v)) { throw fail(ov, "\(kind).\(key) \(p)") }
                        value = .int(v)
                    case "double":
                        guard let v = ov.float, ov.bool == nil else { throw fail(ov, "\(kind).\(key) must be a number, not \"\(ov.scalar?.string ?? "…")\"") }
                        if let p = OptionRules.problem(kind, key, v) { throw fail(ov, "\(kind).\(key) \(p)") }
                        value = .double(v)
                    case "bool":
                        guard let v = ov.bool else { throw fail(ov, "\(kind).\(key) must be true or false") }
                        value = .bool(v)
                    case "strings":
                        if let s = ov.sequence {
                            let v = s.compactMap { $0.string }
                            guard v.count == s.count else { throw fail(ov, "\(kind).\(key) must be a list of names") }
                            value = .strings(v)
                        } else if let s = ov.scalar?.string {
                            value = .strings(s.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
                        } else { throw fail(ov, "\(kind).\(key) must be a list of names") }
                        if case .strings(let names) = value, let allowed = Recipe.allowedLists[kind]?[key] {
                            guard !names.isEmpty else { throw fail(ov, "\(kind).\(key) is empty (known: \(allowed.joined(separator: ", ")))") }
                            if let bad = names.first(where: { !allowed.contains($0) }) {
                                throw fail(ov, "unknown \(kind) \(key) entry \"\(bad)\" (known: \(allowed.joined(separator: ", ")))")
                            }
                        }
                    default:
                        guard let v = ov.scalar?.string, ov.mapping == nil, ov.sequence == nil else { throw fail(ov, "\(kind).\(key) must be a string") }
                        if let allowed = Recipe.allowedStrings[kind]?[key], !allowed.contains(v) {
                            throw fail(ov, "unknown \(kind) \(key) \"\(v)\" (known: \(allowed.joined(separator: ", ")))")
                        }
                        if key == "data" { _ = try existing(ov, "\(kind).data") }
                        value = .string(v)
                    }
                    options[key] = value
                }
                for r in Recipe.required[kind] ?? [] where options[r] == nil { throw fail(kn, "\(kind) needs \"\(r)\"") }
                if kind == "prune", case .string(let m)? = options["method"] {
                    let budgets = ["ratio", "keep", "tau"].filter { options[$0] != nil }
                    guard budgets.count == 1 else { throw fail(kn, "prune needs exactly one of ratio, keep or tau") }
                    if options["tau"] != nil && m != "moeits" { throw fail(kn, "tau is for method moeits") }
                }
                if kind == "decompose" && (options["ratio"] == nil) == (options["rank"] == nil) { throw fail(kn, "decompose needs exactly one of ratio (kept fraction) or rank") }
                // Checks against the model (the first stage's input; expert counts only shrink after it).
                if kind == "prune", let k = topK, let e = fewestExperts {
                    if let keep = options.int("keep"), keep < k || keep > e {
                        throw fail(vn.mapping?["keep"] ?? kn, "prune.keep must be between top-k = \(k) and the \(e) experts of \(modelName), got \(keep)")
                    }
                    if let r = options.double("ratio"), options.string("method") != "moei2", e - Int((r * Double(e)).rounded()) < k {
                        throw fail(vn.mapping?["ratio"] ?? kn, "prune.ratio \(r) would keep \(e - Int((r * Double(e)).rounded())) of \(e) experts, fewer than top-k = \(k)")
                    }
                }
                if kind == "compress_experts", let mx = options.int("main_experts") {
                    let plain = options["no_ce"] == .bool(true)   // the plain baseline may keep all top-k experts
                    guard let k = topK, mx < k || (plain && mx == k) else {
                        throw fail(vn.mapping?["main_experts"] ?? kn, "compress_experts.main_experts must be below top-k\(topK.map { " = \($0)" } ?? " (the model has no MoE layers)")\(plain ? " (or equal to it with no_ce)" : ""), got \(mx)")
                    }
                }
                out.append(Stage(kind: stageKind, options: options, line: kn.mark?.line ?? 0))
            }
            return out
        }
        switch (top["stages"], top["compare"]) {
        case (let s?, nil): branches = [("main", try stages(s))]
        case (nil, let c?):
            guard let m = c.mapping, !m.isEmpty else { throw fail(c, "compare must map branch names to stage lists") }
            branches = try m.map { (k, v) in
                guard let name = k.string, name.range(of: "^[A-Za-z0-9_-]+$", options: .regularExpression) != nil else {
                    throw fail(k, "branch names are letters, digits, - and _")
                }
                return (name, try stages(v))
            }
        case (nil, nil): throw fail(root, "missing \"stages\" (or \"compare\")")
        default: throw fail(top["compare"], "give \"stages\" or \"compare\", not both")
        }
        let needsCalibration = branches.flatMap(\.stages).contains { s in
            if s.kind == .prune, case .string(let m)? = s.options["method"] { return m != "moeits" }
            if s.kind == .decompose { let lo = StageOptions.decompose(s.options); return lo.method == .svdllm || lo.allocation == .importance }
            return false
        }
        if needsCalibration && calibration == nil { throw fail(root, "these stages need calibration data: add calibration: {data: FOLDER}") }
        for s in branches.flatMap(\.stages) where (s.kind == .heal || s.kind == .compressExperts) && s.options["data"] == nil && calibration == nil {
            throw RecipeError(file.path, s.line, "\(s.kind) needs \"data\" (or a calibration section whose data it can use)")
        }
        if let e = top["evaluation"] {
            guard let m = e.mapping else { throw fail(e, "evaluation must be a mapping {perplexity, tasks, task_limit, speed}") }
            for (k, v) in m {
                switch k.string ?? "" {
                case "perplexity":
                    let nodes = v.sequence.map(Array.init) ?? [v]
                    perplexityFiles = try nodes.map { try existing($0, "perplexity file") }
                case "tasks": tasks = try existing(v, "tasks file")
                case "task_limit":
                    guard let n = v.int else { throw fail(v, "task_limit must be an integer") }
                    if let p = OptionRules.problem("eval", "task_limit", Double(n)) { throw fail(v, "task_limit \(p)") }
                    taskLimit = n
                case "speed":
                    guard let b = v.bool else { throw fail(v, "speed must be true or false") }
                    speed = b
                default: throw fail(k, "unknown evaluation key \"\(k.string ?? "?")\" (known: perplexity, tasks, task_limit, speed)")
                }
            }
        }
        if let x = top["export"] {
            guard let v = x.string, ["none", "dense", "uniform"].contains(v) else { throw fail(x, "export must be none, dense or uniform") }
            export = v
        }
        if let k = top["keep_intermediate"] {
            guard let b = k.bool else { throw fail(k, "keep_intermediate must be true or false") }
            keepIntermediate = b
        }
        if let k = top["shard_size"] {
            guard let v = k.scalar?.string, let b = CheckpointWriter.parseSize(v) else { throw fail(k, "shard_size must be a size such as 5GB, 500MB or 2GiB") }
            shardSize = b
        }
    }

    static func line(of e: YamlError) -> Int? {
        let text = "\(e)"
        if let r = text.range(of: #"^(\d+):"#, options: .regularExpression) { return Int(text[r].dropLast()) }
        if let r = text.range(of: #"line (\d+)"#, options: .regularExpression) { return Int(text[r].dropFirst(5)) }
        return nil
    }
}

/// Typed reads of a stage's options (numbers may be written either way in YAML).
extension Dictionary where Key == String, Value == Recipe.OptionValue {
    func int(_ k: String) -> Int? {
        switch self[k] { case .int(let v)?: v; case .double(let v)?: Int(v); default: nil }
    }
    func double(_ k: String) -> Double? {
        switch self[k] { case .double(let v)?: v; case .int(let v)?: Double(v); default: nil }
    }
    func string(_ k: String) -> String? { if case .string(let v)? = self[k] { return v }; return nil }
}

public struct RecipeError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int?
    public let message: String
    public init(_ file: String, _ line: Int?, _ message: String) { (self.file, self.line, self.message) = (file, line, message) }
    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(message)" }
}
