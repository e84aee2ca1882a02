import Foundation
import MoETensor
import MoEModels
import MoECalibration

/// ‖Y − MoE_S(X)‖_F for one MoE layer and a set S of pruned experts, on cached calibration tokens: the
/// layer-output reconstruction error NAEE and MoE-I² minimise. Every expert's output on the tokens is
/// computed once, so a candidate costs only its masked routing and weighted sums. Y is the full block's
/// output; the shared expert (identical on both sides) is added to keep Y exact.
public final class LayerFitness: @unchecked Sendable {
    public let layer: Int
    public let numExperts: Int
    let block: MoEBlock
    let y: Tensor
    let logits: Tensor
    let expertOut: [Tensor]     // [E] × [T, H]
    let shared: Tensor?
    let tokens: Int
    let hidden: Int
    private var memo: [[Int]: Double] = [:]
    private let lock = NSLock()

    /// Uses the first `maxTokens` cached tokens of the layer.
    public init(block: MoEBlock, cache: CalibrationCache, layer: Int, maxTokens: Int) throws {
        self.layer = layer
        self.block = block
        let x0 = try cache.tensor(layer, "moe_in"), y0 = try cache.tensor(layer, "moe_out")
        let t = min(maxTokens, x0.rows)
        let x = x0.rowSlice(0..<t).copy()
        y = y0.rowSlice(0..<t).copy()
        tokens = t
        hidden = x.cols
        numExperts = block.numExperts
        logits = block.router.linear.callAsFunction(x)
        var outs = [Tensor?](repeating: nil, count: block.numExperts)
        outs.withUnsafeMutableBufferPointer { buf in
            let o = SendablePointer(buf.baseAddress!)
            parallelFor(block.numExperts) { e in
                let out = Tensor(zeros: [t, x.cols])
                block.experts[e].apply(x.data, rows: t, into: out.data, parallel: false)
                o[e] = out
            }
        }
        expertOut = outs.map { $0! }
        shared = block.sharedOutput(x)
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
        var row = [Float](repeating: 0, count: h)
        for t in 0..<tokens {
            if let shared { for j in 0..<h { row[j] = shared.data[t * h + j] } } else { for j in 0..<h { row[j] = 0 } }
            for s in 0..<d.topK {
                let e = Int(d.experts[t * d.topK + s]), w = d.weights[t * d.topK + s]
                let src = expertOut[e].data + t * h
                for j in 0..<h { row[j] += w * src[j] }
            }
            let yr = y.data + t * h
            var acc: Float = 0
            for j in 0..<h { let diff = yr[j] - row[j]; acc += diff * diff }
            total += Double(acc)
        }
        let v = total.squareRoot()
        lock.lock()
        memo[key] = v
        lock.unlock()
        return v
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
                            maxTokens: Int = 8192, quiet: Bool = false) throws -> PruningPlan {
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
            let fit = try LayerFitness(block: block, cache: cache, layer: l, maxTokens: maxTokens)
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
