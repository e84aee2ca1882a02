import Foundation
import MoEJSON
import MoETensor
import MoEModels
import MoETokenizer

/// One multiple-choice item of a JSONL task file (lm-eval style).
public struct TaskItem: Codable, Sendable, Equatable {
    public var id: String
    public var task: String
    public var context: String
    public var choices: [String]
    public var label: Int
}

public struct ItemScore: Codable, Sendable {
    public var id: String
    public var task: String
    public var label: Int
    /// Σ log p(choice tokens | context), one per choice.
    public var scores: [Double]
    /// Characters of each choice (lm-eval's acc_norm denominator).
    public var lengths: [Int]
    public var prediction: Int { argmaxLowest(scores) }
    public var predictionNorm: Int { argmaxLowest(zip(scores, lengths).map { $0 / Double(max($1, 1)) }) }
}

/// argmax with ties to the lowest index (numpy's and lm-eval's convention).
func argmaxLowest(_ v: [Double]) -> Int {
    var best = 0
    for i in 1..<max(v.count, 1) where v[i] > v[best] { best = i }
    return best
}

public struct TaskReport: Codable, Sendable {
    public struct Stats: Codable, Sendable {
        public var acc: Double
        public var acc_norm: Double
        public var n: Int
    }
    public var tasks: [String: Stats]
    public var acc: Double
    public var acc_norm: Double
    public var n: Int
}

public enum MultipleChoice {
    /// Reads and validates a task file; every problem names the file and line. `limit` keeps the first N items.
    public static func load(_ url: URL, limit: Int? = nil) throws -> [TaskItem] {
        let text = try readText(url)
        var items: [TaskItem] = []
        for (n, obj) in try JSON.lines(text, limit: limit, problem: { EvalError.invalid("\(url.path):\($0): \($1)") }) {
            let where_ = "\(url.path):\(n)"
            guard let context = obj["context"]?.string else { throw EvalError.invalid("\(where_): \"context\" is missing or not a string") }
            guard let choices = obj["choices"]?.stringList, !choices.isEmpty else {
                throw EvalError.invalid("\(where_): \"choices\" is missing or not a non-empty list of strings")
            }
            guard choices.allSatisfy({ !$0.isEmpty }) else { throw EvalError.invalid("\(where_): a choice is empty") }
            guard let label = obj["label"]?.int else { throw EvalError.invalid("\(where_): \"label\" is missing or not an integer") }
            guard label >= 0 && label < choices.count else {
                throw EvalError.invalid("\(where_): label \(label) is out of range for \(choices.count) choices")
            }
            // Optional fields of the wrong type are refused, not replaced by a default.
            var id = "\(n)", task = url.deletingPathExtension().lastPathComponent
            if let v = obj["id"], !v.isNull {
                guard let s = v.string ?? v.int.map(String.init) else { throw EvalError.invalid("\(where_): \"id\" should be a string or an integer, not \(v.kindName)") }
                id = s
            }
            if let v = obj["task"], !v.isNull {
                guard let s = v.string else { throw EvalError.invalid("\(where_): \"task\" should be a string, not \(v.kindName)") }
                task = s
            }
            items.append(TaskItem(id: id, task: task, context: context, choices: choices, label: label))
        }
        guard !items.isEmpty else { throw EvalError.invalid("\(url.path): no items") }
        return items
    }

    /// Scores every choice of every item. The context is run once per item and its KV cache copied for
    /// each choice; items are processed `batch` at a time. Sequences longer than the model's context are
    /// cut from the left, as lm-eval does (keeping the last max_positions + 1 tokens of context + choice).
    /// `contextSpecialTokens` encodes the context with the tokenizer's special tokens (e.g. a BOS), which is
    /// what lm-eval 0.4 does by default; MoEPress's protocol (and the reference numbers) leave them out.
    public static func score(model: CausalLM, tokenizer: Tokenizer, items: [TaskItem], budget: MemoryBudget = .default, limit: Int? = nil,
                             contextSpecialTokens: Bool = false, quiet: Bool = false) throws -> [ItemScore] {
        let maxLen = model.description.maxPositions
        var contexts: [[Int]] = [], choiceIDs: [[[Int]]] = []
        for item in items {
            var ctx = try tokenizer.encode(item.context, addSpecialTokens: contextSpecialTokens)
            let ch = try item.choices.map { try tokenizer.encode($0) }
            if let bad = ch.firstIndex(where: { $0.isEmpty }) {
                throw EvalError.invalid("item \(item.id): choice \(bad) encodes to no tokens")
            }
            let longest = ch.map(\.count).max()!
            if ctx.count + longest > maxLen + 1 { ctx = Array(ctx.suffix(max(1, maxLen + 1 - longest))) }
            guard !ctx.isEmpty else { throw EvalError.invalid("item \(item.id): the context encodes to no tokens") }
            try model.validate(tokens: [ctx] + ch)
            contexts.append(ctx)
            choiceIDs.append(ch)
        }
        // Items go through the model layer-major, as many at a time as the budget allows (counting each choice's
        // tokens and its copy of the context's keys and values), `limit` at most.
        let plan = MemoryPlan(model)
        let lengths = zip(contexts, choiceIDs).map { c, ch in c.count + ch.reduce(0) { $0 + c.count + $1.count } }
        var chunks = try plan.chunks(lengths: lengths, budget: budget)
        if let limit { chunks = chunks.flatMap { r in stride(from: r.lowerBound, to: r.upperBound, by: max(1, limit)).map { $0..<min($0 + max(1, limit), r.upperBound) } } }
        ResourceMonitor.shared.count("task_batches", chunks.count)
        let evict = plan.streams(under: budget)
        let progress = StageProgress("tasks", total: items.count, unit: "items", quiet: quiet)
        var out: [ItemScore] = []
        out.reserveCapacity(items.count)
        for range in chunks {
            // Each choice's first token is predicted from the context's last position; the rest from the choice
            // run as a continuation of its context.
            var conts: [(prefix: Int, ids: [Int])] = [], owners: [(Int, Int)] = []
            for i in range {
                for (j, ids) in choiceIDs[i].enumerated() where ids.count > 1 {
                    conts.append((i - range.lowerBound, Array(ids.dropLast())))
                    owners.append((i, j))
                }
            }
            let (hp, hc) = model.hidden(prefixes: Array(contexts[range]), continuations: conts, evict: evict)
            var ends: [Int] = [], acc = 0
            for i in range { acc += contexts[i].count; ends.append(acc - 1) }
            let last = model.logits(hp, rows: ends)
            let v = last.cols
            var scores = choiceIDs[range].map { $0.map { _ in 0.0 } }
            for i in range {
                for (j, ids) in choiceIDs[i].enumerated() {
                    scores[i - range.lowerBound][j] = LogProbs.logProb(last.data + (i - range.lowerBound) * v, count: v, target: ids[0])
                }
            }
            var row = 0
            for (k, c) in conts.enumerated() {
                let (i, j) = owners[k]
                let ids = choiceIDs[i][j]
                model.forEachLogitsBlock(hc, rows: row..<(row + c.ids.count)) { r0, logits in
                    for r in 0..<logits.rows {
                        scores[i - range.lowerBound][j] += LogProbs.logProb(logits.data + r * v, count: v, target: ids[r0 + r - row + 1])
                    }
                }
                row += c.ids.count
            }
            guard scores.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { throw model.nonFiniteError("choice scores") }
            for i in range {
                let item = items[i]
                out.append(ItemScore(id: item.id, task: item.task, label: item.label, scores: scores[i - range.lowerBound],
                                     lengths: item.choices.map { $0.count }))
            }
            progress.advance(by: range.count)
        }
        return out
    }

    /// Accuracy per task and overall (micro-average over items).
    public static func report(_ scores: [ItemScore]) -> TaskReport {
        var per: [String: (acc: Int, norm: Int, n: Int)] = [:]
        for s in scores {
            var e = per[s.task] ?? (0, 0, 0)
            e.acc += s.prediction == s.label ? 1 : 0
            e.norm += s.predictionNorm == s.label ? 1 : 0
            e.n += 1
            per[s.task] = e
        }
        let tasks = per.mapValues { TaskReport.Stats(acc: Double($0.acc) / Double($0.n), acc_norm: Double($0.norm) / Double($0.n), n: $0.n) }
        let n = scores.count
        let acc = Double(per.values.reduce(0) { $0 + $1.acc }) / Double(max(n, 1))
        let norm = Double(per.values.reduce(0) { $0 + $1.norm }) / Double(max(n, 1))
        return TaskReport(tasks: tasks, acc: acc, acc_norm: norm, n: n)
    }
}
