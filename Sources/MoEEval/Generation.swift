import Foundation
import MoETensor
import MoEModels
import MoETokenizer

/// Text generation through the KV cache: greedy by default; with a temperature, nucleus (top-p)
/// sampling from a seeded generator, so a seed reproduces the text exactly.
public struct Sampling: Sendable {
    public var temperature: Float = 0
    public var topP: Float = 1
    public var seed: UInt64 = 0
    public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
    }
}

public enum Generation {
    /// Picks the next token from one row of logits.
    public static func pick(_ row: UnsafePointer<Float>, count v: Int, sampling: Sampling, rng: inout SeededGenerator) -> Int {
        if sampling.temperature <= 0 {
            var best = 0
            for i in 1..<v where row[i] > row[best] { best = i }
            return best
        }
        var p = (0..<v).map { row[$0] / sampling.temperature }
        p.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, count: v) }
        var order = Array(0..<v)
        order.sort { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
        var kept: [Int] = []
        var mass: Float = 0
        for i in order {
            kept.append(i)
            mass += p[i]
            if mass >= sampling.topP { break }
        }
        let r = Float(rng.nextUnit()) * mass
        var acc: Float = 0
        for i in kept {
            acc += p[i]
            if r < acc { return i }
        }
        return kept.last!
    }

    /// Generates up to `maxTokens` tokens after `prompt`, calling `onText` with each new piece of text
    /// (decoded incrementally, so multi-byte characters arrive whole). Stops at an end-of-sequence id.
    @discardableResult
    public static func generate(model: CausalLM, tokenizer: Tokenizer, prompt: String, maxTokens: Int,
                                sampling: Sampling = Sampling(), addSpecialTokens: Bool = true,
                                onText: (String) -> Void = { _ in }) throws -> (ids: [Int], timeToFirstToken: Double, decodeTokensPerSecond: Double) {
        var ids = try tokenizer.encode(prompt, addSpecialTokens: addSpecialTokens)
        guard !ids.isEmpty else { throw EvalError.invalid("the prompt encodes to no tokens") }
        try model.validate(tokens: [ids])
        let eos = Set(model.description.eosTokenIDs)
        var rng = SeededGenerator(seed: sampling.seed)
        let cache = KVCache(for: model)
        let start = Date()
        var logits = model.logits(model.hidden([ids], caches: [cache]), rows: [ids.count - 1])
        var generated: [Int] = []
        // Text is decoded together with the last few prompt tokens, so decoders that treat the first token
        // specially (Metaspace strips its leading space) see the new tokens in context.
        let anchor = Array(ids.suffix(8))
        let anchorText = try tokenizer.decode(anchor, skipSpecialTokens: true)
        func newText() throws -> String {
            let full = try tokenizer.decode(anchor + generated, skipSpecialTokens: true)
            return full.hasPrefix(anchorText) ? String(full.dropFirst(anchorText.count)) : try tokenizer.decode(generated, skipSpecialTokens: true)
        }
        var shown = ""
        var ttft = 0.0
        let decodeStart = Date()
        for step in 0..<maxTokens {
            guard (0..<logits.cols).allSatisfy({ logits.data[$0].isFinite }) else { throw model.nonFiniteError("logits") }
            let next = pick(logits.data, count: logits.cols, sampling: sampling, rng: &rng)
            if step == 0 { ttft = Date().timeIntervalSince(start) }
            if eos.contains(next) { break }
            generated.append(next)
            ids.append(next)
            let text = try newText()
            if text.hasPrefix(shown), !text.hasSuffix("\u{FFFD}") {
                onText(String(text.dropFirst(shown.count)))
                shown = text
            }
            if step + 1 < maxTokens { logits = model.forward([[next]], caches: [cache]) }
        }
        let final = try newText()
        if final.hasPrefix(shown), final.count > shown.count { onText(String(final.dropFirst(shown.count))) }
        let rate = generated.count > 1 ? Double(generated.count - 1) / Date().timeIntervalSince(decodeStart) : 0
        return (generated, ttft, rate)
    }
}
