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
        /// The prompt's ids (FNV-1a of them): which prompt the seed made.
        public var promptDigest: String?
    }

    public static func measure(_ models: [CausalLM], tokens: Int = 128, decode: Int = 64, repeats: Int = 3, seed: UInt64 = 0,
                               progress: ((Int, Int) -> Void)? = nil) -> [Result] {
        var rng = SeededGenerator(seed: seed)
        let vocab = models.map(\.vocabSize).min() ?? 1
        let prompt = (0..<tokens).map { _ in Int(rng.next() % UInt64(vocab)) }
        let digest = String(prompt.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }, radix: 16)
        func argmaxLast(_ logits: Tensor) -> Int {
            let v = logits.cols, row = logits.data + (logits.rows - 1) * v
            var best = 0
            for i in 1..<v where row[i] > row[best] { best = i }
            return best
        }
        // Warm-up: the whole prompt once, so every expert's pages are in memory before anything is timed.
        for m in models { _ = m.forward([prompt]) }
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
                                 decodeTokensPerSecond: Double(decode) / $0.decode, promptDigest: digest) }
    }

    /// The machine's memory read bandwidth in bytes per second: `Compute.threads` threads sum disjoint parts of a
    /// `bytes` buffer (touched first, so it is resident), best of `repeats`. What a decode step that reads
    /// every active weight once per token is bounded by.
    public static func readBandwidth(bytes: Int = 2 << 30, repeats: Int = 5) -> Double {
        let n = bytes / 4
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { buf.deallocate() }
        let p = SendablePointer(buf)
        parallelChunks(n, align: 1 << 16) { r in for i in r { p[i] = Float(i & 1023) } }
        var best = Double.infinity
        var sink: Float = 0
        for _ in 0..<repeats {
            var sums = [Float](repeating: 0, count: Compute.threads * 16)
            let start = Date()
            sums.withUnsafeMutableBufferPointer { sb in
                let out = SendablePointer(sb.baseAddress!)
                let per = (n / Compute.threads) / 64 * 64
                parallelFor(Compute.threads) { t in
                    let lo = t * per, hi = t == Compute.threads - 1 ? n / 64 * 64 : lo + per
                    var a = SIMD16<Float>(), b = SIMD16<Float>(), c = SIMD16<Float>(), d = SIMD16<Float>()
                    var i = lo
                    while i < hi {
                        let q = UnsafeRawPointer(p.raw + i)
                        a += q.loadUnaligned(as: SIMD16<Float>.self)
                        b += q.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self)
                        c += q.loadUnaligned(fromByteOffset: 128, as: SIMD16<Float>.self)
                        d += q.loadUnaligned(fromByteOffset: 192, as: SIMD16<Float>.self)
                        i += 64
                    }
                    out[t * 16] = (a + b + c + d).sum()
                }
            }
            best = min(best, Date().timeIntervalSince(start))
            sink += sums.reduce(0, +)
        }
        if sink.isNaN { print("") }   // keeps the sums alive
        return Double(n / 64 * 64 * 4) / best
    }
}
