import Foundation
import MoECompression
import MoECheckpoint

/// `moepress report RUN_DIR`: one self-contained report.html (inline SVG and CSS, no script, no network)
/// from run.json and the stage folders: routing-frequency heatmap before pruning, kept/pruned map,
/// per-layer reconstruction error, rank allocation per expert, quality, size and speed before and after.
public enum Report {
    public static func write(runDir: URL) throws -> URL {
        let runURL = runDir.appendingPathComponent("run.json")
        guard let data = FileManager.default.contents(atPath: runURL.path) else {
            throw RecipeError(runURL.path, nil, "no run.json: run `moepress run RECIPE --output \(runDir.path)` first")
        }
        let run = try JSONDecoder().decode(RunSummary.self, from: data)
        var sections: [String] = []
        sections.append("<h1>MoEPress run</h1><p class=meta>recipe <code>\(esc(run.recipe))</code> · MoEPress \(esc(run.version))</p>")
        sections.append(qualityTable(run))
        sections.append(sizeAndSpeed(run))
        var stageRows = ""
        for s in run.stages {
            stageRows += "<tr><td>\(esc(s.branch))</td><td>\(esc(s.stage))</td><td><code>\(esc(s.folder))</code></td><td>\(s.skipped ? "reused" : String(format: "%.1f s", s.seconds))</td></tr>"
        }
        sections.append("<h2>Stages</h2><table><tr><th>branch</th><th>stage</th><th>folder</th><th>time</th></tr>\(stageRows)</table>")
        for s in run.stages {
            let dir = runDir.appendingPathComponent(s.folder)
            let title = run.stages.contains(where: { $0.branch != s.branch }) ? "[\(s.branch)] \(s.stage)" : s.stage
            if let routing = try? JSONDecoder().decode([String: [Double]].self, from: Data(contentsOf: dir.appendingPathComponent("routing.json"))) {
                let layers = routing.keys.compactMap(Int.init).sorted()
                sections.append("<h2>\(esc(title)): routing frequency of the input model</h2><p>Share of calibration tokens routed to each expert (darker = more).</p>"
                                + heatmap(layers.map { routing["\($0)"]! }, rowLabels: layers.map { "layer \($0)" }, color: (37, 99, 235)))
            }
            if s.stage == "prune", let plan = try? JSONDecoder().decode(PruningPlan.self, from: Data(contentsOf: dir.appendingPathComponent("model/plan.json"))) {
                let grid = plan.layers.map { l in (0..<l.experts).map { l.kept.contains($0) ? 1.0 : 0.0 } }
                sections.append("<h2>\(esc(title)): kept (green) and pruned (grey) experts — \(esc(plan.method))</h2>"
                                + heatmap(grid, rowLabels: plan.layers.map { "layer \($0.layer)" }, color: (22, 163, 74), empty: (229, 231, 235), values: false))
                let errs = plan.layers.map { $0.scores["reconstruction_error"]?.first ?? 0 }
                if errs.contains(where: { $0 > 0 }) {
                    sections.append("<h2>\(esc(title)): layer-output reconstruction error</h2><p>‖Y − MoE<sub>kept</sub>(X)‖<sub>F</sub> on the calibration tokens, per MoE layer.</p>"
                                    + bars(errs, labels: plan.layers.map { "layer \($0.layer)" }, color: "#dc2626"))
                }
            }
            if s.stage == "decompose", let rep = try? JSONDecoder().decode(LowRank.Report.self, from: Data(contentsOf: dir.appendingPathComponent("model/decompose.json"))) {
                let kind = rep.layers.first?.ranks.keys.sorted().first ?? "gate"
                let grid = rep.layers.map { $0.ranks[kind].map { $0.map(Double.init) } ?? [] }
                sections.append("<h2>\(esc(title)): rank per expert (\(esc(kind)) projection, \(esc(rep.method)), \(esc(rep.allocation)) allocation)</h2>"
                                + "<p>Expert parameters \(rep.parametersBefore) → \(rep.parametersAfter) (\(String(format: "%.1f", 100 * Double(rep.parametersAfter) / Double(max(1, rep.parametersBefore))))% kept).</p>"
                                + heatmap(grid, rowLabels: rep.layers.map { "layer \($0.layer)" }, color: (147, 51, 234), values: true, integer: true))
            }
            if let log = try? JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent(s.stage == "heal" ? "adapter/training_log.json" : "model/training_log.json"))) as? [String: Any],
               let steps = log["steps"] as? [[String: Any]] {
                let losses = steps.compactMap { $0["loss"] as? Double }
                sections.append("<h2>\(esc(title)): training loss</h2>" + line(losses))
            }
        }
        let html = """
        <!doctype html><html lang=en><head><meta charset=utf-8><title>MoEPress report</title><style>
        body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1100px;color:#111827;background:#fff}
        h1{font-size:1.6em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #e5e7eb;padding-bottom:.2em}
        table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d1d5db;padding:.3em .6em;text-align:right}
        th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}.meta{color:#6b7280}code{font-size:.9em}
        svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#374151}
        </style></head><body>
        \(sections.joined(separator: "\n"))
        </body></html>
        """
        let out = runDir.appendingPathComponent("report.html")
        try Data(html.utf8).write(to: out, options: .atomic)
        return out
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func qualityTable(_ run: RunSummary) -> String {
        let files = Array(Set(run.models.flatMap { $0.perplexity.keys })).sorted()
        let head = "<tr><th>model</th>" + files.map { "<th>ppl \(esc($0))</th>" }.joined() + "<th>ppl (all)</th><th>task acc</th><th>acc_norm</th></tr>"
        var rows = ""
        for m in run.models {
            rows += "<tr><td>\(esc(m.label))</td>" + files.map { f in "<td>\(m.perplexity[f].map { String(format: "%.2f", $0) } ?? "-")</td>" }.joined()
            rows += "<td>\(m.perplexityAll.map { String(format: "%.2f", $0) } ?? "-")</td><td>\(m.taskAccuracy.map { String(format: "%.4f", $0) } ?? "-")</td>"
            rows += "<td>\(m.taskAccuracyNorm.map { String(format: "%.4f", $0) } ?? "-")</td></tr>"
        }
        return "<h2>Quality before and after</h2><table>\(head)\(rows)</table>"
    }

    static func sizeAndSpeed(_ run: RunSummary) -> String {
        var rows = ""
        for m in run.models {
            rows += "<tr><td>\(esc(m.label))</td><td>\(String(format: "%.2fM", Double(m.parameters) / 1e6))</td><td>\(String(format: "%.2fM", Double(m.activeParameters) / 1e6))</td>"
            rows += "<td>\(String(format: "%.1f MiB", Double(m.bytesOnDisk) / 1048576))</td><td>\(m.expertsPerLayer.map(String.init).joined(separator: " "))</td>"
            rows += "<td>\(m.prefillTokensPerSecond.map { String(format: "%.0f", $0) } ?? "-")</td><td>\(m.decodeTokensPerSecond.map { String(format: "%.0f", $0) } ?? "-")</td></tr>"
        }
        var html = "<h2>Size and speed</h2><table><tr><th>model</th><th>parameters</th><th>active / token</th><th>on disk</th><th>experts per layer</th><th>prefill tok/s</th><th>decode tok/s</th></tr>\(rows)</table>"
        html += bars(run.models.map { Double($0.parameters) / 1e6 }, labels: run.models.map(\.label), color: "#2563eb", unit: "M parameters")
        if run.models.allSatisfy({ $0.decodeTokensPerSecond != nil }) {
            html += bars(run.models.map { $0.decodeTokensPerSecond! }, labels: run.models.map(\.label), color: "#16a34a", unit: "decode tok/s")
        }
        return html
    }

    /// A grid of cells shaded by value (0…max → white…color); `empty` colours zero cells when given.
    static func heatmap(_ rows: [[Double]], rowLabels: [String], color: (Int, Int, Int), empty: (Int, Int, Int)? = nil,
                        values: Bool = true, integer: Bool = false) -> String {
        let cols = rows.map(\.count).max() ?? 0
        let cell = max(14, min(36, 760 / max(cols, 1))), left = 70, top = 18
        let maxV = max(rows.flatMap { $0 }.max() ?? 1, 1e-12)
        var svg = "<svg xmlns='http://www.w3.org/2000/svg' width='\(left + cols * cell + 10)' height='\(top + rows.count * cell + 6)'>"
        for c in 0..<cols where cols <= 64 || c % 4 == 0 { svg += "<text x='\(left + c * cell + cell / 2)' y='12' text-anchor='middle'>\(c)</text>" }
        for (r, row) in rows.enumerated() {
            svg += "<text x='\(left - 6)' y='\(top + r * cell + cell / 2 + 4)' text-anchor='end'>\(esc(rowLabels[r]))</text>"
            for (c, v) in row.enumerated() {
                let t = v / maxV
                let (cr, cg, cb): (Int, Int, Int) = (v == 0 && empty != nil) ? empty! : (255 - Int(Double(255 - color.0) * t), 255 - Int(Double(255 - color.1) * t), 255 - Int(Double(255 - color.2) * t))
                svg += "<rect x='\(left + c * cell)' y='\(top + r * cell)' width='\(cell - 1)' height='\(cell - 1)' fill='rgb(\(cr),\(cg),\(cb))'><title>\(esc(rowLabels[r])), expert \(c): \(integer ? String(Int(v)) : String(format: "%.4f", v))</title></rect>"
                if values && integer && cell >= 22 {
                    svg += "<text x='\(left + c * cell + cell / 2)' y='\(top + r * cell + cell / 2 + 4)' text-anchor='middle' style='font-size:9px;fill:\(t > 0.6 ? "#fff" : "#111")'>\(Int(v))</text>"
                }
            }
        }
        return svg + "</svg>"
    }

    static func bars(_ values: [Double], labels: [String], color: String, unit: String = "") -> String {
        let w = 520, rowH = 22, left = 120
        let maxV = max(values.max() ?? 1, 1e-12)
        var svg = "<svg xmlns='http://www.w3.org/2000/svg' width='\(left + w + 110)' height='\(values.count * rowH + 8)'>"
        for (i, v) in values.enumerated() {
            let len = Int(Double(w) * v / maxV)
            svg += "<text x='\(left - 6)' y='\(i * rowH + 15)' text-anchor='end'>\(esc(labels[i]))</text>"
            svg += "<rect x='\(left)' y='\(i * rowH + 3)' width='\(max(len, 1))' height='\(rowH - 6)' fill='\(color)'/>"
            svg += "<text x='\(left + len + 6)' y='\(i * rowH + 15)'>\(String(format: v >= 100 ? "%.0f" : "%.3g", v)) \(esc(unit))</text>"
        }
        return svg + "</svg>"
    }

    static func line(_ ys: [Double]) -> String {
        guard ys.count >= 2, let lo = ys.min(), let hi = ys.max() else { return "<p>(one step)</p>" }
        let w = 640, h = 180, pad = 36
        let span = max(hi - lo, 1e-9)
        let pts = ys.enumerated().map { i, y in
            "\(pad + Int(Double(w - 2 * pad) * Double(i) / Double(ys.count - 1))),\(h - pad + 10 - Int(Double(h - 2 * pad) * (y - lo) / span))"
        }.joined(separator: " ")
        return "<svg xmlns='http://www.w3.org/2000/svg' width='\(w)' height='\(h)'><polyline fill='none' stroke='#ea580c' stroke-width='2' points='\(pts)'/>"
            + "<text x='4' y='\(pad)'>\(String(format: "%.3f", hi))</text><text x='4' y='\(h - pad + 10)'>\(String(format: "%.3f", lo))</text>"
            + "<text x='\(w / 2)' y='\(h - 4)' text-anchor='middle'>step (1…\(ys.count))</text></svg>"
    }
}
