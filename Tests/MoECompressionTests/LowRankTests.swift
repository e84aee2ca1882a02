import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
@testable import MoECompression

@Suite struct LowRankTests {
    func random(_ m: Int, _ n: Int, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor(shape: [m, n], values: (0..<(m * n)).map { _ in Float(g.nextUnit() * 2 - 1) })
    }

    @Test func factorsReconstructExactlyAtFullRank() throws {
        for (m, n) in [(7, 5), (5, 7), (16, 16)] {
            let w = random(m, n, seed: UInt64(m * n))
            let (a, b) = try LowRank.svdFactors(w, rank: min(m, n))
            #expect(matmul(a, b).maxAbsDifference(w) < 1e-5)
        }
        // A rank-2 matrix is exact at rank 2.
        let w2 = matmul(random(9, 2, seed: 1), random(2, 6, seed: 2))
        let (a, b) = try LowRank.svdFactors(w2, rank: 2)
        #expect(a.shape == [9, 2] && b.shape == [2, 6])
        #expect(matmul(a, b).maxAbsDifference(w2) < 1e-5)
        // ⌊ρ·m·n/(m+n)⌋: 0.5·512·256/768 = 85.33 → 85.
        #expect(LowRank.rank(keep: 0.5, m: 512, n: 256) == 85)
        #expect(LowRank.rank(keep: 1, m: 7, n: 5) == 2 && LowRank.rank(keep: 0.01, m: 7, n: 5) == 1)
    }

    /// The decomposed model (experts run as two skinny GEMMs) equals the same model with each factor pair
    /// multiplied back into a dense matrix; a lower kept ratio moves the logits further from the original.
    @Test func decomposedRuntimeMatchesDenseProduct() throws {
        let src = Where.fixture("qwen2_moe")
        let original = try ModelRegistry.load(directory: src)
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let base = original.forward(ids)
        var drift: [Double] = []
        for rho in [0.9, 0.4] {
            let out = Where.temp("lowrank")
            defer { try? FileManager.default.removeItem(at: out) }
            let report = try LowRank.decompose(model: src, keep: rho, output: out, quiet: true)
            #expect(report.parametersAfter < report.parametersBefore)
            let m = try ModelRegistry.load(directory: out)
            let got = m.forward(ids)
            let dense = try ModelRegistry.load(directory: out)
            for l in dense.description.moeLayerIndices {
                var block = dense.layers[l].feedForward.moe!
                block.experts = block.experts.map { e in
                    func d(_ x: any LinearLayer) -> any LinearLayer {
                        let lr = x as! LowRankLinear
                        return DenseLinear(weight: matmul(lr.a, lr.b))
                    }
                    return GatedMLP(gate: d(e.gate), up: d(e.up), down: d(e.down), activation: e.activation)
                }
                dense.layers[l].feedForward = .moe(block)
            }
            #expect(got.maxAbsDifference(dense.forward(ids)) < 1e-4)
            drift.append(Double(got.maxAbsDifference(base)))
            #expect(m.parameterCount < original.parameterCount)
        }
        #expect(drift[0] < drift[1])
    }
}
