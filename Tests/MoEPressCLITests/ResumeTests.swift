import Foundation
import Testing

/// Stages killed mid-work (MOEPRESS_KILL_AFTER_RECORDS makes the process exit like SIGKILL after its N-th
/// journal record) resume from their journal and finished layers, and give the bytes of an uninterrupted run.
@Suite(.serialized) struct ResumeTests {
    static let model = CLI.shared.appendingPathComponent("models/qwen-moe-ref").path

    /// Every file of a folder (recursively, hidden ones too) with its bytes.
    static func files(_ dir: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let root = URL(fileURLWithPath: dir)
        guard let e = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return out }
        for case let u as URL in e where (try? u.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            out[String(u.path.dropFirst(root.path.count))] = try Data(contentsOf: u)
        }
        return out
    }

    /// Runs `args` killed after `kills[i]` records, again and again, then to the end; the output equals `reference`'s.
    static func checkResumes(_ args: [String], output: String, kills: [Int], reference: String, expectsFinishedShards: Bool = false) throws {
        let parent = URL(fileURLWithPath: output).deletingLastPathComponent()
        let partial = parent.appendingPathComponent("." + URL(fileURLWithPath: output).lastPathComponent + ".partial").path
        func finished() -> [String: Date] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: partial)) ?? []
            var out: [String: Date] = [:]
            for n in names where n.hasSuffix(".safetensors") && !n.hasPrefix(".") {
                out[n] = (try? FileManager.default.attributesOfItem(atPath: partial + "/" + n))?[.modificationDate] as? Date
            }
            return out
        }
        var kept: [String: Date] = [:]
        for n in kills {
            let r = try CLI.run(args + ["--output", output], env: ["MOEPRESS_KILL_AFTER_RECORDS": "\(n)"])
            #expect(r.status == 137, "expected a kill after \(n) records: \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output) && FileManager.default.fileExists(atPath: partial))
            kept = finished()
        }
        Thread.sleep(forTimeInterval: 0.05)
        let r = try CLI.run(args + ["--output", output])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("resuming"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: partial))
        // Files an interrupted run finished are kept as they are, not written again.
        for (name, date) in kept {
            let now = (try FileManager.default.attributesOfItem(atPath: output + "/" + name))[.modificationDate] as? Date
            #expect(now == date, "\(name) was written again")
        }
        if expectsFinishedShards { #expect(!kept.isEmpty, "no shard was finished before the last kill") }
        let got = try files(output), want = try files(reference)
        #expect(got.keys.sorted() == want.keys.sorted())
        for (name, bytes) in want { #expect(got[name] == bytes, "\(name) differs after resuming") }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: parent.path).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test func killedPruneAndDecomposeResumeToTheSameBytes() throws {
        let t = TempDir()
        let calib = t.path("calib")
        let c = try CLI.run(["calibrate", "--model", Self.model, "--calib-dir", CLI.shared.appendingPathComponent("data/calib").path,
                             "--samples", "6", "--seq-len", "64", "--output", calib, "--quiet"])
        #expect(c.status == 0, "\(c.stderr)")

        // MoE-I²: 6 importance records, 6 searches, 2 reception-field blocks, then the writer's durable layers.
        // The first kill falls in the genetic search, the second (9 records later) in the writing.
        let prune = ["prune", "--model", Self.model, "--method", "moei2", "--calib", calib, "--ratio", "0.25", "--population", "8",
                     "--generations", "3", "--field-sequences", "2", "--fitness-tokens", "256", "--shard-size", "20MB"]
        let ref = try CLI.run(prune + ["--output", t.path("pruned"), "--quiet"])
        #expect(ref.status == 0, "\(ref.stderr)")
        try Self.checkResumes(prune, output: t.path("again"), kills: [9, 9], reference: t.path("pruned"))

        // SVD-LLM: two records per finished layer (its factors' errors, the shard's durable length); shards of
        // 8 MB, so a resumed run both skips finished shards and continues one mid-way.
        let decompose = ["decompose", "--model", Self.model, "--method", "svdllm", "--calib", calib, "--ratio", "0.5", "--shard-size", "8MB"]
        let dref = try CLI.run(decompose + ["--output", t.path("lowrank"), "--quiet"])
        #expect(dref.status == 0, "\(dref.stderr)")
        try Self.checkResumes(decompose, output: t.path("lowrank-again"), kills: [3, 4], reference: t.path("lowrank"),
                              expectsFinishedShards: true)
    }
}
