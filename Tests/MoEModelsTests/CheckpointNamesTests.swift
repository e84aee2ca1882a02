import Foundation
import Testing
import MoETensor
import MoECheckpoint
@testable import MoEModels

/// Each family's checkpoint-name table against real files: it names every tensor of the HF-made fixtures and
/// reference models (v4, v5 and fused layouts), with their shapes, and every parameter of the loaded model.
@Suite struct CheckpointNamesTests {
    static let models: [URL] = FamilyParityTests.fixtures.map { Paths.fixture($0) }
        + ["mixtral-ref", "qwen-moe-ref"].map { Paths.sharedModel($0) }

    @Test(arguments: models)
    func tableNamesEveryTensorWithItsShape(_ dir: URL) throws {
        let ckpt = try Checkpoint(directory: dir)
        let names = try ModelRegistry.checkpointNames(directory: dir, checkpoint: ckpt)
        var listed = Set<String>()
        // Stored shapes: a fused tensor's whole shape; MXFP4 blocks [..., cols/32, 16] and scales [..., cols/32].
        let stored = Dictionary(names.tensorShapes.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        for (logical, loc) in names.entries {
            guard let info = ckpt.info(loc.name) else {
                #expect(loc.optional, "\(dir.lastPathComponent): \(logical) → \(loc.name) is not in the file")
                continue
            }
            let want = loc.mxfp4Scales != nil ? stored[loc.name] : (loc.part?.fullShape ?? loc.shape)
            #expect(info.shape == want, "\(logical): \(info.shape) vs \(want ?? [])")
            listed.insert(loc.name)
            #expect(names.logicalNames(ofTensor: loc.name).contains(logical))
            if let scales = loc.mxfp4Scales {
                #expect(ckpt.info(scales)?.shape == stored[scales] && ckpt.info(scales)?.dtype == .u8, "\(logical): \(scales)")
                #expect(names.logicalNames(ofTensor: scales).contains(logical))
                listed.insert(scales)
            }
        }
        #expect(listed == Set(ckpt.names), "\(dir.lastPathComponent): unnamed \(Set(ckpt.names).subtracting(listed).sorted().prefix(5))")
    }

    @Test(arguments: models)
    func everyParameterHasItsCheckpointName(_ dir: URL) throws {
        let ckpt = try Checkpoint(directory: dir)
        let names = try ModelRegistry.checkpointNames(directory: dir, checkpoint: ckpt)
        let perExpert = try ModelRegistry.checkpointNames(directory: dir, checkpoint: ckpt, perExpert: true)
        let model = try ModelRegistry.load(directory: dir)
        var count = 0
        model.forEachParameter { logical, value in
            count += 1
            guard let loc = names.location(logical) else { Issue.record("\(logical) is not in the table"); return }
            #expect(loc.shape == value.shape, "\(logical)")
            // In the per-expert layout every parameter is a whole tensor of its own (gpt-oss has only fused layouts).
            if model.description.modelType != "gpt_oss" { #expect(perExpert.checkpointName(logical) != nil, "\(logical)") }
        }
        #expect(count > 0)
    }

    @Test func suffixesAndVectorsMapThroughTheirModule() throws {
        let dir = Paths.sharedModel("mixtral-ref")
        let names = try ModelRegistry.checkpointNames(directory: dir, checkpoint: Checkpoint(directory: dir))
        #expect(names.checkpointName("layers.2.moe.experts.5.down.lowrank_a") == "model.layers.2.block_sparse_moe.experts.5.w2.lowrank_a")
        #expect(names.checkpointName("layers.2.moe.experts.5.ce_mid") == "model.layers.2.block_sparse_moe.experts.5.ce_mid")
        #expect(names.logicalNames(ofTensor: "model.layers.2.block_sparse_moe.experts.5.ce_mid") == ["layers.2.moe.experts.5.ce_mid"])
        #expect(names.logicalNames(ofTensor: "model.layers.2.block_sparse_moe.experts.5.w1.lowrank_b") == ["layers.2.moe.experts.5.gate.lowrank_b"])
        #expect(names.module("layers.0.moe.router") == "model.layers.0.block_sparse_moe.gate")
        #expect(names.checkpointName("layers.9.attn.q") == nil)
    }
}
