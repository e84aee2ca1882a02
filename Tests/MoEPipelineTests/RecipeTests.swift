import Foundation
import Testing
@testable import MoEPipeline

enum Where {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func temp(_ tag: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("moepress-recipe-\(tag)-\(getpid())-\(UInt64.random(in: 0..<1 << 40))")
    }
}

/// Malformed recipes are refused before any work, with the file and the YAML line.
@Suite struct RecipeValidationTests {
    /// Writes `text` as a recipe inside the repository's recipes/ folder (so ../../shared paths resolve).
    func check(_ text: String, line: Int?, contains message: String) throws {
        let f = Where.repo.appendingPathComponent("recipes/.test-\(getpid())-\(UInt64.random(in: 0..<1 << 40)).yaml")
        try text.write(to: f, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: f) }
        do {
            _ = try Recipe(file: f)
            Issue.record("accepted: \(text)")
        } catch let e as RecipeError {
            #expect(e.file == f.standardizedFileURL.path)
            #expect(e.line == line, "\(e)")
            #expect(e.message.contains(message), "\(e)")
        }
    }

    let head = "model: ../../shared/models/mixtral-ref\ncalibration:\n  data: ../../shared/data/calib\n"

    @Test func unknownStage() throws {
        try check(head + "stages:\n  - prune: {method: moei2, ratio: 0.25}\n  - prun: {method: reap}\n", line: 6, contains: "unknown stage \"prun\"")
    }

    @Test func unknownMethod() throws {
        try check(head + "stages:\n  - prune:\n      method: moei3\n      ratio: 0.5\n", line: 6, contains: "unknown prune method \"moei3\"")
    }

    @Test func wrongType() throws {
        try check(head + "stages:\n  - prune:\n      method: moei2\n      ratio: half\n", line: 7, contains: "prune.ratio must be a number")
        try check(head + "stages:\n  - heal: {steps: many}\n", line: 5, contains: "heal.steps must be an integer")
    }

    @Test func missingModel() throws {
        try check("stages:\n  - prune: {method: moeits, ratio: 0.5}\n", line: 1, contains: "missing \"model\"")
        try check("model: ../../shared/models/no-such-model\nstages: []\n", line: 1, contains: "does not exist")
    }

    @Test func otherMistakes() throws {
        try check(head + "stages:\n  - prune: {method: moei2}\n", line: 5, contains: "exactly one of ratio, keep or tau")
        try check("model: ../../shared/models/mixtral-ref\nstages:\n  - prune: {method: reap, ratio: 0.5}\n", line: 1, contains: "need calibration data")
        try check(head + "stages:\n  - prune: {method: moei2, ratio: 0.25, colour: red}\n", line: 5, contains: "unknown option \"colour\"")
        try check(head + "stagez: []\n", line: 4, contains: "unknown key \"stagez\"")
        try check(head + "stages:\n  - prune: {method: moei2, ratio: 0.25\n", line: 6, contains: "not valid YAML")
    }

    @Test func shippedRecipesAreValid() throws {
        let dir = Where.repo.appendingPathComponent("recipes")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") && !$0.hasPrefix(".") }
        #expect(files.count >= 5)
        for f in files {
            let r = try Recipe(file: dir.appendingPathComponent(f))
            #expect(!r.branches.isEmpty && r.branches.allSatisfy { !$0.stages.isEmpty }, "\(f)")
        }
        let compare = try Recipe(file: dir.appendingPathComponent("compare.yaml"))
        #expect(compare.branches.map(\.name) == ["frequency", "reap", "naee", "moeits", "moei2"])
    }
}
