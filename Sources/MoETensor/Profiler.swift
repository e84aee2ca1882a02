import Foundation

/// Wall time per named stage, on when MOEPRESS_PROFILE is set; a report goes to stderr at the end
/// of the commands that call `Profiler.report()`. Stages must be measured from one thread.
public enum Profiler {
    public static let enabled = ProcessInfo.processInfo.environment["MOEPRESS_PROFILE"] != nil
    nonisolated(unsafe) private static var totals: [String: (seconds: Double, calls: Int)] = [:]

    @inline(__always) public static func measure<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        guard enabled else { return try body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let r = try body()
        let s = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        totals[name, default: (0, 0)].seconds += s
        totals[name, default: (0, 0)].calls += 1
        return r
    }

    public static func report() {
        guard enabled else { return }
        let total = totals.values.reduce(0) { $0 + $1.seconds }
        var lines = ["profile (wall seconds per stage):"]
        for (k, v) in totals.sorted(by: { $0.value.seconds > $1.value.seconds }) {
            lines.append("  " + k.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %8.4f s  %5.1f%%  %7d calls", v.seconds, 100 * v.seconds / max(total, 1e-12), v.calls))
        }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}
