import Foundation
import MoETensor
import MoEModels

/// Prefill and decode speed of one or more models under the project's benchmark protocol (BENCHMARKS.md,
/// "Protocol"): one warm-up, then `rounds` rounds that each time every model once, in the same order (A B A B …),
/// so machine noise hits them alike; each figure is reported as the median, min and max over the rounds.
/// Prefill is one forward pass over `tokens` seeded prompt ids (all logits), time to first token is prefill
/// plus choosing the first token, and decode is `decode` greedy steps through the KV cache that the prompt
/// filled: decode starts from a context of `tokens` tokens.
public enum Speed {
    /// Median, min and max of one figure over the rounds. The median of an even count is the mean of the two
    /// middle samples (as Python's `statistics.median`, which tools/bench/protocol.py uses for the peers).
    public struct Summary: Codable, Sendable, Equatable {
        public var median: Double
        public var min: Double
        public var max: Double

        public init(median: Double, min: Double, max: Double) {
            self.median = median
            self.min = min
            self.max = max
        }

        /// The summary of `samples`; nil when there are none.
        public init?(_ samples: [Double]) {
            guard !samples.isEmpty else { return nil }
            let s = samples.sorted(), n = s.count
            self.init(median: n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, min: s[0], max: s[n - 1])
        }

        /// The same summary of a rate or time scaled by `factor` (a positive constant keeps the order).
        public func scaled(_ factor: Double) -> Summary { Summary(median: median * factor, min: min * factor, max: max * factor) }
        /// `count / x` for each: a time in seconds turned into a rate (min and max swap).
        public func reciprocal(_ count: Double) -> Summary { Summary(median: count / median, min: count / max, max: count / min) }
    }

    /// One model's speed over the rounds.
    public struct Result: Codable, Sendable {
        public var rounds: Int
        /// Prompt tokens per second of prefill.
        public var prefill: Summary
        /// Milliseconds from the start of prefill to the first token chosen.
        public var timeToFirstToken: Summary
        /// Decoded tokens per second, starting after the prompt.
        public var decode: Summary
        /// Which prompt the seed made: FNV-1a of its ids, in hex.
        public var promptDigest: String?

        public init(rounds: Int, prefill: Summary, timeToFirstToken: Summary, decode: Summary, promptDigest: String? = nil) {
            self.rounds = rounds
            self.prefill = prefill
            self.timeToFirstToken = timeToFirstToken
            self.decode = decode
            self.promptDigest = promptDigest
        }

        /// The medians, under the names callers used before there were rounds.
        public var prefillTokensPerSecond: Double { prefill.median }
        public var timeToFirstTokenMs: Double { timeToFirstToken.median }
        public var decodeTokensPerSecond: Double { decode.median }
    }

    /// Calls `body(round, index)` for `rounds` rounds of `count` items, every item once per round in index order
    /// (A B A B … for two), and returns each item's samples in round order.
    public static func alternate<Sample>(rounds: Int, count: Int, _ body: (_ round: Int, _ index: Int) throws -> Sample) rethrows -> [[Sample]] {
        var samples = [[Sample]](repeating: [], count: count)
        for r in 0..<max(rounds, 0) {
            for i in 0..<count { samples[i].append(try body(r, i)) }
        }
        return samples
    }

    /// `rounds` must be at least 1 (the protocol wants at least 5 for published figures).
    public static func measure(_ models: [CausalLM], tokens: Int = 128, decode: Int = 64, rounds: Int = 5, seed: UInt64 = 0,
                               progress: ((Int, Int) -> Void)? = nil) -> [Result] {
        precondition(rounds >= 1, "Speed.measure needs at least one round")
        var rng = SeededGenerator(seed: seed)
        let vocab = models.map(\.vocabSize).min() ?? 1
        let prompt = (0..<tokens).map { _ in Int(rng.next() % UInt64(vocab)) }
        func argmaxLast(_ logits: Tensor) -> Int {
            let v = logits.cols, row = logits.data + (logits.rows - 1) * v
            var best = 0
            for i in 1..<v where row[i] > row[best] { best = i }
            return best
        }
        // Warm-up: the whole prompt once, so every expert's pages are in memory before anything is timed.
        for m in models { _ = m.forward([prompt]) }
        let samples = alternate(rounds: rounds, count: models.count) { r, i -> (prefill: Double, ttft: Double, decode: Double) in
            progress?(r, i)
            let m = models[i]
            let cache = KVCache(for: m)
            let s = Date()
            let logits = m.forward([prompt], caches: [cache])
            let prefill = Date().timeIntervalSince(s)
            var next = argmaxLast(logits)
            let ttft = Date().timeIntervalSince(s)
            let d0 = Date()
            for _ in 0..<decode { next = argmaxLast(m.forward([[next]], caches: [cache])) }
            return (prefill, ttft, Date().timeIntervalSince(d0))
        }
        let digest = String(prompt.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }, radix: 16)
        return samples.map { s in
            Result(rounds: rounds, prefill: Summary(s.map(\.prefill))!.reciprocal(Double(tokens)),
                   timeToFirstToken: Summary(s.map(\.ttft))!.scaled(1000), decode: Summary(s.map(\.decode))!.reciprocal(Double(decode)),
                   promptDigest: digest)
        }
    }

    /// The line that heads every speed table (BENCHMARKS.md, "Protocol"): the CPU model and the flags that decide
    /// which kernels run (avx2, avx512f, avx512_bf16, avx512_fp16, every amx_*), the instruction set MoEPress's
    /// kernels dispatch to, the memory read bandwidth as measured, the date, and the commit when known
    /// (`MOEPRESS_COMMIT`, which the scripts under tools/bench set from git).
    public struct Machine: Codable, Sendable {
        public var cpu: String
        public var flags: [String]
        public var kernels: String
        public var threads: Int
        public var readGBPerSecond: Double
        public var date: String
        public var commit: String?

        public init(cpu: String, flags: [String], kernels: String, threads: Int, readGBPerSecond: Double, date: String, commit: String?) {
            self.cpu = cpu
            self.flags = flags
            self.kernels = kernels
            self.threads = threads
            self.readGBPerSecond = readGBPerSecond
            self.date = date
            self.commit = commit
        }

        /// This machine, from `cpuinfo` (the text of /proc/cpuinfo), with a bandwidth measured by the caller.
        public init(readGBPerSecond: Double, cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
                    commit: String? = ProcessInfo.processInfo.environment["MOEPRESS_COMMIT"], date: Date = Date()) {
            var cpu = "unknown CPU", flags: [String] = []
            for line in (cpuinfo ?? "").split(separator: "\n") {
                let kv = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard kv.count == 2 else { continue }
                if kv[0] == "model name", cpu == "unknown CPU" { cpu = kv[1] }
                if kv[0] == "flags", flags.isEmpty {
                    let have = Set(kv[1].split(separator: " ").map(String.init))
                    flags = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16"].filter(have.contains) + have.filter { $0.hasPrefix("amx") }.sorted()
                }
            }
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withTimeZone]
            self.init(cpu: cpu, flags: flags, kernels: KernelISA.current.description, threads: Compute.threads, readGBPerSecond: readGBPerSecond,
                      date: f.string(from: date), commit: commit.flatMap { $0.isEmpty ? nil : $0 })
        }

        public var line: String {
            let amx = flags.contains { $0.hasPrefix("amx") } ? "" : ", no amx"
            return "machine: \(cpu) (\(flags.joined(separator: " "))\(amx)) · MoEPress kernels \(kernels) · "
                + String(format: "read bandwidth %.1f GB/s (%d %@)", readGBPerSecond, threads, threads == 1 ? "thread" : "threads")
                + " · \(date) · commit \(commit ?? "unknown")"
        }
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
