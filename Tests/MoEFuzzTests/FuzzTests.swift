import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer
import MoEEval
@testable import MoEPipeline

/// Seeded mutation fuzzing of what users hand MoEPress: safetensors headers and bodies, config.json fields,
/// tokenizer.json (its regexes too) and recipes. Every case must end in a clean error or a valid result:
/// a crash fails the run, a case slower than `Fuzz.hangSeconds` is a hang, and a result must be finite
/// (scores through the same API the CLI uses, which refuses non-finite logits).
///
/// `swift test` runs `Fuzz.cases` cases per input kind (a few hundred in all, seconds); set
/// MOEPRESS_FUZZ_CASES=N for the long run (BENCHMARKS.md: ≥ 2,000 cases) and MOEPRESS_FUZZ_SEED to vary it.
enum Fuzz {
    static let env = ProcessInfo.processInfo.environment
    static let cases = env["MOEPRESS_FUZZ_CASES"].flatMap(Int.init) ?? 150
    static let seed = env["MOEPRESS_FUZZ_SEED"].flatMap(UInt64.init) ?? 2026
    static let hangSeconds = 20.0
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func fixture(_ n: String) -> URL { repo.appendingPathComponent("Tests/MoEModelsTests/Fixtures/\(n)") }
    static var shared: URL {
        env["MOEPRESS_SHARED"].map { URL(fileURLWithPath: $0) } ?? repo.deletingLastPathComponent().appendingPathComponent("shared")
    }

    final class Tally: @unchecked Sendable {
        var refused = 0, accepted = 0
        var problems: [String] = []
    }

    /// Runs one case: `body` returns normally (valid result) or throws one of the project's validation errors whose
    /// message names the input (`names`: the case's file or folder; clean refusal); any other error, and a slow case (a
    /// hang), is a problem named with the run's seed. Guards against counting an internal error (JSON, Foundation,
    /// YAML, a bare message) as a refusal.
    static func run(_ tally: Tally, _ label: String, names: String, _ body: () throws -> Void) {
        let start = Date()
        do { try body(); tally.accepted += 1 } catch let e as FuzzFailure { tally.problems.append("\(label), seed \(seed): \(e.what)") } catch {
            if !isRefusal(error) {
                tally.problems.append("\(label), seed \(seed): not a validation error: \(String(reflecting: type(of: error))): \(error)")
            } else if !"\(error)".contains(names) {
                tally.problems.append("\(label), seed \(seed): the refusal does not name \(names): \(error)")
            } else {
                tally.refused += 1
            }
        }
        let t = Date().timeIntervalSince(start)
        if t > hangSeconds { tally.problems.append("\(label): took \(Int(t)) s (hang)") }
    }

    /// The project's own errors for bad input, with a message that says something (not a bare type or case name).
    static func isRefusal(_ error: any Error) -> Bool {
        let own = switch error {
        case is CheckpointError, is ModelError, is TokenizerError, is RegexError, is DataFileError, is RecipeError, is OptionError, is EvalError,
             is TensorError: true
        default: false
        }
        let message = "\(error)".trimmingCharacters(in: .whitespacesAndNewlines)
        return own && message.count >= 12 && message.contains(" ")
    }

    static func report(_ kind: String, _ tally: Tally) {
        // The tally is noise among test results; MOEPRESS_TEST_VERBOSE=1 shows it (problems are recorded issues either way).
        if ProcessInfo.processInfo.environment["MOEPRESS_TEST_VERBOSE"] == "1" {
            print("fuzz \(kind): \(tally.accepted + tally.refused + tally.problems.count) cases, \(tally.refused) refused cleanly, \(tally.accepted) valid, \(tally.problems.count) problems")
        }
        for p in tally.problems.prefix(20) { Issue.record("\(p)") }
    }

    /// A temporary folder removed at the end of the case; every one's name starts with `tempPrefix`.
    static let tempPrefix = "moepress-fuzz-"
    static func withTemp<T>(_ body: (URL) throws -> T) rethrows -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(tempPrefix)\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    /// Loads a model folder and scores a few tokens the way `eval perplexity` does: throws (refusal, including
    /// non-finite logits) or returns a finite NLL; anything else is garbage.
    static func loadAndScore(_ dir: URL) throws {
        let m = try ModelRegistry.load(directory: dir)
        let ids = [[1, 2, 3, 4, 5].map { $0 % m.vocabSize }]
        try m.validate(tokens: ids)
        let (nll, n) = try Perplexity.score(model: m, windows: ids)
        guard nll.isFinite, n == 4 else { throw FuzzFailure(what: "loaded and scored to \(nll) over \(n) tokens") }
    }
}

struct FuzzFailure: Error { let what: String }

extension Fuzz {
    /// The config validation every command runs first (`ModelRegistry.describe`, what `inspect` and the data-free
    /// commands rely on) refuses whatever the full load refuses for a config reason: a load that fails on the
    /// config (an error that names no tensor) after describe accepted is `inspect` validating less than `logits`.
    static func sameVerdict(_ dir: URL) throws {
        var describeError: (any Error)?
        do { _ = try ModelRegistry.describe(directory: dir) } catch { describeError = error }
        do { _ = try ModelRegistry.load(directory: dir) } catch {
            let namesTensor = (error as? CheckpointError)?.tensor != nil
            if describeError == nil, !namesTensor { throw FuzzFailure(what: "describe accepted what load refuses: \(error)") }
            throw error
        }
        if let describeError { throw FuzzFailure(what: "load accepted what describe refuses: \(describeError)") }
    }

    /// Runs a case that is garbage by construction: accepted is a problem, refused must name `names`.
    static func mustRefuse(_ tally: Tally, _ label: String, names: String, _ body: () throws -> Void) {
        run(tally, label, names: names) {
            do { try body() } catch { throw error }
            throw FuzzFailure(what: "garbage accepted without a word")
        }
    }
}

extension SeededGenerator {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
}

@Suite(.serialized) struct FuzzTests {
    /// Header bytes, the header length, truncation, trailing bytes, body bytes (weights of any bit pattern).
    /// Guards against a crash, hang, non-finite score or unnamed refusal on a damaged safetensors file.
    @Test func safetensorsFiles() throws {
        let src = Fuzz.fixture("mixtral")
        let original = try Data(contentsOf: src.appendingPathComponent("model.safetensors"))
        let headerLength = original.prefix(8).withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self)) }
        var rng = SeededGenerator(seed: Fuzz.seed)
        let tally = Fuzz.Tally()
        for c in 0..<Fuzz.cases {
            var bytes = original
            let kind = rng.below(5)
            switch kind {
            case 0:  // flip header bytes
                for _ in 0...rng.below(3) { let i = 8 + rng.below(headerLength); bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
            case 1:  // header length off by a little or a lot
                let delta = rng.pick([-9, -4, -1, 1, 3, 8, 1 << 20, -headerLength, Int(Int32.max)])
                let v = UInt64(truncatingIfNeeded: headerLength + delta).littleEndian
                bytes.replaceSubrange(0..<8, with: withUnsafeBytes(of: v) { Data($0) })
            case 2: bytes = bytes.prefix(rng.below(bytes.count))
            case 3: bytes.append(contentsOf: (0..<(1 + rng.below(64))).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
            default:  // body bytes: any float bit pattern, NaN and Inf included
                for _ in 0...rng.below(8) { let i = 8 + headerLength + rng.below(bytes.count - 8 - headerLength); bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            Fuzz.run(tally, "safetensors case \(c) (mutation \(kind))", names: Fuzz.tempPrefix) {
                try Fuzz.withTemp { dir in
                    try FileManager.default.copyItem(at: src.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
                    try bytes.write(to: dir.appendingPathComponent("model.safetensors"))
                    try Fuzz.loadAndScore(dir)
                }
            }
        }
        Fuzz.report("safetensors", tally)
    }

    /// config.json fields set to values of every kind (negative, zero, huge, fractional, wrong type, null).
    /// Guards against a crash, hang, non-finite score or a refusal not naming config.json.
    @Test func configFields() throws {
        let values: [Any] = [-1, 0, 1, 2, 3, 7, 0.5, 1e12, 1e300, -1e300, 1e-300, "x", NSNull(), true, [Int](), [String: Int](), [2, 0.5], Int(Int32.max)]
        var rng = SeededGenerator(seed: Fuzz.seed &+ 1)
        let tally = Fuzz.Tally()
        for c in 0..<Fuzz.cases {
            let family = rng.pick(["mixtral", "qwen2_moe", "olmoe", "deepseek_v2", "qwen3_moe", "deepseek_v3"])
            let src = Fuzz.fixture(family)
            var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("config.json"))) as! [String: Any]
            let extra = ["rope_scaling", "sliding_window", "head_dim", "partial_rotary_factor", "moepress", "n_group", "topk_group", "shared_expert_intermediate_size"]
            let keys = obj.keys.sorted() + extra
            var changed: [String] = []
            for _ in 0...rng.below(2) {
                let key = rng.pick(keys)
                if rng.below(6) == 0 { obj.removeValue(forKey: key) } else { obj[key] = rng.pick(values) }
                changed.append(key)
            }
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .fragmentsAllowed])
            Fuzz.run(tally, "config case \(c) (\(family): \(changed))", names: Fuzz.tempPrefix) {
                try Fuzz.withTemp { dir in
                    try data.write(to: dir.appendingPathComponent("config.json"))
                    try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("model.safetensors"),
                                                               withDestinationURL: src.appendingPathComponent("model.safetensors"))
                    try Fuzz.sameVerdict(dir)
                    try Fuzz.loadAndScore(dir)
                }
            }
        }
        Fuzz.report("config", tally)
    }

    /// tokenizer.json with random regexes (nested repetitions, lookaheads, classes, huge counts) and mutated
    /// vocabularies, merges and added tokens; encoding random text gives ids of the vocabulary, or an error.
    /// Guards against a crash, hang, out-of-vocabulary id or a refusal not naming tokenizer.json.
    @Test func tokenizers() throws {
        let pieces = ["a", "b", "ab", "(", ")", "(?:", "(?=", "(?!", "(?i)", "*", "+", "?", "*?", "|", "[a-c]", "[^b]", "\\s", "\\S", "\\p{L}", "\\d",
                      "{2,3}", "{0,}", "{100000}", ".", "^", "$", "\\", "]", "{", "x+x+", "(a+)+"]
        var rng = SeededGenerator(seed: Fuzz.seed &+ 2)
        let tally = Fuzz.Tally()
        for c in 0..<Fuzz.cases {
            let pattern = (0..<(1 + rng.below(8))).map { _ in rng.pick(pieces) }.joined()
            var vocab: [String: Any] = ["a": 0, "b": 1, "c": 2, "ab": 3, "Ġ": 4, "x": 5, "!": 6]
            var merges: [Any] = ["a b"]
            var added: [[String: Any]] = [["id": 7, "content": "<s>", "special": true]]
            switch rng.below(5) {
            case 0: vocab[rng.pick(["a", "zz", "ab"])] = rng.pick([-1, 99, 1 << 40, 0.5] as [Any])
            case 1: merges.append(rng.pick(["a c", "x", "", "a b c", "ab ab"] as [Any]))
            case 2: added.append(["id": rng.pick([-5, 1_000_000_000, 3, 7, 1 << 33] as [Any]), "content": rng.pick(["", "ab", "<s>", "\u{0}"])])
            default: break
            }
            let json: [String: Any] = [
                "model": ["type": "BPE", "vocab": vocab, "merges": merges],
                "added_tokens": added,
                "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": pattern], "behavior": rng.pick(["Isolated", "Removed", "MergedWithPrevious"]), "invert": rng.below(2) == 0],
                    ["type": "ByteLevel", "add_prefix_space": false, "use_regex": rng.below(2) == 0]]],
                "decoder": ["type": "ByteLevel"],
            ]
            let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
            let text = String((0..<rng.below(48)).map { _ in rng.pick(Array("aabbbcx! \n<s>é")) })
            Fuzz.run(tally, "tokenizer case \(c) (pattern \(pattern.debugDescription), text \(text.debugDescription))", names: "tokenizer.json") {
                let t = try Tokenizer(data: data, source: "tokenizer.json")
                let ids = try t.encode(text)
                let top = t.vocabSize
                if let bad = ids.first(where: { $0 < 0 || $0 >= top }) { throw FuzzFailure(what: "id \(bad) outside 0..<\(top)") }
                _ = try t.decode(ids)
            }
        }
        Fuzz.report("tokenizer", tally)
    }

    /// Seeded generators for the classes of garbage an independent fuzzer found accepted (issue: reliability II): RoPE
    /// parameters, sliding windows, keys given twice, the "moepress" section, null epsilons, JSONL fields of the wrong
    /// type, tokenizer.json options and patterns HF refuses. Every case is garbage by construction, so each must be
    /// refused, by the config validation every command runs and by the load, naming the file.
    @Test func garbageClasses() throws {
        var rng = SeededGenerator(seed: Fuzz.seed &+ 4)
        let tally = Fuzz.Tally()
        let families = ["mixtral", "qwen2_moe", "olmoe", "deepseek_v2", "qwen3_moe", "deepseek_v3", "phimoe", "gpt_oss"]
        for c in 0..<Fuzz.cases {
            let family = rng.pick(families)
            let src = Fuzz.fixture(family)
            let configText = try String(contentsOf: src.appendingPathComponent("config.json"), encoding: .utf8)
            var obj = try JSONSerialization.jsonObject(with: Data(configText.utf8)) as! [String: Any]
            let layers = obj["num_hidden_layers"] as! Int
            let experts = (obj["num_local_experts"] ?? obj["num_experts"] ?? obj["n_routed_experts"]) as! Int
            let topK = obj["num_experts_per_tok"] as! Int
            let negative: [Any] = [-1, -0.5, -1e300, Int(Int32.min)]
            let klass = rng.below(9)
            var label = ""
            var text: String? = nil
            var slidingSource: URL? = nil
            switch klass {
            case 0:  // RoPE
                let theta: [Any] = [0, NSNull(), "x", [1]] + negative
                switch rng.below(6) {
                case 0: obj["rope_theta"] = rng.pick(theta); obj.removeValue(forKey: "rope_parameters"); label = "rope_theta"
                case 1: obj["rope_parameters"] = ["rope_type": "default", "rope_theta": rng.pick(theta)]; obj.removeValue(forKey: "rope_scaling"); label = "rope_parameters.rope_theta"
                case 2: obj["rope_parameters"] = ["rope_type": rng.pick(["warp", "ntk", "", "YARN"] as [Any] + [3, true]), "rope_theta": 10000, "factor": 2]; obj.removeValue(forKey: "rope_scaling"); label = "rope_type"
                case 3: obj["rope_parameters"] = ["rope_type": rng.pick(["yarn", "linear", "dynamic", "llama3"]), "rope_theta": 10000, "original_max_position_embeddings": 64]; obj.removeValue(forKey: "rope_scaling"); label = "factor missing"
                case 4: obj["rope_parameters"] = ["rope_type": "linear", "rope_theta": 10000, "factor": rng.pick([0, "2"] + negative)]; obj.removeValue(forKey: "rope_scaling"); label = "linear factor"
                default:
                    if rng.below(2) == 0 { obj["partial_rotary_factor"] = rng.pick([1.01, 2, 1e9, 0, NSNull()] + negative) } else { obj["rope_parameters"] = rng.pick(["x", 3, [1, 2]] as [Any]) }
                    label = "partial_rotary_factor / rope_parameters"
                }
            case 1:  // sliding window, in the families that read it (the others ignore the key, as transformers does)
                let v = rng.pick(["x", 2.5, [4], -3, Int(Int32.min)] as [Any])
                obj.removeValue(forKey: "model_type")
                let src2 = Fuzz.fixture(rng.pick(["mixtral", "qwen2_moe", "qwen3_moe", "phimoe", "gpt_oss"]))
                obj = try JSONSerialization.jsonObject(with: Data(contentsOf: src2.appendingPathComponent("config.json"))) as! [String: Any]
                slidingSource = src2
                obj["sliding_window"] = v
                if obj["model_type"] as? String == "qwen2_moe" || obj["model_type"] as? String == "qwen3_moe" { obj["use_sliding_window"] = true }
                label = "\(obj["model_type"] ?? "?") sliding_window = \(v)"
            case 2:  // a key given twice, at the top or inside an object
                let key = rng.pick(obj.keys.sorted())
                let brace = configText.firstIndex(of: "{")!
                var t = configText
                t.insert(contentsOf: "\"\(key)\": \(rng.pick(["1", "null", "\"x\"", "2.5"])), ", at: t.index(after: brace))
                text = t
                label = "\(key) twice"
            case 3:  // the moepress section
                switch rng.below(6) {
                case 0: obj["moepress"] = ["experts_per_layer": (0..<layers).map { _ in rng.pick(["4", 1.5, true, [1]] as [Any]) }]
                case 1: obj["moepress"] = ["experts_per_layer": (0..<layers).map { _ in experts + 1 + rng.below(100) }]
                case 2: obj["moepress"] = ["experts_per_layer": (0..<(layers + 1 + rng.below(3))).map { _ in 1 }]
                case 3: obj["moepress"] = ["compressed_experts": ["main_experts": rng.pick([0, -1, topK + 1 + rng.below(5), "1", NSNull()] as [Any])]]
                case 4: obj["moepress"] = [rng.pick(["speed", "experts", "lowrank", ""]): 1]
                default: obj["moepress"] = rng.pick(["x", 3, [1]] as [Any])
                }
                label = "moepress section"
            case 4:  // null where transformers needs a number
                let key = rng.pick(["rms_norm_eps", "rope_theta", "partial_rotary_factor"] + (family.hasPrefix("deepseek") ? ["routed_scaling_factor"] : []))
                obj[key] = NSNull()
                label = "\(key) null"
            default: break
            }
            if klass <= 4 {
                let data = try text.map { Data($0.utf8) } ?? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .fragmentsAllowed])
                let src = slidingSource ?? src
                Fuzz.mustRefuse(tally, "garbage config case \(c) (\(family): \(label))", names: "config.json") {
                    try Fuzz.withTemp { dir in
                        try data.write(to: dir.appendingPathComponent("config.json"))
                        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("model.safetensors"),
                                                                   withDestinationURL: src.appendingPathComponent("model.safetensors"))
                        do { _ = try ModelRegistry.describe(directory: dir) } catch {
                            do { _ = try ModelRegistry.load(directory: dir) } catch { throw error }
                            throw FuzzFailure(what: "load accepted what describe refused: \(error)")
                        }
                        throw FuzzFailure(what: "describe (every command's validation) accepted it")
                    }
                }
                continue
            }
            switch klass {
            case 5, 6:  // JSONL: instruction data and task files with one field of the wrong type
                let wrong = rng.pick(["[\"x\"]", "{\"t\": 1}", "3", "true", "2.5"])
                let line: String
                if klass == 5 {
                    let key = rng.pick(["instruction", "response", "input", "output"])
                    var fields = ["\"instruction\": \"i\"", "\"response\": \"r\""]
                    if key == "output" { fields[1] = "\"output\": \(wrong)" } else if key == "input" { fields.append("\"input\": \(wrong)") } else {
                        fields[key == "instruction" ? 0 : 1] = "\"\(key)\": \(wrong)"
                    }
                    line = "{" + fields.joined(separator: ", ") + "}"
                } else {
                    let key = rng.pick(["context", "choices", "label", "id", "task"])
                    var fields = ["context": "\"c\"", "choices": "[\" a\", \" b\"]", "label": "0", "id": "\"x\"", "task": "\"t\""]
                    fields[key] = switch key {
                    case "label": rng.pick(["\"0\"", "true", "0.5", "[0]"])
                    case "id": rng.pick(["[\"x\"]", "1.5", "{}", "true"])
                    case "choices": rng.pick(["3", "{\"t\": 1}", "[1, 2]", "[]", "\"x\"", "[\" a\", null]"])
                    default: wrong
                    }
                    line = "{" + fields.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
                }
                let good = klass == 5 ? #"{"instruction": "i", "response": "r"}"# : #"{"choices": [" a", " b"], "context": "c", "id": "y", "label": 1, "task": "t"}"#
                let lines = (0..<rng.below(3)).map { _ in good } + [line]
                Fuzz.mustRefuse(tally, "garbage jsonl case \(c) (\(line))", names: "data.jsonl:\(lines.count)") {
                    try Fuzz.withTemp { dir in
                        let f = dir.appendingPathComponent("data.jsonl")
                        try lines.joined(separator: "\n").write(to: f, atomically: true, encoding: .utf8)
                        if klass == 5 { _ = try InstructionExample.load(f) } else { _ = try MultipleChoice.load(f) }
                    }
                }
            default:  // tokenizer.json options and patterns HF refuses
                var tok: [String: Any] = ["model": ["type": "BPE", "vocab": ["a": 0, "b": 1], "merges": [String]()] as [String: Any]]
                switch rng.below(5) {
                case 0: tok["model"] = ["type": "BPE", "vocab": ["a": 0], "merges": [String](), "dropout": rng.pick([-1, 1.5, "x", -1e-9] as [Any])]
                case 1: tok["truncation"] = rng.pick(["x", 3, ["max_length": rng.pick([-1, 1.5, "8"] as [Any])], ["max_length": 8, "strategy": "Middle"], ["max_length": 8, "direction": "Up"]] as [Any])
                case 2: tok["padding"] = rng.pick(["x", 3, ["strategy": "Widest"], ["strategy": ["Fixed": -1]], ["pad_id": -2], ["direction": 1]] as [Any])
                case 3:
                    let seq: [String: Any] = rng.below(2) == 0 ? ["id": rng.pick(["C", "a", "", 1] as [Any]), "type_id": 0] : ["id": "A", "type_id": rng.pick([-1, 0.5, "0"] as [Any])]
                    tok["post_processor"] = ["type": "TemplateProcessing", "single": [["Sequence": seq]], "special_tokens": [String: Any]()]
                default:
                    let pattern = rng.pick(["[\\p{L}-\\p{N}]", "[a-\\d]", "[\\w-z]+", "a{1000000000}", "(ab){,200000}", "b{7,99999999999}", "[\\s-\\S]"])
                    tok["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false]
                }
                let data = try JSONSerialization.data(withJSONObject: tok, options: [.sortedKeys])
                Fuzz.mustRefuse(tally, "garbage tokenizer case \(c) (\(String(decoding: data, as: UTF8.self)))", names: "tokenizer.json") {
                    _ = try Tokenizer(data: data, source: "tokenizer.json")
                }
            }
        }
        Fuzz.report("garbage classes", tally)
    }

    /// Recipes with values replaced, lines dropped or repeated: refused at parse time, or every numeric option
    /// obeys its rule. Guards against an option accepted against its rule, or a refusal not naming the recipe.
    @Test func recipes() throws {
        let base = """
        model: \(Fuzz.shared.path)/models/mixtral-ref
        seed: 0
        calibration:
          data: \(Fuzz.shared.path)/data/calib
          samples: 8
          seq_len: 64
        stages:
          - prune: {method: moei2, ratio: 0.25, population: 20, generations: 3}
          - decompose: {method: svdllm, ratio: 0.6, rank_alloc: importance}
          - heal: {steps: 4, lr: 0.0002, lora_rank: 8, lora_dropout: 0.1, targets: [q, v]}
        evaluation:
          task_limit: 20
        export: none
        """
        let values = ["-1", "0", "1", "nan", ".nan", ".inf", "-.inf", "1e300", "0.5", "2", "x", "[]", "{}", "null", "true", "moeits", "99999999999999999999"]
        var rng = SeededGenerator(seed: Fuzz.seed &+ 3)
        let tally = Fuzz.Tally()
        for c in 0..<Fuzz.cases {
            var lines = base.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for _ in 0...rng.below(2) {
                let i = rng.below(lines.count)
                switch rng.below(4) {
                case 0: lines.remove(at: i)
                case 1: lines.insert(lines[i], at: i)
                default:
                    // Replace one value (after a ": ") on the line.
                    let parts = lines[i].components(separatedBy: ": ")
                    if parts.count > 1 {
                        let k = 1 + rng.below(parts.count - 1)
                        var p = parts
                        let tail = p[k].firstIndex(where: { $0 == "," || $0 == "}" }).map { String(p[k][$0...]) } ?? ""
                        p[k] = rng.pick(values) + tail
                        lines[i] = p.joined(separator: ": ")
                    }
                }
            }
            let text = lines.joined(separator: "\n")
            Fuzz.run(tally, "recipe case \(c)", names: Fuzz.tempPrefix) {
                try Fuzz.withTemp { dir in
                    let f = dir.appendingPathComponent("r.yaml")
                    try text.write(to: f, atomically: true, encoding: .utf8)
                    let r = try Recipe(file: f)
                    for s in r.branches.flatMap(\.stages) {
                        for (k, v) in s.options {
                            let x: Double? = switch v { case .int(let i): Double(i); case .double(let d): d; default: nil }
                            if let x, let rule = OptionRules.stages[s.kind.rawValue]?[k], !rule.accepts(x) {
                                throw FuzzFailure(what: "accepted \(s.kind).\(k) = \(x) against \(rule)")
                            }
                        }
                    }
                }
            }
        }
        Fuzz.report("recipe", tally)
    }
}
