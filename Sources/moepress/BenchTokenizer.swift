import ArgumentParser
import Foundation
import MoETokenizer
import MoEEval

struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-tokenizer",
        abstract: "Measure encode throughput (MB/s of UTF-8 text, one thread).",
        discussion: "Encodes every .txt file of --text-dir whole (or each line, --lines): one warm-up pass, then --rounds timed passes, reported as the median (min–max). tools/bench/bench_tokenizer.py measures HF `tokenizers` the same way; tools/bench/compare_tokenizers.sh runs both in alternating rounds.")

    @Option(help: "A tokenizer.json file.")
    var tokenizer: String

    @Option(help: "A folder of .txt files.")
    var textDir: String

    @Option(help: "Timed passes; the median, min and max are reported. At least 1; published figures need at least 5.")
    var rounds = 5

    @Flag(help: "Encode each line on its own instead of each file whole.")
    var lines = false

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard rounds >= 1 else { throw usage("must be at least 1 (published figures need at least 5)", "--rounds") }
    }

    func run() throws {
        try reportingErrors {
            let t0 = Date()
            let tok = try Tokenizer(contentsOf: URL(fileURLWithPath: tokenizer))
            let load = Date().timeIntervalSince(t0)
            let files = try FileManager.default.contentsOfDirectory(atPath: textDir).filter { $0.hasSuffix(".txt") }.sorted()
            guard !files.isEmpty else { throw CLIError("\(textDir): no .txt files") }
            var texts = try files.map { try String(contentsOfFile: (textDir as NSString).appendingPathComponent($0), encoding: .utf8) }
            if lines { texts = texts.flatMap { $0.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) } }
            let bytes = texts.reduce(0) { $0 + $1.utf8.count } + (lines ? texts.count - files.count : 0)
            // Warm-up on a different tokenizer instance would leave the word cache cold; a first pass here is
            // the warm-up (HF's BPE has a word cache too).
            var tokens = 0
            for t in texts { tokens += try tok.encode(t).count }
            var seconds: [Double] = []
            for _ in 0..<rounds {
                let s = Date()
                var n = 0
                for t in texts { n += try tok.encode(t).count }
                seconds.append(Date().timeIntervalSince(s))
                precondition(n == tokens)
            }
            let rate = Speed.Summary(seconds)!.reciprocal(Double(bytes) / 1e6), mbps = rate.median
            if json {
                print(#"{"engine": "moepress", "mode": "\#(lines ? "lines" : "whole")", "tokenizer": "\#(tokenizer)", "bytes": \#(bytes), "tokens": \#(tokens), "rounds": \#(rounds), "mb_per_second": \#(mbps), "mb_per_second_min": \#(rate.min), "mb_per_second_max": \#(rate.max), "load_seconds": \#(load)}"#)
            } else {
                print(String(format: "%.2f MB/s (%.2f–%.2f; median of %d passes; %d bytes → %d tokens; load %.2f s)", mbps, rate.min, rate.max, rounds, bytes, tokens, load))
            }
        }
    }
}
