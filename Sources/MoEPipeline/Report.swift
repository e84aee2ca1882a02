import Foundation
import MoECompression
import MoECheckpoint

/// `moepress report RUN_DIR`: one self-contained report.html (inline SVG and CSS, no script, no network)
/// from run.json and the stage folders: quality, size and speed of every stage's model with its change against
/// the original (and why a model decodes slower, when one does), size against quality with the Pareto front,
/// routing-frequency heatmaps, kept/pruned map, per-layer reconstruction error and every decomposed projection's
/// rank per expert, each heatmap with its colour scale and experts always under their original ids.
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
        sections.append(paretoScatter(run))
        var stageRows = ""
        for s in run.stages {
            stageRows += "<tr><td>\(esc(s.branch))</td><td>\(esc(s.stage))</td><td><code>\(esc(s.folder))</code></td><td>\(s.skipped ? "reused" : String(format: "%.1f s", s.seconds))</td></tr>"
        }
        sections.append("<h2>Stages</h2><table><tr><th>branch</th><th>stage</th><th>folder</th><th>time</th></tr>\(stageRows)</table>")
        // Expert ids are the original model's everywhere: each branch's prune plans map kept experts back through the chain.
        var ids: [String: ExpertIDs] = [:]
        for s in run.stages {
            let dir = runDir.appendingPathComponent(s.folder)
            let title = run.stages.contains(where: { $0.branch != s.branch }) ? "[\(s.branch)] \(s.stage)" : s.stage
            var map = ids[s.branch] ?? ExpertIDs()
            if let routing = try? JSONDecoder().decode([String: [Double]].self, from: Data(contentsOf: dir.appendingPathComponent("routing.json"))) {
                let layers = routing.keys.compactMap(Int.init).sorted()
                for l in layers { map.meet(layer: l, experts: routing["\(l)"]!.count) }
                sections.append("<h2>\(esc(title)): routing frequency of the input model</h2><p>Share of calibration tokens routed to each expert, by original expert id\(map.pruned ? " (crossed out: pruned by an earlier stage)" : "").</p>"
                                + heatmap(layers.map { map.spread(routing["\($0)"]!, layer: $0) }, rowLabels: layers.map { "layer \($0)" },
                                          color: (37, 99, 235), unit: "share of tokens"))
            }
            if s.stage == "prune", let plan = try? JSONDecoder().decode(PruningPlan.self, from: Data(contentsOf: dir.appendingPathComponent("model/plan.json"))) {
                for l in plan.layers { map.meet(layer: l.layer, experts: l.experts) }
                let grid = plan.layers.map { l in map.spread((0..<l.experts).map { l.kept.contains($0) ? 1.0 : 0.0 }, layer: l.layer) }
                sections.append("<h2>\(esc(title)): kept (green) and pruned (grey) experts — \(esc(plan.method))</h2>"
                                + keptMap(grid, rowLabels: plan.layers.map { "layer \($0.layer)" }, earlier: map.pruned))
                let errs = plan.layers.map { $0.scores["reconstruction_error"]?.first ?? 0 }
                if errs.contains(where: { $0 > 0 }) {
                    sections.append("<h2>\(esc(title)): layer-output reconstruction error</h2><p>‖Y − MoE<sub>kept</sub>(X)‖<sub>F</sub> on the calibration tokens, per MoE layer.</p>"
                                    + bars(errs, labels: plan.layers.map { "layer \($0.layer)" }, color: "#dc2626"))
                }
                map.prune(plan)
            }
            if s.stage == "decompose", let rep = try? JSONDecoder().decode(LowRank.Report.self, from: Data(contentsOf: dir.appendingPathComponent("model/decompose.json"))) {
                let kinds = ["gate", "up", "down"].filter { k in rep.layers.contains { $0.ranks[k] != nil } }
                for l in rep.layers { if let n = l.ranks.values.first?.count { map.meet(layer: l.layer, experts: n) } }
                for kind in kinds {
                    let grid = rep.layers.map { l in map.spread(l.ranks[kind].map { $0.map(Double.init) } ?? [], layer: l.layer) }
                    sections.append("<h2>\(esc(title)): rank per expert (\(esc(kind)) projection, \(esc(rep.method)), \(esc(rep.allocation)) allocation)</h2>"
                                    + (kind == kinds.first ? "<p>Expert parameters \(rep.parametersBefore) → \(rep.parametersAfter) (\(String(format: "%.1f", 100 * Double(rep.parametersAfter) / Double(max(1, rep.parametersBefore))))% kept), by original expert id.</p>" : "")
                                    + heatmap(grid, rowLabels: rep.layers.map { "layer \($0.layer)" }, color: (147, 51, 234), unit: "rank", integer: true))
                }
            }
            if let log = try? JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent(s.stage == "heal" ? "adapter/training_log.json" : "model/training_log.json"))) as? [String: Any],
               let steps = log["steps"] as? [[String: Any]] {
                let losses = steps.compactMap { $0["loss"] as? Double }
                sections.append("<h2>\(esc(title)): training loss</h2>" + line(losses))
            }
            ids[s.branch] = map
        }
        let html = """
        <!doctype html><html lang=en><head><meta charset=utf-8><title>MoEPress report</title><style>
        body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1100px;color:#111827;background:#fff}
        h1{font-size:1.6em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #e5e7eb;padding-bottom:.2em}
        table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d1d5db;padding:.3em .6em;text-align:right}
        th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}.meta{color:#6b7280}code{font-size:.9em}
        td.delta{color:#6b7280;font-size:.9em}td.good{color:#15803d}td.bad{color:#b91c1c}p.note{background:#fef3c7;border-left:4px solid #d97706;padding:.5em .8em}
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

    /// A Δ% cell: the change against the original, green when the model is better there, red when worse.
    static func deltaCell(_ m: ModelSummary, _ key: String, higherIsBetter: Bool) -> String {
        guard let d = m.deltaPercent?[key] else { return "<td class=delta>-</td>" }
        let better = abs(d) < 0.05 ? "" : (d > 0) == higherIsBetter ? " good" : " bad"
        return "<td class='delta\(better)'>\(esc(Pipeline.formatDelta(m, key)))</td>"
    }

    static func qualityTable(_ run: RunSummary) -> String {
        let files = Array(Set(run.models.flatMap { $0.perplexity.keys })).sorted()
        let head = "<tr><th>model</th>" + files.map { "<th>ppl \(esc($0))</th>" }.joined()
            + "<th>ppl (all)</th><th>Δ%</th><th>task acc</th><th>Δ%</th><th>acc_norm</th><th>Δ%</th></tr>"
        var rows = ""
        for m in run.models {
            rows += "<tr><td>\(esc(m.label))</td>" + files.map { f in "<td>\(m.perplexity[f].map { String(format: "%.2f", $0) } ?? "-")</td>" }.joined()
            rows += "<td>\(m.perplexityAll.map { String(format: "%.2f", $0) } ?? "-")</td>" + deltaCell(m, "perplexity", higherIsBetter: false)
            rows += "<td>\(m.taskAccuracy.map { String(format: "%.4f", $0) } ?? "-")</td>" + deltaCell(m, "taskAccuracy", higherIsBetter: true)
            rows += "<td>\(m.taskAccuracyNorm.map { String(format: "%.4f", $0) } ?? "-")</td>" + deltaCell(m, "taskAccuracyNorm", higherIsBetter: true) + "</tr>"
        }
        return "<h2>Quality of every stage's model</h2><p>The original, then each stage's output; Δ% is the change against the original.</p><table>\(head)\(rows)</table>"
    }

    static func sizeAndSpeed(_ run: RunSummary) -> String {
        var rows = ""
        for m in run.models {
            rows += "<tr><td>\(esc(m.label))</td><td>\(String(format: "%.2fM", Double(m.parameters) / 1e6))</td>" + deltaCell(m, "parameters", higherIsBetter: false)
            rows += "<td>\(String(format: "%.2fM", Double(m.activeParameters) / 1e6))</td>" + deltaCell(m, "activeParameters", higherIsBetter: false)
            rows += "<td>\(String(format: "%.1f MiB", Double(m.bytesOnDisk) / 1048576))</td>" + deltaCell(m, "bytesOnDisk", higherIsBetter: false)
            rows += "<td>\(m.expertsPerLayer.map(String.init).joined(separator: " "))</td>"
            rows += "<td>\(m.prefillTokensPerSecond.map { String(format: "%.0f", $0) } ?? "-")</td>" + deltaCell(m, "prefillTokensPerSecond", higherIsBetter: true)
            rows += "<td>\(m.decodeTokensPerSecond.map { String(format: "%.0f", $0) } ?? "-")</td>" + deltaCell(m, "decodeTokensPerSecond", higherIsBetter: true) + "</tr>"
        }
        var html = "<h2>Size and speed of every stage's model</h2><table><tr><th>model</th><th>parameters</th><th>Δ%</th><th>active / token</th><th>Δ%</th>"
            + "<th>on disk</th><th>Δ%</th><th>experts per layer</th><th>prefill tok/s</th><th>Δ%</th><th>decode tok/s</th><th>Δ%</th></tr>\(rows)</table>"
        for n in run.notes ?? [] { html += "<p class=note>\(esc(n))</p>" }
        html += bars(run.models.map { Double($0.parameters) / 1e6 }, labels: run.models.map(\.label), color: "#2563eb", unit: "M parameters")
        if run.models.allSatisfy({ $0.decodeTokensPerSecond != nil }) {
            html += bars(run.models.map { $0.decodeTokensPerSecond! }, labels: run.models.map(\.label), color: "#16a34a", unit: "decode tok/s")
        }
        return html
    }

    /// Parameters against quality (dev perplexity, else task accuracy) for every model, with the Pareto front
    /// marked: the models no other model matches or beats on both with one strictly better. Empty below 3 models.
    static func paretoScatter(_ run: RunSummary) -> String {
        let perplexity = run.models.contains { $0.perplexityAll != nil }
        let pts = run.models.compactMap { m -> (label: String, x: Double, y: Double)? in
            (perplexity ? m.perplexityAll : m.taskAccuracy).map { (m.label, Double(m.parameters) / 1e6, $0) }
        }
        guard pts.count >= 3 else { return "" }
        func beats(_ a: Int, _ b: Int) -> Bool {
            let q = perplexity ? pts[a].y <= pts[b].y : pts[a].y >= pts[b].y
            return pts[a].x <= pts[b].x && q && (pts[a].x < pts[b].x || pts[a].y != pts[b].y)
        }
        let front = Set(pts.indices.filter { i in !pts.indices.contains { beats($0, i) } })
        let w = 760, h = 380, left = 70, right = 190, top = 24, bottom = 48
        let (x0, x1) = (pts.map(\.x).min()!, pts.map(\.x).max()!), (y0, y1) = (pts.map(\.y).min()!, pts.map(\.y).max()!)
        // Perplexities spanning more than 3× are drawn on a log scale (log perplexity is the loss), so one broken model does not flatten the rest.
        let logY = perplexity && y0 > 0 && y1 / y0 > 3
        func fy(_ y: Double) -> Double { logY ? log(y) : y }
        let xs = max(x1 - x0, 1e-9) * 1.1, ys = max(fy(y1) - fy(y0), 1e-9) * 1.1
        func px(_ x: Double) -> Int { left + Int(Double(w - left - right) * (x - x0 + 0.05 * xs) / xs) }
        func py(_ y: Double) -> Int { h - bottom - Int(Double(h - top - bottom) * (fy(y) - fy(y0) + 0.05 * ys) / ys) }
        var svg = "<svg class='pareto' xmlns='http://www.w3.org/2000/svg' width='\(w)' height='\(h)'>"
        svg += "<line x1='\(left)' y1='\(h - bottom)' x2='\(w - right)' y2='\(h - bottom)' stroke='#9ca3af'/><line x1='\(left)' y1='\(top)' x2='\(left)' y2='\(h - bottom)' stroke='#9ca3af'/>"
        for x in [x0, x1] { svg += "<text x='\(px(x))' y='\(h - bottom + 16)' text-anchor='middle'>\(String(format: "%.2f", x))</text>" }
        for y in [y0, y1] { svg += "<text x='\(left - 6)' y='\(py(y) + 4)' text-anchor='end'>\(String(format: perplexity ? "%.2f" : "%.3f", y))</text>" }
        svg += "<text x='\((left + w - right) / 2)' y='\(h - 10)' text-anchor='middle'>parameters (M)</text>"
        svg += "<text x='14' y='\((top + h - bottom) / 2)' text-anchor='middle' transform='rotate(-90 14 \((top + h - bottom) / 2))'>\(perplexity ? "dev perplexity (\(logY ? "log scale, " : "")lower is better)" : "task accuracy (higher is better)")</text>"
        let line = front.sorted { pts[$0].x < pts[$1].x }.map { "\(px(pts[$0].x)),\(py(pts[$0].y))" }.joined(separator: " ")
        svg += "<polyline fill='none' stroke='#ea580c' stroke-width='2' stroke-dasharray='5 3' points='\(line)'/>"
        var placed: [(Int, Int)] = []
        for (i, p) in pts.enumerated() {
            let on = front.contains(i)
            // Labels of points drawn at the same place go one under the other.
            var ly = py(p.y) - 8
            while placed.contains(where: { abs($0.0 - px(p.x)) < 60 && abs($0.1 - ly) < 13 }) { ly += 14 }
            placed.append((px(p.x), ly))
            svg += "<circle cx='\(px(p.x))' cy='\(py(p.y))' r='6' fill='\(on ? "#ea580c" : "#fff")' stroke='\(on ? "#ea580c" : "#6b7280")' stroke-width='2'>"
                + "<title>\(esc(p.label)): \(String(format: "%.2fM", p.x)), \(String(format: "%.4g", p.y))\(on ? " (Pareto front)" : "")</title></circle>"
            svg += "<text x='\(px(p.x) + 9)' y='\(ly)'>\(esc(p.label))</text>"
        }
        svg += "<circle cx='\(w - 170)' cy='\(top)' r='6' fill='#ea580c'/><text x='\(w - 158)' y='\(top + 4)'>on the Pareto front</text>"
        svg += "<circle cx='\(w - 170)' cy='\(top + 20)' r='6' fill='#fff' stroke='#6b7280' stroke-width='2'/><text x='\(w - 158)' y='\(top + 24)'>dominated</text>"
        let names = pts.indices.filter { front.contains($0) }.map { pts[$0].label }.joined(separator: ", ")
        return "<h2>Size against quality: Pareto front</h2><p>Each model's parameters against its \(perplexity ? "dev perplexity" : "task accuracy"); "
            + "the front (orange) holds the models no other model matches or beats on both: \(esc(names)).</p>" + svg + "</svg>"
    }

    /// A colour scale under a heatmap: the gradient from the lowest to the highest value shown, with both values
    /// and the unit, and the mark of experts pruned earlier when there are any.
    static func legend(y: Int, left: Int, lo: Double, hi: Double, unit: String, color: (Int, Int, Int), integer: Bool, absent: Bool) -> String {
        let steps = 24, w = 10
        var svg = "<g class='legend'>"
        for i in 0..<steps {
            let (r, g, b) = shade(Double(i) / Double(steps - 1), color)
            svg += "<rect x='\(left + i * w)' y='\(y)' width='\(w)' height='12' fill='rgb(\(r),\(g),\(b))'/>"
        }
        func fmt(_ v: Double) -> String { integer ? String(Int(v.rounded())) : String(format: "%.4g", v) }
        svg += "<text x='\(left)' y='\(y + 26)' text-anchor='start'>min \(fmt(lo))</text><text x='\(left + steps * w)' y='\(y + 26)' text-anchor='end'>max \(fmt(hi))</text>"
        svg += "<text x='\(left + steps * w + 8)' y='\(y + 10)'>colour scale: \(esc(unit))</text>"
        if absent {
            let ax = left + steps * w + 190
            svg += absentCell(x: ax, y: y, size: 12) + "<text x='\(ax + 18)' y='\(y + 10)'>pruned by an earlier stage</text>"
        }
        return svg + "</g>"
    }

    /// The colour of a value at `t` ∈ [0, 1] of the scale: from a light tint (t = 0) to `color` (t = 1).
    static func shade(_ t: Double, _ color: (Int, Int, Int)) -> (Int, Int, Int) {
        let u = 0.1 + 0.9 * min(max(t, 0), 1)
        return (255 - Int(Double(255 - color.0) * u), 255 - Int(Double(255 - color.1) * u), 255 - Int(Double(255 - color.2) * u))
    }

    /// An expert that an earlier stage pruned: an outlined cell crossed out, with `title` as its tooltip.
    static func absentCell(x: Int, y: Int, size: Int, title: String = "") -> String {
        "<g><title>\(esc(title))</title><rect x='\(x)' y='\(y)' width='\(size)' height='\(size)' fill='#fff' stroke='#d1d5db'/>"
            + "<line x1='\(x)' y1='\(y + size)' x2='\(x + size)' y2='\(y)' stroke='#d1d5db'/></g>"
    }

    /// The frame both expert grids share: an SVG with one column per original expert id (labelled above) and one row per
    /// layer (labelled left), `legendHeight` below the grid for a key; `cellSVG(x, y, cell, rowLabel, column, value)`
    /// draws each cell. Returns the open SVG, the grid's bottom and its left edge.
    static func expertGrid(_ rows: [[Double?]], rowLabels: [String], legendHeight: Int,
                           cellSVG: (Int, Int, Int, String, Int, Double?) -> String) -> (svg: String, gridBottom: Int, left: Int) {
        let cols = rows.map(\.count).max() ?? 0
        let cell = max(14, min(36, 760 / max(cols, 1))), left = 70, top = 18
        let gridBottom = top + rows.count * cell
        var svg = "<svg class='heatmap' xmlns='http://www.w3.org/2000/svg' width='\(max(left + cols * cell + 10, 780))' height='\(gridBottom + legendHeight)'>"
        for c in 0..<cols where cols <= 64 || c % 4 == 0 { svg += "<text x='\(left + c * cell + cell / 2)' y='12' text-anchor='middle'>\(c)</text>" }
        for (r, row) in rows.enumerated() {
            svg += "<text x='\(left - 6)' y='\(top + r * cell + cell / 2 + 4)' text-anchor='end'>\(esc(rowLabels[r]))</text>"
            for (c, value) in row.enumerated() { svg += cellSVG(left + c * cell, top + r * cell, cell, rowLabels[r], c, value) }
        }
        return (svg, gridBottom, left)
    }

    /// A grid of cells, one row per layer and one column per original expert id, shaded from the lowest value
    /// (light) to the highest (`color`), with its colour scale; nil cells are experts an earlier stage pruned.
    static func heatmap(_ rows: [[Double?]], rowLabels: [String], color: (Int, Int, Int), unit: String, integer: Bool = false) -> String {
        let present = rows.flatMap { $0.compactMap { $0 } }
        let lo = present.min() ?? 0, hi = present.max() ?? 0
        let absent = rows.contains { $0.contains { $0 == nil } }
        var (svg, gridBottom, left) = expertGrid(rows, rowLabels: rowLabels, legendHeight: 44) { x, y, cell, label, c, value in
            guard let v = value else { return absentCell(x: x, y: y, size: cell - 1, title: "\(label), expert \(c): pruned") }
            let t = hi > lo ? (v - lo) / (hi - lo) : 1
            let (cr, cg, cb) = shade(t, color)
            var out = "<rect x='\(x)' y='\(y)' width='\(cell - 1)' height='\(cell - 1)' fill='rgb(\(cr),\(cg),\(cb))'><title>\(esc(label)), expert \(c): \(integer ? String(Int(v)) : String(format: "%.4f", v)) \(esc(unit))</title></rect>"
            if integer && cell >= 22 {
                out += "<text x='\(x + cell / 2)' y='\(y + cell / 2 + 4)' text-anchor='middle' style='font-size:9px;fill:\(t > 0.6 ? "#fff" : "#111")'>\(Int(v))</text>"
            }
            return out
        }
        svg += legend(y: gridBottom + 8, left: left, lo: lo, hi: hi, unit: unit, color: color, integer: integer, absent: absent)
        return svg + "</svg>"
    }

    /// The kept/pruned map of a prune stage: 1 kept (green), 0 pruned here (grey), nil pruned earlier; with its key.
    static func keptMap(_ rows: [[Double?]], rowLabels: [String], earlier: Bool) -> String {
        var (svg, gridBottom, left) = expertGrid(rows, rowLabels: rowLabels, legendHeight: 32) { x, y, cell, label, c, value in
            guard let v = value else { return absentCell(x: x, y: y, size: cell - 1, title: "\(label), expert \(c): pruned earlier") }
            return "<rect x='\(x)' y='\(y)' width='\(cell - 1)' height='\(cell - 1)' fill='\(v > 0 ? "#16a34a" : "#e5e7eb")'><title>\(esc(label)), expert \(c): \(v > 0 ? "kept" : "pruned")</title></rect>"
        }
        let y = gridBottom + 8
        svg += "<g class='legend'><text x='\(left)' y='\(y + 10)'>colour key (expert state):</text>"
            + "<rect x='\(left + 160)' y='\(y)' width='12' height='12' fill='#16a34a'/><text x='\(left + 178)' y='\(y + 10)'>kept</text>"
            + "<rect x='\(left + 220)' y='\(y)' width='12' height='12' fill='#e5e7eb'/><text x='\(left + 238)' y='\(y + 10)'>pruned by this stage</text>"
        if earlier { svg += absentCell(x: left + 370, y: y, size: 12) + "<text x='\(left + 388)' y='\(y + 10)'>pruned by an earlier stage</text>" }
        return svg + "</g></svg>"
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
