import ArgumentParser
import Foundation
import MoETensor
import MoEModels
import MoEEval

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed and peak memory.",
        discussion: """
        Prefill: one forward pass over --tokens prompt tokens (all logits computed, as HF does). \
        Time to first token: prefill plus choosing the first token. Decode: --decode greedy steps through the \
        KV cache, one token each. Best of --repeats runs after a warm-up. The prompt is seeded pseudo-random ids. \
        With several --model, all are loaded and their runs interleaved (so machine noise hits them alike), and \
        a table gives each one's speed relative to the first; peak RSS is then the whole process's. \
        tools/bench/bench_hf.py measures HF transformers on PyTorch CPU the same way.
        """)

    @Option(name: .customLong("model"), help: "A Hugging Face model folder; repeat it to compare models in one run (the first is the baseline).")
    var models: [String]

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

    @Flag(help: "Also measure the machine's memory read bandwidth (--threads threads) and each model's decode speed against the bound it sets (active weight bytes per token).")
    var bandwidth = false

    @OptionGroup var memory: MemoryOptions
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
        var peakRssAnonMiB: Double
        var readMiB: Double
        var loadSeconds: Double
        /// Bytes of weights one decoded token reads, and the rate decode reads them at.
        var activeWeightGB: Double
        var decodeWeightGBPerSecond: Double
        var isa: String
        var blasCore: String
        /// With --bandwidth: the machine's read bandwidth, and decode as a fraction of the bound it sets.
        var memoryReadGBPerSecond: Double?
        var decodeFractionOfBound: Double?
        /// Which prompt --seed made (a digest of its ids).
        var promptDigest: String?

        enum CodingKeys: String, CodingKey {
            case model, engine, threads, isa, blasCore = "blas_core"
            case promptTokens = "prompt_tokens", decodeTokens = "decode_tokens"
            case prefillTokensPerSecond = "prefill_tokens_per_second", timeToFirstTokenMs = "time_to_first_token_ms"
            case decodeTokensPerSecond = "decode_tokens_per_second", peakRSSMiB = "peak_rss_mib", loadSeconds = "load_seconds"
            case peakRssAnonMiB = "peak_rss_anon_mib", readMiB = "read_mib"
            case activeWeightGB = "active_weight_gb", decodeWeightGBPerSecond = "decode_weight_gb_per_second"
            case memoryReadGBPerSecond = "memory_read_gb_per_second", decodeFractionOfBound = "decode_fraction_of_bandwidth_bound"
            case promptDigest = "prompt_digest"
        }
    }

    func run() throws {
        try compute.run {
            guard tokens > 0, decode > 0, repeats > 0 else { throw CLIError("--tokens, --decode and --repeats must be positive") }
            var loaded: [(model: CausalLM, load: Double)] = []
            try ResourceMonitor.shared.stage("load") {
                for path in models {
                    let t0 = Date()
                    loaded.append((try ModelRegistry.load(directory: modelURL(path)), Date().timeIntervalSince(t0)))
                }
            }
            for (m, _) in loaded { _ = try MemoryPlan(m).chunks(lengths: [tokens], budget: memory.budget) }
            let measured = ResourceMonitor.shared.stage("measure") {
                Speed.measure(loaded.map(\.model), tokens: tokens, decode: decode, repeats: repeats, seed: seed) { r, i in
                    log("bench: run \(r + 1)/\(repeats)" + (loaded.count > 1 ? ", model \(i + 1)/\(loaded.count)" : ""))
                }
            }
            Profiler.report()
            let usage = ResourceMonitor.shared.report()
            let bw = bandwidth ? Speed.readBandwidth() / 1e9 : nil
            let results = zip(models, zip(loaded, measured)).map { path, lm in
                let active = Double(lm.0.model.activeWeightBytes) / 1e9
                return Result(model: modelURL(path).path, threads: Compute.threads, promptTokens: tokens, decodeTokens: decode,
                              prefillTokensPerSecond: lm.1.prefillTokensPerSecond, timeToFirstTokenMs: lm.1.timeToFirstTokenMs,
                              decodeTokensPerSecond: lm.1.decodeTokensPerSecond, peakRSSMiB: usage.peakRssMiB, peakRssAnonMiB: usage.peakRssAnonMiB,
                              readMiB: usage.readMiB, loadSeconds: lm.0.load, activeWeightGB: active,
                              decodeWeightGBPerSecond: active * lm.1.decodeTokensPerSecond, isa: KernelISA.current.description, blasCore: BLASRuntime.coreName,
                              memoryReadGBPerSecond: bw, decodeFractionOfBound: bw.map { active * lm.1.decodeTokensPerSecond / $0 },
                              promptDigest: lm.1.promptDigest)
            }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                let data = results.count == 1 ? try enc.encode(results[0]) : try enc.encode(results)
                print(String(decoding: data, as: UTF8.self))
            } else if results.count == 1 {
                let r = results[0]
                print(String(format: "prefill  %8.1f tokens/s  (%d tokens, time to first token %.1f ms)", r.prefillTokensPerSecond, tokens, r.timeToFirstTokenMs))
                print(String(format: "decode   %8.1f tokens/s  (%d tokens)", r.decodeTokensPerSecond, decode))
                print(String(format: "weights  %8.2f GB read per decoded token (%.1f GB/s)", r.activeWeightGB, r.decodeWeightGBPerSecond))
                if let bw = r.memoryReadGBPerSecond, let f = r.decodeFractionOfBound {
                    print(String(format: "bound    %8.1f tokens/s at the measured %.1f GB/s read bandwidth: decode is %.0f%% of it", bw / r.activeWeightGB, bw, 100 * f))
                }
                print(String(format: "memory   %8.1f MiB peak anonymous (RssAnon), %.1f MiB peak RSS (mapped weights included)", r.peakRssAnonMiB, r.peakRSSMiB))
                print(String(format: "         %d threads, %@ kernels, OpenBLAS %@, load %.2f s", r.threads, r.isa, r.blasCore, r.loadSeconds))
            } else {
                print(String(format: "%d prompt tokens, %d decode tokens, %d threads, best of %d interleaved runs", tokens, decode, Compute.threads, repeats))
                print("| model | parameters | prefill tok/s | × first | decode tok/s | × first |")
                print("|---|---:|---:|---:|---:|---:|")
                for (r, (m, _)) in zip(results, loaded) {
                    print(String(format: "| %@ | %.2fM | %.1f | %.2f | %.1f | %.2f |", r.model, Double(m.parameterCount) / 1e6,
                                 r.prefillTokensPerSecond, r.prefillTokensPerSecond / results[0].prefillTokensPerSecond,
                                 r.decodeTokensPerSecond, r.decodeTokensPerSecond / results[0].decodeTokensPerSecond))
                }
            }
        }
    }
}
