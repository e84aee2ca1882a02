import ArgumentParser
import Foundation
import MoETensor
import MoEModels
import MoEEval

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed and peak memory.",
        discussion: """
        Prints the machine line first (CPU model and flags, the instruction set MoEPress's kernels dispatch to, the \
        memory read bandwidth measured now, the date, and the commit from MOEPRESS_COMMIT), then one table row per \
        model: median (min–max) over --rounds rounds. \
        Prefill: one forward pass over --tokens prompt tokens (all logits computed, as HF does). \
        Time to first token: prefill plus choosing the first token. Decode: --decode greedy steps through the \
        KV cache the prompt filled, one token each, so decode starts from a context of --tokens tokens. \
        One warm-up, then --rounds rounds; with several --model, each round times every model once in the order \
        given (A B A B …), so machine noise hits them alike, and the table gives each one's speed relative to the \
        first (peak RSS is then the whole process's). The decode bound is the read bandwidth divided by the weight \
        bytes one decoded token reads. The prompt is seeded pseudo-random ids. \
        BENCHMARKS.md's protocol wants at least 5 rounds for a published figure. tools/bench/bench_hf.py measures \
        HF transformers the same way; tools/bench/protocol.py runs MoEPress and its peers in alternating rounds.
        """)

    @Option(name: .customLong("model"), help: "A Hugging Face model folder; repeat it to compare models in one run (the first is the baseline).")
    var models: [String] = []

    @Option(help: "Prompt tokens for the prefill measurement (and the context decode starts from).")
    var tokens = 128

    @Option(help: "Tokens generated for the decode measurement, after the prompt.")
    var decode = 64

    @Option(help: "Timed rounds, each timing every model once; the median, min and max are reported. At least 1; published figures need at least 5.")
    var rounds = 5

    @Option(help: "Seed of the prompt ids.")
    var seed: UInt64 = 0

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Print only the machine line (the read bandwidth measured with --threads threads) and exit; with --json, as JSON.")
    var machineOnly = false

    @Flag(help: "Do not measure the read bandwidth (for scripts that print the machine line once themselves): no decode bound.")
    var noBandwidth = false

    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    struct Result: Codable {
        var model: String
        var engine = "moepress"
        var threads: Int
        var promptTokens: Int
        var decodeTokens: Int
        var rounds: Int
        /// Medians over the rounds, and their min and max.
        var prefillTokensPerSecond: Double
        var prefillMin: Double
        var prefillMax: Double
        var timeToFirstTokenMs: Double
        var timeToFirstTokenMin: Double
        var timeToFirstTokenMax: Double
        var decodeTokensPerSecond: Double
        var decodeMin: Double
        var decodeMax: Double
        var peakRSSMiB: Double
        var peakRssAnonMiB: Double
        var readMiB: Double
        var loadSeconds: Double
        /// Bytes of weights one decoded token reads, and the rate decode reads them at.
        var activeWeightGB: Double
        var decodeWeightGBPerSecond: Double
        var isa: String
        var blasCore: String
        /// The machine line, its read bandwidth, and decode's bound and the fraction of it reached (unless --no-bandwidth).
        var machine: String?
        var memoryReadGBPerSecond: Double?
        var decodeBoundTokensPerSecond: Double?
        var decodeFractionOfBound: Double?
        /// Which prompt --seed made (a digest of its ids).
        var promptDigest: String?

        enum CodingKeys: String, CodingKey {
            case model, engine, threads, isa, rounds, machine, blasCore = "blas_core"
            case promptTokens = "prompt_tokens", decodeTokens = "decode_tokens"
            case prefillTokensPerSecond = "prefill_tokens_per_second", timeToFirstTokenMs = "time_to_first_token_ms"
            case decodeTokensPerSecond = "decode_tokens_per_second"
            case prefillMin = "prefill_tokens_per_second_min", prefillMax = "prefill_tokens_per_second_max"
            case timeToFirstTokenMin = "time_to_first_token_ms_min", timeToFirstTokenMax = "time_to_first_token_ms_max"
            case decodeMin = "decode_tokens_per_second_min", decodeMax = "decode_tokens_per_second_max"
            case peakRSSMiB = "peak_rss_mib", loadSeconds = "load_seconds"
            case peakRssAnonMiB = "peak_rss_anon_mib", readMiB = "read_mib"
            case activeWeightGB = "active_weight_gb", decodeWeightGBPerSecond = "decode_weight_gb_per_second"
            case memoryReadGBPerSecond = "memory_read_gb_per_second", decodeBoundTokensPerSecond = "decode_bound_tokens_per_second"
            case decodeFractionOfBound = "decode_fraction_of_bandwidth_bound"
            case promptDigest = "prompt_digest"
        }
    }

    func validate() throws {
        guard machineOnly || !models.isEmpty else { throw usage("give at least one, or --machine-only", "--model") }
        guard !(machineOnly && !models.isEmpty) else { throw usage("measures the machine alone: drop --model", "--machine-only") }
        guard tokens > 0 else { throw usage("must be positive", "--tokens") }
        guard decode > 0 else { throw usage("must be positive", "--decode") }
        guard rounds >= 1 else { throw usage("must be at least 1 (published figures need at least 5)", "--rounds") }
        guard !(machineOnly && noBandwidth) else { throw usage("--machine-only measures the bandwidth: drop it", "--no-bandwidth") }
    }

    func run() throws {
        try compute.run {
            if machineOnly {
                let machine = Speed.Machine(readGBPerSecond: Speed.readBandwidth() / 1e9)
                if json {
                    let enc = JSONEncoder()
                    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                    var obj = try JSONSerialization.jsonObject(with: enc.encode(machine)) as! [String: Any]
                    obj["line"] = machine.line
                    print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
                } else {
                    print(machine.line)
                }
                return
            }
            var loaded: [(model: CausalLM, load: Double)] = []
            try ResourceMonitor.shared.stage("load") {
                for path in models {
                    let t0 = Date()
                    loaded.append((try ModelRegistry.load(directory: modelURL(path)), Date().timeIntervalSince(t0)))
                }
            }
            for (m, _) in loaded { _ = try MemoryPlan(m).chunks(lengths: [tokens], budget: memory.budget) }
            let measured = ResourceMonitor.shared.stage("measure") {
                Speed.measure(loaded.map(\.model), tokens: tokens, decode: decode, rounds: rounds, seed: seed) { r, i in
                    log("bench: round \(r + 1)/\(rounds)" + (loaded.count > 1 ? ", model \(i + 1)/\(loaded.count)" : ""))
                }
            }
            Profiler.report()
            let usage = ResourceMonitor.shared.report()
            // The bandwidth is measured after the models, so its 2 GiB buffer is not in their peak memory; its line is printed first.
            let machine = noBandwidth ? nil : Speed.Machine(readGBPerSecond: Speed.readBandwidth() / 1e9)
            let bw = machine?.readGBPerSecond
            let results = zip(models, zip(loaded, measured)).map { path, lm in
                let active = Double(lm.0.model.activeWeightBytes) / 1e9, s = lm.1
                return Result(model: modelURL(path).path, threads: Compute.threads, promptTokens: tokens, decodeTokens: decode, rounds: rounds,
                              prefillTokensPerSecond: s.prefill.median, prefillMin: s.prefill.min, prefillMax: s.prefill.max,
                              timeToFirstTokenMs: s.timeToFirstToken.median, timeToFirstTokenMin: s.timeToFirstToken.min,
                              timeToFirstTokenMax: s.timeToFirstToken.max,
                              decodeTokensPerSecond: s.decode.median, decodeMin: s.decode.min, decodeMax: s.decode.max,
                              peakRSSMiB: usage.peakRssMiB, peakRssAnonMiB: usage.peakRssAnonMiB,
                              readMiB: usage.readMiB, loadSeconds: lm.0.load, activeWeightGB: active,
                              decodeWeightGBPerSecond: active * s.decode.median, isa: KernelISA.current.description, blasCore: BLASRuntime.coreName,
                              machine: machine?.line, memoryReadGBPerSecond: bw, decodeBoundTokensPerSecond: bw.map { $0 / active },
                              decodeFractionOfBound: bw.map { active * s.decode.median / $0 }, promptDigest: s.promptDigest)
            }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                let data = results.count == 1 ? try enc.encode(results[0]) : try enc.encode(results)
                print(String(decoding: data, as: UTF8.self))
                return
            }
            if let machine { print(machine.line) }
            print(Self.table(results, parameters: loaded.map(\.model.parameterCount)))
            for r in results {
                let bound = r.decodeBoundTokensPerSecond.map { String(format: "; decode at %.0f%% of the bound", 100 * r.decodeTokensPerSecond / $0) } ?? ""
                print(String(format: "%@: %.3f GB of weights read per decoded token (%.1f GB/s at the median)%@; load %.2f s",
                             r.model, r.activeWeightGB, r.decodeWeightGBPerSecond, bound, r.loadSeconds))
            }
            let r = results[0]
            print(String(format: "memory %.1f MiB peak anonymous (RssAnon), %.1f MiB peak RSS (mapped weights included)%@; %d threads, %@ kernels, OpenBLAS %@",
                         r.peakRssAnonMiB, r.peakRSSMiB, results.count > 1 ? " for the whole process" : "", r.threads, r.isa, r.blasCore))
        }
    }

    /// The Markdown table: its heading line says what was measured, each cell is median (min–max).
    static func table(_ results: [Result], parameters: [Int]) -> String {
        guard let first = results.first else { return "" }
        func cell(_ m: Double, _ lo: Double, _ hi: Double, _ digits: Int) -> String {
            String(format: "%.\(digits)f (%.\(digits)f–%.\(digits)f)", m, lo, hi)
        }
        let digits = first.decodeTokensPerSecond < 20 ? 2 : 1
        var lines = ["\(first.promptTokens) prompt tokens, then \(first.decodeTokens) decode tokens from that context; \(first.threads) threads; "
                     + "median (min–max) of \(first.rounds) rounds" + (results.count > 1 ? " alternating over the models" : "") + ", after a warm-up"]
        let ratio = results.count > 1
        lines.append("| model | parameters | prefill tok/s | TTFT ms | decode tok/s | decode bound tok/s |" + (ratio ? " prefill × first | decode × first |" : ""))
        lines.append("|---|---:|---:|---:|---:|---:|" + (ratio ? "---:|---:|" : ""))
        for (r, p) in zip(results, parameters) {
            var row = "| \(r.model) | " + String(format: "%.2fM", Double(p) / 1e6) + " | " + cell(r.prefillTokensPerSecond, r.prefillMin, r.prefillMax, 1)
                + " | " + cell(r.timeToFirstTokenMs, r.timeToFirstTokenMin, r.timeToFirstTokenMax, 1)
                + " | " + cell(r.decodeTokensPerSecond, r.decodeMin, r.decodeMax, digits)
                + " | " + (r.decodeBoundTokensPerSecond.map { String(format: "%.\(digits)f", $0) } ?? "") + " |"
            if ratio {
                row += String(format: " %.2f | %.2f |", r.prefillTokensPerSecond / first.prefillTokensPerSecond, r.decodeTokensPerSecond / first.decodeTokensPerSecond)
            }
            lines.append(row)
        }
        return lines.joined(separator: "\n")
    }
}
