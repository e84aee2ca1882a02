import Foundation
import Testing
@testable import MoEPipeline
import MoECompression
import MoEModels
import MoETensor

/// The run table and report from a run.json alone: Δ% against the original, the size–quality scatter of a
/// compare run with its Pareto front, and original expert ids followed through two prune stages.
@Suite struct ReportTests {
    func model(_ label: String, params: Int, ppl: Double, decode: Double?, stage: String? = "prune") -> ModelSummary {
        var m = ModelSummary(label: label, path: "/m/\(label)", parameters: params, activeParameters: params / 2, bytesOnDisk: params * 2,
                             expertsPerLayer: [8], perplexity: ["dev.txt": ppl], perplexityAll: ppl, taskAccuracy: 0.5, taskAccuracyNorm: 0.5)
        m.stage = stage
        m.branch = stage == nil ? nil : label
        m.prefillTokensPerSecond = decode.map { $0 * 4 }
        m.decodeTokensPerSecond = decode
        return m
    }

    /// A compare run of three branches: b dominates c (fewer parameters, lower perplexity); a and b are on the front with the original.
    func compareRun() -> RunSummary {
        var models = [model("original", params: 1000, ppl: 10, decode: 100, stage: nil), model("a", params: 500, ppl: 14, decode: 120),
                      model("b", params: 700, ppl: 11, decode: 80), model("c", params: 800, ppl: 12, decode: 90)]
        Pipeline.fillDeltas(&models)
        return RunSummary(recipe: "compare.yaml", version: moepressVersion, stages: [], models: models, notes: ["b decodes 20% slower than the original"])
    }

    @Test func deltasAgainstTheOriginal() {
        let run = compareRun()
        #expect(run.models[0].deltaPercent == nil)
        #expect(abs(run.models[1].deltaPercent!["parameters"]! + 50) < 1e-9 && abs(run.models[1].deltaPercent!["perplexity"]! - 40) < 1e-9)
        #expect(abs(run.models[2].deltaPercent!["decodeTokensPerSecond"]! + 20) < 1e-9)
        let table = Pipeline.table(run)
        #expect(table.contains("| a | 0.00M | −50.0% |") && table.contains("| +40.0% |") && table.contains("| 80 | −20.0% |"), "\(table)")
        #expect(table.hasSuffix("Note: b decodes 20% slower than the original"))
    }

    @Test func compareRunHasAParetoScatter() throws {
        let dir = Where.temp("report")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try JSONEncoder().encode(compareRun()).write(to: dir.appendingPathComponent("run.json"))
        let html = try String(contentsOf: Report.write(runDir: dir), encoding: .utf8)
        #expect(html.contains("<svg class='pareto'") && html.contains("Pareto front"))
        // Original, a and b are on the front; c is dominated by b.
        for f in ["original", "a", "b"] { #expect(html.contains("<title>\(f): ") && html.contains(">\(f): ") && html.range(of: "<title>\(f): [^<]*\\(Pareto front\\)", options: .regularExpression) != nil, "\(f)") }
        #expect(html.range(of: "<title>c: [^<]*\\(Pareto front\\)", options: .regularExpression) == nil)
        #expect(html.components(separatedBy: "<th>Δ%</th>").count - 1 == 8)
        #expect(html.contains("−50.0%") && html.contains("<p class=note>b decodes 20% slower"))
        // Speed is filled for every branch's model.
        #expect(!html.contains("<td>-</td><td class=delta>-</td></tr>"))
    }

    @Test func expertIDsFollowTwoPruneStages() {
        var ids = ExpertIDs()
        ids.meet(layer: 0, experts: 8)
        #expect(ids.spread([1, 2, 3, 4, 5, 6, 7, 8], layer: 0) == [1, 2, 3, 4, 5, 6, 7, 8])
        func plan(_ experts: Int, _ kept: [Int]) -> PruningPlan {
            let json = "{\"method\": \"frequency\", \"model\": \"m\", \"parameters\": {}, \"layers\": [{\"layer\": 0, \"experts\": \(experts), \"kept\": \(kept), \"scores\": {}}]}"
            return try! JSONDecoder().decode(PruningPlan.self, from: Data(json.utf8))
        }
        ids.prune(plan(8, [1, 3, 4, 6, 7]))
        ids.meet(layer: 0, experts: 5)   // the pruned model's count is not the original's
        #expect(ids.spread([10, 30, 40, 60, 70], layer: 0) == [nil, 10, nil, 30, 40, nil, 60, 70])
        ids.prune(plan(5, [0, 2, 4]))     // kept ids of the pruned model: originals 1, 4, 7
        #expect(ids.spread([1, 4, 7], layer: 0) == [nil, 1, nil, nil, 4, nil, nil, 7])
        #expect(ids.pruned)
    }
}

/// The slower-decode note is measured: both models' decode-step parts timed on one token, the part that grew named.
@Suite struct DecodeProbeTests {
    @Test func namesLowRankExpertsWithTheirTimes() throws {
        let dir = Where.repo.deletingLastPathComponent().appendingPathComponent("shared/models/mixtral-ref")
        let original = try ModelRegistry.load(directory: dir), slow = try ModelRegistry.load(directory: dir)
        // Rank-480 f32 factors of 256 × 512 experts: more work than the dense bf16 product they replace.
        slow.replaceLinears { name, l in
            guard name.contains(".experts.") else { return l }
            return LowRankLinear(a: Tensor(zeros: [l.outFeatures, 480]), b: Tensor(zeros: [480, l.inFeatures]))
        }
        let note = DecodeProbe.explain(label: "decomposed", decode: 600, original: 1000, model: slow, reference: original)
        #expect(note.hasPrefix("decomposed decodes 40% slower than the original (600 vs 1000 tok/s, 667 µs more per token)"), "\(note)")
        #expect(note.contains("low-rank (rank 480 per projection)") && note.contains("µs against"), "\(note)")
        #expect(note.components(separatedBy: ". ").count == 1, "one sentence: \(note)")
    }
}
