import Foundation
import Testing
import MoETensor
import MoECheckpoint
@testable import MoEModels

/// Layer-major passes in chunks give the same numbers as one pass over everything, to the last bit: every
/// kernel computes a token's values the same way whatever else shares its batch.
@Suite struct ChunkingTests {
    func identical(_ a: Tensor, _ b: Tensor) -> Bool { a.shape == b.shape && (0..<a.count).allSatisfy { a.data[$0].bitPattern == b.data[$0].bitPattern } }

    static let models: [URL] = FamilyParityTests.fixtures.map { Paths.fixture($0) }
        + ["mixtral-ref", "qwen-moe-ref"].map { Paths.sharedModel($0) }

    func sequences(vocab: Int, count: Int, seed: UInt64) -> [[Int]] {
        var g = SeededGenerator(seed: seed)
        return (0..<count).map { i in (0..<(5 + 3 * i)).map { _ in Int(g.next() % UInt64(vocab)) } }
    }

    @Test(arguments: models)
    func chunkedPassesEqualOnePass(_ dir: URL) throws {
        let model = try ModelRegistry.load(directory: dir)
        let seqs = sequences(vocab: model.vocabSize, count: 5, seed: 7)
        let whole = model.logits(model.hidden(seqs))
        // The smallest budget that holds the longest sequence: here, one sequence per chunk.
        let plan = MemoryPlan(model)
        let tiny = MemoryBudget(bytes: plan.bytes(lengths: [seqs.map(\.count).max()!]))
        let chunks = try plan.chunks(lengths: seqs.map(\.count), budget: tiny)
        #expect(chunks.count >= 3, "\(dir.lastPathComponent): \(chunks)")
        var parts: [Tensor] = []
        for r in chunks {
            let h = model.hidden(Array(seqs[r]), evict: true)
            var rows: [Tensor] = []
            model.forEachLogitsBlock(h, rows: 0..<h.rows, block: 3) { _, block in rows.append(block) }
            parts.append(Tensor.concatRows(rows))
        }
        let chunked = Tensor.concatRows(parts)
        #expect(chunked.shape == whole.shape)
        #expect(identical(chunked, whole), "\(dir.lastPathComponent): max |Δ| \(chunked.maxAbsDifference(whole))")
        // Evicting pages does not change what is read back.
        #expect(identical(model.logits(model.hidden(seqs)), whole))
    }

    /// The tasks pass (prefixes, then continuations over copies of their keys and values, layer by layer) does
    /// what running each context and then each choice through a KV cache does, to the last bit; and what running
    /// context + choice as one sequence does, to rounding.
    @Test func sharedPrefixPassEqualsCachedContinuation() throws {
        let model = try ModelRegistry.load(directory: Paths.sharedModel("qwen-moe-ref"))
        let ctx = sequences(vocab: model.vocabSize, count: 3, seed: 1)
        let cont = sequences(vocab: model.vocabSize, count: 4, seed: 2)
        let pairs = [(0, cont[0]), (0, cont[1]), (2, cont[2]), (1, cont[3])]
        let (_, hc) = model.hidden(prefixes: ctx, continuations: pairs.map { (prefix: $0.0, ids: $0.1) })
        var row = 0
        for (p, ids) in pairs {
            let cache = KVCache(for: model)
            _ = model.hidden([ctx[p]], caches: [cache])
            let want = model.hidden([ids], caches: [cache])
            let got = hc.rowSlice(row..<(row + ids.count))
            #expect(identical(got, want))
            let whole = model.hidden([ctx[p] + ids]).rowSlice(ctx[p].count..<(ctx[p].count + ids.count))
            #expect(got.maxAbsDifference(whole) < 1e-4)
            row += ids.count
        }
    }

    @Test func tooSmallABudgetIsRefusedWithTheAmountNeeded() throws {
        let model = try ModelRegistry.load(directory: Paths.sharedModel("mixtral-ref"))
        let plan = MemoryPlan(model)
        #expect(plan.layerBytes > 0 && plan.bytesPerToken > 0)
        do {
            _ = try plan.chunks(lengths: [256], budget: MemoryBudget(bytes: plan.layerBytes))
            Issue.record("a budget of one layer's weights was accepted")
        } catch let e as ModelError {
            #expect("\(e)".contains("too small") && "\(e)".contains("need at least"))
        }
    }
}
