import Foundation
import MoETensor
import MoEModels
import MoETokenizer

/// Instruction-following on held-out examples (how the Compressed Experts paper judges a fine-tuned model):
/// the log-likelihood of the reference response after the prompt (`InstructionExample.prompt`, the template
/// training uses), and whether the greedy answer equals the reference after normalisation (case, surrounding
/// white space and a final full stop ignored, inner white space collapsed).
public struct InstructionReport: Codable, Sendable {
    public struct Sample: Codable, Sendable {
        public var source: String
        public var reference: String
        public var answer: String
        public var logLikelihood: Double
        public var exact: Bool
    }
    public var items: Int
    /// Mean over items of Σ log p(response tokens | prompt).
    public var meanLogLikelihood: Double
    /// −Σ log p / Σ response tokens (nats per token).
    public var responseNLLPerToken: Double
    public var exactMatch: Double
    public var samples: [Sample]
}

public enum Instructions {
    /// The comparison form of an answer.
    public static func normalized(_ s: String) -> String {
        var t = s.lowercased().split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
        while t.hasSuffix(".") { t.removeLast() }
        return t.trimmingCharacters(in: .whitespaces)
    }

    /// Scores `items`: log-likelihoods layer-major within `budget` (the multiple-choice machinery with the reference
    /// as the only choice; the prompt encoded without special tokens, as training encodes it), then a greedy answer of at most the reference's length + `slack` tokens per item.
    public static func score(model: CausalLM, tokenizer: Tokenizer, items: [InstructionExample], budget: MemoryBudget = .default,
                             slack: Int = 4, quiet: Bool = false) throws -> InstructionReport {
        guard !items.isEmpty else { throw EvalError.invalid("no instruction examples to score") }
        let tasks = items.enumerated().map { i, e in TaskItem(id: e.source.isEmpty ? "\(i)" : e.source, task: "instructions", context: e.prompt,
                                                              choices: [e.response], label: 0) }
        let ll = try MultipleChoice.score(model: model, tokenizer: tokenizer, items: tasks, budget: budget, quiet: quiet)
        let progress = StageProgress("greedy answers", total: items.count, unit: "items", quiet: quiet)
        var samples: [InstructionReport.Sample] = []
        var tokens = 0
        for (i, e) in items.enumerated() {
            let n = try tokenizer.encode(e.response).count
            tokens += n
            let (ids, _, _) = try Generation.generate(model: model, tokenizer: tokenizer, prompt: e.prompt, maxTokens: n + slack,
                                                           addSpecialTokens: false)
            let answer = try tokenizer.decode(ids, skipSpecialTokens: true)
            samples.append(.init(source: e.source, reference: e.response, answer: answer, logLikelihood: ll[i].scores[0],
                                 exact: normalized(answer) == normalized(e.response)))
            progress.advance()
        }
        let sum = samples.reduce(0) { $0 + $1.logLikelihood }
        return InstructionReport(items: items.count, meanLogLikelihood: sum / Double(items.count), responseNLLPerToken: -sum / Double(max(tokens, 1)),
                                 exactMatch: Double(samples.filter(\.exact).count) / Double(items.count), samples: samples)
    }
}
