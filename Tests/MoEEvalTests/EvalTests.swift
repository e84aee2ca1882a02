import Foundation
import Testing
import MoETensor
import MoEModels
import MoETokenizer
@testable import MoEEval

enum EvalPaths {
    static var fixtures: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)! }
    static var shared: URL {
        if let s = ProcessInfo.processInfo.environment["MOEPRESS_SHARED"] { return URL(fileURLWithPath: s) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared")
    }
    static func model(_ n: String) -> URL { shared.appendingPathComponent("models/\(n)") }
    static func dev(_ f: String) -> URL { shared.appendingPathComponent("data/dev/\(f)") }
    static var devTasks: URL { shared.appendingPathComponent("data/tasks/dev.jsonl") }
    static var mmlu: URL { shared.appendingPathComponent("data/tasks/mmlu.jsonl") }

    nonisolated(unsafe) static var cache: [String: (CausalLM, Tokenizer)] = [:]
    static let lock = NSLock()
    static func load(_ name: String) throws -> (CausalLM, Tokenizer) {
        lock.lock(); defer { lock.unlock() }
        if let c = cache[name] { return c }
        let c = (try ModelRegistry.load(directory: model(name)), try Tokenizer(modelDirectory: model(name)))
        cache[name] = c
        return c
    }
}

/// What HF transformers computed (tools/oracle/eval_oracle.py).
struct EvalOracle: Decodable {
    struct Item: Decodable { let id: String; let scores: [Double] }
    struct PPL: Decodable { let nll: Double; let perplexity: Double; let tokens: Int }
    struct Model: Decodable { let items: [Item]; let perplexity: [String: PPL] }
    let per_task: Int
    let models: [String: Model]
    static let shared = try! JSONDecoder().decode(EvalOracle.self, from: Data(contentsOf: EvalPaths.fixtures.appendingPathComponent("eval_oracle.json")))
}

@Suite(.serialized) struct PerplexityTests {
    @Test(arguments: ["mixtral-ref", "qwen-moe-ref"])
    func matchesHFOracle(_ name: String) throws {
        let (model, tok) = try EvalPaths.load(name)
        let oracle = EvalOracle.shared.models[name]!.perplexity
        let files = oracle.keys.sorted()
        #expect(files.count >= 2)
        let r = try Perplexity.evaluate(model: model, tokenizer: tok, files: files.map(EvalPaths.dev), quiet: true)
        // The reference numbers shipped with the model (HF, same protocol) too.
        let refData = try Data(contentsOf: EvalPaths.model(name).appendingPathComponent("reference/dev_ppl.json"))
        let reference = try JSONSerialization.jsonObject(with: refData) as! [String: [String: Double]]
        for f in files {
            let got = r.files[f]!
            #expect(got.tokens == oracle[f]!.tokens)
            #expect(abs(got.perplexity / oracle[f]!.perplexity - 1) < 1e-3, "\(name) \(f): \(got.perplexity) vs HF \(oracle[f]!.perplexity)")
            #expect(abs(got.perplexity / reference[f]!["ppl"]! - 1) < 1e-3, "\(name) \(f) vs reference/dev_ppl.json")
        }
        let pooledNLL = files.reduce(0.0) { $0 + oracle[$1]!.nll * Double(oracle[$1]!.tokens) } / Double(r.tokens)
        #expect(abs(r.nll - pooledNLL) < 1e-4)
    }

    @Test func windowing() {
        #expect(Perplexity.windows(Array(0..<10), seqLen: 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
        #expect(Perplexity.windows(Array(0..<9), seqLen: 4) == [[0, 1, 2, 3], [4, 5, 6, 7]])   // a 1-token tail predicts nothing
    }
}

@Suite(.serialized) struct MultipleChoiceTests {
    @Test(arguments: ["mixtral-ref", "qwen-moe-ref"])
    func perItemScoresMatchHF(_ name: String) throws {
        let (model, tok) = try EvalPaths.load(name)
        let oracle = EvalOracle.shared.models[name]!.items
        let all = try MultipleChoice.load(EvalPaths.devTasks)
        let byID = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
        let items = oracle.map { byID[$0.id]! }
        let scores = try MultipleChoice.score(model: model, tokenizer: tok, items: items, limit: 7, quiet: true)
        var worst = 0.0
        for (s, o) in zip(scores, oracle) {
            #expect(s.id == o.id)
            for (a, b) in zip(s.scores, o.scores) { worst = max(worst, abs(a - b)) }
        }
        #expect(worst <= 1e-3, "\(name): worst per-choice |Δ log p| = \(worst)")
        #expect(items.count == 11 * EvalOracle.shared.per_task)
    }

    /// acc and acc_norm on all 1,650 dev items equal the reference numbers HF computed for the model.
    @Test func fullDevTasksMatchReferenceAccuracy() throws {
        let (model, tok) = try EvalPaths.load("mixtral-ref")
        let items = try MultipleChoice.load(EvalPaths.devTasks)
        let r = MultipleChoice.report(try MultipleChoice.score(model: model, tokenizer: tok, items: items, quiet: true))
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: EvalPaths.model("mixtral-ref").appendingPathComponent("reference/dev_tasks.json"))) as! [String: Any]
        #expect(r.n == 1650)
        #expect(abs(r.acc - (ref["acc"] as! Double)) < 1e-9)
        #expect(abs(r.acc_norm - (ref["acc_norm"] as! Double)) < 1e-9)
    }

    /// The first 500 MMLU items: the same accuracy as lm-eval's own run of tools/lm_eval/moepress_mc.yaml,
    /// with and without the tokenizer's BOS on the context.
    @Test func mmluMatchesLMEval() throws {
        struct Fixture: Decodable { let limit: Int; let results: [String: [String: Double]] }
        let fx = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: EvalPaths.fixtures.appendingPathComponent("lm_eval_mmlu.json")))
        let (model, tok) = try EvalPaths.load("mixtral-ref")
        let items = try MultipleChoice.load(EvalPaths.mmlu, limit: fx.limit)
        for (key, special) in [("mixtral-ref/bos=false", false), ("mixtral-ref/bos=default", true)] {
            let r = MultipleChoice.report(try MultipleChoice.score(model: model, tokenizer: tok, items: items, contextSpecialTokens: special, quiet: true))
            #expect(abs(r.acc - fx.results[key]!["acc"]!) < 1e-9, "\(key): \(r.acc) vs lm-eval \(fx.results[key]!["acc"]!)")
            #expect(abs(r.acc_norm - fx.results[key]!["acc_norm"]!) < 1e-9)
        }
    }

    @Test func tiesGoToTheLowestIndex() {
        let s = ItemScore(id: "x", task: "t", label: 0, scores: [-1, -0.5, -0.5], lengths: [1, 1, 1])
        #expect(s.prediction == 1 && s.predictionNorm == 1)
        let n = ItemScore(id: "y", task: "t", label: 0, scores: [-2, -3], lengths: [2, 6])
        #expect(n.prediction == 0 && n.predictionNorm == 1)   // -3/6 > -2/2
    }
}

@Suite struct BadTaskInputTests {
    func write(_ s: String) throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-tasks-\(UUID().uuidString).jsonl")
        try s.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    @Test func errorsNameFileAndLine() throws {
        let good = #"{"id": "a", "task": "t", "context": "x", "choices": [" a", " b"], "label": 1}"#
        let cases: [(String, String)] = [
            (good + "\n{not json\n", ":2: not valid JSON"),
            // Fields of the wrong type, refused before any work (issue: reliability II).
            (#"{"id": ["a"], "task": "t", "context": "x", "choices": [" a"], "label": 0}"#, ":1: \"id\" should be a string or an integer, not a list"),
            (#"{"id": 1.5, "task": "t", "context": "x", "choices": [" a"], "label": 0}"#, ":1: \"id\" should be"),
            (#"{"id": "a", "task": ["t"], "context": "x", "choices": [" a"], "label": 0}"#, ":1: \"task\" should be a string, not a list"),
            (#"{"id": "a", "task": "t", "context": ["x"], "choices": [" a"], "label": 0}"#, ":1: \"context\" is missing or not a string"),
            (#"{"id": "a", "task": "t", "context": "x", "choices": [" a", 2], "label": 0}"#, ":1: \"choices\" is missing or not a non-empty list"),
            (#"{"id": "a", "task": "t", "context": "x", "choices": [" a"], "label": true}"#, ":1: \"label\" is missing or not an integer"),
            (#"{"id": "a", "context": "x", "context": "y", "choices": [" a"], "label": 0}"#, "appears twice"),
            (#"[1, 2]"#, ":1: not a JSON object"),
            (good + "\n" + #"{"id": "b", "task": "t", "context": "x", "choices": [" a"], "label": 3}"#, ":2: label 3 is out of range for 1 choices"),
            (#"{"id": "b", "task": "t", "context": "x", "label": 0}"#, ":1: \"choices\" is missing"),
            (#"{"id": "b", "task": "t", "choices": [" a"], "label": 0}"#, ":1: \"context\" is missing"),
            (#"{"id": "b", "task": "t", "context": "x", "choices": [" a"], "label": "0"}"#, ":1: \"label\" is missing or not an integer"),
            ("", "the file is empty"),
            ("\n\n", "no items"),
        ]
        for (text, problem) in cases {
            let u = try write(text)
            defer { try? FileManager.default.removeItem(at: u) }
            do {
                _ = try MultipleChoice.load(u)
                Issue.record("accepted: \(problem)")
            } catch let e as EvalError {
                #expect(e.description.contains(u.path) && e.description.contains(problem), "\(e)")
            }
        }
        #expect(throws: EvalError.self) { try MultipleChoice.load(URL(fileURLWithPath: "/nonexistent/tasks.jsonl")) }
        let u = try write(good + "\n" + good + "\n" + good)
        #expect(try MultipleChoice.load(u, limit: 2).count == 2)
    }
}

@Suite(.serialized) struct GenerationTests {
    @Test func greedyFollowsArgmaxAndSamplingIsSeeded() throws {
        let (model, tok) = try EvalPaths.load("mixtral-ref")
        let g = try Generation.generate(model: model, tokenizer: tok, prompt: "In the beginning", maxTokens: 6)
        // Greedy: each token is the argmax of a full forward over everything before it.
        var ids = try tok.encode("In the beginning", addSpecialTokens: true)
        for next in g.ids {
            let logits = model.forward([ids])
            let row = logits.data + (logits.rows - 1) * logits.cols
            var best = 0
            for i in 1..<logits.cols where row[i] > row[best] { best = i }
            #expect(best == next)
            ids.append(next)
        }
        let s = Sampling(temperature: 0.9, topP: 0.9, seed: 7)
        let a = try Generation.generate(model: model, tokenizer: tok, prompt: "The", maxTokens: 12, sampling: s)
        let b = try Generation.generate(model: model, tokenizer: tok, prompt: "The", maxTokens: 12, sampling: s)
        let c = try Generation.generate(model: model, tokenizer: tok, prompt: "The", maxTokens: 12, sampling: Sampling(temperature: 0.9, topP: 0.9, seed: 8))
        #expect(a.ids == b.ids)
        #expect(a.ids != c.ids)
    }
}

/// Non-finite logits never pass for a score (the issue's finite perplexity from NaN weights).
@Suite struct NonFiniteLogitsTests {
    @Test func logSumExpOfARowWithNaNOrInfinityIsNaN() {
        for bad in [Float.nan, .infinity] {
            var row: [Float] = [0.5, -1, 2, 0.25, 3, 1, 0, -2, 1.5]
            row[4] = bad
            #expect(LogProbs.logSumExp(row, count: row.count).isNaN, "\(bad)")
        }
        let ok: [Float] = [0, 0]
        #expect(abs(LogProbs.logSumExp(ok, count: 2) - log(2.0)) < 1e-6)
        let masked: [Float] = [-.infinity, 0]
        #expect(abs(LogProbs.logSumExp(masked, count: 2)) < 1e-6)
    }
}

/// `eval instructions`: the response log-likelihood equals Σ log p over the response tokens of one full forward
/// of prompt + response (a different path from the chunked multiple-choice scorer it uses), the greedy answer
/// is the model's own continuation (exact match when it is the reference), and the held-out WordNet file loads.
@Suite struct InstructionEvalTests {
    @Test func likelihoodAndExactMatch() throws {
        let (m, tok) = try EvalPaths.load("mixtral-ref")
        let first = InstructionExample(instruction: "Define the word \"house\" (a noun).", response: "a dwelling that serves as living quarters")
        // The model's own greedy answer, as a second item's reference.
        let probe = InstructionExample(instruction: "Which word (a noun) means: a young dog?", response: "x")
        let (ids, _, _) = try Generation.generate(model: m, tokenizer: tok, prompt: probe.prompt, maxTokens: 3, addSpecialTokens: false)
        let own = try tok.decode(ids, skipSpecialTokens: true)
        let second = InstructionExample(instruction: probe.instruction, response: own)
        let r = try Instructions.score(model: m, tokenizer: tok, items: [first, second], slack: 0, quiet: true)
        for (i, e) in [first, second].enumerated() {
            let p = try tok.encode(e.prompt), a = try tok.encode(e.response)
            let logits = m.forward([p + a])
            var want = 0.0
            for (j, t) in a.enumerated() { want += LogProbs.logProb(logits.data + (p.count - 1 + j) * logits.cols, count: logits.cols, target: t) }
            #expect(abs(r.samples[i].logLikelihood - want) < 1e-3 * max(1, abs(want)), "item \(i): \(r.samples[i].logLikelihood) vs \(want)")
        }
        #expect(!own.isEmpty && r.samples[1].exact && r.samples[1].answer == own)
        #expect(!r.samples[0].exact && r.exactMatch == 0.5)
        #expect(Instructions.normalized("  A  Dwelling.\n") == "a dwelling")
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let held = try InstructionExample.load(repo.appendingPathComponent("data/instructions/wordnet-heldout.jsonl"))
        #expect(held.count == 1600)
    }
}
