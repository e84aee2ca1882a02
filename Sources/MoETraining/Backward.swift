import Foundation
import MoETensor
import MoEModels

// Explicit forward-with-tape and backward functions, one pair per building block (llm.c style): each
// forward returns its output and what its backward needs; each backward takes the output gradient, adds
// weight gradients into `Gradients` (trainable tensors only) and returns the input gradient.

/// Mixes two seeds (SplitMix64 of their combination): dropout masks are derived from (step seed, layer,
/// module) so a recomputed forward draws exactly the same masks, whatever the thread schedule.
@inline(__always) func mixSeed(_ a: UInt64, _ b: UInt64) -> UInt64 {
    var g = SeededGenerator(seed: a ^ (b &* 0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    return g.next()
}

// MARK: - Matrix products of the backward pass (split over output columns across cores when large)

/// gw[out, in] += dy[rows, out]ᵀ · x[rows, in].
func accumulateWeightGradient(_ gw: Tensor, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, out: Int, in n: Int, parallel: Bool) {
    let c = SendablePointer(gw.data)
    let big = parallel && rows * out * n >= 1 << 18 && n >= 64
    let body: (Range<Int>) -> Void = { r in
        BLAS.gemm(transA: true, m: out, n: r.count, k: rows, a: dy, lda: out, b: x + r.lowerBound, ldb: n, beta: 1, c: c + r.lowerBound, ldc: n)
    }
    if big { parallelBlocks(n, block: blasColumnBlock, body) } else { body(0..<n) }
}

// MARK: - Linear layers (dense, low-rank, LoRA)

final class LinearTape {
    let x: Tensor
    var mid: Tensor?        // low-rank: x·Bᵀ; LoRA: dropout(x)·Aᵀ
    var dropped: Tensor?    // LoRA: dropout(x)
    var mask: [Float]?      // LoRA: the dropout multipliers (0 or 1/(1 − p))
    var base: LinearTape?   // LoRA: the base layer's tape; adapted low-rank: the first factor's
    var second: LinearTape? // adapted low-rank: the second factor's tape
    init(_ x: Tensor) { self.x = x }
}

func linearForward(_ l: any LinearLayer, _ x: Tensor, seed: UInt64, training: Bool, parallel: Bool) -> (Tensor, LinearTape) {
    let tape = LinearTape(x)
    switch l {
    case let r as LowRankLinear:
        let mid = Tensor(zeros: [x.rows, r.rank])
        r.b.multiply(x.data, m: x.rows, into: mid.data, ldy: r.rank, parallel: parallel)
        let y = Tensor(zeros: [x.rows, r.outFeatures])
        r.a.multiply(mid.data, m: x.rows, into: y.data, ldy: r.outFeatures, parallel: parallel)
        if let bias = r.bias { for i in 0..<x.rows { addInPlace(y.data + i * r.outFeatures, bias.data, count: r.outFeatures) } }
        tape.mid = mid
        return (y, tape)
    case let c as AdaptedLowRankLinear:
        let (mid, t1) = linearForward(c.first, x, seed: mixSeed(seed, 1), training: training, parallel: parallel)
        let (y, t2) = linearForward(c.second, mid, seed: mixSeed(seed, 2), training: training, parallel: parallel)
        tape.base = t1; tape.second = t2
        return (y, tape)
    case let a as LoRALinear:
        let (y, baseTape) = linearForward(a.base, x, seed: seed, training: training, parallel: parallel)
        tape.base = baseTape
        var xd = x
        if training && a.dropout > 0 {
            var g = SeededGenerator(seed: seed)
            let keep = 1 / (1 - a.dropout)
            let mask = (0..<x.count).map { _ in g.nextUnit() < Double(a.dropout) ? Float(0) : keep }
            xd = Tensor(zeros: x.shape)
            for i in 0..<x.count { xd.data[i] = x.data[i] * mask[i] }
            tape.mask = mask
        }
        let mid = Tensor(zeros: [x.rows, a.rank])
        BLAS.gemm(transB: true, m: x.rows, n: a.rank, k: a.inFeatures, a: xd.data, lda: a.inFeatures, b: a.a.data, ldb: a.inFeatures, c: mid.data, ldc: a.rank)
        BLAS.gemm(transB: true, m: x.rows, n: a.outFeatures, k: a.rank, alpha: a.scale, a: mid.data, lda: a.rank, b: a.b.data, ldb: a.rank,
                  beta: 1, c: y.data, ldc: a.outFeatures)
        tape.mid = mid
        tape.dropped = xd
        return (y, tape)
    default:
        return (l(x, parallel: parallel), tape)
    }
}

/// Input gradient of a linear layer; weight gradients go into `g`.
func linearBackward(_ l: any LinearLayer, _ tape: LinearTape, _ dy: Tensor, _ g: Gradients, parallel: Bool) -> Tensor {
    let x = tape.x, rows = x.rows
    switch l {
    case let r as LowRankLinear:
        let mid = tape.mid!
        if let bias = r.bias, let gb = g[bias] { for i in 0..<rows { addInPlace(gb.data, dy.data + i * r.outFeatures, count: r.outFeatures) } }
        if let ta = r.a.tensor, let ga = g[ta] { accumulateWeightGradient(ga, dy: dy.data, x: mid.data, rows: rows, out: r.outFeatures, in: r.rank, parallel: parallel) }
        let dmid = Tensor(zeros: [rows, r.rank])
        r.a.multiplyTransposed(dy.data, m: rows, into: dmid.data, ldx: r.rank, parallel: parallel)
        if let tb = r.b.tensor, let gb = g[tb] { accumulateWeightGradient(gb, dy: dmid.data, x: x.data, rows: rows, out: r.rank, in: r.inFeatures, parallel: parallel) }
        let dx = Tensor(zeros: [rows, r.inFeatures])
        r.b.multiplyTransposed(dmid.data, m: rows, into: dx.data, ldx: r.inFeatures, parallel: parallel)
        return dx
    case let c as AdaptedLowRankLinear:
        let dmid = linearBackward(c.second, tape.second!, dy, g, parallel: parallel)
        return linearBackward(c.first, tape.base!, dmid, g, parallel: parallel)
    case let a as LoRALinear:
        let dx = linearBackward(a.base, tape.base!, dy, g, parallel: parallel)
        let mid = tape.mid!, xd = tape.dropped!
        if let gb = g[a.b] {
            BLAS.gemm(transA: true, m: a.outFeatures, n: a.rank, k: rows, alpha: a.scale, a: dy.data, lda: a.outFeatures, b: mid.data, ldb: a.rank,
                      beta: 1, c: gb.data, ldc: a.rank)
        }
        let dmid = Tensor(zeros: [rows, a.rank])
        BLAS.gemm(m: rows, n: a.rank, k: a.outFeatures, alpha: a.scale, a: dy.data, lda: a.outFeatures, b: a.b.data, ldb: a.rank, c: dmid.data, ldc: a.rank)
        if let ga = g[a.a] { accumulateWeightGradient(ga, dy: dmid.data, x: xd.data, rows: rows, out: a.rank, in: a.inFeatures, parallel: parallel) }
        let dxd = Tensor(zeros: [rows, a.inFeatures])
        WeightMatrix(a.a).multiplyTransposed(dmid.data, m: rows, into: dxd.data, ldx: a.inFeatures, parallel: parallel)
        if let mask = tape.mask { for i in 0..<dxd.count { dxd.data[i] *= mask[i] } }
        dx.add(dxd)
        return dx
    default:
        // A plain map y = x·Wᵀ + b in any storage: W and b get gradients when they are trainable tensors, and the
        // input gradient comes from the layer itself (stored f16/bf16 weights are read in place).
        for (suffix, value) in l.parameters {
            guard let t = value.tensor, let gt = g[t] else { continue }
            if suffix == "" {
                accumulateWeightGradient(gt, dy: dy.data, x: x.data, rows: rows, out: l.outFeatures, in: l.inFeatures, parallel: parallel)
            } else if suffix == ".bias" {
                for r in 0..<rows { addInPlace(gt.data, dy.data + r * l.outFeatures, count: l.outFeatures) }
            }
        }
        let dx = Tensor(zeros: [rows, l.inFeatures])
        l.applyTransposed(dy.data, rows: rows, into: dx.data, ldx: l.inFeatures, accumulate: false, parallel: parallel)
        return dx
    }
}

// MARK: - RMSNorm

/// dx for y = x · rsqrt(mean(x²) + eps) · w over `rows` vectors of `dim` values `stride` apart; dw (when
/// trainable) accumulates Σ dy · x · rsqrt(…).
func rmsNormBackward(x: UnsafePointer<Float>, weight: Tensor, eps: Float, dy: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>,
                     rows: Int, stride: Int, g: Gradients) {
    let dim = weight.count, w = weight.data
    let gw = g[weight]
    for r in 0..<rows {
        let xr = x + r * stride, dyr = dy + r * stride, dxr = dx + r * stride
        var ss = 0.0, dot = 0.0
        for j in 0..<dim { ss += Double(xr[j]) * Double(xr[j]); dot += Double(w[j]) * Double(dyr[j]) * Double(xr[j]) }
        let inv = 1 / (ss / Double(dim) + Double(eps)).squareRoot()
        let c = Float(inv * inv * inv * dot / Double(dim))
        let fi = Float(inv)
        for j in 0..<dim { dxr[j] = fi * w[j] * dyr[j] - xr[j] * c }
        if let gw { for j in 0..<dim { gw.data[j] += dyr[j] * xr[j] * fi } }
    }
}

/// A decoder or final norm's backward: RMSNorm, or LayerNorm (x̂ = (x − μ)/σ; dx = (g − mean(g) − x̂·mean(g·x̂))/σ
/// for g = dy·w; dw += dy·x̂, db += dy).
func normBackward(_ norm: Norm, x: Tensor, dy: Tensor, g: Gradients) -> Tensor {
    switch norm {
    case .rms(let n): return rmsNormBackward(n, x: x, dy: dy, g: g)
    case .layer(let w, let b, let eps):
        let d = w.count, rows = x.count / d
        let dx = Tensor(zeros: x.shape)
        let gw = g[w], gb = g[b]
        for r in 0..<rows {
            let xr = x.data + r * d, dyr = dy.data + r * d, dxr = dx.data + r * d
            var mean = 0.0, v = 0.0
            for j in 0..<d { mean += Double(xr[j]) }
            mean /= Double(d)
            for j in 0..<d { let c = Double(xr[j]) - mean; v += c * c }
            let inv = 1 / (v / Double(d) + Double(eps)).squareRoot()
            var mg = 0.0, mgx = 0.0
            for j in 0..<d {
                let gj = Double(dyr[j]) * Double(w.data[j]), xh = (Double(xr[j]) - mean) * inv
                mg += gj; mgx += gj * xh
            }
            mg /= Double(d); mgx /= Double(d)
            for j in 0..<d {
                let gj = Double(dyr[j]) * Double(w.data[j]), xh = (Double(xr[j]) - mean) * inv
                dxr[j] = Float((gj - mg - xh * mgx) * inv)
                if let gw { gw.data[j] += Float(Double(dyr[j]) * xh) }
                if let gb { gb.data[j] += dyr[j] }
            }
        }
        return dx
    }
}

func rmsNormBackward(_ norm: RMSNorm, x: Tensor, dy: Tensor, g: Gradients) -> Tensor {
    let dx = Tensor(zeros: x.shape)
    rmsNormBackward(x: x.data, weight: norm.weight, eps: norm.eps, dy: dy.data, into: dx.data, rows: x.count / norm.dim, stride: norm.dim, g: g)
    return dx
}

// MARK: - Gated MLP (experts, shared experts, dense layers), with the compressed-experts modulation

final class MLPTape {
    var gate, up, down: LinearTape?
    var g, u, act: Tensor?     // pre-activation gate, up, act(g)·u
    var midScale: Tensor?      // compressed experts: c_m per row
}

func mlpForward(_ m: GatedMLP, gateInput: Tensor, upInput: Tensor, midScale: Tensor?, seed: UInt64, training: Bool, parallel: Bool) -> (Tensor, MLPTape) {
    let tape = MLPTape()
    let (g, gt) = linearForward(m.gate, gateInput, seed: mixSeed(seed, 1), training: training, parallel: parallel)
    let (u, ut) = linearForward(m.up, upInput, seed: mixSeed(seed, 2), training: training, parallel: parallel)
    let act = Tensor(zeros: g.shape)
    switch m.activation {
    case .silu, .swish: for i in 0..<g.count { act.data[i] = silu(g.data[i]) * u.data[i] }
    case .clampedSwiGLU: gatedActivation(m.activation, gate: g.data, up: u.data, into: act.data, count: g.count)
    default: preconditionFailure("training supports SiLU and gpt-oss's clamped SwiGLU, not \(m.activation)")
    }
    var h = act
    if let midScale {
        h = Tensor(zeros: act.shape)
        for i in 0..<act.count { h.data[i] = act.data[i] * midScale.data[i] }
    }
    let (y, dt) = linearForward(m.down, h, seed: mixSeed(seed, 3), training: training, parallel: parallel)
    tape.gate = gt; tape.up = ut; tape.down = dt
    tape.g = g; tape.u = u; tape.act = act; tape.midScale = midScale
    return (y, tape)
}

/// Gradients of the gate input, the up input (nil when they are the same tensor: then the first holds
/// both) and of the mid scale (compressed experts).
func mlpBackward(_ m: GatedMLP, _ tape: MLPTape, _ dy: Tensor, g grads: Gradients, sharedInput: Bool, parallel: Bool) -> (dGateIn: Tensor, dUpIn: Tensor?, dMid: Tensor?) {
    let dh = linearBackward(m.down, tape.down!, dy, grads, parallel: parallel)
    let act = tape.act!, gv = tape.g!, uv = tape.u!
    var dMid: Tensor? = nil
    if let ms = tape.midScale {
        let dm = Tensor(zeros: dh.shape)
        for i in 0..<dh.count { dm.data[i] = dh.data[i] * act.data[i]; dh.data[i] *= ms.data[i] }
        dMid = dm
    }
    let dg = Tensor(zeros: gv.shape), du = Tensor(zeros: uv.shape)
    if case .clampedSwiGLU(let alpha, let limit) = m.activation {
        // out = (clamp(u, ±limit) + 1) · g'σ(αg'), g' = min(g, limit); a clamp passes the gradient inside its range (bounds included).
        for i in 0..<gv.count {
            let x = gv.data[i], u = uv.data[i], gc = min(x, limit), s = sigmoid(alpha * gc)
            du.data[i] = u >= -limit && u <= limit ? dh.data[i] * gc * s : 0
            dg.data[i] = x <= limit ? dh.data[i] * (min(max(u, -limit), limit) + 1) * s * (1 + alpha * gc * (1 - s)) : 0
        }
    } else {
        for i in 0..<gv.count {
            let x = gv.data[i], s = sigmoid(x)
            du.data[i] = dh.data[i] * x * s
            dg.data[i] = dh.data[i] * uv.data[i] * s * (1 + x * (1 - s))
        }
    }
    let dgi = linearBackward(m.gate, tape.gate!, dg, grads, parallel: parallel)
    let dui = linearBackward(m.up, tape.up!, du, grads, parallel: parallel)
    if sharedInput { dgi.add(dui); return (dgi, nil, dMid) }
    return (dgi, dui, dMid)
}

// MARK: - MoE block

final class MoETape {
    var x: Tensor?
    var router: LinearTape?
    var probs: Tensor?                 // routing scores [T, E] (softmax over allowed experts)
    var decision: Router.Decision?
    var lists: [[(token: Int, weight: Float)]] = []
    var slots: [[Int]] = []            // per expert: the top-k slot of each listed token
    var experts: [Int: (tape: MLPTape, y: Tensor, xg: Tensor?, xu: Tensor?)] = [:]
    var ce: (g: Tensor, u: Tensor, m: Tensor, alpha: [Float])?
    var shared: MLPTape?, sharedY: Tensor?
    var sharedGate: LinearTape?, sharedGateLogit: Tensor?
}


func moeForward(_ b: MoEBlock, _ x: Tensor, seed: UInt64, training: Bool) -> (Tensor, MoETape) {
    let tape = MoETape()
    tape.x = x
    let h = b.hiddenSize, t = x.rows, e = b.numExperts
    let (logits, routerTape) = linearForward(b.router.linear, x, seed: mixSeed(seed, 97), training: training, parallel: true)
    tape.router = routerTape
    let d = b.router.decide(logits: logits, allowed: b.expertMask)
    // The routing scores the weights are taken from (softmax or sigmoid of the logits); which experts are chosen
    // (top-k, group limits, DeepSeek-V3's correction bias) is a discrete choice with no gradient.
    let probs = Tensor(zeros: [t, e])
    for i in 0..<t {
        let allowed = { (j: Int) in b.expertMask?[j] ?? true }
        switch b.routing.scoring {
        case .softmax:
            for j in 0..<e { probs.data[i * e + j] = allowed(j) ? d.logits.data[i * e + j] : -.infinity }
            softmaxInPlace(probs.data + i * e, count: e)
        case .sigmoid:
            for j in 0..<e { probs.data[i * e + j] = allowed(j) ? sigmoid(d.logits.data[i * e + j]) : 0 }
        case .sparseMixer:
            break   // each slot's own softmax, recomputed in the backward pass
        }
    }
    tape.probs = probs
    tape.decision = d
    let lists = b.assignments(d)
    tape.lists = lists
    let k = d.topK
    tape.slots = (0..<e).map { ex in
        lists[ex].map { item in (0..<k).first { d.experts[item.token * k + $0] == Int32(ex) }! }
    }
    let ce = b.compressedExperts.map { $0.aggregates(d, hidden: h, intermediate: b.experts[0].intermediateSize) }
    tape.ce = ce
    let active = (0..<e).filter { !lists[$0].isEmpty }
    var results = [(tape: MLPTape, y: Tensor, xg: Tensor?, xu: Tensor?)?](repeating: nil, count: e)
    results.withUnsafeMutableBufferPointer { buf in
        let out = SendablePointer(buf.baseAddress!)
        parallelFor(active.count) { ai in
            let ex = active[ai], list = lists[ex]
            let xe = Tensor(zeros: [list.count, h])
            for (r, item) in list.enumerated() { (xe.data + r * h).update(from: x.data + item.token * h, count: h) }
            var xg = xe, xu = xe
            var cm: Tensor? = nil
            if let ce {
                let inter = b.experts[ex].intermediateSize
                xg = Tensor(zeros: xe.shape); xu = Tensor(zeros: xe.shape)
                let m = Tensor(zeros: [list.count, inter])
                for (r, item) in list.enumerated() {
                    for j in 0..<h {
                        xg.data[r * h + j] = xe.data[r * h + j] * ce.g.data[item.token * h + j]
                        xu.data[r * h + j] = xe.data[r * h + j] * ce.u.data[item.token * h + j]
                    }
                    (m.data + r * inter).update(from: ce.m.data + item.token * inter, count: inter)
                }
                cm = m
            }
            let (y, mt) = mlpForward(b.experts[ex], gateInput: xg, upInput: xu, midScale: cm, seed: mixSeed(seed, UInt64(100 + ex)),
                                     training: training, parallel: active.count <= 1)
            out[ex] = (mt, y, ce == nil ? nil : xe, nil)
        }
    }
    let y = Tensor(zeros: x.shape)
    for ex in active {
        let r = results[ex]!
        tape.experts[ex] = r
        for (row, item) in lists[ex].enumerated() { axpy(item.weight, r.y.data + row * h, y.data + item.token * h, count: h) }
    }
    if let shared = b.sharedExpert {
        let (s, st) = mlpForward(shared, gateInput: x, upInput: x, midScale: nil, seed: mixSeed(seed, 99), training: training, parallel: true)
        tape.shared = st; tape.sharedY = s
        if let gate = b.sharedExpertGate {
            let (z, zt) = linearForward(gate, x, seed: mixSeed(seed, 98), training: training, parallel: true)
            tape.sharedGate = zt; tape.sharedGateLogit = z
            for i in 0..<t { axpy(sigmoid(z.data[i]), s.data + i * h, y.data + i * h, count: h) }
        } else {
            y.add(s)
        }
    }
    return (y, tape)
}

func moeBackward(_ b: MoEBlock, _ tape: MoETape, _ dy: Tensor, g: Gradients) -> Tensor {
    let x = tape.x!, d = tape.decision!, probs = tape.probs!
    let h = b.hiddenSize, t = x.rows, e = b.numExperts, k = d.topK
    let dx = Tensor(zeros: x.shape)
    var dw = [Float](repeating: 0, count: t * k)         // gradient of each token's slot weights
    let ce = tape.ce
    let dcg = ce.map { _ in Tensor(zeros: [t, h]) }, dcu = ce.map { _ in Tensor(zeros: [t, h]) }
    let dcm = ce.map { c in Tensor(zeros: c.m.shape) }
    let active = tape.experts.keys.sorted()
    var parts = [(dxg: Tensor, dxu: Tensor?, dmid: Tensor?)?](repeating: nil, count: e)
    parts.withUnsafeMutableBufferPointer { buf in
        let out = SendablePointer(buf.baseAddress!)
        parallelFor(active.count) { ai in
            let ex = active[ai], list = tape.lists[ex], r = tape.experts[ex]!
            let dye = Tensor(zeros: [list.count, h])
            for (row, item) in list.enumerated() {
                let src = dy.data + item.token * h, dst = dye.data + row * h
                for j in 0..<h { dst[j] = item.weight * src[j] }
            }
            let res = mlpBackward(b.experts[ex], r.tape, dye, g: g, sharedInput: ce == nil, parallel: active.count <= 1)
            out[ex] = (res.dGateIn, res.dUpIn, res.dMid)
        }
    }
    for ex in active {
        let list = tape.lists[ex], r = tape.experts[ex]!, p = parts[ex]!
        for (row, item) in list.enumerated() {
            // dw = dy_t · y_e(t)
            var dot: Float = 0
            let yr = r.y.data + row * h, dyr = dy.data + item.token * h
            for j in 0..<h { dot += yr[j] * dyr[j] }
            dw[item.token * k + tape.slots[ex][row]] += dot
            if let ce, let xe = r.xg {
                let inter = b.experts[ex].intermediateSize
                for j in 0..<h {
                    let gx = p.dxg.data[row * h + j], ux = p.dxu!.data[row * h + j], xv = xe.data[row * h + j]
                    dx.data[item.token * h + j] += gx * ce.g.data[item.token * h + j] + ux * ce.u.data[item.token * h + j]
                    dcg!.data[item.token * h + j] += gx * xv
                    dcu!.data[item.token * h + j] += ux * xv
                }
                addInPlace(dcm!.data + item.token * inter, p.dmid!.data + row * inter, count: inter)
            } else {
                addInPlace(dx.data + item.token * h, p.dxg.data + row * h, count: h)
            }
        }
    }
    if let ce, let cex = b.compressedExperts, cex.mainExperts < k {
        let inter = cex.mid[0].count
        for i in 0..<t {
            var dAlpha = [Float](repeating: 0, count: k)
            for s in cex.mainExperts..<k {
                let ex = Int(d.experts[i * k + s]), a = ce.alpha[i * k + s]
                var acc: Float = 0
                for j in 0..<h {
                    acc += dcg!.data[i * h + j] * cex.gate[ex].data[j] + dcu!.data[i * h + j] * cex.up[ex].data[j]
                }
                for j in 0..<inter { acc += dcm!.data[i * inter + j] * cex.mid[ex].data[j] }
                dAlpha[s] = acc
                if let gg = g[cex.gate[ex]] { axpy(a, dcg!.data + i * h, gg.data, count: h) }
                if let gu = g[cex.up[ex]] { axpy(a, dcu!.data + i * h, gu.data, count: h) }
                if let gm = g[cex.mid[ex]] { axpy(a, dcm!.data + i * inter, gm.data, count: inter) }
            }
            var sum: Float = 0, dotA: Float = 0
            for s in cex.mainExperts..<k { sum += d.weights[i * k + s]; dotA += dAlpha[s] * ce.alpha[i * k + s] }
            for s in cex.mainExperts..<k { dw[i * k + s] += (dAlpha[s] - dotA) / (sum + cex.epsilon) }
        }
    }
    // Slot weights → routing scores → router logits.
    let routing = b.routing
    let dlogits = Tensor(zeros: [t, e])
    for i in 0..<t {
        if routing.scoring == .sparseMixer {
            // Slot s's weight is p_best of a softmax over its near-best experts S: dw·p_best·(δ_best − p_j) for j in S.
            for slot in b.router.sparseMixerSlots(d.logits.data + i * e, count: e, allowed: b.expertMask) {
                let s = (0..<k).first { d.experts[i * k + $0] == Int32(slot.expert) }!   // its slot in the decision (ordered by weight)
                let w = slot.probabilities[slot.members.firstIndex(of: slot.expert)!]
                for (j, p) in zip(slot.members, slot.probabilities) {
                    dlogits.data[i * e + j] += dw[i * k + s] * w * ((j == slot.expert ? 1 : 0) - p)
                }
            }
            continue
        }
        let pr = probs.data + i * e
        var dp = [Float](repeating: 0, count: e)
        var topSum: Float = 0
        for s in 0..<k { topSum += pr[Int(d.experts[i * k + s])] }
        let denom = topSum + routing.normalizationEpsilon
        var cross: Float = 0
        for s in 0..<k { cross += dw[i * k + s] * pr[Int(d.experts[i * k + s])] }
        for s in 0..<k {
            let ex = Int(d.experts[i * k + s])
            if routing.normalizeTopK {
                dp[ex] += routing.scalingFactor * (dw[i * k + s] / denom - cross / (denom * denom))
            } else {
                dp[ex] += routing.scalingFactor * dw[i * k + s]
            }
        }
        switch routing.scoring {
        case .softmax:
            var dot: Float = 0
            for j in 0..<e { dot += pr[j] * dp[j] }
            for j in 0..<e { dlogits.data[i * e + j] = pr[j] * (dp[j] - dot) }
        case .sigmoid:
            for j in 0..<e { dlogits.data[i * e + j] = pr[j] * (1 - pr[j]) * dp[j] }
        case .sparseMixer:
            break   // handled above
        }
    }
    dx.add(linearBackward(b.router.linear, tape.router!, dlogits, g, parallel: true))
    if let shared = b.sharedExpert, let st = tape.shared, let s = tape.sharedY {
        let ds: Tensor
        if let gate = b.sharedExpertGate, let z = tape.sharedGateLogit {
            ds = Tensor(zeros: s.shape)
            let dz = Tensor(zeros: z.shape)
            for i in 0..<t {
                let sg = sigmoid(z.data[i])
                var dot: Float = 0
                for j in 0..<h { ds.data[i * h + j] = sg * dy.data[i * h + j]; dot += dy.data[i * h + j] * s.data[i * h + j] }
                dz.data[i] = dot * sg * (1 - sg)
            }
            dx.add(linearBackward(gate, tape.sharedGate!, dz, g, parallel: true))
        } else {
            ds = dy
        }
        dx.add(mlpBackward(shared, st, ds, g: g, sharedInput: true, parallel: true).dGateIn)
    }
    return dx
}

// MARK: - Decoder layer

final class LayerTape {
    var x: Tensor?, n1: Tensor?, x1: Tensor?, n2: Tensor?
    var attention: AttentionTape?
    var latent: LatentAttentionTape?
    var mlp: MLPTape?
    var moe: MoETape?
}

func layerForward(_ layer: DecoderLayer, _ x: Tensor, seqLen: Int, seed: UInt64, training: Bool) -> (Tensor, LayerTape) {
    let tape = LayerTape()
    tape.x = x
    let n1 = layer.inputNorm(x)
    let a: Tensor
    switch layer.attention {
    case let gqa as GroupedQueryAttention:
        let (y, at) = attentionForward(gqa, n1, seqLen: seqLen, seed: mixSeed(seed, 1), training: training)
        a = y; tape.attention = at
    case let mla as LatentAttention:
        let (y, at) = latentAttentionForward(mla, n1, seqLen: seqLen, seed: mixSeed(seed, 1), training: training)
        a = y; tape.latent = at
    default:
        preconditionFailure("untrainable attention \(type(of: layer.attention)) (CausalLMTraining.check refuses it)")
    }
    let x1 = x.copy()
    x1.add(a)
    let n2 = layer.postAttentionNorm(x1)
    let f: Tensor
    switch layer.feedForward {
    case .dense(let m):
        let (y, mt) = mlpForward(m, gateInput: n2, upInput: n2, midScale: nil, seed: mixSeed(seed, 2), training: training, parallel: true)
        f = y; tape.mlp = mt
    case .moe(let b):
        let (y, mt) = moeForward(b, n2, seed: mixSeed(seed, 2), training: training)
        f = y; tape.moe = mt
    }
    let out = x1.copy()
    out.add(f)
    tape.n1 = n1; tape.x1 = x1; tape.n2 = n2
    return (out, tape)
}

func layerBackward(_ layer: DecoderLayer, _ tape: LayerTape, _ dOut: Tensor, seqLen: Int, g: Gradients) -> Tensor {
    let dn2: Tensor
    switch layer.feedForward {
    case .dense(let m): dn2 = mlpBackward(m, tape.mlp!, dOut, g: g, sharedInput: true, parallel: true).dGateIn
    case .moe(let b): dn2 = moeBackward(b, tape.moe!, dOut, g: g)
    }
    let dx1 = dOut.copy()
    dx1.add(normBackward(layer.postAttentionNorm, x: tape.x1!, dy: dn2, g: g))
    let dn1: Tensor
    if let gqa = layer.attention as? GroupedQueryAttention {
        dn1 = attentionBackward(gqa, tape.attention!, dx1, seqLen: seqLen, g: g)
    } else {
        dn1 = latentAttentionBackward(layer.attention as! LatentAttention, tape.latent!, dx1, seqLen: seqLen, g: g)
    }
    let dx = dx1
    dx.add(normBackward(layer.inputNorm, x: tape.x!, dy: dn1, g: g))
    return dx
}

public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case unsupported(String)
    case invalid(String)
    public var description: String {
        switch self {
        case .unsupported(let s), .invalid(let s): return s
        }
    }
}
