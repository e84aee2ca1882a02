import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Progress of long work on stderr: "stage: i/N (rate/s, ETA …)", at most a few lines per second, one
/// final line when done. Silent when `quiet`.
public final class StageProgress: @unchecked Sendable {
    public let stage: String
    public let total: Int
    public let unit: String
    public let quiet: Bool
    private let start = Date()
    /// On a terminal the line is rewritten in place; elsewhere (logs, CI) a line every few seconds.
    private let interactive = isatty(2) != 0
    private var last = Date.distantPast
    private(set) public var done = 0
    private var note = ""

    /// Whether the time of the whole stage, measured on its first items (a tenth of them, or 5 s of work), is
    /// printed and recorded for the report (stages estimated up front, such as calibration, say no).
    private let estimate: Bool
    private var estimated = false

    public init(_ stage: String, total: Int, unit: String = "items", quiet: Bool = false, estimate: Bool = true) {
        self.stage = stage
        self.total = total
        self.unit = unit
        self.quiet = quiet
        self.estimate = estimate
    }

    /// `note` (e.g. the current loss) is shown after the counts.
    public func advance(by n: Int = 1, note: String = "") {
        if estimate && !estimated && done + n < total && (elapsed >= 5 || done + n >= max(1, total / 10)) {
            // The first items (a tenth of the stage, or 5 s of it) are the quick measurement: the whole stage is
            // timed from them.
            estimated = true
            let seconds = elapsed / Double(done + n) * Double(total)
            ResourceMonitor.shared.record(.init(name: stage, seconds: seconds))
            if !quiet {
                Console.note("\(stage): time ≈ \(formatDuration(seconds)) for \(total) \(unit) (the first \(done + n) took \(String(format: "%.1f s", elapsed)))")
            }
        }
        done += n
        self.note = note
        let now = Date()
        if done >= total || now.timeIntervalSince(last) > (interactive ? 0.5 : 5) {
            last = now
            report(final: done >= total)
        }
    }

    public var elapsed: Double { Date().timeIntervalSince(start) }

    private func report(final: Bool) {
        guard !quiet && !Console.silenced else { return }
        let t = elapsed
        let rate = t > 0 ? Double(done) / t : 0
        var line = "\(stage): \(done)/\(total) \(unit)" + (note.isEmpty ? "" : ", \(note)")
        if rate >= 1 { line += String(format: " (%.1f %@/s", rate, unit) } else if rate > 0 { line += String(format: " (%.1f s each", 1 / rate) }
        if !final, rate > 0 { line += String(format: ", ETA %.0f s)", Double(total - done) / rate) } else if rate > 0 { line += String(format: ", %.1f s)", t) }
        let text = interactive ? "\r" + line + (final ? "\n" : "") : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }
}

/// A byte count for people: GiB, MiB or KiB (powers of 1024).
public func formatBytes(_ n: Int) -> String {
    let v = Double(n)
    if v >= Double(1 << 30) { return String(format: "%.2f GiB", v / Double(1 << 30)) }
    if v >= Double(1 << 20) { return String(format: "%.1f MiB", v / Double(1 << 20)) }
    return String(format: "%.1f KiB", v / 1024)
}

/// A duration for people: "45 s", "12 min", "2.1 h".
public func formatDuration(_ s: Double) -> String {
    if s < 90 { return String(format: "%.0f s", s) }
    if s < 5400 { return String(format: "%.0f min", s / 60) }
    return String(format: "%.1f h", s / 3600)
}

/// One line of information for the user on stderr (stdout stays for results).
public enum Console {
    /// Inside the test runner (`swift test`), notes and progress lines are kept out of the output (a fixture's
    /// unused tensors, a stage's progress: noise among the results) unless MOEPRESS_TEST_VERBOSE=1. The
    /// `moepress` binary, and processes the tests start, are never silenced.
    public static let silenced: Bool = {
        let name = ProcessInfo.processInfo.processName
        return (name.hasSuffix(".xctest") || name.hasSuffix("PackageTests")) && ProcessInfo.processInfo.environment["MOEPRESS_TEST_VERBOSE"] != "1"
    }()

    public static func note(_ s: String) {
        if !silenced { FileHandle.standardError.write(Data((s + "\n").utf8)) }
    }
}
