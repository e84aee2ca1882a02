import Foundation
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
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let limit, items.count >= limit { break }
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            let where_ = "\(url.path):\(i + 1)"
            guard let obj = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                throw EvalError.invalid("\(where_): not a JSON object")
            }
            guard let context = obj["context"] as? String else { throw EvalError.invalid("\(where_): \"context\" is missing or not a string") }
            guard let choices = obj["choices"] as? [String], !choices.isEmpty else {
                throw EvalError.invalid("\(where_): \"choices\" is missing or not a non-empty list of strings")
            }
            guard choices.allSatisfy({ !$0.isEmpty }) else { throw EvalError.invalid("\(where_): a choice is empty") }
            guard let label = obj["label"] as? Int, !(String(describing: type(of: obj["label"]!)).contains("Boolean")) else {
                throw EvalError.invalid("\(where_): \"label\" is missing or not an integer")
            }
            guard label >= 0 && label < choices.count else {
                throw EvalError.invalid("\(where_): label \(label) is out of range for \(choices.count) choices")
            }
            let id = (obj["id"] as? String) ?? (obj["id"] as? Int).map(String.init) ?? "\(i + 1)"
            let task = (obj["task"] as? String) ?? url.deletingPathExtension().lastPathComponent
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
    public static func score(model: CausalLM, tokenizer: Tokenizer, items: [TaskItem], batch: Int = 16,
                             contextSpecialTokens: Bool = false, quiet: Bool = false) throws -> [ItemScore] {
        let progress = StageProgress("tasks", total: items.count, unit: "items", quiet: quiet)
        var out: [ItemScore] = []
        out.reserveCapacity(items.count)
        let maxLen = model.description.maxPositions
        var start = 0
        while start < items.count {
            let chunk = Array(items[start..<min(start + batch, items.count)])
            var contexts: [[Int]] = []
            var choiceIDs: [[[Int]]] = []
            for item in chunk {
                var ctx = tokenizer.encode(item.context, addSpecialTokens: contextSpecialTokens)
                let ch = item.choices.map { tokenizer.encode($0) }
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
            let caches = contexts.map { _ in KVCache(for: model) }
            let hidden = model.hidden(contexts, caches: caches)
            var ends: [Int] = []
            var acc = 0
            for c in contexts { acc += c.count; ends.append(acc - 1) }
            let last = model.logits(hidden, rows: ends)
            let v = last.cols
            var scores = choiceIDs.map { $0.map { _ in 0.0 } }
            var seqs: [[Int]] = [], seqCaches: [KVCache] = [], owners: [(Int, Int)] = []
            for (i, choices) in choiceIDs.enumerated() {
                for (j, ids) in choices.enumerated() {
                    scores[i][j] = LogProbs.logProb(last.data + i * v, count: v, target: ids[0])
                    if ids.count > 1 {
                        seqs.append(Array(ids.dropLast()))
                        seqCaches.append(caches[i].copy())
                        owners.append((i, j))
                    }
                }
            }
            if !seqs.isEmpty {
                let logits = model.forward(seqs, caches: seqCaches)
                var row = 0
                for (k, seq) in seqs.enumerated() {
                    let (i, j) = owners[k]
                    let ids = choiceIDs[i][j]
                    for t in 0..<seq.count {
                        scores[i][j] += LogProbs.logProb(logits.data + (row + t) * v, count: v, target: ids[t + 1])
                    }
                    row += seq.count
                }
            }
            for (i, item) in chunk.enumerated() {
                out.append(ItemScore(id: item.id, task: item.task, label: item.label, scores: scores[i],
                                     lengths: item.choices.map { $0.count }))
            }
            progress.advance(by: chunk.count)
            start += batch
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
