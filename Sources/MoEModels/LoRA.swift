import MoETensor

/// A frozen linear map plus a LoRA adapter (Hu et al. 2021, as HF PEFT defines it):
/// y = base(x) + (α/r) · (x·Aᵀ)·Bᵀ with A [r, in] and B [out, r]. Dropout on the adapter's input is applied
/// only in training (MoETraining); here, at inference, it is the identity.
public struct LoRALinear: LinearLayer {
    public let base: any LinearLayer
    public let a: Tensor
    public let b: Tensor
    public let scale: Float
    public let dropout: Float

    public init(base: any LinearLayer, a: Tensor, b: Tensor, scale: Float, dropout: Float = 0) {
        precondition(a.rank == 2 && b.rank == 2 && a.shape[1] == base.inFeatures && b.shape[0] == base.outFeatures && a.shape[0] == b.shape[1],
                     "LoRA factors \(a.shape), \(b.shape) do not fit a \(base.outFeatures)×\(base.inFeatures) layer")
        self.base = base; self.a = a; self.b = b; self.scale = scale; self.dropout = dropout
    }

    public var rank: Int { a.shape[0] }
    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }
    public var parameterCount: Int { base.parameterCount + a.count + b.count }
    public var weightBytes: Int { base.weightBytes + (a.count + b.count) * 4 }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        base.apply(x, rows: rows, into: y, ldy: ldy, parallel: parallel)
        let mid = Tensor(zeros: [rows, rank])
        BLAS.gemm(transB: true, m: rows, n: rank, k: inFeatures, a: x, lda: inFeatures, b: a.data, ldb: inFeatures, c: mid.data, ldc: rank)
        BLAS.gemm(transB: true, m: rows, n: outFeatures, k: rank, alpha: scale, a: mid.data, lda: rank, b: b.data, ldb: rank,
                  beta: 1, c: y, ldc: ldy)
    }

    public func applyTransposed(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int, accumulate: Bool, parallel: Bool) {
        base.applyTransposed(dy, rows: rows, into: dx, ldx: ldx, accumulate: accumulate, parallel: parallel)
        let mid = Tensor(zeros: [rows, rank])
        WeightMatrix(b).multiplyTransposed(dy, m: rows, into: mid.data, ldx: rank, alpha: scale, parallel: parallel)
        WeightMatrix(a).multiplyTransposed(mid.data, m: rows, into: dx, ldx: ldx, accumulate: true, parallel: parallel)
    }

    public func forEachParameter(_ body: (String, Parameter) -> Void) {
        base.forEachParameter(body)
        body(".lora_A", .tensor(a))
        body(".lora_B", .tensor(b))
    }

    public func denseWeight() -> Tensor { merged().denseWeight() }

    /// The base with the adapter merged in (W + s·B·A; factor concatenation for a low-rank base).
    public func merged() -> any LinearLayer { base.adding(b, a, scale: scale) }

    public func adding(_ lb: Tensor, _ la: Tensor, scale s: Float) -> any LinearLayer { merged().adding(lb, la, scale: s) }

    public func trainable() -> any LinearLayer { LoRALinear(base: base.trainable(), a: a, b: b, scale: scale, dropout: dropout) }
}

/// A low-rank map (`LowRankLinear`, W ≈ A·B) whose factors are themselves adapted, SVD-LLM's parameter update
/// (Wang et al. 2025, §3.3: LoRA on W_u and on W_v): x → `first` (B [r, in], usually with a LoRA adapter) →
/// `second` (A [out, r], likewise). Merging each adapter into its own factor keeps the rank r, so a healed
/// low-rank expert keeps its size (a LoRA on the product W would add r_lora·(in + out) parameters).
/// Parameters are named after the factor they adapt: `.lowrank_a`, `.lowrank_a.lora_A`, …, `.lowrank_b.lora_B`.
public struct AdaptedLowRankLinear: LinearLayer {
    public let first: any LinearLayer
    public let second: any LinearLayer

    public init(first: any LinearLayer, second: any LinearLayer) {
        precondition(first.outFeatures == second.inFeatures, "factors \(first.outFeatures) → \(second.inFeatures) do not chain")
        self.first = first
        self.second = second
    }

    public var rank: Int { first.outFeatures }
    public var inFeatures: Int { first.inFeatures }
    public var outFeatures: Int { second.outFeatures }
    public var parameterCount: Int { first.parameterCount + second.parameterCount }
    public var weightBytes: Int { first.weightBytes + second.weightBytes }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        let mid = Tensor(zeros: [rows, rank])
        first.apply(x, rows: rows, into: mid.data, ldy: rank, parallel: parallel)
        second.apply(mid.data, rows: rows, into: y, ldy: ldy, parallel: parallel)
    }

    public func applyTransposed(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int, accumulate: Bool, parallel: Bool) {
        let mid = Tensor(zeros: [rows, rank])
        second.applyTransposed(dy, rows: rows, into: mid.data, ldx: rank, accumulate: false, parallel: parallel)
        first.applyTransposed(mid.data, rows: rows, into: dx, ldx: ldx, accumulate: accumulate, parallel: parallel)
    }

    public func forEachParameter(_ body: (String, Parameter) -> Void) {
        second.forEachParameter { body(".lowrank_a" + $0, $1) }
        first.forEachParameter { body(".lowrank_b" + $0, $1) }
    }

    /// The factors with their adapters merged in: a `LowRankLinear` of the same rank.
    public func merged() -> LowRankLinear {
        func factor(_ l: any LinearLayer) -> WeightMatrix {
            let m = (l as? LoRALinear)?.merged() ?? l
            if let d = m as? DenseLinear { return d.weight }
            return WeightMatrix(m.denseWeight())
        }
        // The second factor's base carries the layer's bias (gpt-oss's experts).
        let bias = ((second as? LoRALinear)?.base as? DenseLinear)?.bias ?? (second as? DenseLinear)?.bias
        return LowRankLinear(a: factor(second), b: factor(first), bias: bias)
    }

    public func denseWeight() -> Tensor { merged().denseWeight() }
    public func adding(_ lb: Tensor, _ la: Tensor, scale: Float) -> any LinearLayer { merged().adding(lb, la, scale: scale) }
    public func trainable() -> any LinearLayer { AdaptedLowRankLinear(first: first.trainable(), second: second.trainable()) }
}
