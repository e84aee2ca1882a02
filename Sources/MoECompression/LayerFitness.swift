import Foundation
import MoETensor
import MoEModels
import MoECalibration

/// ‖Y − MoE_S(X)‖_F for one MoE layer and a set S of pruned experts, on cached calibration tokens: the
/// layer-output reconstruction error NAEE and MoE-I² minimise. Expert outputs on the tokens are computed
/// once, so a candidate costs only its masked routing and weighted sums. Y is the full block's output; the
/// shared expert (identical on both sides) is added to keep Y exact.
///
/// Only the outputs a candidate can use are stored: removing at most `remove` experts, a token's new top-k
/// lies within its original top-(k + remove) by the router's choice order (softmax or sigmoid scores, without
/// group limits), so per token those experts' outputs are kept, not all E. A choice outside them (a tie
/// broken the other way after renormalisation) is computed on the spot, so the error is always exact. The
/// store goes to an unlinked scratch file when it exceeds `storeLimit` bytes: results never depend on memory.
public final class LayerFitness: @unchecked Sendable {
    public let layer: Int
    public let numExperts: Int
    let block: MoEBlock
    let x: Tensor
    let y: Tensor
    let logits: Tensor
    /// Per token, the experts whose outputs are stored ([tokens × depth]) and the outputs ([tokens × depth, H]).
    let depth: Int
    let slots: [Int32]
    let outputs: Tensor
    public let spilled: Bool
    let shared: Tensor?
    public let tokens: Int
    let hidden: Int
    private var memo: [[Int]: Double] = [:]
    private let lock = NSLock()

    /// Uses the first `maxTokens` cached tokens of the layer; candidates remove at most `remove` experts.
    public init(block: MoEBlock, cache: CalibrationCache, layer: Int, maxTokens: Int, remove: Int,
                storeLimit: Int = MemoryBudget.default.bytes / 2) throws {
        self.layer = layer
        self.block = block
        let t = min(maxTokens, cache.manifest.tokens)
        x = try cache.tensor(layer, "moe_in", rows: 0..<t)
        y = try cache.tensor(layer, "moe_out", rows: 0..<t)
        tokens = t
        hidden = x.cols
        let e = block.numExperts, h = hidden
        numExperts = e
        logits = block.router.linear.callAsFunction(x)
        // Group-limited routing (or a bias added to softmax scores) can move a token's choice anywhere: store all.
        let r = block.routing
        let bounded = r.groups <= 1 && (block.router.correctionBias == nil || r.scoring == .sigmoid)
        depth = bounded ? min(e, block.topK + max(remove, 0)) : e
        var slots = [Int32](repeating: 0, count: t * depth)
        if depth == e {
            for i in 0..<t { for s in 0..<e { slots[i * e + s] = Int32(s) } }
        } else {
            var wide = block.router
            wide.routing.topK = depth
            slots = wide.decide(logits: logits).experts
        }
        self.slots = slots
        (outputs, spilled) = try ScratchFile.tensor([t * depth, h], inMemory: storeLimit)
        var lists = [[Int]](repeating: [], count: e)   // rows of `outputs` per expert, in token order
        for (row, ex) in slots.enumerated() { lists[Int(ex)].append(row) }
        let (xs, out, d) = (x, outputs, depth)
        parallelFor(e) { ex in
            let rows = lists[ex]
            guard !rows.isEmpty else { return }
            let xe = Tensor(zeros: [rows.count, h]), ye = Tensor(zeros: [rows.count, h])
            for (i, row) in rows.enumerated() { (xe.data + i * h).update(from: xs.data + (row / d) * h, count: h) }
            block.experts[ex].apply(xe.data, rows: rows.count, into: ye.data, parallel: false)
            for (i, row) in rows.enumerated() { (out.data + row * h).update(from: ye.data + i * h, count: h) }
        }
        shared = block.sharedOutput(x)
    }

    /// Bytes the expert-output store takes for `tokens` tokens of a layer with `experts` experts of width
    /// `hidden` when candidates remove up to `remove` (the figure a plan can be budgeted with).
    public static func storeBytes(tokens: Int, hidden: Int, experts: Int, topK: Int, remove: Int) -> Int {
        tokens * min(experts, topK + remove) * hidden * 4
    }

    /// Error with the experts in `pruned` removed (memoised; safe to call from several threads).
    public func error(pruned: [Int]) -> Double {
        let key = pruned.sorted()
        lock.lock()
        if let v = memo[key] { lock.unlock(); return v }
        lock.unlock()
        var allowed = [Bool](repeating: true, count: numExperts)
        for p in key { allowed[p] = false }
        let d = block.router.decide(logits: logits, allowed: allowed)
        let h = hidden
        var total = 0.0
        let buffer = Tensor(zeros: [h])
        let row = buffer.data
        var missing: Tensor? = nil
        for t in 0..<tokens {
            if let shared { row.update(from: shared.data + t * h, count: h) } else { row.update(repeating: 0, count: h) }
            for s in 0..<d.topK {
                let e = d.experts[t * d.topK + s], w = d.weights[t * d.topK + s]
                var src: UnsafeMutablePointer<Float>
                if depth == numExperts {
                    src = outputs.data + (t * depth + Int(e)) * h
                } else if let slot = (0..<depth).first(where: { slots[t * depth + $0] == e }) {
                    src = outputs.data + (t * depth + slot) * h
                } else {
                    let m = missing ?? Tensor(zeros: [1, h])
                    missing = m
                    block.experts[Int(e)].apply(x.data + t * h, rows: 1, into: m.data, parallel: false)
                    src = m.data
                }
                axpy(w, src, row, count: h)
            }
            total += Double(Self.squaredDistance(y.data + t * h, row, count: h))
        }
        let v = total.squareRoot()
        lock.lock()
        memo[key] = v
        lock.unlock()
        return v
    }

    /// Σ (a − b)² in f32 over 16 lanes (lane i sums elements i, i + 16, …), lanes added in a fixed order:
    /// the same bits on every machine, and no serial chain of `count` dependent additions.
    @inline(__always)
    static func squaredDistance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = SIMD16<Float>()
        var j = 0
        while j + 16 <= count {
            let d = UnsafeRawPointer(a + j).loadUnaligned(as: SIMD16<Float>.self) - UnsafeRawPointer(b + j).loadUnaligned(as: SIMD16<Float>.self)
            lanes += d * d
            j += 16
        }
        var acc = lanes.sum()
        while j < count { let d = a[j] - b[j]; acc += d * d; j += 1 }
        return acc
    }

    /// Errors of many candidate sets, spread over the cores.
    public func errors(_ sets: [[Int]]) -> [Double] {
        var out = [Double](repeating: 0, count: sets.count)
        out.withUnsafeMutableBufferPointer { buf in
            let o = SendablePointer(buf.baseAddress!)
            parallelFor(sets.count) { i in o[i] = self.error(pruned: sets[i]) }
        }
        return out
    }
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

/// NAEE-style baseline: in every layer, enumerate every set of experts to remove and keep the subset with
/// the smallest layer-output reconstruction error.
public enum NAEE {
    public static let maxCombinations = 20_000

    public static func plan(model: CausalLM, cache: CalibrationCache, budget: PruningBudget, modelName: String,
                            maxTokens: Int = 8192, memory: MemoryBudget = .default, quiet: Bool = false) throws -> PruningPlan {
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
            let fit = try LayerFitness(block: block, cache: cache, layer: l, maxTokens: maxTokens, remove: e - keep, storeLimit: memory.bytes / 2)
            let sets = combinations(e, e - keep)
            let errs = fit.errors(sets)
            var best = 0
            for i in 1..<max(errs.count, 1) where errs[i] < errs[best] { best = i }
            let kept = (0..<e).filter { !sets[best].contains($0) }
            layers.append(.init(layer: l, experts: e, kept: kept, scores: ["reconstruction_error": [errs[best]]]))
            progress.advance()
        }
        return PruningPlan(method: "naee", model: modelName, parameters: ["fitness_tokens": "\(maxTokens)"], layers: layers)
    }
}
