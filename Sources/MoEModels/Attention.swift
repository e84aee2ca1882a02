import MoETensor

/// One sequence's rows inside a batch, and that sequence's cache for the current layer.
public struct AttentionSegment: @unchecked Sendable {
    public let rows: Range<Int>
    public let cache: KVCache.Layer
    public init(rows: Range<Int>, cache: KVCache.Layer) {
        self.rows = rows
        self.cache = cache
    }
}

/// Self-attention of any kind (grouped-query, latent). Rows of `x` belong to the given segments.
public protocol AttentionLayer: Sendable {
    var cacheShape: (kvHeads: Int, keyDim: Int, valueDim: Int) { get }
    var parameterCount: Int { get }
    /// Bytes of weights one pass reads, in their stored dtype.
    var weightBytes: Int { get }
    /// The linear layers by logical name (GQA: q, k, v, o; MLA: q or q_a and q_b, kv_a, kv_b, o), in order.
    var linears: [(name: String, layer: any LinearLayer)] { get }
    /// The same attention with each linear layer replaced by `f(name, layer)`.
    func replacingLinears(_ f: (String, any LinearLayer) throws -> any LinearLayer) rethrows -> any AttentionLayer
    /// Its norms by logical name (q_norm, k_norm; MLA: q_a_norm, kv_a_norm).
    var norms: [(name: String, norm: RMSNorm)] { get }
    /// One learned logit per head joining every softmax's denominator (gpt-oss), or nil.
    var sinks: Tensor? { get }
    func forward(_ x: Tensor, segments: [AttentionSegment]) -> Tensor
}

extension AttentionLayer {
    public var sinks: Tensor? { nil }
}

/// Causal scaled-dot-product attention of `tokens` new queries against everything in `cache`
/// (which already holds their own keys). q is [tokens, heads, keyDim]; out is [tokens, heads, valueDim].
/// Query t sits at position cache.count − tokens + t; with a sliding window w, it sees keys j with
/// j > position − w (HF's `sliding_window_overlay`). With `sinks` (gpt-oss, one logit per head), each head's
/// softmax also counts its sink logit in the denominator, which then takes no value.
func attend(
    q: UnsafePointer<Float>, tokens: Int, heads: Int, cache: KVCache.Layer, scale: Float,
    slidingWindow: Int?, sinks: Tensor? = nil, out: UnsafeMutablePointer<Float>
) {
    let s = cache.count, dk = cache.keyDim, dv = cache.valueDim, kvh = cache.kvHeads
    let group = heads / kvh
    let first = s - tokens
    let outp = SendablePointer(out)
    // With sinks, a row has one more slot: the sink's logit goes just after the last visible key.
    let ld = sinks == nil ? s : s + 1
    cache.keys.withUnsafeBufferPointer { kb in
        cache.values.withUnsafeBufferPointer { vb in
            let keys = SendablePointer(UnsafeMutablePointer(mutating: kb.baseAddress!))
            let values = SendablePointer(UnsafeMutablePointer(mutating: vb.baseAddress!))
            let qp = SendablePointer(UnsafeMutablePointer(mutating: q))
            parallelFor(heads) { h in
                let g = h / group
                let scores = Tensor(zeros: [tokens, ld])
                BLAS.gemm(transB: true, m: tokens, n: s, k: dk, alpha: scale,
                          a: qp + h * dk, lda: heads * dk, b: keys + g * dk, ldb: kvh * dk,
                          c: scores.data, ldc: ld)
                for t in 0..<tokens {
                    let pos = first + t
                    let row = scores.data + t * ld
                    // Visible keys are lo...pos; the rest get probability 0 (HF adds a -inf-like mask).
                    let lo = slidingWindow.map { max(0, pos - $0 + 1) } ?? 0
                    if lo > 0 { row.update(repeating: 0, count: lo) }
                    if pos + 1 < ld { (row + pos + 1).update(repeating: 0, count: ld - pos - 1) }
                    if let sinks {
                        row[pos + 1] = sinks.data[h]
                        softmaxInPlace(row + lo, count: pos + 2 - lo)
                        row[pos + 1] = 0
                    } else {
                        softmaxInPlace(row + lo, count: pos + 1 - lo)
                    }
                }
                BLAS.gemm(m: tokens, n: dv, k: s, a: scores.data, lda: ld, b: values + g * dv, ldb: kvh * dv,
                          c: outp + h * dv, ldc: heads * dv)
            }
        }
    }
}

/// Multi-head attention with grouped key/value heads (Mixtral, Qwen, OLMoE): optional biases, q/k
/// RMSNorm either per head (Qwen3-MoE) or over the whole projection (OLMoE), optional clipping of q/k/v
/// (OLMoE `clip_qkv`), RoPE, optional sliding window.
public struct GroupedQueryAttention: AttentionLayer {
    public enum QKNorm: Sendable {
        case none
        case perHead(q: RMSNorm, k: RMSNorm)
        case full(q: RMSNorm, k: RMSNorm)
        public var isNone: Bool { if case .none = self { return true } else { return false } }
    }
    /// Whether a family's q/k norms act per head (Qwen3-MoE) or over the whole projection (OLMoE).
    public enum NormKind: Sendable { case perHead, full }

    public var q, k, v, o: any LinearLayer
    public let heads: Int
    public let kvHeads: Int
    public let headDim: Int
    public let rope: RoPE
    public let qkNorm: QKNorm
    public let clip: Float?
    public let slidingWindow: Int?
    /// gpt-oss's attention sinks: one learned logit per head that joins each softmax's denominator.
    public let sinks: Tensor?
    public let scale: Float

    public init(q: any LinearLayer, k: any LinearLayer, v: any LinearLayer, o: any LinearLayer,
                heads: Int, kvHeads: Int, headDim: Int, rope: RoPE, qkNorm: QKNorm = .none,
                clip: Float? = nil, slidingWindow: Int? = nil, sinks: Tensor? = nil, scale: Float? = nil) {
        precondition(sinks == nil || sinks!.count == heads, "one attention sink per head")
        precondition(heads % kvHeads == 0, "\(heads) heads are not a multiple of \(kvHeads) KV heads")
        precondition(q.outFeatures == heads * headDim && k.outFeatures == kvHeads * headDim && v.outFeatures == kvHeads * headDim,
                     "attention projection sizes do not match heads × head_dim")
        self.q = q; self.k = k; self.v = v; self.o = o
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        self.rope = rope; self.qkNorm = qkNorm; self.clip = clip; self.slidingWindow = slidingWindow; self.sinks = sinks
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
    }

    public var cacheShape: (kvHeads: Int, keyDim: Int, valueDim: Int) { (kvHeads, headDim, headDim) }
    public var linears: [(name: String, layer: any LinearLayer)] { [("q", q), ("k", k), ("v", v), ("o", o)] }
    public func replacingLinears(_ f: (String, any LinearLayer) throws -> any LinearLayer) rethrows -> any AttentionLayer {
        var a = self
        a.q = try f("q", q); a.k = try f("k", k); a.v = try f("v", v); a.o = try f("o", o)
        return a
    }
    public var norms: [(name: String, norm: RMSNorm)] {
        switch qkNorm {
        case .none: return []
        case .perHead(let a, let b), .full(let a, let b): return [("q_norm", a), ("k_norm", b)]
        }
    }
    public var weightBytes: Int {
        var n = q.weightBytes + k.weightBytes + v.weightBytes + o.weightBytes + (sinks?.count ?? 0) * 4
        switch qkNorm {
        case .none: break
        case .perHead(let a, let b), .full(let a, let b): n += (a.dim + b.dim) * 4
        }
        return n
    }
    public var parameterCount: Int {
        var n = q.parameterCount + k.parameterCount + v.parameterCount + o.parameterCount + (sinks?.count ?? 0)
        switch qkNorm {
        case .none: break
        case .perHead(let a, let b), .full(let a, let b): n += a.dim + b.dim
        }
        return n
    }

    /// The q/k RMSNorm, in place on `tokens` rows of projected queries and keys.
    public func normalizeQK(_ qs: Tensor, _ ks: Tensor, tokens t: Int) {
        switch qkNorm {
        case .none: break
        case .perHead(let qn, let kn):
            qn.applyInPlace(qs.data, rows: t * heads, stride: headDim)
            kn.applyInPlace(ks.data, rows: t * kvHeads, stride: headDim)
        case .full(let qn, let kn):
            qn.applyInPlace(qs.data, rows: t, stride: heads * headDim)
            kn.applyInPlace(ks.data, rows: t, stride: kvHeads * headDim)
        }
    }

    public func forward(_ x: Tensor, segments: [AttentionSegment]) -> Tensor {
        let (qs, ks, vs) = Profiler.measure("attn-qkv") { (q(x), k(x), v(x)) }
        let t = x.rows
        normalizeQK(qs, ks, tokens: t)
        if let c = clip {
            for p in [qs, ks, vs] { for i in 0..<p.count { p.data[i] = min(max(p.data[i], -c), c) } }
        }
        let out = Tensor(zeros: [t, heads * headDim])
        for seg in segments {
            let n = seg.rows.count, r0 = seg.rows.lowerBound
            let table = rope.table(positions: Array(seg.cache.count..<(seg.cache.count + n)))
            rope.apply(qs.data + r0 * heads * headDim, tokens: n, heads: heads, tokenStride: heads * headDim,
                       headStride: headDim, table: table)
            rope.apply(ks.data + r0 * kvHeads * headDim, tokens: n, heads: kvHeads, tokenStride: kvHeads * headDim,
                       headStride: headDim, table: table)
            seg.cache.append(keys: ks.data + r0 * kvHeads * headDim, values: vs.data + r0 * kvHeads * headDim, tokens: n)
            Profiler.measure("attn-core") {
                attend(q: qs.data + r0 * heads * headDim, tokens: n, heads: heads, cache: seg.cache, scale: scale,
                       slidingWindow: slidingWindow, sinks: sinks, out: out.data + r0 * heads * headDim)
            }
        }
        let y = Profiler.measure("attn-o") { o(out) }
        ResourceMonitor.shared.notePeak()
        return y
    }
}

/// DeepSeek's multi-head latent attention (MLA): queries optionally through a low-rank bottleneck,
/// keys and values from a shared compressed latent plus one rotary key shared by all heads.
/// The cache keeps expanded per-head keys and values (numerically what HF computes).
public struct LatentAttention: AttentionLayer {
    public var qProj: (any LinearLayer)?
    public var qA: (any LinearLayer)?
    public let qANorm: RMSNorm?
    public var qB: (any LinearLayer)?
    public var kvA: any LinearLayer
    public let kvANorm: RMSNorm
    public var kvB: any LinearLayer
    public var o: any LinearLayer
    public let heads: Int
    public let nopeDim: Int
    public let ropeDim: Int
    public let valueDim: Int
    public let kvLoraRank: Int
    public let rope: RoPE
    public let scale: Float

    public init(qProj: (any LinearLayer)?, qA: (any LinearLayer)?, qANorm: RMSNorm?, qB: (any LinearLayer)?,
                kvA: any LinearLayer, kvANorm: RMSNorm, kvB: any LinearLayer, o: any LinearLayer,
                heads: Int, nopeDim: Int, ropeDim: Int, valueDim: Int, kvLoraRank: Int, rope: RoPE, scale: Float) {
        precondition(qProj != nil || (qA != nil && qANorm != nil && qB != nil), "MLA needs q_proj or q_a/q_b projections")
        self.qProj = qProj; self.qA = qA; self.qANorm = qANorm; self.qB = qB
        self.kvA = kvA; self.kvANorm = kvANorm; self.kvB = kvB; self.o = o
        self.heads = heads; self.nopeDim = nopeDim; self.ropeDim = ropeDim; self.valueDim = valueDim
        self.kvLoraRank = kvLoraRank; self.rope = rope; self.scale = scale
    }

    var qkDim: Int { nopeDim + ropeDim }
    public var cacheShape: (kvHeads: Int, keyDim: Int, valueDim: Int) { (heads, qkDim, valueDim) }
    public var linears: [(name: String, layer: any LinearLayer)] {
        var out: [(String, any LinearLayer)] = []
        if let qProj { out.append(("q", qProj)) }
        if let qA { out.append(("q_a", qA)) }
        if let qB { out.append(("q_b", qB)) }
        return out + [("kv_a", kvA), ("kv_b", kvB), ("o", o)]
    }
    public func replacingLinears(_ f: (String, any LinearLayer) throws -> any LinearLayer) rethrows -> any AttentionLayer {
        var a = self
        a.qProj = try qProj.map { try f("q", $0) }
        a.qA = try qA.map { try f("q_a", $0) }
        a.qB = try qB.map { try f("q_b", $0) }
        a.kvA = try f("kv_a", kvA); a.kvB = try f("kv_b", kvB); a.o = try f("o", o)
        return a
    }
    public var norms: [(name: String, norm: RMSNorm)] { (qANorm.map { [("q_a_norm", $0)] } ?? []) + [("kv_a_norm", kvANorm)] }
    public var weightBytes: Int {
        (qProj?.weightBytes ?? 0) + (qA?.weightBytes ?? 0) + (qANorm?.dim ?? 0) * 4 + (qB?.weightBytes ?? 0)
            + kvA.weightBytes + kvANorm.dim * 4 + kvB.weightBytes + o.weightBytes
    }
    public var parameterCount: Int {
        (qProj?.parameterCount ?? 0) + (qA?.parameterCount ?? 0) + (qANorm?.dim ?? 0) + (qB?.parameterCount ?? 0)
            + kvA.parameterCount + kvANorm.dim + kvB.parameterCount + o.parameterCount
    }

    public func forward(_ x: Tensor, segments: [AttentionSegment]) -> Tensor {
        let t = x.rows
        let qs: Tensor
        if let qProj { qs = qProj(x) } else { qs = qB!(qANorm!(qA!(x))) }
        let ckv = kvA(x)                                   // [t, kvLoraRank + ropeDim]
        let latent = kvANorm(ckv.columns(0..<kvLoraRank))   // [t, kvLoraRank]
        let kpe = ckv.columns(kvLoraRank..<(kvLoraRank + ropeDim))
        let kv = kvB(latent)                               // [t, heads, nope + value]
        let keys = Tensor(zeros: [t, heads, qkDim]), values = Tensor(zeros: [t, heads, valueDim])
        let out = Tensor(zeros: [t, heads * valueDim])
        for seg in segments {
            let n = seg.rows.count, r0 = seg.rows.lowerBound
            let table = rope.table(positions: Array(seg.cache.count..<(seg.cache.count + n)))
            rope.apply(qs.data + r0 * heads * qkDim, tokens: n, heads: heads, tokenStride: heads * qkDim,
                       headStride: qkDim, offset: nopeDim, table: table)
            rope.apply(kpe.data + r0 * ropeDim, tokens: n, heads: 1, tokenStride: ropeDim, headStride: ropeDim, table: table)
            for r in seg.rows {
                for h in 0..<heads {
                    let src = kv.data + (r * heads + h) * (nopeDim + valueDim)
                    let kd = keys.data + (r * heads + h) * qkDim
                    kd.update(from: src, count: nopeDim)
                    (kd + nopeDim).update(from: kpe.data + r * ropeDim, count: ropeDim)
                    (values.data + (r * heads + h) * valueDim).update(from: src + nopeDim, count: valueDim)
                }
            }
            seg.cache.append(keys: keys.data + r0 * heads * qkDim, values: values.data + r0 * heads * valueDim, tokens: n)
            attend(q: qs.data + r0 * heads * qkDim, tokens: n, heads: heads, cache: seg.cache, scale: scale,
                   slidingWindow: nil, out: out.data + r0 * heads * valueDim)
        }
        let y = o(out)
        ResourceMonitor.shared.notePeak()
        return y
    }
}
