import ArgumentParser
import Foundation
import MoETokenizer

struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-tokenizer",
        abstract: "Measure encode throughput (MB/s of UTF-8 text, one thread).",
        discussion: "Encodes every .txt file of --text-dir whole, best of --repeats after a warm-up. tools/bench/bench_tokenizer.py measures HF `tokenizers` the same way.")

    @Option(help: "A tokenizer.json file.")
    var tokenizer: String

    @Option(help: "A folder of .txt files.")
    var textDir: String

    @Option(help: "Timed repetitions (the best is reported).")
    var repeats = 3

    @Flag(help: "Encode each line on its own instead of each file whole.")
    var lines = false

    @Flag(help: "Print JSON.")
    var json = false

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
            var best = Double.infinity, passes = 0
            for _ in 0..<repeats {
                passes += 1
                let s = Date()
                var n = 0
                for t in texts { n += try tok.encode(t).count }
                best = min(best, Date().timeIntervalSince(s))
                precondition(n == tokens)
            }
            let mbps = Double(bytes) / 1e6 / best
            if json {
                print(#"{"engine": "moepress", "mode": "\#(lines ? "lines" : "whole")", "tokenizer": "\#(tokenizer)", "bytes": \#(bytes), "tokens": \#(tokens), "seconds": \#(best), "mb_per_second": \#(mbps), "load_seconds": \#(load), "timed_passes": \#(passes)}"#)
            } else {
                print(String(format: "%.2f MB/s (%d bytes → %d tokens in %.3f s; load %.2f s)", mbps, bytes, tokens, best, load))
            }
        }
    }
}
