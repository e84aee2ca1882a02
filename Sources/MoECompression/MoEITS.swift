import Foundation
import MoETensor
import MoEModels
import MoECheckpoint

/// MoEITS (methods.md §2): data-free expert pruning by the normalised mutual information of co-located
/// expert weights. Each expert matrix is binned once (numpy `bins='auto'` edges, marginal entropy); a
/// pair's NMI comes from the joint histogram of the two integer bin-index arrays.
public enum MoEITS {
    /// numpy's `auto` bin-width rule: ≥ 2.3 caps the bin count near 2√n (PR #28426); the older rule does not.
    public enum BinRule: String, Sendable { case numpy23 = "numpy>=2.3", legacy = "numpy<2.3" }

    /// A matrix discretised on its own edges.
    public struct Binned: Sendable {
        public let bins: Int
        public let index: [Int32]
        public let entropy: Double
    }

    /// Linear-interpolation percentile of sorted values (numpy's default).
    static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let pos = q / 100 * Double(sorted.count - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - Double(lo))
    }

    /// The k-th smallest value (0-based) of `v`, by quickselect (linear time; `v` is reordered).
    static func select(_ v: inout [Double], _ k: Int, from lo0: Int = 0) -> Double {
        var lo = lo0, hi = v.count - 1
        while lo < hi {
            let pivot = v[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while v[i] < pivot { i += 1 }
                while v[j] > pivot { j -= 1 }
                if i <= j { v.swapAt(i, j); i += 1; j -= 1 }
            }
            if k <= j { hi = j } else if k >= i { lo = i } else { return v[k] }
        }
        return v[k]
    }

    /// numpy's linear-interpolation percentile without a full sort.
    static func percentileSelect(_ v: inout [Double], _ q: Double) -> Double {
        let pos = q / 100 * Double(v.count - 1)
        let k = Int(pos.rounded(.down))
        let a = select(&v, k)
        guard k + 1 < v.count, pos > Double(k) else { return a }
        // After selection everything right of k is ≥ v[k]: the next order statistic is their minimum.
        var b = v[k + 1]
        for i in (k + 1)..<v.count where v[i] < b { b = v[i] }
        return a + (b - a) * (pos - Double(k))
    }

    /// Number of bins numpy's `histogram_bin_edges(x, 'auto')` chooses, and its range.
    public static func autoBins(_ x: [Double], rule: BinRule) -> (bins: Int, lo: Double, hi: Double) {
        let n = Double(x.count)
        var lo = x.min()!, hi = x.max()!
        if lo == hi { lo -= 0.5; hi += 0.5 }
        var work = x
        let iqr = percentileSelect(&work, 75) - percentileSelect(&work, 25)
        let fd = 2 * iqr * pow(n, -1.0 / 3)
        let sturges = (hi - lo) / (log2(n) + 1)
        var width: Double
        switch rule {
        case .numpy23: width = min(max(fd, (hi - lo) / (2 * n.squareRoot())), sturges)
        case .legacy: width = fd > 0 ? min(fd, sturges) : sturges
        }
        if width <= 0 { width = sturges }
        return (max(1, Int(((hi - lo) / width).rounded(.up))), lo, hi)
    }

    public static func bin(_ x: [Double], rule: BinRule) -> Binned {
        let (nb, lo, hi) = autoBins(x, rule: rule)
        // numpy: edges = linspace(lo, hi, nb + 1); v in bin i when edges[i] ≤ v < edges[i+1], last bin closed.
        let step = (hi - lo) / Double(nb)
        var edges = (0...nb).map { lo + Double($0) * step }
        edges[nb] = hi
        var counts = [Int](repeating: 0, count: nb)
        let index = x.map { v -> Int32 in
            var i = Int((v - lo) / step)
            i = min(max(i, 0), nb - 1)
            if v < edges[i] { i -= 1 } else if i + 1 < nb && v >= edges[i + 1] { i += 1 }
            i = min(max(i, 0), nb - 1)
            counts[i] += 1
            return Int32(i)
        }
        return Binned(bins: nb, index: index, entropy: entropy(counts, total: x.count))
    }

    static func entropy(_ counts: [Int], total: Int) -> Double {
        let n = Double(total)
        var h = 0.0
        for c in counts where c > 0 { let p = Double(c) / n; h -= p * log(p) }
        return h
    }

    /// NMI = I / √(H_A H_B), I = H_A + H_B − H_AB, on the marginal edges; 0 when an entropy is 0.
    public static func nmi(_ a: Binned, _ b: Binned, scratch: inout [Int32]) -> Double {
        let cells = a.bins * b.bins
        if scratch.count < cells { scratch = [Int32](repeating: 0, count: cells) }
        var touched: [Int] = []
        touched.reserveCapacity(min(cells, a.index.count))
        for t in 0..<a.index.count {
            let c = Int(a.index[t]) * b.bins + Int(b.index[t])
            if scratch[c] == 0 { touched.append(c) }
            scratch[c] += 1
        }
        let n = Double(a.index.count)
        var hab = 0.0
        for c in touched {
            let p = Double(scratch[c]) / n
            hab -= p * log(p)
            scratch[c] = 0
        }
        let denom = (a.entropy * b.entropy).squareRoot()
        guard denom > 0 else { return 0 }
        return (a.entropy + b.entropy - hab) / denom
    }

    /// Projection weights (gate, up, down): the authors used 0.2/0.4/0.4 for their models with shared experts
    /// (Qwen1.5-MoE, DeepSeek-V2-Lite) and 1/3 each for Mixtral; MoEPress keys that on the block's property.
    public static func defaultWeights(for block: MoEBlock) -> [Double] {
        block.hasSharedExpert ? [0.2, 0.4, 0.4] : [1.0 / 3, 1.0 / 3, 1.0 / 3]
    }

    /// The symmetric e×e matrix M[i,j] = Σ_p c_p · NMI(W_p^i, W_p^j), zero diagonal.
    public static func matrix(_ block: MoEBlock, weights c: [Double], rule: BinRule) -> [[Double]] {
        let e = block.numExperts
        // The weights as the model computes with them (a factorised expert's product, the widened bf16 values).
        func flat(_ l: any LinearLayer) -> [Double] { l.denseWeight().array.map(Double.init) }
        // Bin every expert's three matrices once, in parallel.
        var binned = [[Binned]](repeating: [], count: e)
        binned.withUnsafeMutableBufferPointer { buf in
            let out = SendablePointer(buf.baseAddress!)
            parallelFor(e) { i in
                let x = block.experts[i]
                out[i] = [bin(flat(x.gate), rule: rule), bin(flat(x.up), rule: rule), bin(flat(x.down), rule: rule)]
            }
        }
        var pairs: [(Int, Int)] = []
        for i in 0..<e { for j in (i + 1)..<e { pairs.append((i, j)) } }
        var values = [Double](repeating: 0, count: pairs.count)
        let threads = max(1, Compute.threads)
        values.withUnsafeMutableBufferPointer { buf in
            let out = SendablePointer(buf.baseAddress!)
            parallelFor(threads) { t in
                var scratch: [Int32] = []
                var k = t
                while k < pairs.count {
                    let (i, j) = pairs[k]
                    var s = 0.0
                    for p in 0..<3 { s += c[p] * nmi(binned[i][p], binned[j][p], scratch: &scratch) }
                    out[k] = s
                    k += threads
                }
            }
        }
        var m = [[Double]](repeating: [Double](repeating: 0, count: e), count: e)
        for (k, (i, j)) in pairs.enumerated() { m[i][j] = values[k]; m[j][i] = values[k] }
        return m
    }

    /// §2.3: θ = mean(M) + τ·IQR(M) over all e² entries, computed once; while an entry exceeds θ (or, with
    /// `keep`, until that many remain), take the first maximal pair (row-major) and drop the member whose
    /// current row mean is larger (ties drop the second). Returns kept original ids, ascending.
    public static func simplify(_ m: [[Double]], tau: Double? = nil, keep: Int? = nil) -> [Int] {
        let all = m.flatMap { $0 }.sorted()
        let mean = all.reduce(0, +) / Double(all.count)
        let iqr = percentile(all, 75) - percentile(all, 25)
        let theta = mean + (tau ?? 0) * iqr
        var cur = m
        var kept = Array(m.indices)
        while kept.count > 1 {
            if let keep, kept.count <= keep { break }
            var best = -Double.infinity, a = 0, b = 1
            for i in cur.indices { for j in cur.indices where cur[i][j] > best { best = cur[i][j]; a = i; b = j } }
            if keep == nil && !(best > theta) { break }
            let ca = cur[a].reduce(0, +) / Double(cur.count), cb = cur[b].reduce(0, +) / Double(cur.count)
            let r = ca > cb ? a : b
            cur.remove(at: r)
            for i in cur.indices { cur[i].remove(at: r) }
            kept.remove(at: r)
        }
        return kept
    }

    public static func plan(model: CausalLM, modelName: String, tau: Double?, budget: PruningBudget?, rule: BinRule,
                            weights: [Double]?, quiet: Bool = false, journal: Journal = .none) throws -> PruningPlan {
        let d = model.description
        guard let k = d.routing?.topK else { throw PruningError.invalid("the model has no MoE layers") }
        guard (tau == nil) != (budget == nil) else { throw PruningError.invalid("MoEITS takes either --tau or --ratio/--keep") }
        let progress = StageProgress("moeits NMI", total: d.moeLayerIndices.count, unit: "layers", quiet: quiet)
        var layers: [PruningPlan.Layer] = []
        for l in d.moeLayerIndices {
            layers.append(try journal.record("moeits-\(l)") {
                let block = model.layers[l].feedForward.moe!
                let c = weights ?? defaultWeights(for: block)
                let m = matrix(block, weights: c, rule: rule)
                var kept: [Int]
                if let tau {
                    kept = simplify(m, tau: tau)
                    if kept.count < k {
                        throw PruningError.invalid("τ = \(tau) leaves \(kept.count) experts in layer \(l), fewer than top-k = \(k); raise τ")
                    }
                } else {
                    kept = simplify(m, keep: try budget!.keep(experts: block.numExperts, topK: k))
                }
                let rowMean = m.map { $0.reduce(0, +) / Double($0.count) }
                return PruningPlan.Layer(layer: l, experts: block.numExperts, kept: kept.sorted(), scores: ["nmi_row_mean": rowMean])
            })
            progress.advance()
        }
        var params = ["bin_rule": rule.rawValue]
        if let tau { params["tau"] = "\(tau)" }
        return PruningPlan(method: "moeits", model: modelName, parameters: params, layers: layers)
    }
}
