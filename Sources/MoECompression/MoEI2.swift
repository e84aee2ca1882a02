import Foundation
import MoETensor
import MoEModels
import MoECalibration
import MoECheckpoint

/// MoE-I² stage 1 (methods.md §3.3–3.6): expert importance by single-expert removal, layer importance,
/// non-uniform per-layer prune counts, a seeded layer-wise genetic search keeping the K best prune sets per
/// layer, and the block-wise KT-reception field choosing one candidate per layer jointly by the error at the
/// block output computed through the full decoder layers (attention, norms, residuals).
public enum MoEI2 {
    public struct Options: Sendable {
        public var population = 100
        public var generations = 50
        public var eliteFraction = 0.2
        public var mutationProbability = 0.3
        public var mutationMax = 1
        /// K: candidate prune sets kept per layer.
        public var candidates = 3
        /// T: consecutive MoE layers per reception-field block.
        public var blockSize = 3
        /// Tokens per layer used for GA fitness (the first ones of the cache's search split); nil: every search token
        /// whose fitness cache fits a quarter of the memory budget.
        public var fitnessTokens: Int?
        /// Calibration sequences run through the decoder layers for the KT field.
        public var fieldSequences = 16
        /// Ablation: every layer removes the same count (the budget applied per layer, as the uniform methods do)
        /// instead of counts set by layer importance (1c); the search and field run as usual.
        public var uniformCounts = false
        public var seed: UInt64 = 0
        public var epsilon = 1e-8
        public init() {}

        /// Refuses settings the search cannot run with (before any work).
        public func validate() throws {
            func check(_ ok: Bool, _ what: String) throws { if !ok { throw PruningError.invalid("moei2: \(what)") } }
            try check(population >= 2, "--population must be at least 2 (two parents), got \(population)")
            try check(generations >= 0, "--generations must be 0 or more, got \(generations)")
            try check(eliteFraction > 0 && eliteFraction <= 1, "the elite fraction must be in (0, 1], got \(eliteFraction)")
            try check(mutationProbability >= 0 && mutationProbability <= 1, "the mutation probability must be in [0, 1], got \(mutationProbability)")
            try check(mutationMax >= 1, "at least one mutation per child, got \(mutationMax)")
            try check(candidates >= 1, "--candidates (K) must be at least 1, got \(candidates)")
            try check(blockSize >= 1, "--block-size (T) must be at least 1, got \(blockSize)")
            if let f = fitnessTokens { try check(f >= 1, "--fitness-tokens must be at least 1, got \(f)") }
            try check(fieldSequences >= 1, "--field-sequences must be at least 1, got \(fieldSequences)")
            try check(epsilon.isFinite && epsilon >= 0, "epsilon must be finite and non-negative")
        }
    }

    /// A journaled result: a layer's prune set (or a block's choice of candidates) and its error.
    struct Candidate: Codable { var set: [Int]; var error: Double }

    /// Per-layer prune counts: total = round(P·Σe) removals spread by inverse layer importance, floored,
    /// capped at e − k, remainders by largest fractional part (skipping capped layers, cycling).
    public static func layerCounts(importance: [Double], experts: [Int], topK k: Int, total: Int, epsilon: Double) -> [Int] {
        let s = importance.map { 1 / ($0 + epsilon) }
        let sum = s.reduce(0, +)
        let raw = s.map { Double(total) * $0 / sum }
        let caps = experts.map { $0 - k }
        var n = zip(raw, caps).map { min(Int($0.rounded(.down)), $1) }
        var remaining = total - n.reduce(0, +)
        let order = raw.indices.sorted { (raw[$0] - raw[$0].rounded(.down), -$0) > (raw[$1] - raw[$1].rounded(.down), -$1) }
        while remaining > 0 {
            var progressed = false
            for i in order where remaining > 0 && n[i] < caps[i] {
                n[i] += 1
                remaining -= 1
                progressed = true
            }
            if !progressed { break }
        }
        return n
    }

    /// The genetic search of one layer: the K best distinct prune sets of size n with their errors.
    public static func geneticSearch(_ fit: LayerFitness, remove n: Int, options o: Options) throws -> [(set: [Int], error: Double)] {
        let e = fit.numExperts
        if n == 0 { return [([], try fit.error(pruned: []))] }
        var rng = SeededGenerator(seed: o.seed &+ UInt64(fit.layer) &* 0x9E37_79B9)
        func randomSubset(of pool: [Int], _ size: Int) -> [Int] {
            var p = pool
            for i in 0..<size { p.swapAt(i, i + Int(rng.next() % UInt64(p.count - i))) }
            return Array(p.prefix(size)).sorted()
        }
        let possible = binomial(e, n)
        var pop: [[Int]] = []
        var seen = Set<[Int]>()
        let target = Int(min(Double(o.population), possible))
        while pop.count < target {
            let s = randomSubset(of: Array(0..<e), n)
            if seen.insert(s).inserted { pop.append(s) }
        }
        func ranked(_ p: [[Int]]) throws -> [(set: [Int], error: Double)] {
            let errs = try fit.errors(p)
            return zip(p, errs).map { ($0, $1) }.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0.lexicographicallyPrecedes($1.0) }
        }
        for _ in 0..<o.generations {
            let r = try ranked(pop)
            let parents = Array(r.prefix(max(2, Int(o.eliteFraction * Double(o.population))))).map(\.set)
            var children = parents
            while children.count < o.population {
                let i = Int(rng.next() % UInt64(parents.count))
                var j = Int(rng.next() % UInt64(parents.count - 1))
                if j >= i { j += 1 }
                let union = Array(Set(parents[i]).union(parents[j])).sorted()
                var child = randomSubset(of: union, n)
                var m = 0
                for _ in 0..<o.mutationMax where rng.nextUnit() < o.mutationProbability { m += 1 }
                m = max(1, m)
                for _ in 0..<m {
                    let outside = (0..<e).filter { !child.contains($0) }
                    guard !outside.isEmpty else { break }
                    child[Int(rng.next() % UInt64(n))] = outside[Int(rng.next() % UInt64(outside.count))]
                    child.sort()
                }
                children.append(child)
            }
            pop = children
        }
        var best: [(set: [Int], error: Double)] = []
        for c in try ranked(pop) where !best.contains(where: { $0.set == c.set }) {
            best.append(c)
            if best.count == o.candidates { break }
        }
        return best
    }

    /// 1e for one block: the MoE layers `layers` (ascending model indices; the decoder layers between them run
    /// unpruned) with their candidate prune sets. Runs the full decoder layers from `input` (the original hidden
    /// state entering the first, `sequences` sequences of `seqLen` rows; overwritten) and returns the choice of one
    /// candidate per layer whose output after the last layer is nearest the unpruned one, and that Frobenius error.
    static func receptionField(model: CausalLM, layers moeLayers: [Int], candidates: [[[Int]]], input: Tensor,
                               sequences seqs: Int, seqLen: Int) -> (choice: [Int], error: Double) {
        let first = moeLayers.first!, last = moeLayers.last!
        // Decoder layer `li` on `x` in place, with `pruned` masked out of its MoE block.
        func forward(_ li: Int, _ x: Tensor, pruned: [Int]?) {
            var layer = model.layers[li]
            if let pruned, var blk = layer.feedForward.moe {
                blk.expertMask = (0..<blk.numExperts).map { !pruned.contains($0) }
                layer.feedForward = .moe(blk)
            }
            let segments = (0..<seqs).map { AttentionSegment(rows: ($0 * seqLen)..<(($0 + 1) * seqLen), cache: KVCache.Layer(for: layer.attention)) }
            layer.forward(x, segments: segments)
        }
        let reference = input.copy()
        for li in first...last { forward(li, reference, pruned: nil) }
        // Every K^T combination, in lexicographic order, sharing prefixes: a layer's output under a choice
        // of candidates for the layers before it is computed once (3 + 9 + 27 layer passes for K = T = 3,
        // not 3 · 27), and is exactly what running the whole combination from the block input gives.
        var bestCombo = moeLayers.map { _ in 0 }, bestErr = Double.infinity
        func descend(_ li: Int, _ x: Tensor, _ combo: [Int]) {
            if li > last {
                var err = 0.0
                for j in 0..<x.count { let diff = Double(x.data[j] - reference.data[j]); err += diff * diff }
                err = err.squareRoot()
                if err < bestErr { bestErr = err; bestCombo = combo }
                return
            }
            guard let pos = moeLayers.firstIndex(of: li) else {
                forward(li, x, pruned: nil)
                descend(li + 1, x, combo)
                return
            }
            let options = candidates[pos]
            for (c, candidate) in options.enumerated() {
                let y = c == options.count - 1 ? x : x.copy()
                forward(li, y, pruned: candidate)
                descend(li + 1, y, combo + [c])
            }
        }
        descend(first, input, [])
        return (bestCombo, bestErr)
    }

    public static func plan(model: CausalLM, cache: CalibrationCache, budget: PruningBudget, options o: Options,
                            modelName: String, memory: MemoryBudget = .default, quiet: Bool = false, journal: Journal = .none) throws -> PruningPlan {
        let d = model.description
        guard let k = d.routing?.topK else { throw PruningError.invalid("the model has no MoE layers") }
        try o.validate()
        let moe = d.moeLayerIndices
        let experts = moe.map { d.layers[$0].experts! }
        let total = try budget.totalRemoved(experts: experts, topK: k)

        // 1b importance, then 1d genetic search, one layer at a time: a layer's fitness cache (every expert's
        // output on the fitness tokens) is rebuilt for its search rather than kept, so memory stays near one layer.
        // Importance over every search token; the held-out windows only judge the result (plan's reconstruction error).
        let split = CalibrationSplit(cache)
        let importance = try ExpertImportance.compute(model: model, cache: cache, memory: memory, quiet: quiet, journal: journal)
        let expertImportance = moe.map { importance[$0]! }
        let layerImportance = expertImportance.map { $0.reduce(0, +) }
        let counts = o.uniformCounts ? try experts.map { try $0 - budget.keep(experts: $0, topK: k) }
            : layerCounts(importance: layerImportance, experts: experts, topK: k, total: total, epsilon: o.epsilon)
        var candidates: [[(set: [Int], error: Double)]] = []
        // Fitness tokens: as given, or as many search tokens as a quarter of the budget holds for the largest layer cache.
        let perToken = moe.indices.map { LayerFitness.storeBytes(tokens: 1, hidden: d.hiddenSize, experts: experts[$0], topK: k, remove: counts[$0]) }.max() ?? 1
        let fitTokens = split.search.prefix(o.fitnessTokens ?? max(1, memory.bytes / 4 / max(perToken, 1)))
        let tokens = fitTokens.count
        if !quiet {
            let largest = perToken * tokens
            Console.note("moei2: removing \(counts.map(String.init).joined(separator: " ")) experts per MoE layer; fitness caches of up to \(formatBytes(largest)) a layer (\(tokens) tokens), \(largest <= memory.bytes / 2 ? "in memory" : "in scratch files (over half of --max-memory)")")
        }
        let p2 = StageProgress("moei2 genetic search", total: moe.count, unit: "layers", quiet: quiet)
        for (i, l) in moe.enumerated() {
            let found = try journal.record("search-\(l)") {
                let fit = try LayerFitness(block: model.layers[l].feedForward.moe!, cache: cache, layer: l, tokens: fitTokens,
                                           remove: counts[i], storeLimit: memory.bytes / 2)
                return try geneticSearch(fit, remove: counts[i], options: o).map { Candidate(set: $0.set, error: $0.error) }
            }
            candidates.append(found.map { ($0.set, $0.error) })
            p2.advance()
        }

        // 1e KT-reception field over blocks of T consecutive MoE layers.
        var chosen = [Int](repeating: 0, count: moe.count)
        var fieldErrors = [Double](repeating: 0, count: moe.count)
        let seqLen = cache.manifest.seqLen
        let seqs = max(1, min(o.fieldSequences, split.search.count / seqLen))   // search windows only
        let p3 = StageProgress("moei2 reception field", total: (moe.count + o.blockSize - 1) / o.blockSize, unit: "blocks", quiet: quiet)
        var b = 0
        while b < moe.count {
            let block = Array(b..<min(b + o.blockSize, moe.count))
            let first = moe[block.first!]
            if let done: Candidate = journal.load("field-\(first)") {
                for (pos, i) in block.enumerated() { chosen[i] = done.set[pos]; fieldErrors[i] = done.error }
                p3.advance()
                b += o.blockSize
                continue
            }
            let input = try cache.tensor(first, "hidden_in", rows: 0..<(seqs * seqLen))
            let (bestCombo, bestErr) = receptionField(model: model, layers: block.map { moe[$0] }, candidates: block.map { candidates[$0].map(\.set) },
                                                      input: input, sequences: seqs, seqLen: seqLen)
            for (pos, i) in block.enumerated() { chosen[i] = bestCombo[pos]; fieldErrors[i] = bestErr }
            try journal.save("field-\(first)", Candidate(set: bestCombo, error: bestErr))
            p3.advance()
            b += o.blockSize
        }

        var layers: [PruningPlan.Layer] = []
        for (i, l) in moe.enumerated() {
            let pruned = Set(candidates[i][chosen[i]].set)
            layers.append(.init(layer: l, experts: experts[i], kept: (0..<experts[i]).filter { !pruned.contains($0) },
                                scores: ["expert_importance": expertImportance[i], "layer_importance": [layerImportance[i]],
                                         "candidate_errors": candidates[i].map(\.error), "chosen_candidate": [Double(chosen[i])],
                                         "block_output_error": [fieldErrors[i]],
                                         "search_error": [candidates[i][chosen[i]].error]]))
        }
        let params = ["population": "\(o.population)", "generations": "\(o.generations)", "K": "\(o.candidates)", "T": "\(o.blockSize)",
                      "counts": o.uniformCounts ? "uniform" : "by layer importance", "importance_tokens": "\(split.search.count)", "fitness_tokens": "\(tokens)", "field_sequences": "\(seqs)", "removed": "\(total)"]
        return PruningPlan(method: "moei2", model: modelName, parameters: params, layers: layers)
    }
}
