import Foundation
import Testing
import MoETensor
import MoECheckpoint
@testable import MoEModels

/// Random real-shape checkpoints: from each family fixture's config, the same tensors with the same shapes
/// HF's save_pretrained wrote; byte-identical for a seed; loadable and finite.
@Suite struct SynthTests {
    @Test(arguments: FamilyParityTests.fixtures)
    func synthWritesWhatHFSaves(_ family: String) throws {
        let dir = Paths.fixture(family)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-synth-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try RandomCheckpoint.write(config: dir.appendingPathComponent("config.json"), output: out, seed: 3, quiet: true)
        let hf = try Checkpoint(directory: dir), ours = try Checkpoint(directory: out)
        // HF's fused-layout fixture names experts differently; compare it in the per-expert layout.
        let hfNames = try ModelRegistry.checkpointNames(directory: dir, checkpoint: hf, perExpert: true).tensorShapes
        let hfShapes = Dictionary(uniqueKeysWithValues: hfNames.map { ($0.name, $0.shape) })
        let ourShapes = Dictionary(uniqueKeysWithValues: ours.names.map { ($0, ours.info($0)!.shape) })
        #expect(ourShapes == hfShapes, "\(family): \(Set(ourShapes.keys).symmetricDifference(hfShapes.keys).sorted().prefix(4))")
        let m = try ModelRegistry.load(directory: out)
        let logits = m.forward([[1, 2, 3, 4]])
        #expect(logits.array.allSatisfy { $0.isFinite })
    }

    @Test func sameSeedSameBytesOtherSeedOtherBytes() throws {
        let config = Paths.fixture("qwen2_moe").appendingPathComponent("config.json")
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-synth-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: base) }
        func bytes(_ seed: UInt64, _ name: String, layers: Int? = nil) throws -> Data {
            let out = base.appendingPathComponent(name)
            try RandomCheckpoint.write(config: config, output: out, layers: layers, seed: seed, shardSize: 40_000, quiet: true)
            let files = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix(".safetensors") }.sorted()
            return try files.reduce(Data()) { $0 + (try Data(contentsOf: out.appendingPathComponent($1))) }
        }
        #expect(try bytes(1, "a") == bytes(1, "b"))
        #expect(try bytes(1, "a2") != bytes(2, "c"))
        let one = try Checkpoint(directory: base.appendingPathComponent("a"))
        #expect(one.files.count > 1)   // sharded at 40 kB
        _ = try bytes(1, "d", layers: 1)
        #expect(try ModelRegistry.describe(directory: base.appendingPathComponent("d")).numLayers == 1)
    }
}
