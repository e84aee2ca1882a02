import Foundation
import MoETensor
import MoEModels
import MoETokenizer

/// Perplexity with MoEPress's protocol, which the HF oracle (tools/oracle/eval_oracle.py) computes the
/// same way: tokenize each file whole without special tokens; cut the ids into consecutive windows of
/// `seqLen` tokens (a last, shorter window is kept if it has ≥ 2 tokens); score each window on its own
/// (no BOS, no carried context); NLL averaged over every predicted token.
public struct PerplexityReport: Codable, Sendable {
    public struct FileStats: Codable, Sendable {
        public var perplexity: Double
        public var nll: Double
        public var tokens: Int
    }
    public var files: [String: FileStats]
    public var perplexity: Double
    public var nll: Double
    public var tokens: Int
}

public enum Perplexity {
    /// Windows of token ids for one file's ids.
    public static func windows(_ ids: [Int], seqLen: Int) -> [[Int]] {
        var out: [[Int]] = []
        var i = 0
        while i < ids.count {
            let w = Array(ids[i..<min(i + seqLen, ids.count)])
            if w.count >= 2 { out.append(w) }
            i += seqLen
        }
        return out
    }

    /// Σ −log p(token | prefix) over the predicted tokens of each window, and their count. Windows go through
    /// the model layer-major, as many at a time as `budget` allows (chunking changes no result); logits are
    /// computed 64 rows at a time, so the vocabulary projection of a chunk never exists whole.
    public static func score(model: CausalLM, windows: [[Int]], budget: MemoryBudget = .default, progress: StageProgress? = nil) throws -> (nll: Double, tokens: Int) {
        let plan = MemoryPlan(model)
        let chunks = try plan.chunks(lengths: windows.map(\.count), budget: budget)
        let evict = plan.streams(under: budget)
        var total = 0.0, count = 0
        for range in chunks {
            let chunk = Array(windows[range])
            let hidden = model.hidden(chunk, evict: evict)
            var row = 0
            for w in chunk {
                model.forEachLogitsBlock(hidden, rows: row..<(row + w.count - 1)) { r0, logits in
                    let v = logits.cols
                    for i in 0..<logits.rows {
                        let t = r0 + i - row
                        total -= LogProbs.logProb(logits.data + i * v, count: v, target: w[t + 1])
                    }
                }
                count += w.count - 1
                row += w.count
                guard total.isFinite else { throw model.nonFiniteError("log-probabilities") }
            }
            progress?.advance(by: chunk.count)
        }
        return (total, count)
    }

    public static func evaluate(model: CausalLM, tokenizer: Tokenizer, files: [URL], seqLen: Int = 256, budget: MemoryBudget = .default,
                                quiet: Bool = false) throws -> PerplexityReport {
        try evaluate(model: model, tokenizer: tokenizer, texts: files.map { ($0.lastPathComponent, try readText($0)) }, seqLen: seqLen, budget: budget, quiet: quiet)
    }

    /// The validation slices (`TextSplit`, the last ~10% of each file, which calibration and training never
    /// read) of the `.txt` files of `folder`: what tuning is scored on.
    public static func validationTexts(of folder: URL) throws -> [(name: String, text: String)] {
        do {
            return try TextSplit.textFiles(in: folder).map { ($0.lastPathComponent, try TextSplit.read($0, .validation).text) }
        } catch let e as DataFileError { throw EvalError.invalid(e.description) }
    }

    /// Named texts, each scored as a file would be.
    public static func evaluate(model: CausalLM, tokenizer: Tokenizer, texts: [(name: String, text: String)], seqLen: Int = 256,
                                budget: MemoryBudget = .default, quiet: Bool = false) throws -> PerplexityReport {
        guard seqLen >= 2 else { throw EvalError.invalid("--seq-len must be at least 2") }
        var perFile: [String: PerplexityReport.FileStats] = [:]
        var allNLL = 0.0, allTokens = 0
        var prepared: [(String, [[Int]])] = []
        for (name, text) in texts {
            let ids = try tokenizer.encode(text)
            try model.validate(tokens: [ids])
            prepared.append((name, windows(ids, seqLen: seqLen)))
        }
        let progress = StageProgress("perplexity", total: prepared.reduce(0) { $0 + $1.1.count }, unit: "windows", quiet: quiet)
        for (name, ws) in prepared {
            let (nll, n) = try score(model: model, windows: ws, budget: budget, progress: progress)
            guard n > 0 else { throw EvalError.invalid("\(name): fewer than 2 tokens, nothing to score") }
            // exp overflows past a mean NLL of ~709: a score that is not a number is an error, never printed.
            guard exp(nll / Double(n)).isFinite else { throw model.nonFiniteError("a perplexity for \(name) (mean NLL \(nll / Double(n)) per token)") }
            perFile[name] = .init(perplexity: exp(nll / Double(n)), nll: nll / Double(n), tokens: n)
            allNLL += nll
            allTokens += n
        }
        return PerplexityReport(files: perFile, perplexity: exp(allNLL / Double(allTokens)), nll: allNLL / Double(allTokens), tokens: allTokens)
    }
}

public enum EvalError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let s): return s
        }
    }
}

/// A UTF-8 text file, with errors that name it.
public func readText(_ url: URL) throws -> String {
    guard FileManager.default.fileExists(atPath: url.path) else { throw EvalError.invalid("\(url.path): no such file") }
    guard let data = FileManager.default.contents(atPath: url.path) else { throw EvalError.invalid("\(url.path): cannot read") }
    guard let s = String(data: data, encoding: .utf8) else { throw EvalError.invalid("\(url.path): not UTF-8 text") }
    guard !s.isEmpty else { throw EvalError.invalid("\(url.path): the file is empty") }
    return s
}
