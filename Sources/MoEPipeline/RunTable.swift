import Foundation

/// The run table: every model of a run (the original, then each stage's output) with its quality, size and
/// speed, and each column's change against the original in percent.
extension Pipeline {
    /// The columns compared with the original, by the names run.json's `deltaPercent` uses.
    public static let deltaColumns = ["perplexity", "taskAccuracy", "taskAccuracyNorm", "parameters", "activeParameters", "bytesOnDisk",
                                      "prefillTokensPerSecond", "decodeTokensPerSecond"]

    /// A model's value in one of `deltaColumns`.
    public static func column(_ key: String, of m: ModelSummary) -> Double? {
        switch key {
        case "perplexity": m.perplexityAll
        case "taskAccuracy": m.taskAccuracy
        case "taskAccuracyNorm": m.taskAccuracyNorm
        case "parameters": Double(m.parameters)
        case "activeParameters": Double(m.activeParameters)
        case "bytesOnDisk": Double(m.bytesOnDisk)
        case "prefillTokensPerSecond": m.prefillTokensPerSecond
        case "decodeTokensPerSecond": m.decodeTokensPerSecond
        default: nil
        }
    }

    /// Sets every model's `deltaPercent` against the first (the original): 100 · (value − original) / original.
    static func fillDeltas(_ models: inout [ModelSummary]) {
        guard let o = models.first, o.stage == nil else { return }
        for i in models.indices.dropFirst() {
            var d: [String: Double] = [:]
            for k in deltaColumns {
                if let v = column(k, of: models[i]), let b = column(k, of: o), b != 0 { d[k] = 100 * (v - b) / b }
            }
            models[i].deltaPercent = d
        }
    }

    /// "+12.3%", "−4.0%", or "-" when there is no change to show (the original, a missing value).
    public static func formatDelta(_ m: ModelSummary, _ key: String) -> String {
        guard let d = m.deltaPercent?[key] else { return "-" }
        let s = String(format: "%.1f%%", abs(d))
        return d >= 0.05 ? "+" + s : d <= -0.05 ? "−" + s : "0.0%"
    }

    /// The table printed at the end of a run, then its notes.
    public static func table(_ s: RunSummary) -> String {
        var lines = ["| model | parameters | Δ% | active | Δ% | on disk | Δ% | experts/layer | dev ppl | Δ% | task acc / acc_norm | Δ% | prefill tok/s | Δ% | decode tok/s | Δ% |",
                     "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in s.models {
            let ppl = m.perplexityAll.map { String(format: "%.2f", $0) } ?? "-"
            let acc = m.taskAccuracy.map { String(format: "%.4f / %.4f", $0, m.taskAccuracyNorm ?? 0) } ?? "-"
            let pre = m.prefillTokensPerSecond.map { String(format: "%.0f", $0) } ?? "-"
            let dec = m.decodeTokensPerSecond.map { String(format: "%.0f", $0) } ?? "-"
            let cells = [m.label, String(format: "%.2fM", Double(m.parameters) / 1e6), formatDelta(m, "parameters"),
                         String(format: "%.2fM", Double(m.activeParameters) / 1e6), formatDelta(m, "activeParameters"),
                         String(format: "%.1f MiB", Double(m.bytesOnDisk) / 1048576), formatDelta(m, "bytesOnDisk"),
                         m.expertsPerLayer.map(String.init).joined(separator: " "), ppl, formatDelta(m, "perplexity"),
                         acc, formatDelta(m, "taskAccuracy"), pre, formatDelta(m, "prefillTokensPerSecond"), dec, formatDelta(m, "decodeTokensPerSecond")]
            lines.append("| " + cells.joined(separator: " | ") + " |")
        }
        for n in s.notes ?? [] { lines.append("\nNote: " + n) }
        return lines.joined(separator: "\n")
    }
}
