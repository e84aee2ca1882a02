import Foundation
import MoETensor
import MoEModels

// Attention forward-with-tape and backward pairs, on batches of equal-length sequences starting at position 0:
// the causal softmax core shared by every attention kind, grouped-query attention (Mixtral, Qwen, OLMoE) and
// DeepSeek's multi-head latent attention.

// MARK: - Causal softmax core

/// Where the core's operands lie: queries [t, heads·qkDim], keys [t, kvHeads·qkDim], values [t, kvHeads·vDim];
/// each query head reads key/value head h / (heads / kvHeads).
struct AttentionShape {
    let batch: Int, seqLen: Int, heads: Int, kvHeads: Int, qkDim: Int, vDim: Int
    let scale: Float
    let window: Int?
    /// gpt-oss's per-head sink logits (in each softmax's denominator, with no value), or nil.
    var sinks: Tensor? = nil
    var group: Int { heads / kvHeads }
}

/// softmax(scale · q kᵀ, causal and windowed) v for every (sequence, head): the probabilities [batch, heads, L, L]
/// (kept for the backward pass), the output [t, heads·vDim], and with sinks each row's sink probability [batch, heads, L].
func attentionCoreForward(q: Tensor, k: Tensor, v: Tensor, _ s: AttentionShape) -> (probs: Tensor, out: Tensor, sinkProbs: Tensor?) {
    let L = s.seqLen, heads = s.heads, kvh = s.kvHeads, dq = s.qkDim, dv = s.vDim
    let probs = Tensor(zeros: [s.batch, heads, L, L])
    let out = Tensor(zeros: [s.batch * L, heads * dv])
    let sinkProbs = s.sinks.map { _ in Tensor(zeros: [s.batch, heads, L]) }
    let (qp, kp, vp, pp, op) = (SendablePointer(q.data), SendablePointer(k.data), SendablePointer(v.data), SendablePointer(probs.data), SendablePointer(out.data))
    let sp = sinkProbs.map { SendablePointer($0.data) }
    let window = s.window, scale = s.scale, group = s.group, sinks = s.sinks
    parallelFor(s.batch * heads) { bh in
        let b = bh / heads, h = bh % heads, g = h / group
        let p = pp + bh * L * L
        BLAS.gemm(transB: true, m: L, n: L, k: dq, alpha: scale, a: qp + (b * L * heads + h) * dq, lda: heads * dq,
                  b: kp + (b * L * kvh + g) * dq, ldb: kvh * dq, c: p, ldc: L)
        let row1 = UnsafeMutablePointer<Float>.allocate(capacity: L + 1)
        defer { row1.deallocate() }
        for i in 0..<L {
            let row = p + i * L
            let lo = window.map { max(0, i - $0 + 1) } ?? 0
            if lo > 0 { row.update(repeating: 0, count: lo) }
            if i + 1 < L { (row + i + 1).update(repeating: 0, count: L - i - 1) }
            if let sinks, let sp {
                let n = i + 1 - lo
                row1.update(from: row + lo, count: n)
                row1[n] = sinks.data[h]
                softmaxInPlace(row1, count: n + 1)
                (row + lo).update(from: row1, count: n)
                sp[bh * L + i] = row1[n]
            } else {
                softmaxInPlace(row + lo, count: i + 1 - lo)
            }
        }
        BLAS.gemm(m: L, n: dv, k: L, a: p, lda: L, b: vp + (b * L * kvh + g) * dv, ldb: kvh * dv, c: op + (b * L * heads + h) * dv, ldc: heads * dv)
    }
    return (probs, out, sinkProbs)
}

/// dq, dk, dv of the core from the output gradient [t, heads·vDim], and with sinks their gradient [heads]: a sink
/// takes no value, so its logit's gradient is −p_sink · Σ_j p_j ∂L/∂p_j per row.
func attentionCoreBackward(q: Tensor, k: Tensor, v: Tensor, probs: Tensor, sinkProbs: Tensor? = nil, dOut: Tensor,
                           _ s: AttentionShape) -> (dq: Tensor, dk: Tensor, dv: Tensor, dSinks: Tensor?) {
    let L = s.seqLen, heads = s.heads, kvh = s.kvHeads, dqk = s.qkDim, dvd = s.vDim, group = s.group, t = s.batch * L
    let dq = Tensor(zeros: [t, heads * dqk]), dk = Tensor(zeros: [t, kvh * dqk]), dv = Tensor(zeros: [t, kvh * dvd])
    let (qp, kp, vp, pp) = (SendablePointer(q.data), SendablePointer(k.data), SendablePointer(v.data), SendablePointer(probs.data))
    let (dop, dqp, dkp, dvp) = (SendablePointer(dOut.data), SendablePointer(dq.data), SendablePointer(dk.data), SendablePointer(dv.data))
    let scale = s.scale
    // Per (sequence, head) sink gradients, summed over sequences in order afterwards (deterministic).
    let sinkParts = sinkProbs.map { _ in Tensor(zeros: [s.batch * heads]) }
    let spp = sinkProbs.map { SendablePointer($0.data) }, sgp = sinkParts.map { SendablePointer($0.data) }
    // One task per (sequence, KV head): its query heads' contributions to dK/dV stay in one thread.
    parallelFor(s.batch * kvh) { bg in
        let b = bg / kvh, kvHead = bg % kvh
        let ds = Tensor(zeros: [L, L])
        let kOff = (b * L * kvh + kvHead) * dqk, vOff = (b * L * kvh + kvHead) * dvd
        for h in (kvHead * group)..<((kvHead + 1) * group) {
            let p = pp + (b * heads + h) * L * L
            let qOff = (b * L * heads + h) * dqk, oOff = (b * L * heads + h) * dvd
            BLAS.gemm(transA: true, m: L, n: dvd, k: L, a: p, lda: L, b: dop + oOff, ldb: heads * dvd, beta: 1, c: dvp + vOff, ldc: kvh * dvd)
            BLAS.gemm(transB: true, m: L, n: L, k: dvd, a: dop + oOff, lda: heads * dvd, b: vp + vOff, ldb: kvh * dvd, c: ds.data, ldc: L)
            var sinkGrad: Float = 0
            for i in 0..<L {
                let pr = p + i * L, dr = ds.data + i * L
                var dot: Float = 0
                for j in 0...i { dot += pr[j] * dr[j] }
                for j in 0..<L { dr[j] = pr[j] * (dr[j] - dot) }
                if let spp { sinkGrad -= spp[(b * heads + h) * L + i] * dot }
            }
            if let sgp { sgp[b * heads + h] = sinkGrad }
            BLAS.gemm(m: L, n: dqk, k: L, alpha: scale, a: ds.data, lda: L, b: kp + kOff, ldb: kvh * dqk, c: dqp + qOff, ldc: heads * dqk)
            BLAS.gemm(transA: true, m: L, n: dqk, k: L, alpha: scale, a: ds.data, lda: L, b: qp + qOff, ldb: heads * dqk, beta: 1, c: dkp + kOff, ldc: kvh * dqk)
        }
    }
    let dSinks = sinkParts.map { parts in
        let d = Tensor(zeros: [heads])
        for b in 0..<s.batch { for h in 0..<heads { d.data[h] += parts.data[b * heads + h] } }
        return d
    }
    return (dq, dk, dv, dSinks)
}

/// RoPE at positions 0..<L on every sequence of a batch (`inverse`: its transpose, the rotation back; cos and
/// sin carry yarn's attention factor, so this is the transpose of a scaled rotation too).
func applyRoPE(_ rope: RoPE, _ x: UnsafeMutablePointer<Float>, batch: Int, seqLen L: Int, heads: Int, headStride: Int, offset: Int = 0, inverse: Bool = false) {
    var table = rope.table(positions: Array(0..<L))
    if inverse { table.sin = table.sin.map { -$0 } }
    for b in 0..<batch {
        rope.apply(x + b * L * heads * headStride, tokens: L, heads: heads, tokenStride: heads * headStride, headStride: headStride,
                   offset: offset, table: table)
    }
}

// MARK: - Grouped-query attention

final class AttentionTape {
    var q, k, v: LinearTape?
    var qLin, kLin, vLin: Tensor?      // projections
    var qNorm, kNorm: Tensor?          // after q/k RMSNorm (before clipping)
    var qRot, kRot, vUsed: Tensor?     // what the attention core used
    var probs: Tensor?                 // [batch, heads, L, L]
    var sinkProbs: Tensor?             // [batch, heads, L] with sinks
    var o: LinearTape?
}

func attentionShape(_ a: GroupedQueryAttention, tokens t: Int, seqLen L: Int) -> AttentionShape {
    AttentionShape(batch: t / L, seqLen: L, heads: a.heads, kvHeads: a.kvHeads, qkDim: a.headDim, vDim: a.headDim, scale: a.scale, window: a.slidingWindow,
                   sinks: a.sinks)
}

func attentionForward(_ a: GroupedQueryAttention, _ x: Tensor, seqLen L: Int, seed: UInt64, training: Bool) -> (Tensor, AttentionTape) {
    let tape = AttentionTape()
    let t = x.rows, batch = t / L, hd = a.headDim
    let (ql, qt) = linearForward(a.q, x, seed: mixSeed(seed, 1), training: training, parallel: true)
    let (kl, kt) = linearForward(a.k, x, seed: mixSeed(seed, 2), training: training, parallel: true)
    let (vl, vt) = linearForward(a.v, x, seed: mixSeed(seed, 3), training: training, parallel: true)
    tape.q = qt; tape.k = kt; tape.v = vt
    tape.qLin = ql; tape.kLin = kl; tape.vLin = vl
    let qs = ql.copy(), ks = kl.copy(), vs = vl.copy()
    a.normalizeQK(qs, ks, tokens: t)
    tape.qNorm = qs.copy(); tape.kNorm = ks.copy()
    if let c = a.clip { for p in [qs, ks, vs] { for i in 0..<p.count { p.data[i] = min(max(p.data[i], -c), c) } } }
    applyRoPE(a.rope, qs.data, batch: batch, seqLen: L, heads: a.heads, headStride: hd)
    applyRoPE(a.rope, ks.data, batch: batch, seqLen: L, heads: a.kvHeads, headStride: hd)
    tape.qRot = qs; tape.kRot = ks; tape.vUsed = vs
    let (probs, out, sinkProbs) = attentionCoreForward(q: qs, k: ks, v: vs, attentionShape(a, tokens: t, seqLen: L))
    tape.probs = probs; tape.sinkProbs = sinkProbs
    let (y, ot) = linearForward(a.o, out, seed: mixSeed(seed, 4), training: training, parallel: true)
    tape.o = ot
    return (y, tape)
}

func attentionBackward(_ a: GroupedQueryAttention, _ tape: AttentionTape, _ dy: Tensor, seqLen L: Int, g: Gradients) -> Tensor {
    let dOut = linearBackward(a.o, tape.o!, dy, g, parallel: true)
    let t = dy.rows, batch = t / L, heads = a.heads, kvh = a.kvHeads, hd = a.headDim
    let (dq, dk, dv, dSinks) = attentionCoreBackward(q: tape.qRot!, k: tape.kRot!, v: tape.vUsed!, probs: tape.probs!, sinkProbs: tape.sinkProbs,
                                                     dOut: dOut, attentionShape(a, tokens: t, seqLen: L))
    if let sinks = a.sinks, let d = dSinks, let gs = g[sinks] { gs.add(d) }
    applyRoPE(a.rope, dq.data, batch: batch, seqLen: L, heads: heads, headStride: hd, inverse: true)
    applyRoPE(a.rope, dk.data, batch: batch, seqLen: L, heads: kvh, headStride: hd, inverse: true)
    if let c = a.clip {   // clamp passes the gradient where the value was inside [−c, c]
        for (d, pre) in [(dq, tape.qNorm!), (dk, tape.kNorm!), (dv, tape.vLin!)] {
            for i in 0..<d.count where abs(pre.data[i]) > c { d.data[i] = 0 }
        }
    }
    var dqLin = dq, dkLin = dk
    switch a.qkNorm {
    case .none: break
    case .perHead(let qn, let kn):
        dqLin = Tensor(zeros: dq.shape); dkLin = Tensor(zeros: dk.shape)
        rmsNormBackward(x: tape.qLin!.data, weight: qn.weight, eps: qn.eps, dy: dq.data, into: dqLin.data, rows: t * heads, stride: hd, g: g)
        rmsNormBackward(x: tape.kLin!.data, weight: kn.weight, eps: kn.eps, dy: dk.data, into: dkLin.data, rows: t * kvh, stride: hd, g: g)
    case .full(let qn, let kn):
        dqLin = Tensor(zeros: dq.shape); dkLin = Tensor(zeros: dk.shape)
        rmsNormBackward(x: tape.qLin!.data, weight: qn.weight, eps: qn.eps, dy: dq.data, into: dqLin.data, rows: t, stride: heads * hd, g: g)
        rmsNormBackward(x: tape.kLin!.data, weight: kn.weight, eps: kn.eps, dy: dk.data, into: dkLin.data, rows: t, stride: kvh * hd, g: g)
    }
    let dx = linearBackward(a.q, tape.q!, dqLin, g, parallel: true)
    dx.add(linearBackward(a.k, tape.k!, dkLin, g, parallel: true))
    dx.add(linearBackward(a.v, tape.v!, dv, g, parallel: true))
    return dx
}

// MARK: - Multi-head latent attention (DeepSeek-V2/V3)

final class LatentAttentionTape {
    var q, qA, qB, kvA, kvB, o: LinearTape?
    var qALin: Tensor?                 // q_a(x), the q_a norm's input (low-rank queries)
    var latentIn: Tensor?              // the compressed latent before kv_a's norm [t, kvLoraRank]
    var queries, keys, values: Tensor? // what the core used: [t, heads·qkDim] (rotated), [t, heads·qkDim], [t, heads·vDim]
    var probs: Tensor?
}

func latentShape(_ a: LatentAttention, tokens t: Int, seqLen L: Int) -> AttentionShape {
    AttentionShape(batch: t / L, seqLen: L, heads: a.heads, kvHeads: a.heads, qkDim: a.nopeDim + a.ropeDim, vDim: a.valueDim, scale: a.scale, window: nil)
}

/// q = q_proj(x) or q_b(norm(q_a(x))); [latent, k_pe] = kv_a(x); [k_nope, v] per head = kv_b(norm(latent)); the
/// rotary part of each query head and the one shared k_pe are rotated; keys are [k_nope, k_pe] per head.
func latentAttentionForward(_ a: LatentAttention, _ x: Tensor, seqLen L: Int, seed: UInt64, training: Bool) -> (Tensor, LatentAttentionTape) {
    let tape = LatentAttentionTape()
    let t = x.rows, batch = t / L, heads = a.heads, nope = a.nopeDim, rd = a.ropeDim, vd = a.valueDim, qk = nope + rd, r = a.kvLoraRank
    let qs: Tensor
    if let qProj = a.qProj {
        let (y, tq) = linearForward(qProj, x, seed: mixSeed(seed, 1), training: training, parallel: true)
        qs = y; tape.q = tq
    } else {
        let (ya, ta) = linearForward(a.qA!, x, seed: mixSeed(seed, 5), training: training, parallel: true)
        let (yb, tb) = linearForward(a.qB!, a.qANorm!(ya), seed: mixSeed(seed, 6), training: training, parallel: true)
        qs = yb; tape.qA = ta; tape.qB = tb; tape.qALin = ya
    }
    let (ckv, tkv) = linearForward(a.kvA, x, seed: mixSeed(seed, 2), training: training, parallel: true)
    tape.kvA = tkv
    let latentIn = ckv.columns(0..<r)
    let kpe = ckv.columns(r..<(r + rd))
    let (kv, tkb) = linearForward(a.kvB, a.kvANorm(latentIn), seed: mixSeed(seed, 3), training: training, parallel: true)
    tape.kvB = tkb; tape.latentIn = latentIn
    applyRoPE(a.rope, qs.data, batch: batch, seqLen: L, heads: heads, headStride: qk, offset: nope)
    applyRoPE(a.rope, kpe.data, batch: batch, seqLen: L, heads: 1, headStride: rd)
    let keys = Tensor(zeros: [t, heads * qk]), values = Tensor(zeros: [t, heads * vd])
    for i in 0..<t {
        for h in 0..<heads {
            let src = kv.data + (i * heads + h) * (nope + vd), kd = keys.data + (i * heads + h) * qk
            kd.update(from: src, count: nope)
            (kd + nope).update(from: kpe.data + i * rd, count: rd)
            (values.data + (i * heads + h) * vd).update(from: src + nope, count: vd)
        }
    }
    let (probs, out, _) = attentionCoreForward(q: qs, k: keys, v: values, latentShape(a, tokens: t, seqLen: L))
    tape.queries = qs; tape.keys = keys; tape.values = values; tape.probs = probs
    let (y, to) = linearForward(a.o, out, seed: mixSeed(seed, 4), training: training, parallel: true)
    tape.o = to
    return (y, tape)
}

func latentAttentionBackward(_ a: LatentAttention, _ tape: LatentAttentionTape, _ dy: Tensor, seqLen L: Int, g: Gradients) -> Tensor {
    let t = dy.rows, batch = t / L, heads = a.heads, nope = a.nopeDim, rd = a.ropeDim, vd = a.valueDim, qk = nope + rd, r = a.kvLoraRank
    let dOut = linearBackward(a.o, tape.o!, dy, g, parallel: true)
    let (dq, dkeys, dvalues, _) = attentionCoreBackward(q: tape.queries!, k: tape.keys!, v: tape.values!, probs: tape.probs!, dOut: dOut,
                                                     latentShape(a, tokens: t, seqLen: L))
    applyRoPE(a.rope, dq.data, batch: batch, seqLen: L, heads: heads, headStride: qk, offset: nope, inverse: true)
    // Keys and values back to kv_b's output [t, heads·(nope + v)] and the shared k_pe (summed over heads).
    let dkv = Tensor(zeros: [t, heads * (nope + vd)]), dckv = Tensor(zeros: [t, r + rd])
    for i in 0..<t {
        let dpe = dckv.data + i * (r + rd) + r
        for h in 0..<heads {
            let dst = dkv.data + (i * heads + h) * (nope + vd), dk = dkeys.data + (i * heads + h) * qk
            dst.update(from: dk, count: nope)
            (dst + nope).update(from: dvalues.data + (i * heads + h) * vd, count: vd)
            addInPlace(dpe, dk + nope, count: rd)
        }
    }
    applyRoPE(a.rope, dckv.data, batch: batch, seqLen: L, heads: 1, headStride: r + rd, offset: r, inverse: true)
    let dLatent = linearBackward(a.kvB, tape.kvB!, dkv, g, parallel: true)
    let dLatentIn = rmsNormBackward(a.kvANorm, x: tape.latentIn!, dy: dLatent, g: g)
    for i in 0..<t { (dckv.data + i * (r + rd)).update(from: dLatentIn.data + i * r, count: r) }
    let dx = linearBackward(a.kvA, tape.kvA!, dckv, g, parallel: true)
    if let qProj = a.qProj {
        dx.add(linearBackward(qProj, tape.q!, dq, g, parallel: true))
    } else {
        let dn = linearBackward(a.qB!, tape.qB!, dq, g, parallel: true)
        let dqa = rmsNormBackward(a.qANorm!, x: tape.qALin!, dy: dn, g: g)
        dx.add(linearBackward(a.qA!, tape.qA!, dqa, g, parallel: true))
    }
    return dx
}
