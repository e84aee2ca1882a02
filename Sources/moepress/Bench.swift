import ArgumentParser
import Foundation
import MoETensor
import MoEModels

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed and peak memory.",
        discussion: """
        Prefill: one forward pass over --tokens prompt tokens (all logits computed, as HF does). \
        Time to first token: prefill plus choosing the first token. Decode: --decode greedy steps through the \
        KV cache, one token each. Best of --repeats runs after a warm-up. The prompt is seeded pseudo-random ids. \
        tools/bench/bench_hf.py measures HF transformers on PyTorch CPU the same way.
        """)

    @Option(help: "A Hugging Face model folder.")
    var model: String

    @Option(help: "Prompt tokens for the prefill measurement.")
    var tokens = 128

    @Option(help: "Tokens generated for the decode measurement.")
    var decode = 64

    @Option(help: "Timed repetitions (the best is reported).")
    var repeats = 3

    @Option(help: "Seed of the prompt ids.")
    var seed: UInt64 = 0

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var compute: ComputeOptions

    struct Result: Codable {
        var model: String
        var engine = "moepress"
        var threads: Int
        var promptTokens: Int
        var decodeTokens: Int
        var prefillTokensPerSecond: Double
        var timeToFirstTokenMs: Double
        var decodeTokensPerSecond: Double
        var peakRSSMiB: Double
        var loadSeconds: Double

        enum CodingKeys: String, CodingKey {
            case model, engine, threads
            case promptTokens = "prompt_tokens", decodeTokens = "decode_tokens"
            case prefillTokensPerSecond = "prefill_tokens_per_second", timeToFirstTokenMs = "time_to_first_token_ms"
            case decodeTokensPerSecond = "decode_tokens_per_second", peakRSSMiB = "peak_rss_mib", loadSeconds = "load_seconds"
        }
    }

    func run() throws {
        compute.apply()
        try reportingErrors {
            guard tokens > 0, decode > 0, repeats > 0 else { throw CLIError("--tokens, --decode and --repeats must be positive") }
            let t0 = Date()
            let m = try ModelRegistry.load(directory: modelURL(model))
            let load = Date().timeIntervalSince(t0)
            var rng = SeededGenerator(seed: seed)
            let prompt = (0..<tokens).map { _ in Int(rng.next() % UInt64(m.vocabSize)) }

            func argmaxLast(_ logits: Tensor) -> Int {
                let v = logits.cols, row = logits.data + (logits.rows - 1) * v
                var best = 0
                for i in 1..<v where row[i] > row[best] { best = i }
                return best
            }
            _ = m.forward([Array(prompt.prefix(16))])  // warm-up
            var bestPrefill = Double.infinity, bestTTFT = Double.infinity, bestDecode = Double.infinity
            for r in 0..<repeats {
                log("bench: run \(r + 1)/\(repeats)")
                let cache = KVCache(for: m)
                let s = Date()
                let logits = m.forward([prompt], caches: [cache])
                let prefill = Date().timeIntervalSince(s)
                var next = argmaxLast(logits)
                let ttft = Date().timeIntervalSince(s)
                let d0 = Date()
                for _ in 0..<decode {
                    next = argmaxLast(m.forward([[next]], caches: [cache]))
                }
                let dec = Date().timeIntervalSince(d0)
                bestPrefill = min(bestPrefill, prefill)
                bestTTFT = min(bestTTFT, ttft)
                bestDecode = min(bestDecode, dec)
            }
            Profiler.report()
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let r = Result(model: modelURL(model).path, threads: Compute.threads, promptTokens: tokens, decodeTokens: decode,
                           prefillTokensPerSecond: Double(tokens) / bestPrefill, timeToFirstTokenMs: bestTTFT * 1000,
                           decodeTokensPerSecond: Double(decode) / bestDecode, peakRSSMiB: Double(usage.ru_maxrss) / 1024,
                           loadSeconds: load)
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(r), as: UTF8.self))
            } else {
                print(String(format: "prefill  %8.1f tokens/s  (%d tokens, time to first token %.1f ms)", r.prefillTokensPerSecond, tokens, r.timeToFirstTokenMs))
                print(String(format: "decode   %8.1f tokens/s  (%d tokens)", r.decodeTokensPerSecond, decode))
                print(String(format: "peak RSS %8.1f MiB, %d threads, load %.2f s", r.peakRSSMiB, r.threads, load))
            }
        }
    }
}
