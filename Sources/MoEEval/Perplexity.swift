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

    /// Σ −log p(token | prefix) over the predicted tokens of each window, and their count.
    public static func score(model: CausalLM, windows: [[Int]], batch: Int = 8, progress: StageProgress? = nil) -> (nll: Double, tokens: Int) {
        var total = 0.0, count = 0
        var start = 0
        while start < windows.count {
            let chunk = Array(windows[start..<min(start + batch, windows.count)])
            let logits = model.forward(chunk)
            let v = logits.cols
            var row = 0
            for w in chunk {
                for t in 0..<(w.count - 1) {
                    total -= LogProbs.logProb(logits.data + (row + t) * v, count: v, target: w[t + 1])
                }
                count += w.count - 1
                row += w.count
            }
            progress?.advance(by: chunk.count)
            start += batch
        }
        return (total, count)
    }

    public static func evaluate(model: CausalLM, tokenizer: Tokenizer, files: [URL], seqLen: Int = 256, batch: Int = 8,
                                quiet: Bool = false) throws -> PerplexityReport {
        guard seqLen >= 2 else { throw EvalError.invalid("--seq-len must be at least 2") }
        var perFile: [String: PerplexityReport.FileStats] = [:]
        var allNLL = 0.0, allTokens = 0
        var prepared: [(String, [[Int]])] = []
        for f in files {
            let text = try readText(f)
            let ids = tokenizer.encode(text)
            try model.validate(tokens: [ids])
            prepared.append((f.lastPathComponent, windows(ids, seqLen: seqLen)))
        }
        let progress = StageProgress("perplexity", total: prepared.reduce(0) { $0 + $1.1.count }, unit: "windows", quiet: quiet)
        for (name, ws) in prepared {
            let (nll, n) = score(model: model, windows: ws, batch: batch, progress: progress)
            guard n > 0 else { throw EvalError.invalid("\(name): fewer than 2 tokens, nothing to score") }
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
        switch self { case .invalid(let s): return s }
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
