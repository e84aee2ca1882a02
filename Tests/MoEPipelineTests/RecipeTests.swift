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

    /// `shard_size` is read as a size and reaches the recipe (every stage's writer takes it); a non-size is refused
    /// with its line.
    @Test func shardSize() throws {
        try check(head + "shard_size: lots\nstages:\n  - prune: {method: reap, ratio: 0.25}\n", line: 4, contains: "shard_size must be a size")
        let f = Where.repo.appendingPathComponent("recipes/.test-\(getpid())-shard.yaml")
        try (head + "shard_size: 10MB\nstages:\n  - prune: {method: reap, ratio: 0.25}\n").write(to: f, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: f) }
        #expect(try Recipe(file: f).shardSize == 10_000_000)
    }

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

    /// Issue 14's bad values: refused at parse time, on their own line, by the rule set the CLI uses too.
    @Test func valuesOutOfRangeAreRefusedBeforeWork() throws {
        try check(head + "stages:\n  - heal:\n      steps: 4\n      lr: -1\n", line: 7, contains: "heal.lr must be a finite number > 0")
        try check(head + "stages:\n  - heal: {steps: 4, lora_dropout: 1.5}\n", line: 5, contains: "heal.lora_dropout must be a number in [0, 1)")
        try check(head + "stages:\n  - heal: {steps: 0}\n", line: 5, contains: "heal.steps must be a positive whole number")
        try check(head + "stages:\n  - heal: {steps: 4, warmup_ratio: 2}\n", line: 5, contains: "heal.warmup_ratio must be a number in [0, 1]")
        try check(head + "stages:\n  - prune: {method: moeits, tau: .nan}\n", line: 5, contains: "prune.tau must be a finite number")
        try check(head + "stages:\n  - prune: {method: reap, ratio: .inf}\n", line: 5, contains: "prune.ratio must be a number in (0, 1)")
        try check(head + "stages:\n  - prune: {method: moei2, ratio: 0.25, population: 1}\n", line: 5, contains: "prune.population must be a whole number ≥ 2")
        try check(head + "stages: []\n", line: 4, contains: "the stage list is empty")
        try check("model: ../../shared/models/mixtral-ref\ncalibration:\n  data: ../../shared/data/calib\n  samples: 0\nstages:\n  - prune: {method: moeits, tau: 1}\n",
                  line: 4, contains: "calibration.samples must be a positive whole number")
        try check(head + "stages:\n  - heal: {steps: 4, targets: [q, x]}\n", line: 5, contains: "unknown heal targets entry \"x\"")
        // Against the model (mixtral-ref: 8 experts, top-2).
        try check(head + "stages:\n  - prune:\n      method: reap\n      keep: 1\n", line: 7, contains: "prune.keep must be between top-k = 2 and the 8 experts")
        try check(head + "stages:\n  - prune: {method: frequency, ratio: 0.9}\n", line: 5, contains: "fewer than top-k = 2")
        try check(head + "stages:\n  - compress_experts: {main_experts: 2, steps: 4}\n", line: 5, contains: "main_experts must be below top-k = 2")
    }

    /// Every numeric option a stage reads has a rule, and every string option a list of values or a path check.
    @Test func everyStageOptionHasARule() {
        for (stage, options) in Recipe.schema {
            for (key, type) in options {
                switch type {
                case "int", "double": #expect(OptionRules.stages[stage]?[key] != nil, "\(stage).\(key) has no rule")
                case "string": #expect(Recipe.allowedStrings[stage]?[key] != nil || key == "data", "\(stage).\(key) is not checked")
                case "strings": #expect(Recipe.allowedLists[stage]?[key] != nil, "\(stage).\(key) is not checked")
                default: #expect(type == "bool", "\(stage).\(key): \(type)")
                }
            }
        }
        for key in ["samples", "seq_len"] { #expect(OptionRules.stages["calibration"]?[key] != nil) }
        // The rules themselves: NaN and infinities never pass, ends as declared.
        #expect(!OptionRule.finite.accepts(.nan) && !OptionRule.finite.accepts(.infinity) && OptionRule.finite.accepts(-3))
        #expect(OptionRules.fraction.accepts(0) && !OptionRules.fraction.accepts(1) && OptionRules.keptFraction.accepts(1) && !OptionRules.keptFraction.accepts(0))
        #expect(!OptionRule.count(min: 1).accepts(1.5) && !OptionRule.count(min: 1).accepts(0) && OptionRule.count(min: 0).accepts(0))
    }

    @Test func shippedRecipesAreValid() throws {
        let dir = Where.repo.appendingPathComponent("recipes")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") && !$0.hasPrefix(".") }
        #expect(files.count >= 5)
        for f in files {
            let r = try Recipe(file: dir.appendingPathComponent(f))
            #expect(!r.branches.isEmpty && r.branches.allSatisfy { !$0.stages.isEmpty }, "\(f)")
            // Every shipped recipe measures speed, so its table's speed columns are filled (compare.yaml's were "-").
            #expect(r.speed, "\(f): evaluation.speed is off")
        }
        let compare = try Recipe(file: dir.appendingPathComponent("compare.yaml"))
        #expect(compare.branches.map(\.name) == ["frequency", "reap", "naee", "moeits", "moei2"])
    }
}

/// A stage's input hash: an earlier stage's output is identified by the hashes its manifest recorded (equal to
/// hashing the files again, without reading gigabytes twice); other folders are hashed from their files.
@Suite struct StageInputHashTests {
    @Test func recordedHashesEqualTheFiles() throws {
        let stage = Where.temp("stage")
        let model = stage.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: stage) }
        try Data([1, 2, 3]).write(to: model.appendingPathComponent("model.safetensors"))
        try "{}".write(to: model.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        try "[]".write(to: stage.appendingPathComponent("routing.json"), atomically: true, encoding: .utf8)
        var m = StageManifest(stage: "prune", options: [:], input: "x", inputHash: "y", seed: 0, calibration: nil, version: moepressVersion, model: "model")
        m.outputs = try Pipeline.fileHashes(stage)
        try JSONEncoder().encode(m).write(to: stage.appendingPathComponent("manifest.json"))
        let direct = try Pipeline.contentHash(model)
        #expect(try Pipeline.inputHash(model) == direct)
        // The recorded hashes are what is used: a later edit of the folder does not make it read the files.
        try Data([9]).write(to: model.appendingPathComponent("model.safetensors"))
        #expect(try Pipeline.inputHash(model) == direct && Pipeline.contentHash(model) != direct)
        // Without a manifest the files are hashed.
        try FileManager.default.removeItem(at: stage.appendingPathComponent("manifest.json"))
        #expect(try Pipeline.inputHash(model) == Pipeline.contentHash(model))
    }
}
