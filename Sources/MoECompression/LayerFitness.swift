import Foundation
import MoETensor
import MoEModels
import MoECheckpoint
import MoECalibration

/// ‖Y − MoE_S(X)‖_F for one MoE layer and a set S of pruned experts, on cached calibration tokens: the
/// layer-output reconstruction error NAEE and MoE-I² minimise. Y is the full block's output; the shared
/// expert (identical on both sides) is subtracted from it, leaving r = Y − shared.
///
/// A candidate's error per token is ‖r − Σ_s w_s o_s‖² over the experts o_s it routes the token to, which
/// expands to ⟨r,r⟩ − 2 Σ w_s ⟨r,o_s⟩ + Σ w_s w_s' ⟨o_s,o_s'⟩. So the expert outputs are computed once and
/// reduced, per token, to the Gram matrix (in f64) of r and the outputs a candidate can use; a candidate
/// then costs its masked routing and k² products per token instead of reading k·H floats, and the outputs
/// themselves are never stored. Removing at most `remove` experts, a token's new top-k lies within its
/// original top-(k + remove) by the router's choice order (softmax or sigmoid scores, without group limits),
/// so those are the experts kept per token; group-limited routing keeps all. A choice outside them (a tie
/// broken the other way after renormalisation) is computed directly for that token, so the error is exact to
/// f64 rounding of the expansion. The Gram store goes to an unlinked scratch file beyond `storeLimit` bytes;
/// results never depend on memory.
public final class LayerFitness: @unchecked Sendable {
    public let layer: Int
    public let numExperts: Int
    let block: MoEBlock
    let cache: CalibrationCache
    let logits: Tensor
    /// Per token: the experts kept ([tokens × depth], in choice order) and the Gram matrix of r and their
    /// outputs ([tokens × (depth + 1)²] f64, index 0 is r).
    let depth: Int
    let slots: [Int32]
    let gram: UnsafeMutablePointer<Double>
    let gramOwner: AnyObject
    public let spilled: Bool
    public let tokens: Int
    let hidden: Int
    private var memo: [[Int]: Double] = [:]
    private let lock = NSLock()

    /// Tokens whose expert outputs are computed together while the Gram matrices are made.
    static let tokenBlock = 256

    /// Uses the first `maxTokens` cached tokens of the layer; candidates remove at most `remove` experts.
    public convenience init(block: MoEBlock, cache: CalibrationCache, layer: Int, maxTokens: Int, remove: Int,
                            storeLimit: Int = MemoryBudget.default.bytes / 2) throws {
        guard maxTokens >= 1 else { throw PruningError.invalid("the fitness needs at least one calibration token (--fitness-tokens)") }
        try self.init(block: block, cache: cache, layer: layer, tokens: 0..<min(maxTokens, cache.manifest.tokens), remove: remove, storeLimit: storeLimit)
    }

    /// Uses the cached tokens `range` of the layer; candidates remove at most `remove` experts.
    public init(block: MoEBlock, cache: CalibrationCache, layer: Int, tokens range: Range<Int>, remove: Int,
                storeLimit: Int = MemoryBudget.default.bytes / 2) throws {
        self.layer = layer
        self.block = block
        self.cache = cache
        guard !range.isEmpty, range.lowerBound >= 0, range.upperBound <= cache.manifest.tokens else {
            throw PruningError.invalid("the fitness needs calibration tokens within the cache's \(cache.manifest.tokens), got \(range)")
        }
        let t = range.count
        tokens = t
        let h = cache.manifest.hiddenSize, e = block.numExperts
        hidden = h
        numExperts = e
        let r = block.routing
        let bounded = r.groups <= 1 && (block.router.correctionBias == nil || r.scoring == .sigmoid)
        let d = bounded ? min(e, block.topK + max(remove, 0)) : e
        depth = d
        let g = d + 1
        let store = try ScratchFile.storage(bytes: max(1, t * g * g) * 8, inMemory: storeLimit)
        gramOwner = store.owner
        gram = store.pointer.bindMemory(to: Double.self, capacity: max(1, t * g * g))
        spilled = store.spilled
        let logitsAll = Tensor(zeros: [t, e])
        var slotsAll = [Int32](repeating: 0, count: t * d)
        let file = try cache.file(layer)
        let moeIn = try file.weight("moe_in"), moeOut = try file.weight("moe_out")
        guard moeIn.cols == h, moeIn.rows >= range.upperBound, moeOut.rows >= range.upperBound else {
            throw PruningError.invalid("\(file.path): moe_in/moe_out do not hold \(range.upperBound) tokens of width \(h)")
        }
        var wide = block.router
        wide.routing.topK = d
        var t0 = 0
        while t0 < t {
            let n = min(Self.tokenBlock, t - t0)
            let rows = (range.lowerBound + t0)..<(range.lowerBound + t0 + n)
            let x = moeIn.rowSlice(rows).float(), y = moeOut.rowSlice(rows).float()
            if let s = block.sharedOutput(x) { for i in 0..<y.count { y.data[i] -= s.data[i] } }   // r = Y − shared
            let lg = block.router.linear.callAsFunction(x)
            (logitsAll.data + t0 * e).update(from: lg.data, count: n * e)
            let slots: [Int32] = d == e ? (0..<(n * e)).map { Int32($0 % e) } : wide.decide(logits: lg).experts
            for i in 0..<(n * d) { slotsAll[t0 * d + i] = slots[i] }
            // Every kept (token, expert) output of the block, grouped by expert.
            let outputs = Tensor(zeros: [n * d, h])
            var lists = [[Int]](repeating: [], count: e)
            for (row, ex) in slots.enumerated() { lists[Int(ex)].append(row) }
            parallelFor(e) { ex in
                let rows = lists[ex]
                guard !rows.isEmpty else { return }
                let xe = Tensor(zeros: [rows.count, h]), ye = Tensor(zeros: [rows.count, h])
                for (i, row) in rows.enumerated() { (xe.data + i * h).update(from: x.data + (row / d) * h, count: h) }
                block.experts[ex].apply(xe.data, rows: rows.count, into: ye.data, parallel: false)
                for (i, row) in rows.enumerated() { (outputs.data + row * h).update(from: ye.data + i * h, count: h) }
            }
            // Per token, G = M Mᵀ in f64 for M = [r; o_1; …; o_d].
            let gp = SendablePointer(gram + t0 * g * g)
            parallelFor(n) { i in
                var m = [Double](repeating: 0, count: g * h)
                for j in 0..<h { m[j] = Double(y.data[i * h + j]) }
                for a in 0..<d { for j in 0..<h { m[(a + 1) * h + j] = Double(outputs.data[(i * d + a) * h + j]) } }
                m.withUnsafeBufferPointer { BLAS.syrk(n: g, k: h, a: $0.baseAddress!, transposed: true, into: gp.raw + i * g * g) }
            }
            t0 += n
        }
        logits = logitsAll
        slots = slotsAll
    }

    /// Bytes the Gram store takes for `tokens` tokens of a layer with `experts` experts when candidates remove
    /// up to `remove` (the figure a plan can be budgeted with).
    public static func storeBytes(tokens: Int, hidden: Int, experts: Int, topK: Int, remove: Int) -> Int {
        let g = min(experts, topK + remove) + 1
        return tokens * g * g * 8
    }

    /// Error with the experts in `pruned` removed (memoised; safe to call from several threads).
    /// A token whose choice falls outside the kept slots is recomputed from the cache; a failed cache read is an error.
    public func error(pruned: [Int]) throws -> Double {
        let key = pruned.sorted()
        lock.lock()
        if let v = memo[key] { lock.unlock(); return v }
        lock.unlock()
        var allowed = [Bool](repeating: true, count: numExperts)
        for p in key { allowed[p] = false }
        let d = block.router.decide(logits: logits, allowed: allowed)
        let k = d.topK, g = depth + 1
        var total = 0.0
        var at = [Int](repeating: 0, count: k)
        for t in 0..<tokens {
            var found = true
            for s in 0..<k {
                let e = d.experts[t * k + s]
                if depth == numExperts {
                    at[s] = Int(e) + 1
                } else if let slot = (0..<depth).first(where: { slots[t * depth + $0] == e }) {
                    at[s] = slot + 1
                } else {
                    found = false
                }
            }
            guard found else {
                total += try direct(token: t, experts: (0..<k).map { Int(d.experts[t * k + $0]) }, weights: (0..<k).map { d.weights[t * k + $0] })
                continue
            }
            let gt = gram + t * g * g
            var sq = gt[0]
            for s in 0..<k {
                let ws = Double(d.weights[t * k + s]), row = gt + at[s] * g
                sq -= 2 * ws * row[0]
                for s2 in 0..<k { sq += ws * Double(d.weights[t * k + s2]) * row[at[s2]] }
            }
            total += max(sq, 0)
        }
        let v = total.squareRoot()
        lock.lock()
        memo[key] = v
        lock.unlock()
        return v
    }

    /// ‖r − Σ w o‖² of one token, from its cached input (a choice outside the kept experts).
    func direct(token t: Int, experts: [Int], weights: [Float]) throws -> Double {
        let x = try cache.tensor(layer, "moe_in", rows: t..<(t + 1)), y = try cache.tensor(layer, "moe_out", rows: t..<(t + 1))
        if let s = block.sharedOutput(x) { for j in 0..<hidden { y.data[j] -= s.data[j] } }
        let o = Tensor(zeros: [1, hidden])
        var sum = [Double](repeating: 0, count: hidden)
        for (e, w) in zip(experts, weights) {
            block.experts[e].apply(x.data, rows: 1, into: o.data, parallel: false)
            for j in 0..<hidden { sum[j] += Double(w) * Double(o.data[j]) }
        }
        var sq = 0.0
        for j in 0..<hidden { let diff = Double(y.data[j]) - sum[j]; sq += diff * diff }
        return sq
    }

    /// Errors of many candidate sets, spread over the cores.
    public func errors(_ sets: [[Int]]) throws -> [Double] {
        var out = [Double](repeating: 0, count: sets.count)
        let failure = FirstError()
        out.withUnsafeMutableBufferPointer { buf in
            let o = SendablePointer(buf.baseAddress!)
            parallelFor(sets.count) { i in
                do { o[i] = try self.error(pruned: sets[i]) } catch { failure.record(error) }
            }
        }
        try failure.rethrow()
        return out
    }
}

/// The first error thrown by work spread over threads, rethrown once they have joined.
final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var error: (any Error)?
    func record(_ e: any Error) { lock.lock(); if error == nil { error = e }; lock.unlock() }
    func rethrow() throws { if let error { throw error } }
}

/// All k-subsets of 0..<n in lexicographic order.
func combinations(_ n: Int, _ k: Int) -> [[Int]] {
    guard k <= n else { return [] }
    if k == 0 { return [[]] }
    var out: [[Int]] = []
    var c = Array(0..<k)
    while true {
        out.append(c)
        var i = k - 1
        while i >= 0 && c[i] == n - k + i { i -= 1 }
        if i < 0 { break }
        c[i] += 1
        for j in (i + 1)..<k { c[j] = c[j - 1] + 1 }
    }
    return out
}

func binomial(_ n: Int, _ k: Int) -> Double {
    guard k >= 0 && k <= n else { return 0 }
    var r = 1.0
    for i in 0..<min(k, n - k) { r = r * Double(n - i) / Double(i + 1) }
    return r
}

/// Which calibration tokens a method searches on and which it is judged on: the last ⌊N/8⌋ windows (at least
/// one, when there are two or more) are held out; the reconstruction error a plan reports is measured there,
/// never on the tokens a search optimised.
public struct CalibrationSplit: Sendable {
    public let search: Range<Int>
    public let heldOut: Range<Int>
    public init(_ cache: CalibrationCache) {
        let n = cache.manifest.samples, l = cache.manifest.seqLen
        let held = n >= 2 ? max(1, n / 8) : 0
        search = 0..<((n - held) * l)
        heldOut = held > 0 ? ((n - held) * l)..<(n * l) : 0..<(n * l)
    }
    /// Whether anything is held out (a single calibration window is both searched and judged).
    public var isHeldOut: Bool { search.upperBound <= heldOut.lowerBound }
}

/// NAEE-style baseline: in every layer, enumerate every set of experts to remove and keep the subset with
/// the smallest layer-output reconstruction error.
public enum NAEE {
    public static let maxCombinations = 20_000

    public static func plan(model: CausalLM, cache: CalibrationCache, budget: PruningBudget, modelName: String,
                            maxTokens: Int = 8192, memory: MemoryBudget = .default, quiet: Bool = false, journal: Journal = .none) throws -> PruningPlan {
        let d = model.description
        guard let k = d.routing?.topK else { throw PruningError.invalid("the model has no MoE layers") }
        var layers: [PruningPlan.Layer] = []
        let progress = StageProgress("naee", total: d.moeLayerIndices.count, unit: "layers", quiet: quiet)
        for l in d.moeLayerIndices {
            let block = model.layers[l].feedForward.moe!
            let e = block.numExperts
            let keep = try budget.keep(experts: e, topK: k)
            let count = binomial(e, e - keep)
            guard count <= Double(maxCombinations) else {
                throw PruningError.invalid("naee would enumerate C(\(e), \(keep)) = \(Int(count)) subsets in layer \(l) (limit \(maxCombinations)); use --method moei2, whose genetic search handles many experts")
            }
            layers.append(try journal.record("naee-\(l)") {
                let split = CalibrationSplit(cache)
                let fit = try LayerFitness(block: block, cache: cache, layer: l, tokens: split.search.prefix(maxTokens), remove: e - keep,
                                           storeLimit: memory.bytes / 2)
                let sets = combinations(e, e - keep)
                let errs = try fit.errors(sets)
                var best = 0
                for i in 1..<max(errs.count, 1) where errs[i] < errs[best] { best = i }
                let kept = (0..<e).filter { !sets[best].contains($0) }
                return PruningPlan.Layer(layer: l, experts: e, kept: kept, scores: ["search_error": [errs[best]]])
            })
            progress.advance()
        }
        return PruningPlan(method: "naee", model: modelName, parameters: ["fitness_tokens": "\(maxTokens)"], layers: layers)
    }
}
