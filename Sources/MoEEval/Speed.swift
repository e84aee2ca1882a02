import Foundation
import MoETensor
import MoEModels

/// Prefill and decode speed of one or more models, runs interleaved so machine noise hits them alike:
/// prefill is one forward pass over `tokens` seeded prompt ids (all logits), decode `decode` greedy steps
/// through the KV cache; best of `repeats` after a warm-up.
public enum Speed {
    public struct Result: Codable, Sendable {
        public var prefillTokensPerSecond: Double
        public var timeToFirstTokenMs: Double
        public var decodeTokensPerSecond: Double
    }

    public static func measure(_ models: [CausalLM], tokens: Int = 128, decode: Int = 64, repeats: Int = 3, seed: UInt64 = 0,
                               progress: ((Int, Int) -> Void)? = nil) -> [Result] {
        var rng = SeededGenerator(seed: seed)
        let vocab = models.map(\.vocabSize).min() ?? 1
        let prompt = (0..<tokens).map { _ in Int(rng.next() % UInt64(vocab)) }
        func argmaxLast(_ logits: Tensor) -> Int {
            let v = logits.cols, row = logits.data + (logits.rows - 1) * v
            var best = 0
            for i in 1..<v where row[i] > row[best] { best = i }
            return best
        }
        for m in models { _ = m.forward([Array(prompt.prefix(16))]) }   // warm-up
        var best = [(prefill: Double, ttft: Double, decode: Double)](repeating: (.infinity, .infinity, .infinity), count: models.count)
        for r in 0..<repeats {
            for (i, m) in models.enumerated() {
                progress?(r, i)
                let cache = KVCache(for: m)
                let s = Date()
                let logits = m.forward([prompt], caches: [cache])
                let prefill = Date().timeIntervalSince(s)
                var next = argmaxLast(logits)
                let ttft = Date().timeIntervalSince(s)
                let d0 = Date()
                for _ in 0..<decode { next = argmaxLast(m.forward([[next]], caches: [cache])) }
                let dec = Date().timeIntervalSince(d0)
                best[i] = (min(best[i].prefill, prefill), min(best[i].ttft, ttft), min(best[i].decode, dec))
            }
        }
        return best.map { Result(prefillTokensPerSecond: Double(tokens) / $0.prefill, timeToFirstTokenMs: $0.ttft * 1000,
                                 decodeTokensPerSecond: Double(decode) / $0.decode) }
    }
}
